"""Loading a transformers CLIP model for the torchmetrics scorers (a hub id or a local folder)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class TensorFeatures(nn.Module):
    """A ``CLIPModel`` whose ``get_image_features`` / ``get_text_features`` return tensors.

    transformers 5 returns a ``BaseModelOutputWithPooling`` (the projected features in
    ``pooler_output``) where transformers 4 returned the tensor that torchmetrics (≤ 1.9) expects.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _tensor(output: Any) -> torch.Tensor:
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def get_image_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))


def load_clip(model: str) -> tuple[TensorFeatures, Any, str | None]:
    """(model, processor, hub revision or None) of a CLIP checkpoint; the caller handles errors."""
    from transformers import CLIPModel, CLIPProcessor

    clip = CLIPModel.from_pretrained(model).eval()
    processor = CLIPProcessor.from_pretrained(model)
    revision = getattr(clip.config, "_commit_hash", None)
    return TensorFeatures(clip), processor, revision
