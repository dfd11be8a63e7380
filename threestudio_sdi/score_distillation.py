"""One score-distillation guidance step: SDS, DDIM κ-cache, SDI and ISM-style, on any denoiser.

For a render (or latent) z0 at timestep t (SPEC §2):

1. noise κ by the chosen strategy and x_{t'} = sqrt(ᾱ_{t'}) z0 + sqrt(1−ᾱ_{t'}) κ:
   ``random`` κ ~ N(0, I) (SDS) · ``cached`` κ given by the caller, the previous step's ε̂ (DDIM) ·
   ``inversion`` DDIM inversion of z0 to t' = t + δ conditioned on the prompt with CFG γ_inv (SDI) ·
   ``uncond-inversion`` the same, unconditioned (ISM-style);
2. ε̂ = CFG(x_{t'}, t, γ_fwd) — the model is told t (the "denoise slightly lower" trick);
3. target ẑ0 = (x_{t'} − sqrt(1−ᾱ_t) ε̂) / sqrt(ᾱ_t);
4. ``loss`` = ½ mean((z0 − stopgrad(ẑ0))²), whose gradient is (z0 − ẑ0)/N, and with δ = 0
   z0 − ẑ0 = σ_t (ε̂ − κ): SDS with weight σ_t and its noise replaced by κ (paper eq. 10).

The mean runs over every element of the batch; the released code also divides by the batch size,
which is the same at its only supported batch size, 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .cfg import CFG_MODES, Conditioning, guided_epsilon
from .ddim import ddim_invert
from .errors import check_choice, check_finite_tensor, check_int, check_range, check_same_shape
from .noise import randn_like
from .prediction import predict_x0
from .presets import Preset, draw_overshoot, get_preset, inversion_stride, inversion_timesteps
from .schedule import NoiseSchedule

NOISE_STRATEGIES = ("random", "cached", "inversion", "uncond-inversion")
INVERSION_STRATEGIES = ("inversion", "uncond-inversion")


@dataclass(frozen=True)
class GuidanceConfig:
    """Settings of a guidance step; validated on construction (ValueError naming the key).

    Attributes:
        preset: ``"paper"`` or ``"official"`` (see :mod:`threestudio_sdi.presets`).
        noise: ``"random"`` (SDS), ``"cached"`` (DDIM), ``"inversion"`` (SDI), ``"uncond-inversion"`` (ISM).
        guidance_scale: γ_fwd, CFG of the prediction.
        inversion_guidance_scale: γ_inv, CFG of the inversion (negative by default, paper §6.2).
        inversion_n_steps: n, the inversion grid has stride T/n.
        inversion_eta: η ≥ 0 of the entropy term, placed as the preset says.
        overshoot: draw δ > 0 as the preset says; False inverts to t exactly.
        cfg_mode: ``"standard"`` or ``"quirk"``; None takes the preset's.
    """

    preset: str = "paper"
    noise: str = "inversion"
    guidance_scale: float = 7.5
    inversion_guidance_scale: float = -7.5
    inversion_n_steps: int = 10
    inversion_eta: float = 0.3
    overshoot: bool = True
    cfg_mode: str | None = None

    def __post_init__(self) -> None:
        get_preset(self.preset)
        check_choice("noise", self.noise, NOISE_STRATEGIES)
        check_range("guidance_scale", self.guidance_scale)
        check_range("inversion_guidance_scale", self.inversion_guidance_scale)
        check_int("inversion_n_steps", self.inversion_n_steps, low=1)
        check_range("inversion_eta", self.inversion_eta, 0.0)
        if not isinstance(self.overshoot, bool):
            raise ValueError(f"overshoot must be true or false, got {self.overshoot!r}")
        if self.cfg_mode is not None:
            check_choice("cfg_mode", self.cfg_mode, CFG_MODES)

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
        model_evaluations: guided model evaluations spent (inversion hops + 1).
        noise: κ; noise_pred: ε̂ at (x_{t'}, t); x_noisy: x_{t'}.
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
        if config.noise in INVERSION_STRATEGIES:
            inversion_stride(config.inversion_n_steps, num_train)
            if config.overshoot:
                delta = draw_overshoot(preset, config.inversion_n_steps, num_train, generator)
                t_prime = min(t + delta, num_train - 1)
            inverted = ddim_invert(
                model,
                latents,
                inversion_timesteps(
                    t, t_prime, config.inversion_n_steps, preset, num_train, schedule.steps_offset
                ),
                conditioning if config.noise == "inversion" else conditioning.unconditional(),
                config.inversion_guidance_scale,
                cfg_mode,
                eta=config.inversion_eta if preset.eta_placement == "every-hop" else 0.0,
                generator=generator,
            )
            kappa, evaluations = inverted.noise, inverted.model_evaluations
            if preset.eta_placement == "end" and config.inversion_eta > 0:
                entropy = config.inversion_eta * (1 - schedule.alpha_bar(t).to(latents)).sqrt()
                kappa = kappa + entropy * randn_like(latents, generator)
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
    )
