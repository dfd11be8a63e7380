"""``newton-krylov`` and ``safeguarded-anderson`` (research): the fixed point of docs/method.md §1, solved properly.

Both start from the DDIM inversion of z0 to t′ (the ``inversion`` strategy's, without its η noise; its
grid is the step's ``inversion.n_steps``, so a coarse n leaves evaluations for the solver) and solve

    R(κ) = F(κ) − κ = 0,    F(κ) = ε_θ(sqrt(ᾱ_{t′}) z0 + sqrt(1−ᾱ_{t′}) κ, t′, y)   (CFG γ_fwd):

* ``newton-krylov``: :func:`threestudio_sdi.experimental.solvers.newton_krylov` — Newton steps with GMRES in a
  Krylov space of ``krylov_dim`` Jacobian-vector products (``torch.func.jvp``, each charged 2
  evaluations) and a backtracking line search that never lets ‖R‖ grow;
* ``safeguarded-anderson``: :func:`threestudio_sdi.experimental.solvers.refine_fixed_point` (Anderson, memory m)
  with ``restart_factor``: on a growing residual the history is dropped and the iteration restarts from
  the best iterate.

The entropy term η·sqrt(1−ᾱ_t)·n is added after the solve, as in ``fixed-point``. Evaluations: the
inversion's + the solver's (the details are its :class:`~threestudio_sdi.experimental.solvers.FixedPointResult`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from ...classifier_free import Guide
from ...errors import check_int, check_range
from ...strategies.base import NoiseEstimate, StepContext, register_strategy
from ...strategies.inversion import inversion_grid, invert, overshoot_timestep
from ..solvers import FixedPointResult, newton_krylov, refine_fixed_point
from .fixed_point import solved_noise


@dataclass(frozen=True)
class SolvedFromInversion:
    """What the two solvers share: the stopping tolerance, the inversion that starts them, its check,
    and κ = solve(inverted κ) + entropy. A subclass, registered (its ``name`` prefixes its settings in
    errors), adds its options and :meth:`solve`.

    Attributes:
        tolerance: stop once every ‖R‖/‖κ‖ is below it.
    """

    name: ClassVar[str]
    tolerance: float = 1e-3

    def __post_init__(self) -> None:
        check_range(f"{self.name}.tolerance", self.tolerance, 0.0, low_open=True)

    def solve(self, guide: Guide, z0: Tensor, t: int, start: Tensor) -> FixedPointResult:
        """The fixed point of R(κ) = F(κ) − κ at (z0, t) from ``start``."""
        raise NotImplementedError

    def __call__(self, step: StepContext) -> NoiseEstimate:
        """κ = solve(guide, z0, t′, inverted κ) + the entropy term (:func:`.fixed_point.solved_noise`)."""
        t_prime = overshoot_timestep(step)
        inverted = invert(step, inversion_grid(step, t_prime), step.conditioning, 0.0)
        return solved_noise(step, t_prime, inverted.noise, inverted.model_evaluations, self.solve)


@register_strategy("newton-krylov")
@dataclass(frozen=True)
class NewtonKrylovNoise(SolvedFromInversion):
    """Inverted κ, then safeguarded Newton–Krylov on R(κ) = F(κ) − κ (module docstring).

    Attributes:
        newton_steps: Newton steps at most.
        krylov_dim: m, JVPs per Newton step (GMRES dimension).
        max_backtracks: halvings of the step the line search may try.
        (and ``tolerance``: :class:`SolvedFromInversion`)
    """

    newton_steps: int = 1
    krylov_dim: int = 2
    max_backtracks: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        for option, low in (("newton_steps", 0), ("krylov_dim", 1), ("max_backtracks", 0)):
            check_int(f"{self.name}.{option}", getattr(self, option), low=low)

    def solve(self, guide: Guide, z0: Tensor, t: int, start: Tensor) -> FixedPointResult:
        return newton_krylov(
            guide, z0, t, start,
            newton_steps=self.newton_steps, krylov_dim=self.krylov_dim,
            max_backtracks=self.max_backtracks, tolerance=self.tolerance,
        )  # fmt: skip


@register_strategy("safeguarded-anderson")
@dataclass(frozen=True)
class SafeguardedAndersonNoise(SolvedFromInversion):
    """Inverted κ, then Anderson with restarts on residual growth (module docstring).

    Attributes:
        max_iterations: κ updates at most (max_iterations + 1 evaluations).
        memory: Anderson history m.
        mixing: β.
        restart_factor: restart when a residual grows above this multiple of the previous one.
        (and ``tolerance``: :class:`SolvedFromInversion`)
    """

    max_iterations: int = 4
    memory: int = 3
    mixing: float = 0.5
    restart_factor: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(f"{self.name}.max_iterations", self.max_iterations, low=0)
        check_int(f"{self.name}.memory", self.memory, low=1)
        check_range(f"{self.name}.mixing", self.mixing, 0.0, 1.0, low_open=True)
        check_range(f"{self.name}.restart_factor", self.restart_factor, 1.0)

    def solve(self, guide: Guide, z0: Tensor, t: int, start: Tensor) -> FixedPointResult:
        return refine_fixed_point(
            guide, z0, t, start,
            method="anderson", mixing=self.mixing, memory=self.memory, tolerance=self.tolerance,
            max_iterations=self.max_iterations, restart_factor=self.restart_factor,
        )  # fmt: skip
