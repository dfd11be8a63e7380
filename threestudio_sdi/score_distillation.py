"""One score-distillation guidance step — SDS, DDIM κ-cache, SDI, ISM-style — on any denoiser.

For a render (or latent) z0 at timestep t (SPEC §2):

1. **noise**: the strategy of ``config.noise`` returns κ and its level t′ ≥ t
   (:mod:`threestudio_sdi.strategies`: ``random`` SDS · ``cached`` DDIM · ``inversion`` SDI ·
   ``uncond-inversion`` ISM · ``fixed-point`` research), and x_{t′} = sqrt(ᾱ_{t′}) z0 + sqrt(1−ᾱ_{t′}) κ;
2. **prediction**: ε̂ = CFG(x_{t′}, t, γ_fwd) — the model is told t (the "denoise slightly lower" trick);
3. **target**: ẑ0 = (x_{t′} − sqrt(1−ᾱ_t) ε̂) / sqrt(ᾱ_t) (a strategy may replace this one-step target,
   :func:`threestudio_sdi.strategies.one_step_target`, e.g. by a multi-step ODE solve);
4. **loss** = ½ mean((z0 − stopgrad(ẑ0))²), whose gradient is (z0 − ẑ0)/N; with δ = 0,
   z0 − ẑ0 = σ_t (ε̂ − κ): SDS with weight σ_t and its noise replaced by κ (paper eq. 10).

The mean runs over every element of the batch; the released code also divides by the batch size,
which is the same at its only supported batch size, 1.

**Non-finite guard.** A view whose κ, x_{t′}, ε̂ or ẑ0 holds NaN or Inf (e.g. fp16 overflow at small
ᾱ) gets ẑ0 = z0 for that view alone: its loss and gradient are exactly zero, the other views of the
batch are untouched, and nothing non-finite reaches the parameters. A :class:`NonFiniteGuidanceWarning`
names each such view and quantity, and so does ``GuidanceOutput.nonfinite``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .cfg import CFG_MODES, Conditioning, check_guidance_scale, guided_epsilon
from .errors import check_bool, check_choice, check_finite_tensor, check_int, check_range, nonfinite_views
from .prediction import add_noise
from .presets import Preset, get_preset
from .schedule import NoiseSchedule
from .strategies import NoiseStrategy, StepContext, make_strategy, one_step_target, strategy_class


class NonFiniteGuidanceWarning(RuntimeWarning):
    """A guidance step produced NaN or Inf in some views; their loss was set to zero."""


@dataclass(frozen=True)
class GuidanceConfig:
    """What the paper defines for a guidance step, and the noise strategy; validated on construction.

    Attributes:
        preset: ``"paper"`` or ``"official"`` (see :mod:`threestudio_sdi.presets`).
        noise: a registered strategy name (``"random"``, ``"cached"``, ``"inversion"``,
            ``"uncond-inversion"``, ``"fixed-point"``, ...) with its default options, or a strategy
            instance carrying its own (e.g. ``InversionNoise(InversionConfig(skip_origin=True))``).
        guidance_scale: γ_fwd, CFG of the prediction (|γ| ≤ 1000, as every scale here).
        inversion_guidance_scale: γ_inv, CFG of the inversion (negative by default, paper §6.2).
        inversion_n_steps: n, the inversion grid has stride T/n.
        inversion_eta: η ∈ [0, 1] of the entropy term (DDIM's η), placed as the preset says.
        overshoot: draw δ > 0 as the preset says; False inverts to t exactly.
        cfg_mode: ``"standard"`` or ``"quirk"``; None takes the preset's.
    """

    preset: str = "paper"
    noise: str | NoiseStrategy = "inversion"
    guidance_scale: float = 7.5
    inversion_guidance_scale: float = -7.5
    inversion_n_steps: int = 10
    inversion_eta: float = 0.3
    overshoot: bool = True
    cfg_mode: str | None = None

    def __post_init__(self) -> None:
        get_preset(self.preset)
        if isinstance(self.noise, str):
            strategy_class(self.noise)
        elif not callable(self.noise) or not isinstance(getattr(self.noise, "name", None), str):
            raise ValueError(f"noise must be a strategy name or a registered strategy, got {self.noise!r}")
        check_guidance_scale("guidance_scale", self.guidance_scale)
        check_guidance_scale("inversion_guidance_scale", self.inversion_guidance_scale)
        check_int("inversion_n_steps", self.inversion_n_steps, low=1)
        check_range("inversion_eta", self.inversion_eta, 0.0, 1.0)
        check_bool("overshoot", self.overshoot)
        if self.cfg_mode is not None:
            check_choice("cfg_mode", self.cfg_mode, CFG_MODES)
        check = getattr(self.strategy, "check", None)
        if check is not None:
            check(self.preset_spec.grid)

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
            :class:`~threestudio_sdi.fixed_point.FixedPointResult`), else None.
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
}
"""The quantities of a step checked for NaN / Inf, in the order of the computation, and their names."""


def check_step_inputs(
    z0: Tensor,
    t: int,
    conditioning: Conditioning,
    schedule: NoiseSchedule,
    strategy: NoiseStrategy,
    noise: Tensor | None,
) -> int:
    """t as an int in 1 … T−1, after checking z0 (a finite non-empty batch), the Perp-Neg batch, and
    that ``noise`` is given exactly to a strategy that takes cached noise."""
    t = check_int("t", t)
    if not 0 < t < schedule.num_train_timesteps:
        raise ValueError(f"t must lie in 1..{schedule.num_train_timesteps - 1}, got {t}")
    if z0.ndim < 2 or z0.shape[0] == 0:
        raise ValueError(f"z0 must be a non-empty batch [B, ...], got shape {tuple(z0.shape)}")
    check_finite_tensor("z0", z0)
    weights = conditioning.negative_weights
    if weights is not None and weights.shape[0] != z0.shape[0]:
        raise ValueError(f"negative_weights has batch {weights.shape[0]} but z0 has batch {z0.shape[0]}")
    if (noise is not None) != strategy.takes_cached_noise:
        raise ValueError(
            f"noise must be given exactly when noise='cached' (noise strategy is {strategy.name!r})"
        )
    return t


def zero_nonfinite_views(latents: Tensor, t: int, **quantities: Tensor) -> tuple[Tensor, dict[int, str]]:
    """(ẑ0 with ẑ0 = z0 in every view holding NaN / Inf in one of ``quantities``, {view: quantity}).

    ``quantities`` are the keys of :data:`QUANTITIES`, ``target`` among them; one warning names every
    such view and its first non-finite quantity.
    """
    target = quantities["target"]
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
) -> GuidanceOutput:
    """One guidance step for a batch z0 [B, ...] at timestep t (module docstring; SPEC §2).

    ``noise`` is the κ of the ``cached`` strategy (the previous step's ``noise_pred``) and must be None
    for every other one. Random draws (δ, η noise, SDS noise) use ``generator``.
    """
    schedule = schedule or NoiseSchedule.of_model(model)
    t = check_step_inputs(z0, t, conditioning, schedule, config.strategy, noise)
    with torch.no_grad():
        latents = z0.detach()
        step = StepContext(model, latents, t, conditioning, config, schedule, generator, noise)
        estimate = config.strategy(step)
        kappa, t_prime = estimate.noise, estimate.t_prime
        x_noisy = add_noise(latents, kappa, schedule.alpha_bar(t_prime))
        scale, mode = config.guidance_scale, config.resolved_cfg_mode
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
