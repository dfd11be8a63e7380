"""Reliability of the core: every accepted setting runs, every refused one names its key, NaN inside
a step never reaches the parameters, seeds reproduce, and memory does not grow over long runs."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from threestudio_sdi.classifier_free import MAX_GUIDANCE_SCALE, Conditioning
from threestudio_sdi.experimental.lab import METHODS, LabRun, distill_2d
from threestudio_sdi.experimental.solvers import FixedPointConfig
from threestudio_sdi.experimental.strategies import ResearchInversionNoise
from threestudio_sdi.presets import PRESETS
from threestudio_sdi.score_distillation import GuidanceConfig, NonFiniteGuidanceWarning, guidance_step
from threestudio_sdi.strategies import InversionConfig, strategy_names
from threestudio_sdi.testing.mixture import GaussianMixtureModel

NOISE_STRATEGIES = strategy_names()  # the experimental ones are registered by the import above

PROPERTY = settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
"""Fixed profile: the same 30 examples on every run, so CI time and outcome are stable."""


@pytest.fixture(scope="module")
def digits() -> GaussianMixtureModel:
    return GaussianMixtureModel.from_digits()


scales = st.floats(-MAX_GUIDANCE_SCALE, MAX_GUIDANCE_SCALE, allow_nan=False)
accepted_inversions = st.builds(
    InversionConfig,
    guidance_scale=scales,
    n_steps=st.integers(1, 1000),
    eta=st.floats(0.0, 1.0),
    overshoot=st.booleans(),
)
accepted_configs = st.builds(
    GuidanceConfig,
    preset=st.sampled_from(sorted(PRESETS)),
    noise=st.sampled_from([n for n in NOISE_STRATEGIES if n not in ("cached", "fixed-point")]),
    guidance_scale=scales,
    cfg_mode=st.sampled_from([None, "standard", "quirk"]),
    inversion=accepted_inversions,
).filter(lambda config: not getattr(config.strategy, "skip_origin", False) or config.preset == "official")


def _run_step(model: Any, z0: torch.Tensor, t: int, cond: Any, config: GuidanceConfig, seed: int):  # noqa: ANN202
    z0 = z0.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteGuidanceWarning)
        out = guidance_step(
            model, z0, t, Conditioning(cond=cond), config, generator=torch.Generator().manual_seed(seed)
        )
    out.loss.backward()
    assert math.isfinite(out.loss.item())
    assert out.target.isfinite().all() and z0.grad.isfinite().all()
    assert out.grad_norm.isfinite()
    return out


@PROPERTY
@given(config=accepted_configs, t=st.integers(1, 999), seed=st.integers(0, 2**31 - 1))
def test_every_accepted_setting_runs_on_the_digits_model(
    digits: GaussianMixtureModel, config: GuidanceConfig, t: int, seed: int
) -> None:
    z0 = digits.sample(2, cond=4, generator=torch.Generator().manual_seed(seed))
    _run_step(digits, z0, t, 4, config, seed)


BAD_VALUES: dict[str, st.SearchStrategy] = {
    "guidance_scale": st.one_of(
        st.sampled_from([math.nan, math.inf, -math.inf]),
        st.floats(MAX_GUIDANCE_SCALE, 1e12, exclude_min=True),
        st.floats(-1e12, -MAX_GUIDANCE_SCALE, exclude_max=True),
    ),
    "preset": st.text(min_size=1, max_size=8).filter(lambda s: s not in PRESETS),
    "noise": st.text(min_size=1, max_size=8).filter(lambda s: s not in NOISE_STRATEGIES),
    "cfg_mode": st.text(min_size=1, max_size=8).filter(lambda s: s not in ("standard", "quirk")),
}
BAD_OPTIONS: dict[tuple[type, str], st.SearchStrategy] = {
    (InversionConfig, "guidance_scale"): st.sampled_from([math.nan, -math.inf, 1e4, "strong", "7.5"]),
    (InversionConfig, "n_steps"): st.one_of(st.integers(-5, 0), st.sampled_from([2.5, "ten", None])),
    (InversionConfig, "eta"): st.one_of(
        st.floats(-10, 0, exclude_max=True), st.floats(1, 10, exclude_min=True)
    ),
    (InversionConfig, "overshoot"): st.sampled_from([0, 1, "true", None]),
    (ResearchInversionNoise, "order"): st.sampled_from([0, 3, 1.5]),
    (ResearchInversionNoise, "skip_origin"): st.sampled_from([0, 1, "yes", None]),
    (FixedPointConfig, "tolerance"): st.sampled_from([0.0, -1.0, math.nan]),
    (FixedPointConfig, "mixing"): st.sampled_from([0.0, 1.5, math.nan]),
    (FixedPointConfig, "max_iterations"): st.sampled_from([-1, 2.5, "ten"]),
}
PREFIX = {
    InversionConfig: "inversion",
    ResearchInversionNoise: "noise_options",
    FixedPointConfig: "fixed_point",
}


@PROPERTY
@given(data=st.data())
def test_every_refused_setting_names_its_key(data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(BAD_VALUES)))
    value = data.draw(BAD_VALUES[key])
    with pytest.raises(ValueError, match=key):
        GuidanceConfig(**{key: value})


@PROPERTY
@given(data=st.data())
def test_every_refused_strategy_option_names_its_key(data: st.DataObject) -> None:
    config_class, key = data.draw(st.sampled_from(sorted(BAD_OPTIONS, key=str)))
    value = data.draw(BAD_OPTIONS[(config_class, key)])
    with pytest.raises(ValueError, match=f"{PREFIX[config_class]}.{key}"):
        config_class(**{key: value})


class NaNOnDemand:
    """A protocol model that returns NaN (or Inf) at chosen timesteps, exact digits ε elsewhere."""

    def __init__(self, base: GaussianMixtureModel, bad_timesteps: set[int], value: float = math.nan) -> None:
        self.base, self.bad, self.value = base, bad_timesteps, value
        self.alphas_cumprod = base.alphas_cumprod
        self.prediction_type = base.prediction_type
        self.shape = base.shape

    def predict_noise(self, x_t: torch.Tensor, t: int, cond: Any) -> torch.Tensor:
        out = self.base.predict_noise(x_t, t, cond)
        return torch.full_like(out, self.value) if int(t) in self.bad else out


@pytest.mark.parametrize(
    ("bad", "value", "quantity"),
    [({100}, math.nan, "the noise κ"), ({500}, math.inf, "the noise prediction ε̂"), ({0}, -math.inf, "κ")],
)
def test_nan_inside_a_step_zeroes_the_loss_and_names_the_quantity(
    digits: GaussianMixtureModel, bad: set[int], value: float, quantity: str
) -> None:
    model = NaNOnDemand(digits, bad, value)
    z0 = digits.sample(3, cond=1, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    config = GuidanceConfig(inversion=InversionConfig(overshoot=False))
    with pytest.warns(NonFiniteGuidanceWarning, match=quantity):
        out = guidance_step(model, z0, 500, Conditioning(cond=1), config)
    out.loss.backward()
    assert quantity in "".join(out.nonfinite.values()) and sorted(out.nonfinite) == [0, 1, 2]
    assert out.loss.item() == 0.0 and out.grad_norm.item() == 0.0
    assert torch.equal(z0.grad, torch.zeros_like(z0))
    assert torch.equal(out.target, z0.detach())


class PoisonedRow:
    """Exact digits ε, except that view ``row`` of every output is NaN (one diverged view of a batch)."""

    def __init__(self, base: GaussianMixtureModel, row: int) -> None:
        self.base, self.row = base, row
        self.schedule, self.prediction_type, self.shape = base.schedule, base.prediction_type, base.shape
        self.alphas_cumprod = base.alphas_cumprod

    def predict_noise(self, x_t: torch.Tensor, t: int, cond: Any) -> torch.Tensor:
        out = self.base.predict_noise(x_t, t, cond).clone()
        out[self.row] = math.nan
        return out


@pytest.mark.parametrize("noise", ["inversion", "random"])
def test_a_non_finite_view_zeroes_only_its_own_gradient(
    digits: GaussianMixtureModel, noise: str, fresh_seed: int
) -> None:
    row = fresh_seed % 4
    z0 = digits.sample(4, cond=2, generator=torch.Generator().manual_seed(fresh_seed))
    config = GuidanceConfig(noise=noise)
    grads, outs = [], []
    for model in (digits, PoisonedRow(digits, row)):
        leaf = z0.clone().requires_grad_(True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NonFiniteGuidanceWarning)
            out = guidance_step(
                model,
                leaf,
                300,
                Conditioning(cond=2),
                config,
                generator=torch.Generator().manual_seed(fresh_seed),
            )
        out.loss.backward()
        grads.append(leaf.grad)
        outs.append((out, [str(w.message) for w in caught]))
    (clean, clean_warnings), (poisoned, messages) = outs
    first = "the noise κ" if noise == "inversion" else "the noise prediction ε̂"
    assert clean.nonfinite == {} and not clean_warnings
    assert poisoned.nonfinite == {row: first}
    assert len(messages) == 1 and f"view {row}: {first}" in messages[0]
    assert torch.equal(grads[1][row], torch.zeros_like(grads[1][row]))
    others = [b for b in range(4) if b != row]
    assert grads[0][others].abs().sum() > 0
    assert torch.equal(grads[1][others], grads[0][others])
    assert torch.equal(poisoned.target[others], clean.target[others])


def test_a_finite_step_reports_no_fault(digits: GaussianMixtureModel) -> None:
    z0 = digits.sample(2, cond=1, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteGuidanceWarning)
        out = guidance_step(digits, z0, 500, Conditioning(cond=1), GuidanceConfig())
    assert out.nonfinite == {} and out.loss.item() > 0


def test_nan_never_reaches_the_distilled_image(digits: GaussianMixtureModel) -> None:
    """The lab's Adam update keeps its parameter finite when steps go non-finite."""
    model = NaNOnDemand(digits, {201, 301, 401}, math.nan)
    with pytest.warns(NonFiniteGuidanceWarning):
        run = LabRun(steps=10, seed=0, batch=4, cond=2)
        x0 = distill_2d(model, GuidanceConfig(), run, update="adam", inner_steps=3, disable=True)
    assert x0.isfinite().all()


