"""Long runs: 1,000 guidance steps on the tiny stack keep no tensor, graph or memory across steps."""

from __future__ import annotations

import gc
import resource
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")

from threestudio_sdi.classifier_free import Conditioning  # noqa: E402
from threestudio_sdi.models import load_stable_diffusion  # noqa: E402
from threestudio_sdi.score_distillation import GuidanceConfig, guidance_step  # noqa: E402
from threestudio_sdi.strategies import InversionConfig  # noqa: E402
from threestudio_sdi.testing.tiny_sd import tiny_stable_diffusion  # noqa: E402
from threestudio_sdi.timesteps import annealed_timestep  # noqa: E402

STEPS = 1000


def live_tensors() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_memory_does_not_grow_over_a_thousand_steps(tmp_path: Path) -> None:
    parts = load_stable_diffusion(tiny_stable_diffusion(tmp_path), local_files_only=True)
    calls_per_prompt = []
    encode = parts.prompts.text_encoder.forward

    def counting_forward(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls_per_prompt.append(1)
        return encode(*args, **kwargs)

    parts.prompts.text_encoder.forward = counting_forward
    # A render-like parameter (3×32×32 image), Adam on it, SDI through the VAE, as a 3D run does.
    image = torch.nn.Parameter(torch.rand(1, 3, 32, 32))
    optimizer = torch.optim.Adam([image], lr=1e-3)
    config = GuidanceConfig(preset="official", inversion=InversionConfig(n_steps=2))
    generator = torch.Generator().manual_seed(0)
    tensors, rss = {}, {}
    for step in range(STEPS):
        conditioning = Conditioning(cond=parts.prompts.encode(["a hamburger"]))
        t = annealed_timestep(step, STEPS, 0.25, 0.98, 1000)
        optimizer.zero_grad()
        out = guidance_step(
            parts.model, parts.codec.encode(image.clamp(0, 1), generator=generator), t, conditioning, config
        )
        out.loss.backward()
        optimizer.step()
        if step in (99, STEPS - 1):
            del out, conditioning
            tensors[step], rss[step] = live_tensors(), peak_rss_mib()
    print(f"live tensors {tensors}, peak RSS MiB {rss}")
    assert tensors[STEPS - 1] <= tensors[99], tensors
    assert rss[STEPS - 1] - rss[99] < 50, rss
    assert len(calls_per_prompt) == 1, "the prompt embedding must be computed once and reused"
