"""The guidance step: presets (grid, δ, eta placement, evaluation counts), the loss, CFG and errors."""

from __future__ import annotations

import math

import pytest
import torch

from threestudio_sdi.classifier_free import Conditioning, combine_cfg, combine_perp_neg, guided_epsilon
from threestudio_sdi.presets import draw_overshoot, get_preset, inversion_timesteps
from threestudio_sdi.schedule import NoiseSchedule
from threestudio_sdi.score_distillation import GuidanceConfig, NonFiniteGuidanceWarning, guidance_step
from threestudio_sdi.strategies import InversionConfig
from threestudio_sdi.testing.gaussian import GaussianModel
from threestudio_sdi.testing.mixture import GaussianMixtureModel
from threestudio_sdi.timesteps import annealed_timestep, random_timestep


@pytest.fixture(scope="module")
def digits() -> GaussianMixtureModel:
    return GaussianMixtureModel.from_digits()


def test_official_grid_and_evaluation_counts(zero_model) -> None:  # noqa: ANN001
    preset = get_preset("official")
    assert inversion_timesteps(980, 1030 - 50, 10, preset, 1000, 1) == [-99, *range(1, 902, 100), 980]
    assert inversion_timesteps(250, 299, 10, preset, 1000, 1) == [-99, 1, 101, 201, 299]
    z0 = torch.zeros(1, 4, 2, 2)
    for t, hops in ((980, 11), (250, 4)):
        config = GuidanceConfig(preset="official", inversion=InversionConfig(overshoot=False))
        out = guidance_step(zero_model, z0, t, Conditioning(cond="prompt"), config)
        assert out.model_evaluations == hops + 1
        assert out.t_prime == t


def test_paper_grid_and_evaluation_counts(zero_model) -> None:  # noqa: ANN001
    preset = get_preset("paper")
    assert inversion_timesteps(980, 990, 10, preset, 1000) == [*range(0, 901, 100), 990]
    assert inversion_timesteps(250, 250, 10, preset, 1000) == [0, 100, 200, 250]
    assert inversion_timesteps(500, 510, 10, preset, 1000) == [0, 100, 200, 300, 400, 510]
    for t, hops in ((980, 10), (250, 3), (999, 10), (50, 1)):
        out = guidance_step(
            zero_model,
            torch.zeros(2, 3),
            t,
            Conditioning(cond=1),
            GuidanceConfig(inversion=InversionConfig(overshoot=False)),
        )
        assert out.model_evaluations == hops + 1


@pytest.mark.parametrize(("name", "largest"), [("paper", 33), ("official", 99)])
def test_overshoot_ranges(name: str, largest: int) -> None:
    generator = torch.Generator().manual_seed(0)
    deltas = {draw_overshoot(get_preset(name), 10, 1000, generator) for _ in range(4000)}
    assert deltas == set(range(largest + 1))


def test_overshoot_is_capped_at_last_timestep(zero_model) -> None:  # noqa: ANN001
    t_primes = {
        guidance_step(
            zero_model,
            torch.zeros(1, 2),
            990,
            Conditioning(),
            GuidanceConfig(preset="official"),
            generator=torch.Generator().manual_seed(s),
        ).t_prime
        for s in range(40)
    }
    assert max(t_primes) == 999 and min(t_primes) >= 990


def test_paper_eta_is_added_once_at_the_end(zero_model) -> None:  # noqa: ANN001
    """κ(η) − κ(0) = η·sqrt(1−ᾱ_t)·n with n ~ N(0, I), drawn after δ from the same generator."""
    z0 = torch.randn(1, 100_000, dtype=torch.float64)
    t = 600
    outputs = [
        guidance_step(
            zero_model,
            z0,
            t,
            Conditioning(cond=0),
            GuidanceConfig(inversion=InversionConfig(eta=eta)),
            generator=torch.Generator().manual_seed(7),
        )
        for eta in (0.0, 0.3)
    ]
    assert outputs[0].t_prime == outputs[1].t_prime
    difference = outputs[1].noise - outputs[0].noise
    expected = 0.3 * (1 - NoiseSchedule.stable_diffusion().alpha_bar(t)).sqrt().item()
    assert difference.std().item() == pytest.approx(expected, rel=0.01)


