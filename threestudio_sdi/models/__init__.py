"""Stable Diffusion as a denoiser of :mod:`threestudio_sdi.denoiser`: :class:`DiffusersModel`,
:func:`load_stable_diffusion` with its :class:`LatentCodec` / :class:`PromptEncoder`, the model source
and its errors, and the GPU path (:func:`accelerate`). diffusers is imported only when first used.
Analytic models and random stacks for tests are in :mod:`threestudio_sdi.testing`.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..denoiser import PREDICTION_TYPES, Denoiser

_LAZY = {
    "DiffusersModel": ".diffusers_model",
    "load_stable_diffusion": ".stable_diffusion",
    "StableDiffusionParts": ".stable_diffusion",
    "LatentCodec": ".stable_diffusion",
    "PromptEncoder": ".stable_diffusion",
    "DEFAULT_MODEL_ID": ".model_source",
    "Acceleration": ".accelerated",
    "AcceleratedUNet": ".accelerated",
    "accelerate": ".accelerated",
}

__all__ = ["PREDICTION_TYPES", "Denoiser", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
