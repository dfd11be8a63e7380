"""Noise strategies: the registry, and a new strategy written as a user would — one class, one line.

``ZeroNoise`` below is the whole of a new strategy: κ = 0 at t′ = t, i.e. the model denoises the
scaled render sqrt(ᾱ_t) z0 itself. Once registered it runs in ``guidance_step``, in the lab and in the
threestudio plugin's noise switch, by name.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from threestudio_sdi.classifier_free import Conditioning
from threestudio_sdi.experimental.lab import LabRun, distill_2d
from threestudio_sdi.prediction import predict_x0
from threestudio_sdi.score_distillation import GuidanceConfig, guidance_step
from threestudio_sdi.strategies import (
    NoiseEstimate,
    StepContext,
    make_strategy,
    register_strategy,
    strategy_names,
    strategy_options,
)
from threestudio_sdi.testing.gaussian import GaussianModel


@register_strategy("zero-noise")
@dataclass(frozen=True)
class ZeroNoise:
    """κ = 0, t′ = t: no noise at all (the example strategy of ARCHITECTURE.md)."""

    def __call__(self, step: StepContext) -> NoiseEstimate:
        return NoiseEstimate(torch.zeros_like(step.z0), step.t)


def test_the_built_in_strategies_are_registered() -> None:
    assert {"random", "cached", "inversion", "uncond-inversion"} <= set(strategy_names())


def test_a_research_name_loads_the_experimental_package() -> None:
    """Research strategies register when a name asks for them (a fresh interpreter: nothing else loaded)."""
    code = (
        "import sys; from threestudio_sdi.score_distillation import GuidanceConfig;"
        "GuidanceConfig(); assert not any(m.startswith('threestudio_sdi.experimental') for m in sys.modules);"
        "config = GuidanceConfig(noise='fixed-point'); print(type(config.strategy).__module__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "threestudio_sdi.experimental.strategies.fixed_point"


def test_a_new_strategy_runs_by_name_with_a_known_answer(fresh_seed: int) -> None:
    """With κ = 0 the target is the one-step denoising of sqrt(ᾱ_t) z0, one evaluation in all."""
    model = GaussianModel(shape=(1, 4, 4))
    z0 = model.sample(3, torch.Generator().manual_seed(fresh_seed))
    t = 1 + fresh_seed % 998
    out = guidance_step(model, z0, t, Conditioning(), GuidanceConfig(noise="zero-noise"))
    alpha = model.schedule.alpha_bar(t)
    x_t = alpha.sqrt() * z0
    expected = predict_x0(x_t, model.predict_noise(x_t, t), alpha)
    torch.testing.assert_close(out.target, expected, rtol=1e-12, atol=1e-12)
    assert out.model_evaluations == 1 and out.t_prime == t and torch.equal(out.noise, torch.zeros_like(z0))
    assert out.noise_details is None


def test_a_new_strategy_runs_in_the_lab() -> None:
    x0 = distill_2d(
        GaussianModel(), GuidanceConfig(noise="zero-noise"), LabRun(steps=5, batch=2), disable=True
    )
    assert x0.shape == (2, 1, 8, 8) and x0.isfinite().all()


def test_a_new_strategy_is_accepted_by_the_plugin_switch() -> None:
    pytest.importorskip("omegaconf")
    from threestudio_standin.activate import standin_threestudio

    with standin_threestudio():
        from threestudio_sdi.threestudio.guidance import noise_strategy

        assert noise_strategy("zero-noise", {}) == ZeroNoise()
        with pytest.raises(ValueError, match="noise='cached' takes the caller's κ"):
            noise_strategy("cached", {})


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match="noise must be one of.*'inversion'.*'zero-noise'"):
        GuidanceConfig(noise="inverted")


def test_a_name_belongs_to_one_class() -> None:
    with pytest.raises(ValueError, match="already registered by ZeroNoise"):
        register_strategy("zero-noise")(type("Impostor", (), {}))


def test_make_strategy_takes_the_strategys_fields_and_names_a_misspelt_one() -> None:
    assert make_strategy("zero-noise") == ZeroNoise() and strategy_options("zero-noise") == ()
    strategy = make_strategy("research-inversion", {"skip_origin": True})
    assert strategy.name == "research-inversion" and strategy.skip_origin
    assert strategy_options("research-inversion") == ("order", "skip_origin", "adaptive_steps")
    with pytest.raises(
        ValueError,
        match=r"noise_options.skip_orign is not an option of noise='research-inversion'; its options: order, skip_origin, adaptive_steps",
    ):
        make_strategy("research-inversion", {"skip_orign": True})
    with pytest.raises(
        ValueError, match=r"noise_options.order is not an option of noise='inversion'; its options: none"
    ):
        make_strategy("inversion", {"order": 2})


def test_a_strategy_instance_carries_its_options_and_is_checked_against_the_preset() -> None:
    config = GuidanceConfig(
        preset="official", noise=make_strategy("research-inversion", {"skip_origin": True})
    )
    assert config.strategy.name == "research-inversion" and config.strategy.skip_origin
    with pytest.raises(ValueError, match="skip_origin applies to the 'official' grid only"):
        GuidanceConfig(preset="paper", noise=make_strategy("research-inversion", {"skip_origin": True}))
    with pytest.raises(ValueError, match="noise must be a strategy name or a registered strategy"):
        GuidanceConfig(noise=lambda step: None)


@register_strategy("zero-target")
@dataclass(frozen=True)
class ZeroTarget(ZeroNoise):
    """ZeroNoise with its own target ẑ0 = 0, said to cost 3 more evaluations (the target hook)."""

    def target(self, step: StepContext, x_noisy: torch.Tensor, noise_pred: torch.Tensor) -> tuple:
        return torch.zeros_like(x_noisy), 3


def test_a_strategy_may_replace_the_one_step_target() -> None:
    model = GaussianModel(shape=(1, 4, 4))
    z0 = model.sample(2, torch.Generator().manual_seed(0)).requires_grad_(True)
    out = guidance_step(model, z0, 500, Conditioning(), GuidanceConfig(noise="zero-target"))
    assert torch.equal(out.target, torch.zeros_like(z0)) and out.model_evaluations == 1 + 3
    out.loss.backward()
    torch.testing.assert_close(out.loss, 0.5 * z0.detach().pow(2).mean())
    torch.testing.assert_close(z0.grad, z0.detach() / z0.numel())
