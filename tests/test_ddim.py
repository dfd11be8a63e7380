"""Known answers of the schedule, the DDIM hop, sampling and inversion, on exact-score models."""

from __future__ import annotations

import pytest
import torch

from threestudio_sdi.classifier_free import Conditioning
from threestudio_sdi.ddim import ddim_hop, ddim_invert, ddim_timesteps, sample_ddim
from threestudio_sdi.schedule import STABLE_DIFFUSION_SCHEDULER_CONFIG, NoiseSchedule
from threestudio_sdi.testing.gaussian import GaussianModel


def test_schedule_matches_diffusers_ddim_scheduler() -> None:
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMScheduler.from_config(STABLE_DIFFUSION_SCHEDULER_CONFIG)
    schedule = NoiseSchedule.stable_diffusion()
    torch.testing.assert_close(schedule.alphas_cumprod, scheduler.alphas_cumprod.double(), rtol=1e-6, atol=0)
    assert schedule.alpha_bar(-99).item() == pytest.approx(float(scheduler.final_alpha_cumprod), rel=1e-6)
    assert schedule.alpha_bar(-99).item() == schedule.alpha_bar(0).item()
    assert schedule.steps_offset == 1


@pytest.mark.parametrize("kind", ["linear", "squaredcos_cap_v2"])
def test_other_beta_schedules_match_diffusers(kind: str) -> None:
    diffusers = pytest.importorskip("diffusers")
    config = {"beta_schedule": kind, "set_alpha_to_one": True}
    scheduler = diffusers.DDIMScheduler.from_config(config)
    schedule = NoiseSchedule.from_config(config)
    torch.testing.assert_close(
        schedule.alphas_cumprod, scheduler.alphas_cumprod.double(), rtol=1e-5, atol=1e-7
    )
    assert schedule.alpha_bar(-1).item() == 1.0


def test_sigma_is_noise_to_signal_ratio() -> None:
    schedule = NoiseSchedule.stable_diffusion()
    alpha = schedule.alphas_cumprod[500]
    assert schedule.sigma(500).item() == pytest.approx(((1 - alpha) / alpha).sqrt().item(), rel=1e-12)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timesteps_match_diffusers(spacing: str) -> None:
    diffusers = pytest.importorskip("diffusers")
    config = dict(STABLE_DIFFUSION_SCHEDULER_CONFIG, timestep_spacing=spacing)
    scheduler = diffusers.DDIMScheduler.from_config(config)
    scheduler.set_timesteps(50)
    expected = [int(t) for t in scheduler.timesteps]
    assert ddim_timesteps(50, 1000, spacing, steps_offset=1 if spacing == "leading" else 0) == expected


