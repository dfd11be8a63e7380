"""Denoisers that follow :mod:`threestudio_sdi.denoiser`.

Analytic models with exact scores (:class:`GaussianModel`, :class:`GaussianMixtureModel`) are pure
torch; the diffusers-backed ones (:class:`DiffusersModel`, :func:`tiny_stable_diffusion`,
:func:`load_stable_diffusion` and its :class:`LatentCodec` / :class:`PromptEncoder`) import diffusers
only when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..denoiser import PREDICTION_TYPES, Denoiser

_LAZY = {
    "GaussianModel": ".gaussian",
    "GaussianMixtureModel": ".mixture",
    "DiffusersModel": ".diffusers_model",
    "tiny_stable_diffusion": ".tiny",
    "load_stable_diffusion": ".stable_diffusion",
    "StableDiffusionParts": ".stable_diffusion",
    "LatentCodec": ".stable_diffusion",
    "PromptEncoder": ".stable_diffusion",
    "DEFAULT_MODEL_ID": ".model_source",
    "sd21_random_stable_diffusion": ".sd21",
    "Acceleration": ".accelerated",
    "AcceleratedUNet": ".accelerated",
    "accelerate": ".accelerated",
}

__all__ = ["PREDICTION_TYPES", "Denoiser", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
