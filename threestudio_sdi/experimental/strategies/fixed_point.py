"""``fixed-point`` (research): κ refined toward the fixed point κ = F(κ) of docs/method.md §1.

F(κ) = ε_θ(sqrt(ᾱ_{t′}) z0 + sqrt(1−ᾱ_{t′}) κ, t′, y) at CFG γ_fwd (or the option ``guidance_scale``),
iterated by :func:`threestudio_sdi.experimental.solvers.refine_fixed_point` from the inverted κ
(``start="inversion"``: the ``inversion`` strategy's inversion without its η noise) or from
κ ~ N(0, I) (``"random"``). The entropy term η·sqrt(1−ᾱ_t)·n is added once after the refinement, in
both presets (refinement would undo per-hop noise). It spends the inversion's evaluations + one per
residual evaluated; the result's details are the :class:`~threestudio_sdi.experimental.solvers.FixedPointResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from ...classifier_free import Guide
from ...noise import randn_like
from ...strategies.base import NoiseEstimate, StepContext, register_strategy
from ...strategies.inversion import entropy_term, inversion_grid, invert, overshoot_timestep
from ..solvers import FixedPointConfig, FixedPointResult, refine_fixed_point

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
    scale = step.guidance_scale if scale is None else scale
    guide = Guide(step.model, step.conditioning, scale, step.cfg_mode, step.schedule)
    result = solve(guide, step.z0, t_prime, start)
    kappa = result.noise
    if step.inversion.eta > 0:
        kappa = kappa + entropy_term(step)
    return NoiseEstimate(kappa, t_prime, start_evaluations + result.model_evaluations, details=result)


@register_strategy("fixed-point")
@dataclass(frozen=True)
class FixedPointNoise(FixedPointConfig):
    """Inverted (or random) κ, refined toward κ = F(κ) (module docstring); its options are those of
    :class:`~threestudio_sdi.experimental.solvers.FixedPointConfig`."""

    def __call__(self, step: StepContext) -> NoiseEstimate:
        t_prime = overshoot_timestep(step)
        evaluations = 0
        if self.start == "inversion":
            inverted = invert(step, inversion_grid(step, t_prime), step.conditioning, 0.0)
            start, evaluations = inverted.noise, inverted.model_evaluations
        else:
            start = randn_like(step.z0, step.generator)

        def solve(guide: Guide, z0: Tensor, t: int, begin: Tensor) -> FixedPointResult:
            return refine_fixed_point(guide, z0, t, begin, **self.solver_options())

        return solved_noise(step, t_prime, start, evaluations, solve, self.guidance_scale)
