"""One score-distillation guidance step — SDS, DDIM κ-cache, SDI, ISM-style — on any denoiser.

For a render (or latent) z0 at timestep t (docs/method.md §2):

1. **noise**: the strategy of ``config.noise`` returns κ and its level t′ ≥ t
   (:mod:`threestudio_sdi.strategies`: ``random`` SDS · ``cached`` DDIM · ``inversion`` SDI ·
   ``uncond-inversion`` ISM; research ones in :mod:`threestudio_sdi.experimental`), and
   x_{t′} = sqrt(ᾱ_{t′}) z0 + sqrt(1−ᾱ_{t′}) κ;
2. **prediction**: ε̂ = CFG(x_{t′}, t, γ_fwd) — the model is told t (the "denoise slightly lower" trick);
3. **target**: ẑ0 = (x_{t′} − sqrt(1−ᾱ_t) ε̂) / sqrt(ᾱ_t) (a strategy may replace this one-step target,
   :func:`threestudio_sdi.strategies.one_step_target`, e.g. by a multi-step ODE solve);
4. **loss** = ½ mean((z0 − stopgrad(ẑ0))²), whose gradient is (z0 − ẑ0)/N; with δ = 0,
   z0 − ẑ0 = σ_t (ε̂ − κ): SDS with weight σ_t and its noise replaced by κ (paper eq. 10).

The mean runs over every element of the batch; the released code also divides by the batch size,
which is the same at its only supported batch size, 1.

**Validation at the boundary.** :class:`GuidanceConfig` checks its settings when it is built and
:func:`guidance_step` checks its inputs on entry; nothing below (the strategy, the hop loop, the
prediction) checks again, and on a GPU no part of that loop copies from or waits for the host.

**Non-finite guard.** A view whose κ, x_{t′}, ε̂ or ẑ0 holds NaN or Inf (e.g. fp16 overflow at small
ᾱ) gets ẑ0 = z0 for that view alone: its loss and gradient are exactly zero, the other views of the
batch are untouched, and nothing non-finite reaches the parameters. A :class:`NonFiniteGuidanceWarning`
names each such view and quantity, and so does ``GuidanceOutput.nonfinite``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .classifier_free import Conditioning, check_cfg_mode, check_guidance_scale, guided_epsilon
from .denoiser import PREDICTION_TYPES
from .errors import check_choice, check_finite_tensor, check_int, nonfinite_views
from .prediction import add_noise
from .presets import Preset, get_preset, inversion_stride
from .schedule import NoiseSchedule
from .strategies import (
    InversionConfig,
    NoiseStrategy,
    StepContext,
    make_strategy,
    one_step_target,
    strategy_class,
)


class NonFiniteGuidanceWarning(RuntimeWarning):
    """A guidance step produced NaN or Inf in some views; their loss was set to zero."""


@dataclass(frozen=True)
class GuidanceConfig:
    """What the paper defines for a guidance step, and the noise strategy; validated on construction.

    Attributes:
        preset: ``"paper"`` or ``"official"`` (see :mod:`threestudio_sdi.presets`).
        noise: a registered strategy name (``"random"``, ``"cached"``, ``"inversion"``,
            ``"uncond-inversion"``, or a research one) with its default options, or a strategy
            instance carrying its own (:func:`~threestudio_sdi.strategies.make_strategy`).
        guidance_scale: γ_fwd, CFG of the prediction (|γ| ≤ 1000, as every scale here).
        cfg_mode: ``"standard"`` or ``"quirk"``; None takes the preset's.
        inversion: the inversion's settings: γ_inv, n, η, overshoot (:class:`InversionConfig`).
    """

    preset: Literal["paper", "official"] = "paper"
    noise: str | NoiseStrategy = "inversion"
    guidance_scale: float = 7.5
    cfg_mode: Literal["standard", "quirk"] | None = None
    inversion: InversionConfig = field(default_factory=InversionConfig)

    def __post_init__(self) -> None:
        get_preset(self.preset)
        if isinstance(self.noise, str):
            strategy_class(self.noise)
        elif not callable(self.noise) or not isinstance(getattr(self.noise, "name", None), str):
            raise ValueError(f"noise must be a strategy name or a registered strategy, got {self.noise!r}")
        check_guidance_scale("guidance_scale", self.guidance_scale)
        if self.cfg_mode is not None:
            check_cfg_mode(self.cfg_mode)
        if not isinstance(self.inversion, InversionConfig):
            raise ValueError(f"inversion must be an InversionConfig, got {self.inversion!r}")
        check = getattr(self.strategy, "check", None)
        if check is not None:
            check(self.preset_spec)

    @cached_property
    def strategy(self) -> NoiseStrategy:
        """The noise strategy: ``noise`` itself, or a default instance of the strategy it names."""
        return make_strategy(self.noise) if isinstance(self.noise, str) else self.noise

    @property
    def preset_spec(self) -> Preset:
        return get_preset(self.preset)

    @property
    def resolved_cfg_mode(self) -> str:
        return self.cfg_mode or self.preset_spec.cfg_mode


@dataclass(frozen=True)
class GuidanceOutput:
    """Result of :func:`guidance_step`.

    Attributes:
        loss: ½ mean((z0 − stopgrad(ẑ0))²), differentiable w.r.t. z0.
        target: ẑ0 (detached).
        grad_norm: ‖z0 − ẑ0‖ over the whole batch (Frobenius), detached.
        t: the timestep the model was told; t_prime: the noise level of x_noisy (t + δ).
        model_evaluations: guided model evaluations spent (the strategy's + 1 for the prediction).
        noise: κ; noise_pred: ε̂ at (x_{t'}, t); x_noisy: x_{t'}.
        noise_details: what the strategy reported (``fixed-point``: its
            :class:`~threestudio_sdi.experimental.solvers.FixedPointResult`), else None.
        nonfinite: {view index: the first quantity that went non-finite in it}; empty when all are finite.
    """

    loss: Tensor
    target: Tensor
    grad_norm: Tensor
    t: int
    t_prime: int
    model_evaluations: int
    noise: Tensor
    noise_pred: Tensor
    x_noisy: Tensor
    noise_details: Any = None
    nonfinite: dict[int, str] = field(default_factory=dict)


QUANTITIES = {
    "kappa": "the noise κ",
    "x_noisy": "the noisy input x_t'",
    "noise_pred": "the noise prediction ε̂",
    "target": "the target ẑ0",
    "loss": "the loss ½(z0 − ẑ0)² (overflow)",
}
"""The quantities of a step checked for NaN / Inf, in the order of the computation, and their names."""


def check_step_inputs(
    model: Any,
    z0: Tensor,
    t: int,
    conditioning: Conditioning,
    schedule: NoiseSchedule,
    config: GuidanceConfig,
    noise: Tensor | None,
) -> int:
    """t as an int in 1 … T−1, after checking the model's prediction type, z0 (a finite non-empty
    batch), the Perp-Neg batch, n ≤ T, and that ``noise`` is given exactly to a strategy that takes
    cached noise. The step's one validation: nothing after it checks again."""
    t = check_int("t", t)
    if not 0 < t < schedule.num_train_timesteps:
        raise ValueError(f"t must lie in 1..{schedule.num_train_timesteps - 1}, got {t}")
    check_choice("model.prediction_type", getattr(model, "prediction_type", None), PREDICTION_TYPES)
    if not isinstance(z0, Tensor) or not z0.is_floating_point():
        what = z0.dtype if isinstance(z0, Tensor) else type(z0).__name__
        raise ValueError(f"z0 must be a floating-point tensor, got {what}")
    if z0.ndim < 2 or z0.shape[0] == 0:
        raise ValueError(f"z0 must be a non-empty batch [B, ...], got shape {tuple(z0.shape)}")
    check_finite_tensor("z0", z0)
    inversion_stride(config.inversion.n_steps, schedule.num_train_timesteps)
    weights = conditioning.negative_weights
    if weights is not None and weights.shape[0] != z0.shape[0]:
        raise ValueError(f"negative_weights has batch {weights.shape[0]} but z0 has batch {z0.shape[0]}")
    if (noise is not None) != config.strategy.takes_cached_noise:
        raise ValueError(
            f"noise must be given exactly when noise='cached' (noise strategy is {config.strategy.name!r})"
        )
    return t


def step_context(
    model: Any,
    z0: Tensor,
    t: int,
    conditioning: Conditioning,
    config: GuidanceConfig,
    schedule: NoiseSchedule | None = None,
    generator: torch.Generator | None = None,
    cached: Tensor | None = None,
    noise_field: Tensor | None = None,
) -> StepContext:
    """What the strategy of ``config`` receives for a step on z0 at t (the config's preset, γ_fwd, CFG
    mode and inversion settings; the model's schedule unless one is given). Inputs are not checked."""
    return StepContext(
        model, z0, t, conditioning, schedule or NoiseSchedule.of_model(model), config.preset_spec,
        config.guidance_scale, config.resolved_cfg_mode, config.inversion, generator, cached, noise_field,
    )  # fmt: skip


def zero_nonfinite_views(latents: Tensor, t: int, **quantities: Tensor) -> tuple[Tensor, dict[int, str]]:
    """(ẑ0 with ẑ0 = z0 in every view holding NaN / Inf in one of ``quantities``, {view: quantity}).

    ``quantities`` are the keys of :data:`QUANTITIES` but ``loss``, ``target`` among them; the view's loss,
    ½ mean((z0 − ẑ0)²), is checked too (a finite but huge z0 overflows it). One warning names every such
    view and its first non-finite quantity. The check waits for the device once (one transfer of a
    [quantities, B] mask).
    """
    target = quantities["target"]
    quantities["loss"] = 0.5 * (latents - target).pow(2).reshape(target.shape[0], -1).mean(dim=1)
    bad = nonfinite_views({QUANTITIES[key]: value for key, value in quantities.items()})
    if not bad:
        return target, bad
    listed = "; ".join(f"view {view}: {name}" for view, name in bad.items())
    warnings.warn(
        f"guidance step at t={t}: non-finite values (NaN or Inf) in {listed}; the loss and gradient of "
        f"{'that view' if len(bad) == 1 else 'those views'} are set to zero",
        NonFiniteGuidanceWarning,
        stacklevel=3,
    )
    keep = torch.zeros(target.shape[0], dtype=torch.bool, device=target.device)
    keep[list(bad)] = True
    return torch.where(keep.view(-1, *(1,) * (target.ndim - 1)), latents, target), bad


def guidance_step(
    model: Any,
    z0: Tensor,
    t: int,
    conditioning: Conditioning,
    config: GuidanceConfig,
    *,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    schedule: NoiseSchedule | None = None,
    noise_field: Tensor | None = None,
) -> GuidanceOutput:
    """One guidance step for a batch z0 [B, ...] at timestep t (module docstring; docs/method.md §2).

    ``noise`` is the κ of the ``cached`` strategy (the previous step's ``noise_pred``) and must be None
    for every other one; ``noise_field`` is the views' render of a noise field fixed on the asset, for a
    strategy that ``uses_noise_field``. Random draws (δ, η noise, SDS noise) use ``generator``.
    """
    schedule = schedule or NoiseSchedule.of_model(model)
    t = check_step_inputs(model, z0, t, conditioning, schedule, config, noise)
    if noise_field is not None and not config.strategy.uses_noise_field:
        raise ValueError(
            f"noise_field is given, but noise strategy {config.strategy.name!r} does not use one"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    with torch.no_grad():
        latents = z0.detach()
        scale, mode = config.guidance_scale, config.resolved_cfg_mode
        step = step_context(model, latents, t, conditioning, config, schedule, generator, noise, noise_field)
        estimate = config.strategy(step)
        kappa, t_prime = estimate.noise, estimate.t_prime
        x_noisy = add_noise(latents, kappa, schedule.alpha_bar(t_prime, like=latents))
        noise_pred = guided_epsilon(model, x_noisy, t, conditioning, scale, mode, schedule)
        solve_target = getattr(config.strategy, "target", one_step_target)
        target, target_evaluations = solve_target(step, x_noisy, noise_pred)
        target, nonfinite = zero_nonfinite_views(
            latents, t, kappa=kappa, x_noisy=x_noisy, noise_pred=noise_pred, target=target
        )
        grad_norm = (latents - target).norm()
    loss = 0.5 * F.mse_loss(z0, target, reduction="mean")
    evaluations = estimate.model_evaluations + 1 + target_evaluations
    return GuidanceOutput(
        loss, target, grad_norm, t, t_prime, evaluations, kappa, noise_pred, x_noisy,
        noise_details=estimate.details, nonfinite=nonfinite,
    )  # fmt: skip
