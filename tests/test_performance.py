"""Execution paths that keep the math: same-math variants, the GPU path's code on the CPU, the SD 2.1 configs.

* same-math paths (per-branch UNet calls, inference mode, channels-last, classic attention) give the
  plain path's target within 1e-4 relative in fp32 (equivalent float32 computations that batch
  differently differ by ~1e-5 here);
* :class:`~threestudio_sdi.models.accelerated.AcceleratedUNet`: CUDA-graph capture is skipped on a CPU
  with its reason; the compile path runs on the tiny UNet; the capture bookkeeping (static buffers, one
  capture per input signature, copies out) runs with the eager recorder and reproduces the plain step
  exactly; on a CUDA device (skipped elsewhere) a captured step matches the eager one in float16;
* the SD 2.1-base configs build the published parameter counts in the installed diffusers, and the
  random-weight folder is reused only when its seed and configs match.
No test asserts a wall time.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from typing import Any

import pytest
import torch

from threestudio_sdi.classifier_free import Conditioning
from threestudio_sdi.experimental.strategies import ResearchInversionNoise
from threestudio_sdi.models.accelerated import (
    AcceleratedUNet,
    Acceleration,
    accelerate,
    cuda_graphs_unavailable,
    eager_recorder,
)
from threestudio_sdi.score_distillation import GuidanceConfig, GuidanceOutput, guidance_step
from threestudio_sdi.testing.variants import InferenceModeModel, PerBranchModel

FP32_TOLERANCE = 1e-4
OFFICIAL = GuidanceConfig(preset="official")


@pytest.fixture(scope="module")
def tiny_parts(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from threestudio_sdi.models.stable_diffusion import load_stable_diffusion
    from threestudio_sdi.testing.tiny_sd import tiny_stable_diffusion

    path = tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd-performance"), seed=0)
    return load_stable_diffusion(path, device="cpu", half_precision=False, local_files_only=True)


def perp_neg(parts: Any, batch: int = 1) -> Conditioning:
    embeddings = parts.prompts.encode(["a cat, side view", "", "a cat, front view", "a cat, back view"])
    cond, uncond, front, back = (e.unsqueeze(0).expand(batch, -1, -1) for e in embeddings)
    weights = torch.tensor([[-0.6, -0.3]] * batch)
    return Conditioning(cond=cond, uncond=uncond, negatives=[front, back], negative_weights=weights)


def step(
    denoiser: Any, parts: Any, t: int = 700, config: GuidanceConfig = OFFICIAL, batch: int = 1
) -> GuidanceOutput:
    z0 = torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return guidance_step(
        denoiser, z0, t, perp_neg(parts, batch), config, generator=torch.Generator().manual_seed(5)
    )


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def with_unet(parts: Any, unet: Any) -> Any:
    """A shallow copy of the tiny DiffusersModel that calls ``unet``."""
    model = copy.copy(parts.model)
    model.unet = unet
    return model


# ----------------------------------------------------------------------------- same math
@pytest.mark.parametrize("path", ["per-branch", "inference-mode", "channels-last", "no-SDPA"])
def test_same_math_paths_match_the_plain_path(tiny_parts: Any, path: str) -> None:
    model, unet = tiny_parts.model, tiny_parts.model.unet
    plain = step(model, tiny_parts)
    processors = dict(unet.attn_processors)
    try:
        if path == "per-branch":
            calls = model.unet_calls
            other = step(PerBranchModel(model), tiny_parts)
            assert model.unet_calls - calls == 4 * other.model_evaluations  # one call per Perp-Neg branch
        elif path == "inference-mode":
            other = step(InferenceModeModel(model), tiny_parts)
        elif path == "channels-last":
            unet.to(memory_format=torch.channels_last)
            other = step(model, tiny_parts)
        else:
            from diffusers.models.attention_processor import AttnProcessor

            unet.set_attn_processor(AttnProcessor())
            other = step(model, tiny_parts)
    finally:
        unet.to(memory_format=torch.contiguous_format)
        unet.set_attn_processor(processors)
    assert other.model_evaluations == plain.model_evaluations
    for name in ("target", "noise", "noise_pred"):
        assert relative(getattr(other, name), getattr(plain, name)) < FP32_TOLERANCE, name


def test_inference_mode_loss_still_backpropagates(tiny_parts: Any) -> None:
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    out = guidance_step(
        InferenceModeModel(tiny_parts.model), z0, 500, perp_neg(tiny_parts), GuidanceConfig(),
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    out.loss.backward()
    assert z0.grad is not None and z0.grad.isfinite().all()


# ----------------------------------------------------------------------------- the GPU path on a CPU
def test_cuda_graph_capture_is_skipped_on_the_cpu_with_its_reason(tiny_parts: Any) -> None:
    unet = AcceleratedUNet(copy.deepcopy(tiny_parts.model.unet), Acceleration(compile=False))
    assert unet.skipped == {"cuda_graphs": "CUDA graphs need a CUDA device; the UNet is on cpu"}
    assert unet.applied == {"channels_last": True, "sdpa": True}
    assert cuda_graphs_unavailable(torch.device("cpu")) == unet.skipped["cuda_graphs"]
    plain = step(tiny_parts.model, tiny_parts)
    accelerated = step(with_unet(tiny_parts, unet), tiny_parts)
    assert not unet.captures  # every call ran uncaptured
    assert relative(accelerated.target, plain.target) < FP32_TOLERANCE
    assert unet.config is unet.inner.config and unet.dtype == torch.float32


@pytest.mark.skipif(
    not (shutil.which("c++") or shutil.which("g++")),
    reason="torch.compile's inductor needs a C++ compiler on a CPU",
)
def test_compile_path_runs_on_the_tiny_unet(tiny_parts: Any) -> None:
    """torch.compile of the whole tiny UNet (inductor, as on a GPU), inside a guidance step."""
    torch._dynamo.reset()
    unet = AcceleratedUNet(
        copy.deepcopy(tiny_parts.model.unet), Acceleration(channels_last=False, cuda_graphs=False)
    )
    assert unet.applied == {"sdpa": True, "compile": True} and not unet.skipped
    assert isinstance(unet.forward, torch._dynamo.eval_frame.OptimizedModule)
    plain = step(tiny_parts.model, tiny_parts, t=980)
    compiled = step(with_unet(tiny_parts, unet), tiny_parts, t=980)
    assert compiled.model_evaluations == plain.model_evaluations == 12
    for name in ("target", "noise", "noise_pred"):
        assert relative(getattr(compiled, name), getattr(plain, name)) < FP32_TOLERANCE, name


def test_one_capture_serves_the_whole_step_and_reproduces_it(tiny_parts: Any) -> None:
    """Eager recorder: static buffers in, replay, copy out. Every hop and the prediction share one
    signature; a second order inversion (research: it keeps the previous hop's ε̂) sees no aliasing."""
    unet = AcceleratedUNet(
        copy.deepcopy(tiny_parts.model.unet),
        Acceleration(channels_last=False, sdpa=False, compile=False),
        recorder=eager_recorder,
    )
    assert unet.applied == {"cuda_graphs": True} and not unet.skipped
    model = with_unet(tiny_parts, unet)
    for config in (OFFICIAL, replace(OFFICIAL, noise=ResearchInversionNoise(order=2))):
        plain, captured = (
            step(tiny_parts.model, tiny_parts, 980, config),
            step(model, tiny_parts, 980, config),
        )
        assert captured.model_evaluations == 12
        for name in ("target", "noise", "noise_pred", "x_noisy"):
            assert torch.equal(getattr(captured, name), getattr(plain, name)), name
    assert len(unet.captures) == 1
    two_views = step(model, tiny_parts, 500, batch=2)
    assert len(unet.captures) == 2 and two_views.target.shape == (2, 4, 8, 8)


def test_calls_with_autograd_or_other_arguments_run_uncaptured(tiny_parts: Any) -> None:
    unet = AcceleratedUNet(
        copy.deepcopy(tiny_parts.model.unet),
        Acceleration(channels_last=False, sdpa=False, compile=False),
        recorder=eager_recorder,
    )
    sample = torch.randn(2, 4, 8, 8)
    hidden = torch.randn(2, 77, 32)
    timestep = torch.tensor([500.0, 500.0])  # a float timestep, as threestudio's guidance passes it
    with torch.enable_grad():
        unet(sample, timestep, encoder_hidden_states=hidden)
    with torch.no_grad():
        unet(sample, timestep, encoder_hidden_states=hidden, return_dict=True)
        assert not unet.captures
        out = unet(sample, timestep, encoder_hidden_states=hidden).sample
        again = unet(sample, timestep, encoder_hidden_states=hidden).sample
        expected = tiny_parts.model.unet(sample, timestep, encoder_hidden_states=hidden).sample
    assert len(unet.captures) == 1
    assert torch.equal(out, expected) and torch.equal(again, expected) and out is not again


def test_accelerate_replaces_the_unet_once(tiny_parts: Any) -> None:
    model = with_unet(tiny_parts, copy.deepcopy(tiny_parts.model.unet))
    inner = model.unet
    wrapper = accelerate(model, Acceleration(compile=False))
    assert model.unet is wrapper and wrapper.inner is inner
    with pytest.raises(ValueError, match="accelerated already"):
        accelerate(model)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"compile_mode": "reduce-overhead"}, "captures CUDA graphs itself"),
        ({"warmup_calls": 0}, "warmup_calls"),
        ({"compile": "yes"}, "acceleration.compile"),
    ],
)
def test_bad_acceleration_options_name_the_setting(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Acceleration(**options)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-graph capture needs a CUDA device")
def test_cuda_graphs_match_the_eager_step_in_float16(tiny_parts: Any) -> None:
    from threestudio_sdi.models.diffusers_model import DiffusersModel
    from threestudio_sdi.schedule import STABLE_DIFFUSION_SCHEDULER_CONFIG

    unet = copy.deepcopy(tiny_parts.model.unet)
    uncond = tiny_parts.model.uncond_embeddings
    eager = DiffusersModel(unet, STABLE_DIFFUSION_SCHEDULER_CONFIG, uncond, device="cuda")
    fast = copy.copy(eager)
    fast.unet = AcceleratedUNet(copy.deepcopy(eager.unet), Acceleration(compile=False))
    assert fast.unet.applied["cuda_graphs"]
    conditioning = perp_neg(tiny_parts)
    conditioning = replace(
        conditioning,
        cond=conditioning.cond.cuda(),
        uncond=conditioning.uncond.cuda(),
        negatives=[n.cuda() for n in conditioning.negatives],
    )
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).cuda()
    outs = [
        guidance_step(m, z0, 700, conditioning, OFFICIAL, generator=torch.Generator("cuda").manual_seed(5))
        for m in (eager, fast)
    ]
    assert len(fast.unet.captures) == 1
    assert relative(outs[1].target, outs[0].target) < 1e-2


