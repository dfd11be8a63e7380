"""CLIP-IQA quality / sharpness / real with torchmetrics ``CLIPImageQualityAssessment``.

The paper's prompt pairs are torchmetrics' built-in ``quality`` ("Good photo." / "Bad photo."),
``sharpness`` ("Sharp photo." / "Blurry photo.") and ``real`` ("Real photo." / "Abstract photo.");
values are the probability of the first prompt of each pair, in percent.

Views go in as 0–255 floats. ``data_range`` is 255 for ``clip_iqa`` (torchmetrics normalises
``images / data_range`` itself) but 1 for a transformers CLIP: there torchmetrics hands
``images / data_range`` to the CLIP processor, which rescales by 1/255 once more, so it must receive
0–255 values (with ``data_range=255`` every image would reach the model as a near-constant).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from .base import MetricModel, Scorer, describe_weights, package_versions
from .clip import clip_unavailable
from .images import to_tensor

PROMPTS = ("quality", "sharpness", "real")


class ClipIqaScorer(Scorer):
    """torchmetrics ``CLIPImageQualityAssessment`` with the quality, sharpness and real prompt pairs."""

    name = "clip-iqa"
    metrics = {
        "clipiqa_quality": "CLIP-IQA quality %",
        "clipiqa_sharpness": "CLIP-IQA sharpness %",
        "clipiqa_real": "CLIP-IQA real %",
    }
    option = "--clip-iqa-model"
    default_model = "clip_iqa"
    model_help = (
        "clip_iqa (torchmetrics' default: the CLIP-IQA weights of piq, `pip install piq`) "
        "or a transformers CLIP: hub id or local folder"
    )

    def load(self) -> MetricModel:
        from torchmetrics.multimodal import CLIPImageQualityAssessment

        prompt_pairs = {key: _prompt_pair(key) for key in PROMPTS}
        if self.model == "clip_iqa":
            try:
                import piq  # noqa: F401
            except ImportError:
                raise self.unavailable(
                    "the package piq is not installed",
                    "Install it (`pip install piq`; its weights download on first use and need internet "
                    "once), or use a transformers CLIP instead: a hub id or a local folder.",
                ) from None
            try:
                metric = CLIPImageQualityAssessment(
                    model_name_or_path="clip_iqa", data_range=255.0, prompts=PROMPTS
                )
            except Exception as error:  # noqa: BLE001
                raise clip_unavailable(self, error) from None
            label = "clip_iqa (piq CLIP-IQA weights)"
            details: dict[str, Any] = {
                "source": "piq",
                "packages": package_versions(["torchmetrics", "piq", "torch"]),
            }
        else:
            from .clip_model import load_clip

            try:
                model, processor, revision = load_clip(self.model)
            except Exception as error:  # noqa: BLE001
                raise clip_unavailable(self, error) from None
            metric = CLIPImageQualityAssessment(
                model_name_or_path=lambda: (model, processor), data_range=1.0, prompts=PROMPTS
            )
            label, details = describe_weights(self.model, revision)
            details["packages"] = package_versions(["torchmetrics", "transformers", "torch"])
        self.metric: Any = metric.to(self.device)
        return MetricModel(label, {**details, "prompt_pairs": prompt_pairs})

    def score(self, views: Sequence[Image.Image], prompt: str) -> dict[str, tuple[float, float | None]]:
        import torch

        self.metric.reset()
        self.metric.update(torch.stack([to_tensor(view, self.device) for view in views]).float())
        probabilities = self.metric.compute()
        return {
            f"clipiqa_{key}": (
                100 * float(probabilities[key].mean()),
                100 * float(probabilities[key].std(unbiased=False)),
            )
            for key in PROMPTS
        }


def _prompt_pair(key: str) -> list[str]:
    from torchmetrics.functional.multimodal.clip_iqa import _clip_iqa_format_prompts

    return _clip_iqa_format_prompts((key,))[0]
