"""A Stable Diffusion 2.1-base-size stack with random weights, built offline from the published configs.

:func:`sd21_random_stable_diffusion` writes a folder that ``StableDiffusionPipeline.from_pretrained(path,
local_files_only=True)`` (and so :func:`~threestudio_sdi.models.stable_diffusion.load_stable_diffusion`
and threestudio's guidance and prompt processor) load exactly like a hub snapshot of
``stabilityai/stable-diffusion-2-1-base``: the UNet and the VAE of its published configs (4×64×64
latents, 512×512 renders, cross-attention dim 1024, linear projection) and its DDIM scheduler config,
with random weights. Nothing is downloaded. It is for measuring cost at real size; outputs mean nothing.

The text side is a stand-in: the tiny byte-level tokenizer of :mod:`threestudio_sdi.testing.tiny_sd` and a
one-layer CLIP text encoder of width 1024, so that prompt embeddings have SD 2.1's shape [B, 77, 1024]
(the real encoder is a 23-layer OpenCLIP ViT-H). A guidance step never runs the text encoder: prompt
embeddings are computed once per prompt, outside the step.

Weights are stored in float16 (1.9 GB instead of 3.8 GB); load them with the dtype you want to run in.
A folder written before with the same seed and configs is reused (see :data:`MARKER`).

diffusers and transformers are imported when the function runs, not when this module is imported.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

import torch

from ..errors import check_int
from .tiny_sd import MAX_PROMPT_TOKENS, SCHEDULER_CONFIG, write_random_pipeline

CROSS_ATTENTION_DIM = 1024
LATENT_SIZE = 64
IMAGE_SIZE = 512

UNET_CONFIG: dict[str, Any] = {
    "sample_size": LATENT_SIZE,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": CROSS_ATTENTION_DIM,
    "attention_head_dim": (5, 10, 20, 20),
    "use_linear_projection": True,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}
"""``unet/config.json`` of stabilityai/stable-diffusion-2-1-base (865.9 M parameters)."""

VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": IMAGE_SIZE,
    "scaling_factor": 0.18215,
}
"""``vae/config.json`` of stabilityai/stable-diffusion-2-1-base (83.7 M parameters)."""

TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "hidden_size": CROSS_ATTENTION_DIM,
    "intermediate_size": CROSS_ATTENTION_DIM,
    "num_hidden_layers": 1,
    "num_attention_heads": 16,
    "max_position_embeddings": MAX_PROMPT_TOKENS,
    "projection_dim": CROSS_ATTENTION_DIM,
    "hidden_act": "gelu",
}
"""A one-layer stand-in CLIP text encoder with SD 2.1's embedding width (module docstring)."""

MARKER = "sd21-random.json"
"""File in the folder recording the seed and a digest of the configs it was built from."""


def _fingerprint(seed: int) -> dict[str, Any]:
    configs = json.dumps([UNET_CONFIG, VAE_CONFIG, TEXT_ENCODER_CONFIG, SCHEDULER_CONFIG], sort_keys=True)
    return {"seed": seed, "configs_sha256": hashlib.sha256(configs.encode()).hexdigest()}


def sd21_random_stable_diffusion(path: str | pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Write (or reuse) an SD 2.1-base-size pipeline folder with random float16 weights at ``path``.

    Args:
        path: output folder (created if missing), in the layout of a hub snapshot. A folder holding a
            :data:`MARKER` with the same seed and configs is returned as it is.
        seed: seed of the random weights; the global torch RNG is left untouched.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    seed = check_int("seed", seed)
    path = pathlib.Path(path)
    marker = path / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == _fingerprint(seed):
        return path
    write_random_pipeline(path, UNET_CONFIG, VAE_CONFIG, TEXT_ENCODER_CONFIG, seed=seed, dtype=torch.float16)
    marker.write_text(json.dumps(_fingerprint(seed)))
    return path
