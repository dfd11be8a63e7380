"""ImageReward (optional): package ``image-reward``, model ``ImageReward-v1.0`` (paper Table 1)."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

from PIL import Image

from .base import MetricModel, Scorer, describe_weights, package_versions

HOW_TO_GET = (
    "Where there is internet, download ImageReward.pt and med_config.json of the hub repository "
    "THUDM/ImageReward into a folder DIR (`huggingface-cli download THUDM/ImageReward ImageReward.pt "
    "med_config.json --local-dir DIR`) and run the scorer once so that the bert-base-uncased tokenizer "
    "it needs is in the Hugging Face cache; copy DIR and the cache here (HF_HOME)."
)


class ImageRewardScorer(Scorer):
    """``ImageReward.load(...).score(prompt, view)``, averaged over the views."""

    name = "imagereward"
    metrics = {"imagereward": "ImageReward ↑"}
    option = "--imagereward-model"
    default_model = "ImageReward-v1.0"
    model_help = "ImageReward-v1.0 (download), or a folder with ImageReward.pt and med_config.json"

    def load(self) -> MetricModel:
        try:
            import ImageReward as reward
        except ImportError:
            raise self.unavailable(
                "the package image-reward is not installed", "Install it: pip install image-reward."
            ) from None
        folder = pathlib.Path(self.model).expanduser()
        options: dict[str, Any] = {"device": self.device}
        name = self.model
        if folder.is_dir():
            name, options["med_config"] = str(folder / "ImageReward.pt"), str(folder / "med_config.json")
        try:
            self.reward = reward.load(name, **options)
        except Exception as error:  # noqa: BLE001 - any loading failure becomes advice, not a traceback
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            raise self.unavailable(f"{type(error).__name__}: {reason}", HOW_TO_GET) from None
        label, details = describe_weights(self.model)
        return MetricModel(label, {**details, "packages": package_versions(["image-reward", "torch"])})

    def score(self, views: Sequence[Image.Image], prompt: str) -> dict[str, tuple[float, float | None]]:
        import numpy as np
        import torch

        with torch.no_grad():
            values = [float(self.reward.score(prompt, view)) for view in views]
        return {"imagereward": (float(np.mean(values)), float(np.std(values)))}
