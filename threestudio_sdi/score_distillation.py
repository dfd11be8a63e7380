"""One score-distillation guidance step: SDS, DDIM κ-cache, SDI and ISM-style, on any denoiser.

For a render (or latent) z0 at timestep t (SPEC §2):

1. noise κ by the chosen strategy and x_{t'} = sqrt(ᾱ_{t'}) z0 + sqrt(1−ᾱ_{t'}) κ:
   ``random`` κ ~ N(0, I) (SDS) · ``cached`` κ given by the caller, the previous step's ε̂ (DDIM) ·
   ``inversion`` DDIM inversion of z0 to t' = t + δ conditioned on the prompt with CFG γ_inv (SDI) ·
   ``uncond-inversion`` the same, unconditioned (ISM-style) · ``fixed-point`` (research) the inverted κ
   refined toward the fixed point κ = ε_θ(sqrt(ᾱ_{t'}) z0 + sqrt(1−ᾱ_{t'}) κ, t', y) of SPEC §1
   (:mod:`threestudio_sdi.fixed_point`);
2. ε̂ = CFG(x_{t'}, t, γ_fwd) — the model is told t (the "denoise slightly lower" trick);
3. target ẑ0 = (x_{t'} − sqrt(1−ᾱ_t) ε̂) / sqrt(ᾱ_t);
4. ``loss`` = ½ mean((z0 − stopgrad(ẑ0))²), whose gradient is (z0 − ẑ0)/N, and with δ = 0
   z0 − ẑ0 = σ_t (ε̂ − κ): SDS with weight σ_t and its noise replaced by κ (paper eq. 10).

The mean runs over every element of the batch; the released code also divides by the batch size,
which is the same at its only supported batch size, 1.

A step whose κ, x_{t'}, ε̂ or ẑ0 goes non-finite (e.g. fp16 overflow at small ᾱ) is detected: the
target becomes z0 itself, so the loss and its gradient are exactly zero and nothing non-finite reaches
the parameters; a :class:`NonFiniteGuidanceWarning` names the quantity, and so does
``GuidanceOutput.nonfinite``.

Fewer-evaluation research options, all off by default (:class:`GuidanceConfig`): ``inversion_order=2``
(multistep second-order inversion, :func:`threestudio_sdi.ddim.ddim_invert`), ``skip_origin`` (no
evaluation at the ``official`` grid's negative origin) and ``adaptive_inversion_steps`` (fewer hops at
small t), see :mod:`threestudio_sdi.presets`. Evaluations per step, ``official`` preset, n = 10, t = 980
/ 500 / 250: default 12 / 7 / 5; ``skip_origin`` 11 / 6 / 4; ``adaptive_inversion_steps`` 12 / 5 / 3
(the ``paper`` preset: 11 / 6 / 4 and adaptive 11 / 4 / 2); ``inversion_order`` does not change them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .cfg import CFG_MODES, Conditioning, guided_epsilon
from .ddim import INVERSION_ORDERS, InversionResult, ddim_invert
from .errors import (
    check_choice,
    check_finite_tensor,
    check_int,
    check_range,
    check_same_shape,
    first_nonfinite,
)
from .fixed_point import FIXED_POINT_METHODS, FixedPointResult, refine_fixed_point
from .noise import randn_like
from .prediction import predict_x0
from .presets import (
    Preset,
    adaptive_inversion_steps,
    draw_overshoot,
    get_preset,
    inversion_stride,
    inversion_timesteps,
)
from .schedule import NoiseSchedule

NOISE_STRATEGIES = ("random", "cached", "inversion", "uncond-inversion", "fixed-point")
INVERSION_STRATEGIES = ("inversion", "uncond-inversion")
FIXED_POINT_STARTS = ("inversion", "random")
MAX_GUIDANCE_SCALE = 1000.0
"""Largest |γ| accepted: threestudio's SDS uses 100; beyond 1000 a step only overflows."""


class NonFiniteGuidanceWarning(RuntimeWarning):
    """A guidance step produced NaN or Inf; its loss was set to zero (see the module docstring)."""


