"""HPSv2 (optional): package ``hpsv2``, the HPS v2.1 checkpoint on an open_clip ViT-H-14.

The model is built without pretrained CLIP weights (the HPS checkpoint holds all of them), so only
the checkpoint file is needed: a local file, or ``HPS_v2.1_compressed.pt`` of the hub repository
``xswu/HPSv2`` from the Hugging Face cache. Score = image · text features of the checkpoint's model,
as ``hpsv2.score`` computes it.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from PIL import Image

from .base import MetricModel, Scorer, describe_weights, package_versions

CHECKPOINT = "HPS_v2.1_compressed.pt"
HOW_TO_GET = (
    f"Where there is internet, download it (`huggingface-cli download xswu/HPSv2 {CHECKPOINT} --local-dir DIR`) "
    f"and copy DIR/{CHECKPOINT} here."
)


class HpsV2Scorer(Scorer):
    """Human Preference Score v2.1, averaged over the views."""

    name = "hpsv2"
    metrics = {"hpsv2": "HPSv2 ↑"}
    option = "--hpsv2-model"
    default_model = f"xswu/HPSv2/{CHECKPOINT}"
    model_help = f"the HPS checkpoint: a local .pt file, or xswu/HPSv2/{CHECKPOINT} from the hub cache"

    def load(self) -> MetricModel:
        try:
            import torch
            from hpsv2.src.open_clip import create_model_and_transforms, get_tokenizer
        except ImportError:
            raise self.unavailable(
                "the package hpsv2 is not installed", "Install it: pip install hpsv2."
            ) from None
        path = pathlib.Path(self.model).expanduser()
        try:
            if not path.is_file():
                from huggingface_hub import hf_hub_download

                repository, _, filename = self.model.rpartition("/")
                path = pathlib.Path(hf_hub_download(repository, filename))
            model, _, self.preprocess = create_model_and_transforms(
                "ViT-H-14", None, device=self.device, output_dict=True
            )
            model.load_state_dict(torch.load(path, map_location=self.device)["state_dict"])
        except Exception as error:  # noqa: BLE001 - any loading failure becomes advice, not a traceback
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            raise self.unavailable(f"{type(error).__name__}: {reason}", HOW_TO_GET) from None
        self.model_ = model.eval()
        self.tokenizer = get_tokenizer("ViT-H-14")
        label, details = describe_weights(str(path))
        return MetricModel(label, {**details, "packages": package_versions(["hpsv2", "torch"])})

    def score(self, views: Sequence[Image.Image], prompt: str) -> dict[str, tuple[float, float | None]]:
        import torch

        with torch.no_grad():
            images = torch.stack([self.preprocess(view) for view in views]).to(self.device)
            outputs = self.model_(images, self.tokenizer([prompt]).to(self.device))
            values = (outputs["image_features"] @ outputs["text_features"].T)[:, 0]
        return {"hpsv2": (float(values.mean()), float(values.std(unbiased=False)))}
