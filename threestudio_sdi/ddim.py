"""DDIM (Song et al., 2021): one hop between two noise levels, sampling, and inversion.

A hop a → b with the noise prediction ε̂ = ε_θ(x_a, a, y) (either direction, a < b inverts):

    x̂0 = (x_a − sqrt(1−ᾱ_a) ε̂) / sqrt(ᾱ_a),      x_b = sqrt(ᾱ_b) x̂0 + sqrt(1−ᾱ_b) ε̂.

In x̄ = x / sqrt(ᾱ) and σ = sqrt((1−ᾱ)/ᾱ) the hop is Euler's step x̄_b = x̄_a + (σ_b − σ_a) ε̂ of the
ODE dx̄/dσ = ε_θ.

Each sampler is a short function over one denoiser (:mod:`threestudio_sdi.denoiser`), with
a ``callback`` receiving a dict per step and a tqdm progress bar that ``disable=True`` turns off,
after k-diffusion's ``sampling.py``. Arguments are checked once, on entry; the hop loops read ᾱ from
the schedule's table on the tensors' device (:meth:`~threestudio_sdi.schedule.NoiseSchedule.alpha_bar`
with ``like``), so no hop copies from or waits for the host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .classifier_free import Conditioning, check_cfg_mode, guided_epsilon
from .errors import check_choice, check_int, check_range
from .noise import randn_like
from .prediction import predict_x0
from .schedule import NoiseSchedule

TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
Callback = Callable[[dict[str, Any]], None]


def ddim_timesteps(
    num_steps: int, num_train_timesteps: int = 1000, spacing: str = "linspace", steps_offset: int = 0
) -> list[int]:
    """Descending DDIM timesteps, with diffusers' three spacings.

    ``linspace``: round(linspace(T−1, 0, n)); ``leading``: k·(T//n) + offset; ``trailing``:
    round(arange(T, 0, −T/n)) − 1.
    """
    num_steps = check_int("num_steps", num_steps, low=1)
    check_choice("timestep_spacing", spacing, TIMESTEP_SPACINGS)
    if num_steps > num_train_timesteps:
        raise ValueError(f"num_steps must be <= {num_train_timesteps} training timesteps, got {num_steps}")
    if spacing == "linspace":
        grid = torch.linspace(num_train_timesteps - 1, 0, num_steps, dtype=torch.float64).round()
    elif spacing == "leading":
        stride = num_train_timesteps // num_steps
        grid = torch.arange(num_steps - 1, -1, -1, dtype=torch.float64) * stride + steps_offset
    else:
        grid = torch.arange(num_train_timesteps, 0, -num_train_timesteps / num_steps).round() - 1
    return [int(t) for t in grid]


def ddim_hop(x_a: Tensor, epsilon: Tensor, alpha_a: Tensor, alpha_b: Tensor) -> Tensor:
    """x_b = sqrt(ᾱ_b) x̂0 + sqrt(1−ᾱ_b) ε̂ with x̂0 from (x_a, ε̂) at ᾱ_a (either direction)."""
    x0 = predict_x0(x_a, epsilon, alpha_a)
    return alpha_b.to(x_a).sqrt() * x0 + (1 - alpha_b.to(x_a)).sqrt() * epsilon


def ddim_sigma(alpha_from: Tensor, alpha_to: Tensor) -> Tensor:
    """DDIM's stochastic σ of the denoising step from ᾱ_from to ᾱ_to (ᾱ_to > ᾱ_from), at eta = 1.

    ς² = ((1 − ᾱ_to)/(1 − ᾱ_from)) · (1 − ᾱ_from/ᾱ_to) (Song et al., eq. 16).
    """
    return ((1 - alpha_to) / (1 - alpha_from) * (1 - alpha_from / alpha_to)).clamp_min(0).sqrt()


def _check_timesteps(name: str, timesteps: Sequence[int], schedule: NoiseSchedule) -> list[int]:
    steps = [int(t) for t in timesteps]
    if len(steps) < 2:
        raise ValueError(f"{name} needs at least 2 timesteps, got {steps}")
    if max(steps) >= schedule.num_train_timesteps:
        raise ValueError(
            f"{name} contains timestep {max(steps)}, outside 0..{schedule.num_train_timesteps - 1}"
        )
    return steps


@torch.no_grad()
def sample_ddim(
    model: Any,
    x: Tensor,
    timesteps: Sequence[int],
    conditioning: Conditioning | None = None,
    guidance_scale: float = 1.0,
    cfg_mode: str = "standard",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
) -> Tensor:
    """DDIM sampling (Song et al., 2021, eq. 12) from x at ``timesteps[0]`` down ``timesteps``.

    Returns the one-step denoised image x̂0 at the last timestep (diffusers' ``pred_original_sample``
    of its last step). ``eta`` > 0 adds DDIM's stochastic noise. The callback receives
    ``{"x", "i", "t", "denoised", "eps"}`` after each model evaluation.
    """
    schedule = NoiseSchedule.of_model(model)
    conditioning = conditioning or Conditioning()
    eta = check_range("eta", eta, 0.0)
    check_cfg_mode(cfg_mode)
    steps = [int(t) for t in timesteps]
    if not steps:
        raise ValueError("timesteps must not be empty")
    if any(b >= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"sampling timesteps must be strictly decreasing, got {steps}")
    denoised = x
    for i, t in enumerate(tqdm(steps, disable=disable, desc="DDIM", leave=False)):
        alpha_t = schedule.alpha_bar(t, like=x)
        eps = guided_epsilon(model, x, t, conditioning, guidance_scale, cfg_mode, schedule)
        denoised = predict_x0(x, eps, alpha_t)
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "denoised": denoised, "eps": eps})
        if i + 1 < len(steps):
            alpha_next = schedule.alpha_bar(steps[i + 1], like=x)
            sigma = eta * ddim_sigma(alpha_t, alpha_next)
            direction = (1 - alpha_next - sigma**2).clamp_min(0).sqrt() * eps
            x = alpha_next.sqrt() * denoised + direction
            if eta > 0:
                x = x + sigma * randn_like(x, generator)
    return denoised


@dataclass(frozen=True)
class InversionResult:
    """Output of :func:`ddim_invert`.

    Attributes:
        x: x_{t'} reached at the last timestep.
        noise: κ = (x_{t'} − sqrt(ᾱ_{t'}) z0) / sqrt(1 − ᾱ_{t'}), the noise that explains z0 at t'.
        model_evaluations: guided model evaluations spent (one per hop).
    """

    x: Tensor
    noise: Tensor
    model_evaluations: int


@torch.no_grad()
def ddim_invert(
    model: Any,
    z0: Tensor,
    timesteps: Sequence[int],
    conditioning: Conditioning | None = None,
    guidance_scale: float = 0.0,
    cfg_mode: str = "standard",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    disable: bool | None = True,
    schedule: NoiseSchedule | None = None,
) -> InversionResult:
    """DDIM inversion (Song et al., 2021 §4.3; Mokady et al., 2023) of z0 along ascending ``timesteps``.

    z0 is taken as x at ``timesteps[0]`` (a negative first timestep uses the initial ᾱ, as the
    released SDI code does at −99). Each hop a → b evaluates ε̂ = CFG(x, a, γ) and applies
    :func:`ddim_hop`; with ``eta`` > 0 it then adds η·ς_{a,b}·n, ς the DDIM σ of the reverse step
    b → a (the released code's per-hop entropy). No gradient flows through inversion. ``schedule`` is
    the model's (read from it when None).
    """
    schedule = schedule or NoiseSchedule.of_model(model)
    conditioning = conditioning or Conditioning()
    eta = check_range("inversion_eta", eta, 0.0)
    check_cfg_mode(cfg_mode)
    steps = _check_timesteps("inversion timesteps", timesteps, schedule)
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"inversion timesteps must be strictly increasing, got {steps}")
    x = z0.detach()
    hops = list(zip(steps, steps[1:]))
    for i, (a, b) in enumerate(tqdm(hops, disable=disable, desc="DDIM inversion", leave=False)):
        alpha_a, alpha_b = schedule.alpha_bar(a, like=x), schedule.alpha_bar(b, like=x)
        eps = guided_epsilon(model, x, a, conditioning, guidance_scale, cfg_mode, schedule)
        x = ddim_hop(x, eps, alpha_a, alpha_b)
        if eta > 0:
            x = x + eta * ddim_sigma(alpha_b, alpha_a) * randn_like(x, generator)
        if callback is not None:
            callback({"x": x, "i": i, "t": b, "eps": eps})
    return InversionResult(
        x=x,
        noise=noise_of(x, z0.detach(), schedule.alpha_bar(steps[-1], like=x)),
        model_evaluations=len(hops),
    )


def noise_of(x_t: Tensor, z0: Tensor, alpha_bar: Tensor) -> Tensor:
    """κ = (x_t − sqrt(ᾱ) z0) / sqrt(1 − ᾱ), the noise that explains z0 at the level of x_t."""
    return (x_t - alpha_bar.sqrt() * z0) / (1 - alpha_bar).sqrt()
