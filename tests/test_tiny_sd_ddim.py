"""On the tiny Stable Diffusion stack: κ-cache distillation equals diffusers' own DDIMScheduler loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from threestudio_sdi.experimental.lab import LabRun, distill_2d, lab_timesteps, sample_reference_2d  # noqa: E402
from threestudio_sdi.models import load_stable_diffusion  # noqa: E402
from threestudio_sdi.score_distillation import GuidanceConfig  # noqa: E402
from threestudio_sdi.testing.tiny_sd import tiny_stable_diffusion  # noqa: E402


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_stable_diffusion(Path(tmp_path_factory.mktemp("tiny-sd")))


@pytest.fixture(scope="module")
def parts(path: Path):  # noqa: ANN201
    return load_stable_diffusion(path, local_files_only=True)


def _scheduler(path: Path, steps: int):  # noqa: ANN202
    scheduler = diffusers.DDIMScheduler.from_pretrained(path, subfolder="scheduler")
    scheduler.set_timesteps(steps)
    return scheduler


def _diffusers_ddim(scheduler, parts, x_T: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: ANN001
    """The reference: diffusers' DDIMScheduler stepping the same UNet with standard CFG."""
    unet = parts.model.unet
    uncond = parts.model.uncond_embeddings.expand(x_T.shape[0], -1, -1)
    x = x_T
    for t in scheduler.timesteps:
        with torch.no_grad():
            eps = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        eps_u, eps_c = eps.chunk(2)
        output = scheduler.step(eps_u + scale * (eps_c - eps_u), t, x)
        x = output.prev_sample
    return output.pred_original_sample


@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_kappa_cache_equals_diffusers_ddim(path: Path, parts, scale: float) -> None:  # noqa: ANN001
    steps, batch, seed = 20, 2, 5
    cond = parts.prompts.encode(["a hamburger"]).expand(batch, -1, -1)
    shape = (
        parts.model.unet.config.in_channels,
        parts.model.unet.config.sample_size,
        parts.model.unet.config.sample_size,
    )
    x_T = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed))
    reference = _diffusers_ddim(_scheduler(path, steps), parts, x_T, cond, scale)
    scheduler = _scheduler(path, steps)
    assert lab_timesteps(steps, 1000) == [int(t) for t in scheduler.timesteps]
    run = LabRun(steps=steps, seed=seed, batch=batch, cond=cond, shape=shape)
    config = GuidanceConfig(noise="cached", guidance_scale=scale)
    cached = distill_2d(parts.model, config, run, disable=True)
    sampled = sample_reference_2d(parts.model, config, run, disable=True)
    scale_of = reference.abs().max()
    assert ((cached - reference).abs().max() / scale_of) < 1e-4
    assert ((sampled - reference).abs().max() / scale_of) < 1e-4
