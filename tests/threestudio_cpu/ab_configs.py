"""configs/sds.yaml and configs/vsd.yaml through threestudio's own launch.py on a CPU: 3 steps, validation, test.

threestudio's SD guidances assume Stable Diffusion's shapes: every render is resized to 512×512 before
the VAE, SDS decodes its one-step estimate from a 64×64 latent at every step (``decode_latents``, even
when ``use_img_loss`` is off), and VSD adds ``TimestepEmbedding(16, 1280)`` as the LoRA UNet's class
embedding to the UNet's time embedding. The tiny stack of ``threestudio_sdi.testing.tiny_sd`` has
none of these shapes: its time embedding is 128 wide (VSD fails: ``The size of tensor a (128) must
match ... (1280)``), and its VAE halves the size twice, so a 512×512 render becomes a 128×128 latent on
which the tiny UNet's first block runs self-attention over 16 384 tokens (profile_ab_stack.py: 98 % of
a UNet call, about 4 minutes a VSD step on this machine's CPU).

The A/B stack has Stable Diffusion's shapes and tiny widths: a VAE that divides by 8 (512×512 ↔
4×64×64, :data:`AB_VAE`) and a UNet on 64×64 latents with a 1280-wide time embedding whose attention
sits at 16×16 only (:data:`AB_UNET`; SD's also attends at 64×64 and 32×32, which is what costs on a
CPU). VSD's LoRA model is a copy with SD 2.1's v-prediction scheduler, like vsd.yaml's SD 2.1 (768).
"""

from __future__ import annotations

import json
import math
import pathlib
import shutil
import time
from typing import Any

from harness import CPU, CPU_RESET, REPO, Harness, steps
from scenarios import files_of

from threestudio_sdi.testing.tiny_sd import (
    TEXT_ENCODER_CONFIG,
    UNET_CONFIG,
    VAE_CONFIG,
    write_random_pipeline,
)

AB_UNET: dict[str, Any] = {
    **UNET_CONFIG,
    "sample_size": 64,
    "block_out_channels": (32, 32, 32),
    "down_block_types": ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "time_embedding_dim": 1280,
}
"""64×64 latents, attention at 16×16 only, the time-embedding width of SD's UNets (VSD's camera embedding)."""

AB_VAE: dict[str, Any] = {
    **VAE_CONFIG,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (8, 8, 16, 16),
    "sample_size": 512,
}
"""Three downsamplings, as Stable Diffusion's: 512×512×3 ↔ 4×64×64 latents."""

STEPS = 3


def ab_stack(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """The A/B stack (ε-prediction) and its v-prediction copy for VSD's LoRA model."""
    base = write_random_pipeline(folder / "tiny-ab", AB_UNET, AB_VAE, TEXT_ENCODER_CONFIG, seed=0)
    lora = folder / "tiny-ab-v"
    if not lora.exists():
        shutil.copytree(base, lora)
        scheduler = lora / "scheduler" / "scheduler_config.json"
        config = json.loads(scheduler.read_text())
        scheduler.write_text(json.dumps({**config, "prediction_type": "v_prediction"}))
    return base, lora


def _run(h: Harness, name: str, config: str, guidance: dict[str, Any]) -> dict[str, Any]:
    """``config`` on the CPU layers with ``guidance`` merged into its guidance block: 3 steps, validation, test."""
    path = h.config(
        name, CPU_RESET, CPU, {"system": {"guidance": guidance}}, steps(STEPS), base=REPO / "configs" / config
    )
    started = time.perf_counter()
    run = h.run(path)
    losses = [step["loss"] for step in run.steps]
    return {
        "system": type(run.system).__name__,
        "guidance": type(run.system.guidance).__name__,
        "steps": [step["global_step"] for step in run.steps],
        "losses": losses,
        "finite": bool(losses) and all(math.isfinite(loss) for loss in losses),
        "logged": sorted(key for key in run.steps[-1]["logged"] if key.startswith("train/loss_")),
        "geometry_params_changed": bool(run.changed_parameters("geometry.")),
        "guidance_params_changed": run.changed_parameters("guidance."),
        "files": files_of(h.trial(name)),
        "seconds": round(time.perf_counter() - started, 1),
    }


def ab_configs(h: Harness) -> dict[str, Any]:
    """sds.yaml (dreamfusion-system + stable-diffusion-guidance) and vsd.yaml (prolificdreamer-system +
    stable-diffusion-vsd-guidance with its LoRA), each 3 steps, validation at step 3, the test turntable."""
    base, lora = ab_stack(h.workdir)
    common = {"pretrained_model_name_or_path": str(base), "half_precision_weights": False}
    return {
        "sds": _run(h, "ab-sds", "sds.yaml", common),
        "vsd": _run(h, "ab-vsd", "vsd.yaml", {**common, "pretrained_model_name_or_path_lora": str(lora)}),
    }