# ----------------------------------------------------------------------------- SD 2.1-base size
def test_sd21_configs_have_the_published_sizes() -> None:
    diffusers = pytest.importorskip("diffusers")
    from threestudio_sdi.testing.sd21_random import IMAGE_SIZE, LATENT_SIZE, UNET_CONFIG, VAE_CONFIG

    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**UNET_CONFIG)
        vae = diffusers.AutoencoderKL(**VAE_CONFIG)
    assert sum(p.numel() for p in unet.parameters()) == 865_910_724
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    assert unet.config.cross_attention_dim == 1024 and unet.config.use_linear_projection
    assert LATENT_SIZE * 2 ** (len(vae.config.block_out_channels) - 1) == IMAGE_SIZE == 512


def test_sd21_folder_is_reused_only_when_seed_and_configs_match(tmp_path: Any, monkeypatch: Any) -> None:
    pytest.importorskip("transformers")
    from threestudio_sdi.testing import sd21_random as sd21

    builds = []
    monkeypatch.setattr(
        sd21, "write_random_pipeline", lambda path, *configs, seed, dtype: builds.append(seed)
    )
    assert sd21.sd21_random_stable_diffusion(tmp_path, seed=3) == tmp_path and builds == [3]
    assert json.loads((tmp_path / sd21.MARKER).read_text())["seed"] == 3
    sd21.sd21_random_stable_diffusion(tmp_path, seed=3)
    assert builds == [3]  # reused
    sd21.sd21_random_stable_diffusion(tmp_path, seed=4)
    assert builds == [3, 4]  # another seed: rebuilt