def test_loss_gradient_is_sigma_times_noise_difference(digits: GaussianMixtureModel, fresh_seed: int) -> None:
    generator = torch.Generator().manual_seed(fresh_seed)
    z0 = digits.sample(4, cond=2, generator=generator).requires_grad_(True)
    t = 400
    out = guidance_step(
        digits,
        z0,
        t,
        Conditioning(cond=2),
        GuidanceConfig(inversion=InversionConfig(overshoot=False, eta=0.0)),
        generator=generator,
    )
    out.loss.backward()
    sigma = digits.schedule.sigma(t).item()
    residual = sigma * (out.noise_pred - out.noise)
    torch.testing.assert_close(z0.detach() - out.target, residual, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(z0.grad, residual / z0.numel(), rtol=1e-9, atol=1e-12)
    assert out.grad_norm.item() == pytest.approx(residual.norm().item(), rel=1e-9)
    assert out.loss.item() == pytest.approx(0.5 * residual.pow(2).mean().item(), rel=1e-9)


def test_cached_noise_is_used_verbatim(digits: GaussianMixtureModel) -> None:
    z0 = digits.sample(3, cond=1, generator=torch.Generator().manual_seed(1))
    kappa = torch.randn_like(z0)
    out = guidance_step(digits, z0, 300, Conditioning(cond=1), GuidanceConfig(noise="cached"), noise=kappa)
    alpha = digits.schedule.alpha_bar(300)
    torch.testing.assert_close(out.x_noisy, alpha.sqrt() * z0 + (1 - alpha).sqrt() * kappa)
    assert out.model_evaluations == 1


def test_quirk_equals_standard_at_scale_plus_one(digits: GaussianMixtureModel, fresh_seed: int) -> None:
    generator = torch.Generator().manual_seed(fresh_seed)
    eps_u, eps_c = torch.randn(2, 3, 5, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(
        combine_cfg(eps_u, eps_c, 7.5, "quirk"), combine_cfg(eps_u, eps_c, 8.5, "standard")
    )
    x = torch.randn(4, 1, 8, 8, generator=generator, dtype=torch.float64)
    quirk = guided_epsilon(digits, x, 500, Conditioning(cond=5), 7.5, "quirk")
    torch.testing.assert_close(quirk, guided_epsilon(digits, x, 500, Conditioning(cond=5), 8.5, "standard"))


def test_perp_neg_removes_only_the_component_along_the_positive_direction() -> None:
    eps_u = torch.zeros(1, 2)
    eps_pos = torch.tensor([[1.0, 0.0]])
    eps_neg = torch.tensor([[3.0, 2.0]])
    out = combine_perp_neg(eps_u, eps_pos, [eps_neg], torch.tensor([[-0.5]]), 2.0)
    torch.testing.assert_close(out, torch.tensor([[2.0, -2.0]]))


def test_positive_guidance_moves_samples_toward_the_class(
    digits: GaussianMixtureModel, fresh_seed: int
) -> None:
    """The class margin log p(y|x) − max_{y'≠y} log p(y'|x) grows with γ (γ = 0 is unconditional).

    (The log posterior itself saturates at 0 for well-separated classes; the margin does not. Over
    seeds 0-59 the margin at γ = 4 was at least 1.34x the margin at γ = 1.)
    """
    from threestudio_sdi.experimental.lab import LabRun, sample_reference_2d

    target = fresh_seed % 10
    margins = []
    for scale in (0.0, 1.0, 4.0):
        config = GuidanceConfig(guidance_scale=scale)
        run = LabRun(steps=25, seed=fresh_seed, batch=64, cond=target)
        x0 = sample_reference_2d(digits, config, run, disable=True)
        log_posterior = digits.class_log_posterior(x0)
        others = torch.cat([log_posterior[:, :target], log_posterior[:, target + 1 :]], 1)
        margins.append((log_posterior[:, target] - others.max(1).values).mean().item())
    assert margins[0] < margins[1] < margins[2], margins
    assert margins[2] > 1.1 * margins[1], margins


def test_annealed_timestep_official_range() -> None:
    assert annealed_timestep(0, 10_000, 0.25, 0.98, 1000) == 980
    assert annealed_timestep(10_000, 10_000, 0.25, 0.98, 1000) == 250
    assert annealed_timestep(5_000, 10_000, 0.25, 0.98, 1000) == int(1000 * (0.73 * 0.5 + 0.25))
    assert annealed_timestep(0, 10_000, 0.2, 1.0, 1000) == 999
    assert annealed_timestep(20_000, 10_000, 0.2, 1.0, 1000) == 200


def test_random_timestep_covers_its_range() -> None:
    generator = torch.Generator().manual_seed(0)
    seen = {random_timestep(0.02, 0.04, 1000, generator) for _ in range(500)}
    assert seen == set(range(20, 41))


BAD_CONFIGS = [
    ({"guidance_scale": math.nan}, "guidance_scale"),
    ({"guidance_scale": "7.5"}, "guidance_scale"),
    ({"preset": "fast"}, "preset"),
    ({"noise": "gaussian"}, "noise"),
    ({"cfg_mode": "cfg++"}, "cfg_mode"),
    ({"inversion": {"n_steps": 10}}, "inversion must be an InversionConfig"),
]
BAD_INVERSIONS = [
    ({"n_steps": 0}, "inversion.n_steps"),
    ({"n_steps": 2.5}, "inversion.n_steps"),
    ({"eta": -0.1}, "inversion.eta"),
    ({"guidance_scale": math.inf}, "inversion.guidance_scale"),
    ({"overshoot": "yes"}, "inversion.overshoot"),
]


@pytest.mark.parametrize(("settings", "key"), BAD_CONFIGS)
def test_bad_settings_raise_value_error_naming_them(settings: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        GuidanceConfig(**settings)


@pytest.mark.parametrize(("settings", "key"), BAD_INVERSIONS)
def test_bad_inversion_settings_raise_value_error_naming_them(settings: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        InversionConfig(**settings)


@pytest.mark.parametrize(
    ("low", "high", "key"),
    [
        (0.0, 0.5, "min_step_percent"),
        (0.2, 1.5, "max_step_percent"),
        (0.6, 0.5, "min_step_percent"),
        (-0.1, 0.5, "min_step_percent"),
        (0.2, math.nan, "max_step_percent"),
    ],
)
def test_bad_step_percents_raise(low: float, high: float, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        annealed_timestep(0, 100, low, high, 1000)
    with pytest.raises(ValueError, match=key):
        random_timestep(low, high, 1000)


def test_bad_inputs_of_a_step_raise(digits: GaussianMixtureModel) -> None:
    z0 = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    config = GuidanceConfig()
    with pytest.raises(ValueError, match="t must lie"):
        guidance_step(digits, z0, 1000, Conditioning(cond=1), config)
    with pytest.raises(ValueError, match="t must lie"):
        guidance_step(digits, z0, 0, Conditioning(cond=1), config)
    with pytest.raises(ValueError, match="noise has shape"):
        guidance_step(
            digits, z0, 10, Conditioning(cond=1), GuidanceConfig(noise="cached"), noise=torch.zeros(3, 64)
        )
    with pytest.raises(ValueError, match="noise must be given"):
        guidance_step(digits, z0, 10, Conditioning(cond=1), GuidanceConfig(noise="cached"))
    with pytest.raises(ValueError, match="z0 contains NaN"):
        guidance_step(digits, torch.full_like(z0, math.nan), 10, Conditioning(cond=1), config)
    with pytest.raises(ValueError, match="negative_weights has batch"):
        guidance_step(
            digits, z0, 10, Conditioning(cond=1, negatives=[2], negative_weights=torch.ones(3, 1)), config
        )
    with pytest.raises(ValueError, match="negative_weights must have shape"):
        Conditioning(cond=1, negatives=[2, 3], negative_weights=torch.ones(2, 1))


def test_model_with_wrong_output_shape_is_refused() -> None:
    class Broken(GaussianModel):
        def predict_noise(self, x_t, t, cond):  # noqa: ANN001, ANN202
            return torch.zeros(x_t.shape[0], 3)

    with pytest.raises(ValueError, match="model output has shape"):
        guidance_step(Broken(), torch.zeros(2, 1, 8, 8), 10, Conditioning(), GuidanceConfig())


@pytest.mark.parametrize(
    "alphas",
    [
        torch.tensor([0.9, 0.95, 0.5]),
        torch.tensor([0.9, 0.9, 0.5]),
        torch.tensor([1.2, 0.9, 0.5]),
        torch.tensor([0.9, 0.5, 0.0]),
        torch.tensor([0.9, math.nan, 0.1]),
    ],
)
def test_bad_alphas_cumprod_is_refused(alphas: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="alphas_cumprod"):
        NoiseSchedule.from_alphas_cumprod(alphas)


def test_gaussian_model_cfg_is_a_no_op() -> None:
    model = GaussianModel()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(
        guided_epsilon(model, x, 300, Conditioning(cond=0), 7.5), model.predict_noise(x, 300, None)
    )


@pytest.mark.parametrize(
    ("z0", "message"),
    [
        (torch.zeros(2, 3, dtype=torch.long), "z0 must be a floating-point tensor, got torch.int64"),
        (torch.zeros(2, 3, dtype=torch.bool), "z0 must be a floating-point tensor, got torch.bool"),
        (torch.zeros(2, 3, dtype=torch.complex64), "z0 must be a floating-point tensor, got torch.complex64"),
        ([[0.0, 1.0]], "z0 must be a floating-point tensor, got list"),
    ],
)
def test_a_z0_that_is_not_a_float_tensor_is_named(zero_model, z0, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        guidance_step(zero_model, z0, 500, Conditioning(cond=1), GuidanceConfig())


def test_a_generator_that_is_not_one_is_named(zero_model) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="generator must be a torch.Generator or None, got int"):
        guidance_step(zero_model, torch.zeros(1, 3), 500, Conditioning(cond=1), GuidanceConfig(), generator=7)


class EchoModel:
    """ε̂ = x_t: its target ẑ0 = x_t (1 − sqrt(1 − ᾱ))/sqrt(ᾱ) is far from z0 when z0 is large."""

    prediction_type = "epsilon"
    alphas_cumprod = NoiseSchedule.stable_diffusion().alphas_cumprod

    def predict_noise(self, x_t: torch.Tensor, t: int, cond: object) -> torch.Tensor:
        return x_t


def test_a_huge_z0_overflows_no_loss_silently() -> None:
    """z0 = 1e30 is finite, but ½(z0 − ẑ0)² overflows float32: that view's loss is zeroed and named."""
    z0 = torch.zeros(2, 4, 4)
    z0[1] = 1e30
    with pytest.warns(NonFiniteGuidanceWarning, match="view 1: the loss"):
        out = guidance_step(EchoModel(), z0, 500, Conditioning(cond=1), GuidanceConfig(noise="random"))
    assert out.nonfinite == {1: "the loss ½(z0 − ẑ0)² (overflow)"} and torch.isfinite(out.loss)
    assert torch.equal(out.target[1], z0[1])
