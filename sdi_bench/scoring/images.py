"""Test views as the metrics take them: cropped render panels, uint8 tensors."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np
from PIL import Image


def select_views(paths: Sequence[pathlib.Path], count: int) -> list[pathlib.Path]:
    """``count`` views evenly spaced over the turntable (all of them if there are fewer)."""
    if count <= 0:
        raise ValueError(f"views must be positive, got {count}")
    if len(paths) <= count:
        return list(paths)
    indices = np.unique(np.linspace(0, len(paths) - 1, count).round().astype(int))
    return [paths[index] for index in indices]


class UnreadableRender(Exception):
    """A test render that is empty, truncated or not an image."""


def load_render(path: pathlib.Path, width: int | None) -> Image.Image:
    """The render panel (leftmost ``width`` pixels; a square panel when ``width`` is None) as RGB;
    :class:`UnreadableRender` naming the file if it cannot be read whole."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:  # PIL: UnidentifiedImageError, truncated data
        raise UnreadableRender(f"{path}: {type(error).__name__}: {error}") from None
    panel = width if width is not None else image.height
    return image.crop((0, 0, panel, image.height)) if image.width > panel else image


def to_tensor(image: Image.Image, device: str = "cpu"):
    """A [3, H, W] uint8 tensor."""
    import torch

    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).to(device)
