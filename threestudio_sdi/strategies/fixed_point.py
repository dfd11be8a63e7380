"""``fixed-point`` (research): κ refined toward the fixed point κ = F(κ) of SPEC §1.

F(κ) = ε_θ(sqrt(ᾱ_{t′}) z0 + sqrt(1−ᾱ_{t′}) κ, t′, y) at CFG γ_fwd (or ``fixed_point.guidance_scale``),
iterated by :func:`threestudio_sdi.fixed_point.refine_fixed_point` from the inverted κ
(``fixed_point.start="inversion"``: the ``inversion`` strategy's inversion without its η noise) or from
κ ~ N(0, I) (``"random"``). The entropy term η·sqrt(1−ᾱ_t)·n is added once after the refinement, in
both presets (refinement would undo per-hop noise). It spends the inversion's evaluations + one per
residual evaluated; the result's details are the :class:`~threestudio_sdi.fixed_point.FixedPointResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from ..cfg import Guide
from ..fixed_point import FixedPointConfig, FixedPointResult, refine_fixed_point
from ..noise import randn_like
from ..presets import check_skip_origin
from .base import NoiseEstimate, StepContext, register_strategy
from .inversion import InversionConfig, entropy_term, invert, overshoot_timestep

Solver = Callable[[Guide, Tensor, int, Tensor], FixedPointResult]
"""(guide, z0, t′, start) -> the solved fixed point of R(κ) = F(κ) − κ."""


def solved_noise(
    step: StepContext,
    t_prime: int,
    start: Tensor,
    start_evaluations: int,
    solve: Solver,
    scale: float | None = None,
) -> NoiseEstimate:
    """κ = solve(guide at γ = ``scale`` (default γ_fwd), z0, t′, start) + the entropy term once; the
    evaluations of the start and of the solve counted. Shared by every fixed-point strategy."""
    config = step.config
    scale = config.guidance_scale if scale is None else scale
    guide = Guide(step.model, step.conditioning, scale, config.resolved_cfg_mode, step.schedule)
    result = solve(guide, step.z0, t_prime, start)
    kappa = result.noise
    if config.inversion_eta > 0:
        kappa = kappa + entropy_term(step)
    return NoiseEstimate(kappa, t_prime, start_evaluations + result.model_evaluations, details=result)


@register_strategy("fixed-point")
@dataclass(frozen=True)
class FixedPointNoise:
    """Inverted (or random) κ, refined toward κ = F(κ) (module docstring)."""

    fixed_point: FixedPointConfig = field(default_factory=FixedPointConfig)
    inversion: InversionConfig = field(default_factory=InversionConfig)

    def check(self, preset_grid: str) -> None:
        """ValueError for inversion options that the preset's grid does not have."""
        check_skip_origin(self.inversion.skip_origin, preset_grid)

    def __call__(self, step: StepContext) -> NoiseEstimate:
        options = self.fixed_point
        t_prime = overshoot_timestep(step)
        evaluations = 0
        if options.start == "inversion":
            inverted = invert(step, t_prime, self.inversion, step.conditioning, 0.0)
            start, evaluations = inverted.noise, inverted.model_evaluations
        else:
            start = randn_like(step.z0, step.generator)

        def solve(guide: Guide, z0: Tensor, t: int, begin: Tensor) -> FixedPointResult:
            return refine_fixed_point(guide, z0, t, begin, **options.solver_options())

        return solved_noise(step, t_prime, start, evaluations, solve, options.guidance_scale)
