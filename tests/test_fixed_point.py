"""The fixed-point research variant: closed-form κ* on the Gaussian, convergence, divergence, counts."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from threestudio_sdi.classifier_free import Conditioning, Guide
from threestudio_sdi.ddim import ddim_invert
from threestudio_sdi.experimental.solvers import (
    FixedPointConfig,
    fixed_point_map,
    refine_fixed_point,
    relative_residuals,
    solve_fixed_point_reference,
)
from threestudio_sdi.experimental.strategies import FixedPointNoise
from threestudio_sdi.presets import get_preset, inversion_timesteps
from threestudio_sdi.schedule import NoiseSchedule
from threestudio_sdi.score_distillation import GuidanceConfig, guidance_step
from threestudio_sdi.strategies import InversionConfig
from threestudio_sdi.testing.gaussian import GaussianModel
from threestudio_sdi.testing.mixture import GaussianMixtureModel


def closed_form(model: GaussianModel, z0: Tensor, t: int) -> Tensor:
    """κ* = σ_t z0 / λ per coordinate (module docstring of threestudio_sdi.experimental.solvers)."""
    return model.schedule.sigma(t) * z0 / model.variances.reshape(1, *model.shape)


def relative_error(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


class CountingModel:
    """Wraps a model and counts ``predict_noise`` calls (one per CFG branch)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.schedule = model.schedule
        self.alphas_cumprod = model.alphas_cumprod
        self.prediction_type = model.prediction_type
        self.shape = model.shape
        self.calls = 0

    def predict_noise(self, x_t: Tensor, t: int, cond: Any = None) -> Tensor:
        self.calls += 1
        return self.model.predict_noise(x_t, t, cond)


class ExpandingModel:
    """ε = c·x_t: F(κ) has slope c·sqrt(1−ᾱ) > 1, so plain iteration runs away from κ* = 0."""

    prediction_type = "epsilon"

    def __init__(self, slope: float = 3.0) -> None:
        self.schedule = NoiseSchedule.stable_diffusion()
        self.alphas_cumprod = self.schedule.alphas_cumprod
        self.slope = slope

    def predict_noise(self, x_t: Tensor, t: int, cond: Any = None) -> Tensor:
        return self.slope * x_t


@pytest.mark.parametrize("t", [900, 500, 100, 10])
def test_reference_matches_closed_form_on_the_gaussian(t: int, fresh_seed: int) -> None:
    model = GaussianModel(shape=(1, 8, 8), exponent=1.5)
    z0 = model.sample(6, torch.Generator().manual_seed(fresh_seed))
    result = solve_fixed_point_reference(Guide(model, Conditioning(), 0.0), z0, t)
    assert result.converged and not result.diverged
    assert result.residuals[-1] < 1e-8
    assert result.iterations == 1  # F is affine: one Newton step
    assert relative_error(result.noise, closed_form(model, z0, t)) < 1e-8


def test_closed_form_is_a_fixed_point() -> None:
    model = GaussianModel(shape=(1, 4, 4))
    z0 = model.sample(3, torch.Generator().manual_seed(0))
    kappa = closed_form(model, z0, 400)
    mapped = fixed_point_map(Guide(model, Conditioning(), 0.0), z0, kappa, 400)
    assert relative_error(mapped, kappa) < 1e-12


@pytest.mark.parametrize("method", ["anderson", "damped"])
def test_refinement_from_the_inversion_reaches_the_closed_form(method: str, fresh_seed: int) -> None:
    """κ error below the tolerance: a small, well-conditioned Gaussian (d = 16, p = 0.5) at t = 500."""
    model = GaussianModel(shape=(1, 4, 4), exponent=0.5)
    z0 = model.sample(8, torch.Generator().manual_seed(fresh_seed))
    t = 500
    start = ddim_invert(model, z0, inversion_timesteps(t, t, 10, get_preset("paper"), 1000)).noise
    exact = closed_form(model, z0, t)
    assert relative_error(start, exact) > 1e-2  # the inversion alone is far from κ*
    mixing = 0.5 if method == "anderson" else 1.0
    result = refine_fixed_point(
        Guide(model, Conditioning(), 0.0), z0, t, start, method=method, mixing=mixing, tolerance=1e-9,
        max_iterations=400,
    )  # fmt: skip
    assert result.converged and not result.diverged
    assert result.model_evaluations == result.iterations + 1 == len(result.residuals)
    assert relative_error(result.noise, exact) < 1e-6
    if method == "anderson":
        assert result.iterations < 40


def absolute_residuals(model: Any, z0: Tensor, t: int, iterates: list[Tensor]) -> list[float]:
    return [
        float((fixed_point_map(Guide(model, Conditioning(), 0.0), z0, k, t) - k).norm()) for k in iterates
    ]


def test_plain_iteration_contracts_on_the_gaussian() -> None:
    """β = 1: F has slope (1−ᾱ)/(ᾱλ + 1 − ᾱ) < 1 per coordinate, so ‖F(κ) − κ‖ never grows."""
    model = GaussianModel()
    z0 = model.sample(4, torch.Generator().manual_seed(3))
    iterates: list[Tensor] = []
    result = refine_fixed_point(
        Guide(model, Conditioning(), 0.0), z0, 700, torch.zeros_like(z0), method="damped", mixing=1.0,
        max_iterations=30, callback=lambda info: iterates.append(info["noise"].clone()),
    )  # fmt: skip
    assert not result.diverged and not result.converged
    assert len(iterates) == result.model_evaluations == 31
    norms = absolute_residuals(model, z0, 700, iterates)
    assert all(b <= a * (1 + 1e-12) for a, b in zip(norms, norms[1:]))


