"""Fewer-evaluation research options (``research-inversion``: counts, grids, order).

* the options are off by default, where ``research-inversion`` equals ``inversion``, and the defaults
  are bit-identical to before the options existed (golden digests of a test-local model, recorded with
  the code before the options were added, and kept through the move of the options to
  ``threestudio_sdi.experimental``);
* evaluation counts as documented in ``threestudio_sdi.score_distillation``;
* the second-order inversion is second order (error ratio ~4 per halving away from the stiff start).
Same-math execution paths (per-branch, inference mode, channels-last, classic attention, the GPU path)
are tested in ``test_performance.py``. No test asserts a wall time.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import Tensor

from threestudio_sdi.classifier_free import Conditioning
from threestudio_sdi.ddim import ddim_invert
from threestudio_sdi.experimental.lab.distill import METHODS, LabRun, distill_2d
from threestudio_sdi.experimental.strategies import ResearchInversionNoise
from threestudio_sdi.experimental.strategies.research_inversion import (
    adaptive_inversion_steps,
    multistep_invert,
    research_timesteps,
)
from threestudio_sdi.presets import get_preset
from threestudio_sdi.schedule import NoiseSchedule
from threestudio_sdi.score_distillation import GuidanceConfig, guidance_step
from threestudio_sdi.strategies import InversionConfig
from threestudio_sdi.testing.gaussian import GaussianModel

NO_OVERSHOOT = InversionConfig(overshoot=False)


class LocalModel:
    """Exact ε of a class-conditional diagonal Gaussian, defined here so that no other file changes it.

    x0 | c ~ N(μ_c, diag(v)), μ_c = 0.1·c (c = None: μ = 0), v_k = k^(−1.5) on 16 coordinates.
    """

    prediction_type = "epsilon"
    shape = (1, 4, 4)
    dtype = torch.float64

    def __init__(self) -> None:
        self.schedule = NoiseSchedule.stable_diffusion()
        self.alphas_cumprod = self.schedule.alphas_cumprod
        self.variances = torch.arange(1, 17, dtype=torch.float64).pow(-1.5).reshape(1, 1, 4, 4)

    def predict_noise(self, x_t: Tensor, t: int, cond: Any = None) -> Tensor:
        alpha = self.schedule.alpha_bar(t)
        mean = 0.0 if cond is None else 0.1 * torch.as_tensor(cond, dtype=torch.float64).reshape(-1, 1, 1, 1)
        return (1 - alpha).sqrt() * (x_t - alpha.sqrt() * mean) / (alpha * self.variances + 1 - alpha)


def digest(tensors: list[Tensor]) -> str:
    hasher = hashlib.sha256()
    for tensor in tensors:
        hasher.update(tensor.detach().to(torch.float64).contiguous().numpy().tobytes())
    return hasher.hexdigest()[:16]


def default_outputs(model: LocalModel) -> dict[str, list[Tensor]]:
    """Outputs of default configs: guidance steps of every preset and noise, and lab runs."""
    z0 = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    conditioning = Conditioning(cond=torch.tensor([0, 1, 2]))
    outputs = {}
    for preset in ("paper", "official"):
        for noise in ("random", "inversion", "uncond-inversion"):
            tensors = []
            for t in (980, 500, 250, 37):
                out = guidance_step(
                    model, z0, t, conditioning, GuidanceConfig(preset=preset, noise=noise),
                    generator=torch.Generator().manual_seed(t),
                )  # fmt: skip
                tensors += [
                    out.target,
                    out.noise,
                    out.loss,
                    torch.tensor([out.t_prime, out.model_evaluations]),
                ]
            outputs[f"{preset}-{noise}"] = tensors
        for method in ("sdi", "ism", "sds"):
            config = GuidanceConfig(preset=preset, noise=METHODS[method])
            x = distill_2d(
                model, config, LabRun(steps=8, batch=3, cond=torch.tensor([0, 1, 2])), disable=True
            )
            outputs[f"lab-{preset}-{method}"] = [x]
    return outputs


GOLDEN = {  # recorded with the code before the options were added (git HEAD 08c21a7)
    "paper-random": "81250a3c36206afd",
    "paper-inversion": "1ba3b50e31fdac0c",
    "paper-uncond-inversion": "388e4a0c49bda14a",
    "lab-paper-sdi": "da57f22062959a18",
    "lab-paper-ism": "7c09f78e4aa89c0f",
    "lab-paper-sds": "53e43bf812a1376a",
    "official-random": "73266e02c0d2371e",
    "official-inversion": "24c53de93bccf309",
    "official-uncond-inversion": "2e30fe7d6d4eefef",
    "lab-official-sdi": "996c2ba93740f32f",
    "lab-official-ism": "a76d20e3a0685b1d",
    "lab-official-sds": "f810ecf33171ecfa",
}


def test_defaults_are_bit_identical_to_before_the_options() -> None:
    outputs = default_outputs(LocalModel())
    assert {key: digest(tensors) for key, tensors in outputs.items()} == GOLDEN


def test_options_off_by_default() -> None:
    """``research-inversion`` with its defaults is ``inversion``, bit for bit."""
    options = ResearchInversionNoise()
    assert (options.order, options.skip_origin, options.adaptive_steps) == (1, False, False)
    config = GuidanceConfig()
    explicit = GuidanceConfig(noise="research-inversion")
    model = LocalModel()
    z0 = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for config_a, config_b in (
        (config, explicit),
        (replace(config, preset="official"), replace(explicit, preset="official")),
    ):
        a = guidance_step(
            model, z0, 700, Conditioning(cond=1), config_a, generator=torch.Generator().manual_seed(3)
        )
        b = guidance_step(
            model, z0, 700, Conditioning(cond=1), config_b, generator=torch.Generator().manual_seed(3)
        )
        assert torch.equal(a.target, b.target) and torch.equal(a.noise, b.noise)


# ----------------------------------------------------------------------------- counts and grids
@pytest.mark.parametrize(
    ("preset", "options", "counts"),
    [
        ("official", {}, (12, 7, 5)),
        ("official", {"skip_origin": True}, (11, 6, 4)),
        ("official", {"adaptive_steps": True}, (12, 5, 3)),
        ("official", {"skip_origin": True, "adaptive_steps": True}, (11, 4, 2)),
        ("official", {"order": 2}, (12, 7, 5)),
        ("paper", {}, (11, 6, 4)),
        ("paper", {"adaptive_steps": True}, (11, 4, 2)),
        ("paper", {"order": 2}, (11, 6, 4)),
    ],
)
def test_evaluation_counts_as_documented(zero_model, preset: str, options: dict, counts: tuple) -> None:  # noqa: ANN001
    config = GuidanceConfig(preset=preset, inversion=NO_OVERSHOOT, noise=ResearchInversionNoise(**options))
    for t, expected in zip((980, 500, 250), counts):
        before = zero_model.calls
        out = guidance_step(zero_model, torch.zeros(1, 2, 2, 2), t, Conditioning(cond="prompt"), config)
        assert out.model_evaluations == expected, (t, options)
        assert zero_model.calls - before == 2 * expected  # a CFG pair per guided evaluation


def test_skip_origin_grids() -> None:
    official = get_preset("official")
    assert research_timesteps(980, 1000 - 20, 10, official, 1000, 1, skip_origin=True) == [
        *range(1, 902, 100),
        980,
    ]
    assert research_timesteps(250, 299, 10, official, 1000, 1, skip_origin=True) == [1, 101, 201, 299]
    assert research_timesteps(1, 50, 10, official, 1000, 1, skip_origin=True) == [-99, 50]  # nothing below t
    assert research_timesteps(250, 299, 10, official, 1000, 1) == [-99, 1, 101, 201, 299]
    with pytest.raises(ValueError, match="skip_origin"):
        research_timesteps(500, 500, 10, get_preset("paper"), 1000, skip_origin=True)
    with pytest.raises(ValueError, match="skip_origin"):
        GuidanceConfig(preset="paper", noise=ResearchInversionNoise(skip_origin=True))


def test_skip_origin_drops_only_the_origin_evaluation() -> None:
    """z0 taken as x at ᾱ_1 instead of hopping from ᾱ_0 there: κ changes a little, not a lot."""
    model = LocalModel()
    z0 = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    config = GuidanceConfig(preset="official", inversion=InversionConfig(overshoot=False, eta=0.0))
    plain = guidance_step(model, z0, 600, Conditioning(cond=2), config)
    skip = replace(config, noise=ResearchInversionNoise(skip_origin=True))
    skipped = guidance_step(model, z0, 600, Conditioning(cond=2), skip)
    assert skipped.model_evaluations == plain.model_evaluations - 1
    assert 0 < float((skipped.noise - plain.noise).norm() / plain.noise.norm()) < 0.1


@pytest.mark.parametrize(
    ("t", "expected"), [(999, 10), (980, 10), (500, 5), (250, 3), (249, 2), (40, 1), (1, 1)]
)
def test_adaptive_inversion_steps(t: int, expected: int) -> None:
    assert adaptive_inversion_steps(10, t, 1000) == expected


@pytest.mark.parametrize(
    ("key", "value"),
    [("order", 3), ("order", 0), ("skip_origin", "yes"), ("adaptive_steps", 1)],
)
def test_bad_options_name_the_key(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"noise_options.{key}"):
        ResearchInversionNoise(**{key: value})


# ----------------------------------------------------------------------------- second order
def test_second_order_inversion_converges_at_second_order() -> None:
    """Away from the stiff start (t ≥ 200), halving the hops divides the error by ~2 (order 1), ~4 (order 2).

    Exact solution on the Gaussian: x̄ = x / sqrt(ᾱ) follows x̄(σ) ∝ sqrt(λ + σ²) per coordinate.
    """
    model = GaussianModel(shape=(1, 4, 4), exponent=0.5)
    schedule = model.schedule
    variances = model.variances.reshape(1, 1, 4, 4)
    z0 = model.sample(8, torch.Generator().manual_seed(0))

    def exact(t: int) -> Tensor:
        ratio = ((variances + schedule.sigma(t) ** 2) / (variances + schedule.sigma(0) ** 2)).sqrt()
        return schedule.alpha_bar(t).sqrt() * z0 / schedule.alpha_bar(0).sqrt() * ratio

    def error(hops: int, order: int) -> float:
        grid = [round(200 + 400 * k / hops) for k in range(hops + 1)]
        invert = ddim_invert if order == 1 else multistep_invert
        x = invert(model, exact(200), grid, None, 0.0).x
        return float((x - exact(600)).norm() / exact(600).norm())

    first = [error(hops, 1) for hops in (10, 20, 40)]
    second = [error(hops, 2) for hops in (10, 20, 40)]
    for coarse, fine in zip(first, first[1:]):
        assert 1.7 < coarse / fine < 2.3
    for coarse, fine in zip(second, second[1:]):
        assert 3.3 < coarse / fine < 4.7
    assert all(b < a / 5 for a, b in zip(first, second))


def test_second_order_first_hop_is_ddim() -> None:
    model = LocalModel()
    z0 = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    one = ddim_invert(model, z0, [0, 400], Conditioning(cond=1), -7.5)
    two = multistep_invert(model, z0, [0, 400], Conditioning(cond=1), -7.5)
    assert torch.equal(one.x, two.x) and one.model_evaluations == two.model_evaluations == 1
    three = multistep_invert(model, z0, [0, 200, 400, 600], Conditioning(cond=1), -7.5)
    assert three.model_evaluations == 3
