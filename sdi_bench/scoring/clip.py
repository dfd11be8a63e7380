"""CLIP score (text-image alignment) with torchmetrics ``CLIPScore``; the paper uses ViT-B/32."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from .base import MetricModel, Scorer, describe_weights, package_versions
from .images import to_tensor

HOW_TO_GET_CLIP = (
    "Without internet, save the weights where there is some — `huggingface-cli download {model} "
    "--local-dir DIR`, or CLIPModel / CLIPProcessor.from_pretrained('{model}').save_pretrained(DIR) — "
    "and copy DIR here (or set HF_HOME to a cache that holds them)."
)


def clip_unavailable(scorer: Scorer, error: Exception) -> Exception:
    """The ScorerUnavailable for a CLIP checkpoint that did not load."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return scorer.unavailable(f"{type(error).__name__}: {reason}", HOW_TO_GET_CLIP.format(model=scorer.model))


class ClipScoreScorer(Scorer):
    """torchmetrics ``CLIPScore``: max(100 · mean over the views of cos(image, prompt), 0)."""

    name = "clip"
    metrics = {"clip": "CLIP ↑"}
    option = "--clip-model"
    default_model = "openai/clip-vit-base-patch32"
    model_help = "a transformers CLIP: hub id or local folder (paper: openai/clip-vit-base-patch32)"

    def load(self) -> MetricModel:
        from torchmetrics.multimodal.clip_score import CLIPScore

        from .clip_model import load_clip

        try:
            model, processor, revision = load_clip(self.model)
        except Exception as error:  # noqa: BLE001 - any loading failure becomes advice, not a traceback
            raise clip_unavailable(self, error) from None
        self.metric: Any = CLIPScore(model_name_or_path=lambda: (model, processor)).to(self.device)
        label, details = describe_weights(self.model, revision)
        return MetricModel(
            label, {**details, "packages": package_versions(["torchmetrics", "transformers", "torch"])}
        )

    def score(self, views: Sequence[Image.Image], prompt: str) -> dict[str, tuple[float, float | None]]:
        """torchmetrics' value over all views at once (``CLIPScore`` keeps no per-view values: no spread)."""
        import torch

        self.metric.reset()
        with torch.no_grad():
            self.metric.update([to_tensor(view, self.device) for view in views], [prompt] * len(views))
            return {"clip": (float(self.metric.compute()), None)}