def test_divergence_is_flagged_and_the_best_iterate_returned() -> None:
    model = ExpandingModel()
    z0 = torch.randn(2, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    start = torch.randn(2, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    iterates: list[Tensor] = []
    result = refine_fixed_point(
        Guide(model, Conditioning(), 0.0), z0, 800, start, method="damped", mixing=1.0, max_iterations=100,
        callback=lambda info: iterates.append(info["noise"].clone()),
    )  # fmt: skip
    assert result.diverged and not result.converged
    assert result.iterations < 10  # ‖R‖ triples every iteration: stopped as soon as it passed 10×
    norms = absolute_residuals(model, z0, 800, iterates)
    assert norms[-1] > 10 * norms[0] and all(n <= 10 * norms[0] for n in norms[:-1])
    torch.testing.assert_close(result.noise, start)  # the start had the smallest residual
    # Newton finds the repelling fixed point all the same (F is affine).
    reference = solve_fixed_point_reference(Guide(model, Conditioning(), 0.0), z0, 800, start)
    assert reference.converged


def test_start_at_the_fixed_point_costs_one_evaluation() -> None:
    model = CountingModel(GaussianModel(shape=(1, 4, 4)))
    z0 = model.model.sample(2, torch.Generator().manual_seed(0))
    result = refine_fixed_point(Guide(model, Conditioning(), 0.0), z0, 300, closed_form(model.model, z0, 300))
    assert result.converged and result.iterations == 0
    assert result.model_evaluations == model.calls == 1


def test_guided_evaluations_count_every_branch_once_per_iteration() -> None:
    digits = GaussianMixtureModel.from_digits()
    model = CountingModel(digits)
    z0 = digits.sample(3, torch.tensor([1, 2, 3]), torch.Generator().manual_seed(0))
    guide = Guide(model, Conditioning(cond=torch.tensor([1, 2, 3])), 7.5)
    result = refine_fixed_point(guide, z0, 200, torch.zeros_like(z0), max_iterations=4)
    assert result.model_evaluations == result.iterations + 1
    assert model.calls == 2 * result.model_evaluations  # unconditional + conditional branch


def test_reference_on_digits_without_guidance_is_a_fixed_point() -> None:
    digits = GaussianMixtureModel.from_digits()
    labels = torch.tensor([0, 4, 7])
    z0 = digits.sample(3, labels, torch.Generator().manual_seed(5))
    conditioning = Conditioning(cond=labels)
    result = solve_fixed_point_reference(Guide(digits, conditioning, 0.0), z0, 300)
    assert result.converged
    mapped = fixed_point_map(Guide(digits, conditioning, 0.0), z0, result.noise, 300)
    assert float(relative_residuals(mapped - result.noise, result.noise).max()) < 1e-8


def test_guidance_step_fixed_point_strategy_counts_and_reports() -> None:
    gaussian = GaussianModel(shape=(1, 4, 4), exponent=0.5)
    model = CountingModel(gaussian)
    z0 = gaussian.sample(4, torch.Generator().manual_seed(0))
    strategy = FixedPointNoise(tolerance=1e-9, max_iterations=200)
    config = GuidanceConfig(noise=strategy, inversion=InversionConfig(overshoot=False, eta=0.0))
    out = guidance_step(model, z0, 500, Conditioning(), config)
    assert out.noise_details is not None and out.noise_details.converged
    hops = len(inversion_timesteps(500, 500, 10, get_preset("paper"), 1000)) - 1
    assert out.model_evaluations == hops + out.noise_details.model_evaluations + 1 == model.calls
    assert relative_error(out.noise, closed_form(gaussian, z0, 500)) < 1e-6
    # With δ = 0 and κ at the fixed point the update is a no-op: ẑ0 = z0 (paper eq. 10 with τ = 0).
    torch.testing.assert_close(out.target, z0, rtol=1e-6, atol=1e-8)


def test_guidance_step_fixed_point_from_random_start_spends_no_inversion() -> None:
    model = CountingModel(GaussianModel(shape=(1, 4, 4)))
    config = GuidanceConfig(noise=FixedPointNoise(start="random", max_iterations=3))
    out = guidance_step(
        model, torch.zeros(2, 1, 4, 4, dtype=torch.float64), 400, Conditioning(), config,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert out.model_evaluations == out.noise_details.model_evaluations + 1 == model.calls


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("method", "newton"),
        ("start", "zeros"),
        ("mixing", 0.0),
        ("mixing", 1.5),
        ("tolerance", 0.0),
        ("max_iterations", -1),
        ("memory", 0),
        ("guidance_scale", math.inf),
    ],
)
def test_bad_fixed_point_settings_name_the_key(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"fixed_point.{key}"):
        FixedPointConfig(**{key: value})


def test_reference_refuses_large_models() -> None:
    model = GaussianModel(shape=(4, 32, 32))
    with pytest.raises(ValueError, match="dense"):
        solve_fixed_point_reference(
            Guide(model, Conditioning(), 0.0), torch.zeros(1, 4, 32, 32, dtype=torch.float64), 10
        )


def test_refine_rejects_a_start_of_another_shape() -> None:
    model = GaussianModel(shape=(1, 4, 4))
    with pytest.raises(ValueError, match="start"):
        refine_fixed_point(Guide(model, Conditioning(), 0.0), torch.zeros(2, 1, 4, 4), 10, torch.zeros(2, 16))
