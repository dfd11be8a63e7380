"""``inversion`` (SDI) and ``uncond-inversion`` (ISM-style): κ from DDIM inversion of z0 up to t′.

SDI recovers the noise that explains the render by inverting DDIM (SPEC §2 steps 2–3): from z0 along
the preset's grid of stride T/n below t, then one partial hop to t′ = t + δ (δ ≥ 0, the preset's
overshoot), each hop at CFG γ_inv = ``inversion_guidance_scale``; then

    κ = (x_{t′} − sqrt(ᾱ_{t′}) z0) / sqrt(1 − ᾱ_{t′})

plus the entropy term of the preset: once at the end, κ += η·sqrt(1−ᾱ_t)·n (``paper``, eq. 11), or
η·ς_{a,b}·n after every hop (``official``). ``uncond-inversion`` inverts without the prompt (ISM).

Research options, all off by default (:class:`InversionConfig`): ``order=2`` (multistep second-order
inversion, same evaluations), ``skip_origin`` (no evaluation at the ``official`` grid's negative
origin) and ``adaptive_steps`` (fewer hops at small t), see :mod:`threestudio_sdi.presets`.
Evaluations per step, ``official`` preset, n = 10, t = 980 / 500 / 250: default 11 / 6 / 4 inversion
hops (+1 prediction); ``skip_origin`` 10 / 5 / 3; ``adaptive_steps`` 11 / 4 / 2; the ``paper``
preset: 10 / 5 / 3 and adaptive 10 / 3 / 1; ``order`` does not change them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ..cfg import Conditioning
from ..ddim import InversionResult, check_inversion_order, ddim_invert
from ..errors import check_bool
from ..noise import randn_like
from ..presets import adaptive_inversion_steps, check_skip_origin, draw_overshoot, inversion_timesteps
from .base import NoiseEstimate, StepContext, register_strategy


@dataclass(frozen=True)
class InversionConfig:
    """Research options of the inversion; the defaults are the presets' exact behaviour.

    Attributes:
        order: 1 = DDIM inversion; 2 = multistep second-order inversion (same evaluations).
        skip_origin: drop the ``official`` grid's evaluation at its negative origin (one fewer per step).
        adaptive_steps: n_eff = max(1, ⌊n·t/T + ½⌋) steps at timestep t (fewer hops at small t).
    """

    order: int = 1
    skip_origin: bool = False
    adaptive_steps: bool = False

    def __post_init__(self) -> None:
        check_inversion_order(self.order)
        check_bool("inversion.skip_origin", self.skip_origin)
        check_bool("inversion.adaptive_steps", self.adaptive_steps)


def overshoot_timestep(step: StepContext) -> int:
    """t′ = min(t + δ, T − 1) with δ drawn as the preset says, or t without ``overshoot``."""
    config = step.config
    if not config.overshoot:
        return step.t
    num_train = step.schedule.num_train_timesteps
    delta = draw_overshoot(config.preset_spec, config.inversion_n_steps, num_train, step.generator)
    return min(step.t + delta, num_train - 1)


def entropy_term(step: StepContext) -> Tensor:
    """The paper's entropy term H(t) = η·sqrt(1−ᾱ_t)·n, n ~ N(0, I) (App. A, eq. 11)."""
    alpha = step.schedule.alpha_bar(step.t).to(step.z0)
    return step.config.inversion_eta * (1 - alpha).sqrt() * randn_like(step.z0, step.generator)


def inversion_grid(step: StepContext, t_prime: int, options: InversionConfig) -> list[int]:
    """The ascending inversion timesteps of the step at (t, t′), research options applied."""
    num_train = step.schedule.num_train_timesteps
    n_steps = step.config.inversion_n_steps
    if options.adaptive_steps:
        n_steps = adaptive_inversion_steps(n_steps, step.t, num_train)
    return inversion_timesteps(
        step.t,
        t_prime,
        n_steps,
        step.config.preset_spec,
        num_train,
        step.schedule.steps_offset,
        options.skip_origin,
    )


def invert(
    step: StepContext, t_prime: int, options: InversionConfig, conditioning: Conditioning, eta: float
) -> InversionResult:
    """DDIM inversion of the step's z0 to t′ on its grid, at CFG γ_inv and the options' order."""
    return ddim_invert(
        step.model,
        step.z0,
        inversion_grid(step, t_prime, options),
        conditioning,
        step.config.inversion_guidance_scale,
        step.config.resolved_cfg_mode,
        eta=eta,
        generator=step.generator,
        order=options.order,
    )


@register_strategy("inversion")
@dataclass(frozen=True)
class InversionNoise:
    """SDI's κ: prompt-conditioned DDIM inversion to t + δ, then the preset's entropy term."""

    inversion: InversionConfig = field(default_factory=InversionConfig)

    def inversion_conditioning(self, step: StepContext) -> Conditioning:
        """What the inversion is conditioned on: the step's prompt (and cameras)."""
        return step.conditioning

    def check(self, preset_grid: str) -> None:
        """ValueError for options that the preset's grid does not have (at configuration time)."""
        check_skip_origin(self.inversion.skip_origin, preset_grid)

    def __call__(self, step: StepContext) -> NoiseEstimate:
        t_prime = overshoot_timestep(step)
        every_hop = step.config.preset_spec.eta_placement == "every-hop"
        eta = step.config.inversion_eta if every_hop else 0.0
        inverted = invert(step, t_prime, self.inversion, self.inversion_conditioning(step), eta)
        kappa = inverted.noise
        if not every_hop and step.config.inversion_eta > 0:
            kappa = kappa + entropy_term(step)
        return NoiseEstimate(kappa, t_prime, inverted.model_evaluations)


@register_strategy("uncond-inversion")
@dataclass(frozen=True)
class UnconditionalInversionNoise(InversionNoise):
    """ISM-style κ: the same inversion without the prompt (cameras kept for view-conditioned models)."""

    def inversion_conditioning(self, step: StepContext) -> Conditioning:
        return step.conditioning.unconditional()