def test_hop_there_and_back_returns_within_discretisation_error(fresh_seed: int) -> None:
    model = GaussianModel(shape=(1, 8, 8), exponent=1.5)
    schedule = model.schedule
    generator = torch.Generator().manual_seed(fresh_seed)
    start, errors = 300, []
    x_a = model.sample(64, generator) * schedule.alpha_bar(start).sqrt() + (
        1 - schedule.alpha_bar(start)
    ).sqrt() * torch.randn(64, 1, 8, 8, generator=generator, dtype=torch.float64)
    for hop in (200, 100, 50, 25, 10):
        b = start + hop
        alpha_a, alpha_b = schedule.alpha_bar(start), schedule.alpha_bar(b)
        x_b = ddim_hop(x_a, model.predict_noise(x_a, start, None), alpha_a, alpha_b)
        back = ddim_hop(x_b, model.predict_noise(x_b, b, None), alpha_b, alpha_a)
        errors.append(((back - x_a).norm() / x_a.norm()).item())
    assert all(e2 < e1 for e1, e2 in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.1 * errors[0], errors
    assert errors[-1] < 1e-2


def test_hop_is_exact_inverse_with_a_frozen_prediction() -> None:
    schedule = NoiseSchedule.stable_diffusion()
    x = torch.randn(3, 4, dtype=torch.float64)
    eps = torch.randn(3, 4, dtype=torch.float64)
    a, b = schedule.alpha_bar(100), schedule.alpha_bar(700)
    torch.testing.assert_close(ddim_hop(ddim_hop(x, eps, a, b), eps, b, a), x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("t", [300, 700])
def test_inversion_recovers_trajectory_noise_and_converges(t: int, fresh_seed: int) -> None:
    """On the Gaussian the DDIM ODE is solved in closed form: x̄(σ) = x̄(σ_0)·sqrt((λ + σ²)/(λ + σ_0²)).

    (With x̄ = x/sqrt(ᾱ), dx̄/dσ = ε = σ x̄/(λ + σ²).) Inverting z0 = x(t=0) must approach that
    trajectory's noise at t, at first order in the step.
    """
    model = GaussianModel(shape=(1, 8, 8), exponent=1.5)
    schedule = model.schedule
    generator = torch.Generator().manual_seed(fresh_seed)
    alpha_0, alpha_t = schedule.alpha_bar(0), schedule.alpha_bar(t)
    noise_0 = torch.randn(256, 1, 8, 8, generator=generator, dtype=torch.float64)
    z0 = alpha_0.sqrt() * model.sample(256, generator) + (1 - alpha_0).sqrt() * noise_0
    variances = model.variances.view(1, 1, 8, 8)
    ratio = ((variances + schedule.sigma(t) ** 2) / (variances + schedule.sigma(0) ** 2)).sqrt()
    x_t = alpha_t.sqrt() * z0 / alpha_0.sqrt() * ratio
    true_noise = (x_t - alpha_t.sqrt() * z0) / (1 - alpha_t).sqrt()
    errors = []
    for n in (2, 5, 10, 50, 200):
        grid = torch.linspace(0, t, n + 1).round().long().tolist()
        result = ddim_invert(model, z0, grid)
        assert result.model_evaluations == n
        errors.append(((result.noise - true_noise).norm() / true_noise.norm()).item())
    print("relative κ error for 2, 5, 10, 50, 200 steps:", errors)
    assert all(e2 < e1 for e1, e2 in zip(errors, errors[1:])), errors
    assert 0.15 < errors[-1] / errors[-2] < 0.5, errors  # first order: 4x the steps, ~1/4 the error
    assert errors[-1] < 0.08, errors


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_sampling_does_not_depend_on_the_parametrisation(prediction_type: str, fresh_seed: int) -> None:
    x_T = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(fresh_seed), dtype=torch.float64)
    timesteps = ddim_timesteps(20, 1000, "leading", 1)
    reference = sample_ddim(GaussianModel(), x_T, timesteps, disable=True)
    other = sample_ddim(GaussianModel(prediction_type=prediction_type), x_T, timesteps, disable=True)
    torch.testing.assert_close(other, reference, rtol=1e-9, atol=1e-9)
    inverted = ddim_invert(GaussianModel(prediction_type=prediction_type), reference, [0, 250, 500])
    torch.testing.assert_close(inverted.x, ddim_invert(GaussianModel(), reference, [0, 250, 500]).x)


def test_inversion_eta_adds_ddim_sigma_per_hop(zero_model) -> None:  # noqa: ANN001
    """With ε ≡ 0 a hop rescales x by sqrt(ᾱ_b/ᾱ_a); the per-hop noise η·ς_{a,b} then propagates."""
    schedule = NoiseSchedule.of_model(zero_model)
    steps = [-99, 1, 101, 201, 255]
    z0 = torch.zeros(200_000, dtype=torch.float64)
    eta = 0.3
    result = ddim_invert(zero_model, z0, steps, eta=eta, generator=torch.Generator().manual_seed(0))
    alpha = [schedule.alpha_bar(t) for t in steps]
    variance = sum(
        (1 - alpha[i]) / (1 - alpha[i + 1]) * (1 - alpha[i + 1] / alpha[i]) * alpha[-1] / alpha[i + 1]
        for i in range(len(steps) - 1)
    )
    expected_std = eta * variance.sqrt().item()
    assert result.x.std().item() == pytest.approx(expected_std, rel=0.01)
    assert zero_model.calls == 4


def test_conditioning_reaches_the_model() -> None:
    seen = []

    class Recorder(GaussianModel):
        def predict_noise(self, x_t, t, cond):  # noqa: ANN001, ANN202
            seen.append(cond)
            return super().predict_noise(x_t, t, cond)

    ddim_invert(Recorder(), torch.zeros(2, 1, 8, 8, dtype=torch.float64), [0, 10], Conditioning(cond=3), 2.0)
    assert seen == [None, 3]
