"""PNG figures of the lab: image grids (one row per method) and kept variance per frequency band.

A cell or a row can carry a **mark** (e.g. "blown up"): the cell gets a red frame and the words in red
over it, so that a picture never shows a saturated block without saying what it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


MARK_COLOUR = "#d62728"


def save_image_grid(
    rows: Mapping[str, Tensor],
    path: Path,
    column_titles: Sequence[str] | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    title: str = "",
    marks: Mapping[str, Sequence[str]] | None = None,
    caption: str = "",
) -> Path:
    """One labelled row per entry of ``rows`` ([N, C, H, W] each, C = 1 or 3), N images across.

    ``marks[label][n]`` (optional; ``""`` for none) is written in red over image n of that row, inside a
    red frame. ``caption`` is printed under the grid (how to read it).
    """
    plt = _pyplot()
    marks = marks or {}
    columns = max(images.shape[0] for images in rows.values())
    caption_lines = caption.count("\n") + 1 if caption else 0
    figure, axes = plt.subplots(
        len(rows),
        columns,
        figsize=(0.9 * columns + 1.6, 0.95 * len(rows) + 0.5 + 0.16 * caption_lines),
        squeeze=False,
    )
    low, high = value_range
    for row, (label, images) in enumerate(rows.items()):
        for column in range(columns):
            axis = axes[row][column]
            axis.set_xticks([])
            axis.set_yticks([])
            if column >= images.shape[0]:
                axis.axis("off")
                continue
            image = images[column].detach().double().cpu()
            image = ((torch.nan_to_num(image, nan=low) - low) / (high - low)).clamp(0, 1)
            if image.shape[0] == 1:
                axis.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                axis.imshow(image[:3].permute(1, 2, 0).numpy())
            if row == 0 and column_titles is not None and column < len(column_titles):
                axis.set_title(column_titles[column], fontsize=8)
            row_marks = marks.get(label, ())
            if column < len(row_marks) and row_marks[column]:
                _mark(axis, row_marks[column])
        axes[row][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    if caption:
        figure.text(0.01, 0.005, caption, fontsize=7, ha="left", va="bottom")
    figure.tight_layout(rect=(0, 0.16 * caption_lines / figure.get_figheight(), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _mark(axis, text: str) -> None:
    """A red frame around the cell and ``text`` in red across its middle."""
    for spine in axis.spines.values():
        spine.set_edgecolor(MARK_COLOUR)
        spine.set_linewidth(2.0)
    axis.text(
        0.5,
        0.5,
        text,
        transform=axis.transAxes,
        ha="center",
        va="center",
        fontsize=6,
        color="white",
        fontweight="bold",
        bbox={"facecolor": MARK_COLOUR, "edgecolor": "none", "pad": 1.0, "alpha": 0.85},
    )


def save_band_plot(ratios: Mapping[str, Sequence[float]], path: Path, title: str = "") -> Path:
    """Kept variance (sample variance / true variance) per frequency band, one line per method."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, values in ratios.items():
        axis.plot(range(1, len(values) + 1), values, marker="o", label=label)
    axis.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    axis.set_yscale("log")
    axis.set_xlabel("frequency band (low → high)")
    axis.set_ylabel("kept variance / true variance")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