@pytest.mark.parametrize(
    ("z0", "message"),
    [
        (torch.zeros(0, 1, 8, 8, dtype=torch.float64), "non-empty batch"),
        (torch.zeros(64, dtype=torch.float64), "non-empty batch"),
        (torch.full((2, 1, 8, 8), math.inf, dtype=torch.float64), "z0 contains NaN or Inf"),
    ],
)
def test_bad_inputs_are_refused(digits: GaussianMixtureModel, z0: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        guidance_step(digits, z0, 500, Conditioning(cond=1), GuidanceConfig())


def test_mixed_dtypes_follow_the_input(digits: GaussianMixtureModel) -> None:
    """A float32 (or float16) z0 on a float64 model: the step runs in z0's dtype."""
    for dtype in (torch.float32, torch.float16):
        z0 = digits.sample(2, cond=1, generator=torch.Generator().manual_seed(0)).to(dtype)
        out = guidance_step(digits, z0, 300, Conditioning(cond=1), GuidanceConfig())
        assert out.target.dtype == dtype and out.loss.dtype == dtype


@pytest.mark.parametrize("method", ["sds", "sdi", "ism", "fixed-point"])
def test_distillation_is_bit_identical_for_a_seed(digits: GaussianMixtureModel, method: str) -> None:
    run = LabRun(steps=8, seed=123, batch=4, cond=torch.tensor([0, 3, 5, 9]))
    config = GuidanceConfig(noise=METHODS[method])
    assert torch.equal(
        distill_2d(digits, config, run, disable=True), distill_2d(digits, config, run, disable=True)
    )


def test_guidance_steps_are_bit_identical_on_the_tiny_stack(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    from threestudio_sdi.models import load_stable_diffusion
    from threestudio_sdi.testing.tiny_sd import tiny_stable_diffusion

    parts = load_stable_diffusion(tiny_stable_diffusion(tmp_path), local_files_only=True)
    cond = Conditioning(cond=parts.prompts.encode(["a hamburger"]))

    def run() -> list[float]:
        generator = torch.Generator().manual_seed(7)
        rgb = torch.rand(2, 3, 32, 32, generator=generator, requires_grad=True)
        losses = []
        for t in (900, 600, 300):
            z0 = parts.codec.encode(rgb, generator=generator)
            out = guidance_step(
                parts.model, z0, t, cond, GuidanceConfig(preset="official"), generator=generator
            )
            out.loss.backward()
            losses.append(out.loss.item())
        return losses + rgb.grad.flatten().tolist()

    assert run() == run()


@pytest.fixture(scope="module")
def tiny_parts(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    pytest.importorskip("diffusers")
    from threestudio_sdi.models import load_stable_diffusion
    from threestudio_sdi.testing.tiny_sd import tiny_stable_diffusion

    return load_stable_diffusion(
        tiny_stable_diffusion(tmp_path_factory.mktemp("tiny")), local_files_only=True
    )


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=accepted_configs.filter(lambda c: c.inversion.n_steps <= 50),
    t=st.integers(1, 999),
    seed=st.integers(0, 2**31 - 1),
)
def test_every_accepted_setting_runs_on_the_tiny_stack(
    tiny_parts, config: GuidanceConfig, t: int, seed: int
) -> None:  # noqa: ANN001
    """(n ≤ 50 keeps the fp32 UNet's 12 examples within seconds; larger n is covered on the digits.)"""
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    cond = tiny_parts.prompts.encode(["a hamburger"]).expand(2, -1, -1)
    _run_step(tiny_parts.model, z0, t, cond, config, seed)
