"""Config layers that run threestudio configs on a CPU in seconds, with a tiny offline Stable Diffusion.

OmegaConf merges them over a config in order: :data:`CPU_RESET` clears the blocks that name CUDA-only
components, :data:`CPU` sets 32×32 renders, one validation and one test view, a pure-torch geometry,
a solid background, importance sampling with 16 + 8 samples per ray and precision 32;
:func:`sdi_guidance` points ``sdi-guidance`` at a tiny model and :func:`steps` sets the run's length.
:func:`write_config` merges and saves. Used by the integration tests and ``sdi-doctor``'s smoke run.
"""

from __future__ import annotations

import pathlib
from typing import Any

PROMPT = "a DSLR photo of a hamburger"

PURE_TORCH_FIELD = {
    "pos_encoding_config": {"otype": "ProgressiveBandFrequency", "n_frequencies": 4},
    "mlp_network_config": {
        "otype": "VanillaMLP",
        "activation": "ReLU",
        "output_activation": "none",
        "n_neurons": 16,
        "n_hidden_layers": 1,
    },
}
"""A geometry network without tiny-cuda-nn: threestudio's pure-torch encoding and MLP."""

CPU_RESET = {
    "system": {"background": None, "geometry": {"pos_encoding_config": None, "mlp_network_config": None}}
}
"""Blocks that name CUDA-only components are cleared first (an OmegaConf merge keeps old keys, and
threestudio's configs reject unknown ones), then set anew by :data:`CPU`."""

CPU = {
    "use_timestamp": False,
    "data": {
        "width": 32,
        "height": 32,
        "eval_width": 32,
        "eval_height": 32,
        "n_val_views": 1,
        "n_test_views": 1,
    },
    "system": {
        "geometry": PURE_TORCH_FIELD,
        "background_type": "solid-color-background",
        "background": {"learned": True},
        "renderer": {
            "estimator": "importance",
            "num_samples_per_ray": 16,
            "num_samples_per_ray_importance": 8,
            "near_plane": 0.1,
            "far_plane": 4.0,
        },
        "prompt_processor": {"prompt": PROMPT, "spawn": False},
    },
    "trainer": {"log_every_n_steps": 1, "num_sanity_val_steps": 0, "precision": 32},
}
"""32×32 renders, 16 + 8 samples per ray, importance sampling, a solid background, precision 32."""


def sdi_guidance(tiny: pathlib.Path) -> dict[str, Any]:
    """The guidance block that points sdi.yaml at the tiny model (the prompt processor follows it)."""
    return {
        "guidance": {
            "pretrained_model_name_or_path": str(tiny),
            "local_files_only": True,
            "half_precision_weights": False,
            "seed": 0,
        }
    }


def steps(
    max_steps: int, val_every: int | None = None, checkpoint_every: int | None = None
) -> dict[str, Any]:
    """``max_steps`` training steps, validation every ``val_every`` (default: at the end), checkpoints."""
    return {
        "trainer": {"max_steps": max_steps, "val_check_interval": val_every or max_steps},
        "checkpoint": {
            "save_last": True,
            "save_top_k": -1,
            "every_n_train_steps": checkpoint_every or max_steps,
        },
    }


def write_config(path: pathlib.Path, base: pathlib.Path, *layers: dict[str, Any]) -> pathlib.Path:
    """``base`` merged with ``layers`` (OmegaConf), saved unresolved to ``path`` (threestudio's
    ``load_config`` then resolves it as it resolves a user's config); returns ``path``."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.load(base), *(OmegaConf.create(layer) for layer in layers))
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(merged, path)
    return path
