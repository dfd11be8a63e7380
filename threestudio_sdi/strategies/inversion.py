"""``inversion`` (SDI) and ``uncond-inversion`` (ISM-style): κ from DDIM inversion of z0 up to t′.

SDI recovers the noise that explains the render by inverting DDIM (docs/method.md §2 steps 2–3): from
z0 along the preset's grid of stride T/n below t, then one partial hop to t′ = t + δ (δ ≥ 0, the
preset's overshoot), each hop at CFG γ_inv (``inversion.guidance_scale``); then

    κ = (x_{t′} − sqrt(ᾱ_{t′}) z0) / sqrt(1 − ᾱ_{t′})

plus the entropy term of the preset: once at the end, κ += η·sqrt(1−ᾱ_t)·n (``paper``, eq. 11), or
η·ς_{a,b}·n after every hop (``official``). ``uncond-inversion`` inverts without the prompt (ISM).
Evaluations per step, n = 10, t = 980 / 500 / 250: ``official`` 11 / 6 / 4 inversion hops (+1
prediction), ``paper`` 10 / 5 / 3.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..classifier_free import Conditioning
from ..ddim import InversionResult, ddim_invert
from ..noise import randn_like
from ..presets import draw_overshoot, inversion_timesteps
from .base import NoiseEstimate, StepContext, register_strategy


def overshoot_timestep(step: StepContext) -> int:
    """t′ = min(t + δ, T − 1) with δ drawn as the preset says, or t without ``overshoot``."""
    if not step.inversion.overshoot:
        return step.t
    num_train = step.schedule.num_train_timesteps
    delta = draw_overshoot(step.preset, step.inversion.n_steps, num_train, step.generator)
    return min(step.t + delta, num_train - 1)


def entropy_term(step: StepContext) -> Tensor:
    """The paper's entropy term H(t) = η·sqrt(1−ᾱ_t)·n, n ~ N(0, I) (App. A, eq. 11)."""
    alpha = step.schedule.alpha_bar(step.t, like=step.z0)
    return step.inversion.eta * (1 - alpha).sqrt() * randn_like(step.z0, step.generator)


def inversion_grid(step: StepContext, t_prime: int) -> list[int]:
    """The ascending inversion timesteps of the step at (t, t′): the preset's grid, then t′."""
    return inversion_timesteps(
        step.t,
        t_prime,
        step.inversion.n_steps,
        step.preset,
        step.schedule.num_train_timesteps,
        step.schedule.steps_offset,
    )


def invert(
    step: StepContext, timesteps: list[int], conditioning: Conditioning, eta: float
) -> InversionResult:
    """DDIM inversion of the step's z0 along ``timesteps`` at CFG γ_inv."""
    return ddim_invert(
        step.model,
        step.z0,
        timesteps,
        conditioning,
        step.inversion.guidance_scale,
        step.cfg_mode,
        eta=eta,
        generator=step.generator,
        schedule=step.schedule,
    )


@register_strategy("inversion")
@dataclass(frozen=True)
class InversionNoise:
    """SDI's κ: prompt-conditioned DDIM inversion to t + δ, then the preset's entropy term."""

    def inversion_conditioning(self, step: StepContext) -> Conditioning:
        """What the inversion is conditioned on: the step's prompt (and cameras)."""
        return step.conditioning

    def timesteps(self, step: StepContext, t_prime: int) -> list[int]:
        """The inversion's timesteps: the preset's grid below t, then t′."""
        return inversion_grid(step, t_prime)

    def run_inversion(
        self, step: StepContext, timesteps: list[int], conditioning: Conditioning, eta: float
    ) -> InversionResult:
        """The inversion itself: DDIM (:func:`invert`)."""
        return invert(step, timesteps, conditioning, eta)

    def __call__(self, step: StepContext) -> NoiseEstimate:
        t_prime = overshoot_timestep(step)
        every_hop = step.preset.eta_placement == "every-hop"
        eta = step.inversion.eta if every_hop else 0.0
        timesteps = self.timesteps(step, t_prime)
        inverted = self.run_inversion(step, timesteps, self.inversion_conditioning(step), eta)
        kappa = inverted.noise
        if not every_hop and step.inversion.eta > 0:
            kappa = kappa + entropy_term(step)
        return NoiseEstimate(kappa, t_prime, inverted.model_evaluations)


@register_strategy("uncond-inversion")
@dataclass(frozen=True)
class UnconditionalInversionNoise(InversionNoise):
    """ISM-style κ: the same inversion without the prompt (cameras kept for view-conditioned models)."""

    def inversion_conditioning(self, step: StepContext) -> Conditioning:
        return step.conditioning.unconditional()