@dataclass(frozen=True)
class GuidanceConfig:
    """Settings of a guidance step; validated on construction (ValueError naming the key).

    Attributes:
        preset: ``"paper"`` or ``"official"`` (see :mod:`threestudio_sdi.presets`).
        noise: ``"random"`` (SDS), ``"cached"`` (DDIM), ``"inversion"`` (SDI), ``"uncond-inversion"`` (ISM),
            ``"fixed-point"`` (research: κ refined toward the fixed point, see below).
        guidance_scale: γ_fwd, CFG of the prediction (|γ| ≤ 1000, as every scale here).
        inversion_guidance_scale: γ_inv, CFG of the inversion (negative by default, paper §6.2).
        inversion_n_steps: n, the inversion grid has stride T/n.
        inversion_eta: η ∈ [0, 1] of the entropy term (DDIM's η), placed as the preset says.
        overshoot: draw δ > 0 as the preset says; False inverts to t exactly.
        cfg_mode: ``"standard"`` or ``"quirk"``; None takes the preset's.

    Fewer-evaluation research options (the defaults are the presets' exact behaviour):
        inversion_order: 1 = DDIM inversion; 2 = multistep second-order inversion (same evaluations).
        skip_origin: drop the ``official`` grid's evaluation at its negative origin (one fewer per step).
        adaptive_inversion_steps: n_eff = max(1, ⌊n·t/T + ½⌋) steps at timestep t (fewer hops at small t).

    The ``fixed-point`` strategy (research), :func:`threestudio_sdi.fixed_point.refine_fixed_point` at
    the noise level t' from the inverted κ (``fixed_point_start="inversion"``: the ``inversion``
    strategy's inversion, without its η noise) or from κ ~ N(0, I) (``"random"``); the entropy term
    η·sqrt(1−ᾱ_t)·n is added once after the refinement (both presets: refinement would undo per-hop
    noise). It spends the inversion's evaluations + one per refinement residual + 1.
        fixed_point_method: ``"anderson"`` or ``"damped"``.
        fixed_point_guidance_scale: the CFG of the fixed-point map; None = ``guidance_scale`` (SPEC §1).
        fixed_point_tolerance: stop when every sample's ‖F(κ) − κ‖/‖κ‖ is below it.
        fixed_point_max_iterations: at most this many κ updates (≥ 0).
        fixed_point_mixing: β ∈ (0, 1], damping / Anderson mixing.
        fixed_point_memory: Anderson history m ≥ 1.
    """

    preset: str = "paper"
    noise: str = "inversion"
    guidance_scale: float = 7.5
    inversion_guidance_scale: float = -7.5
    inversion_n_steps: int = 10
    inversion_eta: float = 0.3
    overshoot: bool = True
    cfg_mode: str | None = None
    inversion_order: int = 1
    skip_origin: bool = False
    adaptive_inversion_steps: bool = False
    fixed_point_start: str = "inversion"
    fixed_point_method: str = "anderson"
    fixed_point_guidance_scale: float | None = None
    fixed_point_tolerance: float = 1e-3
    fixed_point_max_iterations: int = 10
    fixed_point_mixing: float = 0.5
    fixed_point_memory: int = 5

    def __post_init__(self) -> None:
        get_preset(self.preset)
        check_choice("noise", self.noise, NOISE_STRATEGIES)
        for name in ("guidance_scale", "inversion_guidance_scale"):
            check_range(name, getattr(self, name), -MAX_GUIDANCE_SCALE, MAX_GUIDANCE_SCALE)
        check_int("inversion_n_steps", self.inversion_n_steps, low=1)
        check_range("inversion_eta", self.inversion_eta, 0.0, 1.0)
        if not isinstance(self.overshoot, bool):
            raise ValueError(f"overshoot must be true or false, got {self.overshoot!r}")
        if self.cfg_mode is not None:
            check_choice("cfg_mode", self.cfg_mode, CFG_MODES)
        if check_int("inversion_order", self.inversion_order) not in INVERSION_ORDERS:
            raise ValueError(
                f"inversion_order must be one of {INVERSION_ORDERS}, got {self.inversion_order!r}"
            )
        for name in ("skip_origin", "adaptive_inversion_steps"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.skip_origin and self.preset_spec.grid != "official":
            raise ValueError(
                f"skip_origin applies to the 'official' grid only (its evaluation at a negative "
                f"timestep); preset {self.preset!r} has grid {self.preset_spec.grid!r}"
            )
        check_choice("fixed_point_start", self.fixed_point_start, FIXED_POINT_STARTS)
        check_choice("fixed_point_method", self.fixed_point_method, FIXED_POINT_METHODS)
        if self.fixed_point_guidance_scale is not None:
            check_range(
                "fixed_point_guidance_scale",
                self.fixed_point_guidance_scale,
                -MAX_GUIDANCE_SCALE,
                MAX_GUIDANCE_SCALE,
            )
        check_range("fixed_point_tolerance", self.fixed_point_tolerance, 0.0, low_open=True)
        check_int("fixed_point_max_iterations", self.fixed_point_max_iterations, low=0)
        check_range("fixed_point_mixing", self.fixed_point_mixing, 0.0, 1.0, low_open=True)
        check_int("fixed_point_memory", self.fixed_point_memory, low=1)

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
        model_evaluations: guided model evaluations spent (inversion hops + refinement + 1).
        noise: κ; noise_pred: ε̂ at (x_{t'}, t); x_noisy: x_{t'}.
        fixed_point: the refinement's :class:`~threestudio_sdi.fixed_point.FixedPointResult`
            (``fixed-point`` strategy only, else None).
        nonfinite: the quantity that went non-finite (the loss is then zero), else None.
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
    fixed_point: FixedPointResult | None = None
    nonfinite: str | None = None


def inversion_grid(config: GuidanceConfig, t: int, t_prime: int, schedule: NoiseSchedule) -> list[int]:
    """The ascending inversion timesteps of ``config`` at (t, t'), fewer-evaluation options applied."""
    num_train = schedule.num_train_timesteps
    n_steps = config.inversion_n_steps
    if config.adaptive_inversion_steps:
        n_steps = adaptive_inversion_steps(n_steps, t, num_train)
    return inversion_timesteps(
        t, t_prime, n_steps, config.preset_spec, num_train, schedule.steps_offset, config.skip_origin
    )


def _invert(
    model: Any,
    latents: Tensor,
    t: int,
    t_prime: int,
    conditioning: Conditioning,
    config: GuidanceConfig,
    schedule: NoiseSchedule,
    eta: float,
    generator: torch.Generator | None,
) -> InversionResult:
    """DDIM inversion of the latents to t' on ``config``'s grid, CFG γ_inv and order."""
    return ddim_invert(
        model,
        latents,
        inversion_grid(config, t, t_prime, schedule),
        conditioning,
        config.inversion_guidance_scale,
        config.resolved_cfg_mode,
        eta=eta,
        generator=generator,
        order=config.inversion_order,
    )


def _entropy(
    latents: Tensor,
    t: int,
    config: GuidanceConfig,
    schedule: NoiseSchedule,
    generator: torch.Generator | None,
) -> Tensor:
    """The paper's entropy term H(t) = η·sqrt(1−ᾱ_t)·n, n ~ N(0, I) (App. A, eq. 11)."""
    return (
        config.inversion_eta * (1 - schedule.alpha_bar(t).to(latents)).sqrt() * randn_like(latents, generator)
    )


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

    ``noise`` is the cached κ of the ``cached`` strategy (typically the previous step's
    ``noise_pred``) and must be None otherwise. Random draws (δ, η noise, SDS noise) use
    ``generator``.
    """
    schedule = schedule or NoiseSchedule.of_model(model)
    num_train = schedule.num_train_timesteps
    t = check_int("t", t)
    if not 0 < t < num_train:
        raise ValueError(f"t must lie in 1..{num_train - 1}, got {t}")
    if z0.ndim < 2 or z0.shape[0] == 0:
        raise ValueError(f"z0 must be a non-empty batch [B, ...], got shape {tuple(z0.shape)}")
    check_finite_tensor("z0", z0)
    weights = conditioning.negative_weights
    if weights is not None and weights.shape[0] != z0.shape[0]:
        raise ValueError(f"negative_weights has batch {weights.shape[0]} but z0 has batch {z0.shape[0]}")
    if (noise is not None) != (config.noise == "cached"):
        raise ValueError(
            f"noise must be given exactly when noise='cached' (noise strategy is {config.noise!r})"
        )
    preset = config.preset_spec
    cfg_mode = config.resolved_cfg_mode
    with torch.no_grad():
        latents = z0.detach()
        t_prime, evaluations = t, 0
        fixed_point = None
        if config.noise in (*INVERSION_STRATEGIES, "fixed-point"):
            inversion_stride(config.inversion_n_steps, num_train)
            if config.overshoot:
                delta = draw_overshoot(preset, config.inversion_n_steps, num_train, generator)
                t_prime = min(t + delta, num_train - 1)
        if config.noise in INVERSION_STRATEGIES:
            inverted = _invert(
                model,
                latents,
                t,
                t_prime,
                conditioning if config.noise == "inversion" else conditioning.unconditional(),
                config,
                schedule,
                config.inversion_eta if preset.eta_placement == "every-hop" else 0.0,
                generator,
            )
            kappa, evaluations = inverted.noise, inverted.model_evaluations
            if preset.eta_placement == "end" and config.inversion_eta > 0:
                kappa = kappa + _entropy(latents, t, config, schedule, generator)
        elif config.noise == "fixed-point":
            if config.fixed_point_start == "inversion":
                inverted = _invert(model, latents, t, t_prime, conditioning, config, schedule, 0.0, generator)
                start, evaluations = inverted.noise, inverted.model_evaluations
            else:
                start = randn_like(latents, generator)
            fixed_point = refine_fixed_point(
                model,
                latents,
                t_prime,
                conditioning,
                config.guidance_scale
                if config.fixed_point_guidance_scale is None
                else config.fixed_point_guidance_scale,
                start,
                method=config.fixed_point_method,
                mixing=config.fixed_point_mixing,
                memory=config.fixed_point_memory,
                tolerance=config.fixed_point_tolerance,
                max_iterations=config.fixed_point_max_iterations,
                cfg_mode=cfg_mode,
                schedule=schedule,
            )
            kappa = fixed_point.noise
            evaluations += fixed_point.model_evaluations
            if config.inversion_eta > 0:
                kappa = kappa + _entropy(latents, t, config, schedule, generator)
        elif config.noise == "cached":
            assert noise is not None
            check_same_shape("noise", noise, z0, "z0")
            kappa = noise.detach().to(latents)
        else:
            kappa = randn_like(latents, generator)
        alpha_prime = schedule.alpha_bar(t_prime).to(latents)
        x_noisy = alpha_prime.sqrt() * latents + (1 - alpha_prime).sqrt() * kappa
        noise_pred = guided_epsilon(
            model, x_noisy, t, conditioning, config.guidance_scale, cfg_mode, schedule
        )
        target = predict_x0(x_noisy, noise_pred, schedule.alpha_bar(t))
        nonfinite = first_nonfinite(
            {
                "the noise κ": kappa,
                "the noisy input x_t'": x_noisy,
                "the noise prediction ε̂": noise_pred,
                "the target ẑ0": target,
            }
        )
        if nonfinite is not None:
            warnings.warn(
                f"guidance step at t={t}: {nonfinite} is non-finite (NaN or Inf); its loss is set to zero",
                NonFiniteGuidanceWarning,
                stacklevel=2,
            )
            target = latents
        grad_norm = (latents - target).norm()
    loss = 0.5 * F.mse_loss(z0, target, reduction="mean")
    return GuidanceOutput(
        loss=loss,
        target=target,
        grad_norm=grad_norm,
        t=t,
        t_prime=t_prime,
        model_evaluations=evaluations + 1,
        noise=kappa,
        noise_pred=noise_pred,
        x_noisy=x_noisy,
        fixed_point=fixed_point,
        nonfinite=nonfinite,
    )
