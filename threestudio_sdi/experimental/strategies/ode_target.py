"""``ode-target`` (research): SDI's one-step target replaced by a k-step DDIM solve of the PF-ODE.

SDI's target is one DDIM step from x_{t′} straight to t = 0 (docs/method.md §2 step 4):
ẑ0 = (x_{t′} − sqrt(1−ᾱ_t) ε̂)/sqrt(ᾱ_t). Here the probability-flow ODE dx̄/dσ = ε_θ(x, t, y)
(x̄ = x/sqrt(ᾱ), σ = sqrt((1−ᾱ)/ᾱ)) is solved from x_{t′} over the grid of k timesteps

    t = s_1 > s_2 > … > s_k = t_end,    s_i = round(t + (t_end − t)(i − 1)/(k − 1)),

by DDIM (Euler in σ): x_{s_{i+1}} = sqrt(ᾱ_{s_{i+1}}) x̂0(s_i) + sqrt(1−ᾱ_{s_{i+1}}) ε̂(s_i), and the
target is the last one-step prediction x̂0(s_k) — exactly :func:`threestudio_sdi.ddim.sample_ddim`
from x_{t′} over that grid, with the model told s_1 = t first (SDI's "denoise slightly lower" trick).
The first evaluation is the guidance step's own prediction ε̂ = CFG(x_{t′}, t, γ_fwd), so the solve
adds k − 1 guided evaluations; k = 1 is the one-step target. Where the one-step target is the
posterior mean E[x0 | x_{t′}] (a blend of the modes at large t), the ODE's endpoint is one sample:
the mode that x_{t′} flows to.

κ comes from any other strategy (``noise``, default ``inversion``), whose evaluations are counted too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...ddim import ddim_hop, sample_ddim
from ...errors import check_int
from ...prediction import predict_x0
from ...presets import Preset
from ...strategies.base import NoiseEstimate, NoiseStrategy, StepContext, make_strategy, register_strategy


def ode_grid(t: int, t_end: int, steps: int) -> list[int]:
    """The k = ``steps`` descending timesteps s_i from t to t_end (module docstring), duplicates dropped."""
    steps = check_int("ode.steps", steps, low=1)
    if steps == 1:
        return [t]
    grid = torch.linspace(t, min(t_end, t), steps, dtype=torch.float64).round().long().tolist()
    return [int(s) for i, s in enumerate(grid) if i == 0 or s < grid[i - 1]]


def solve_ode_target(
    step: StepContext, x_noisy: Tensor, noise_pred: Tensor, grid: list[int]
) -> tuple[Tensor, int]:
    """(x̂0 at the grid's last timestep, extra guided evaluations) of the DDIM solve from x_{t′}.

    ``noise_pred`` is ε̂ at (x_{t′}, grid[0]): its hop to grid[1] costs nothing, then
    :func:`~threestudio_sdi.ddim.sample_ddim` runs over grid[1:], one guided evaluation per point.
    """
    alpha_first = step.schedule.alpha_bar(grid[0], like=x_noisy)
    if len(grid) == 1:
        return predict_x0(x_noisy, noise_pred, alpha_first), 0
    x = ddim_hop(x_noisy, noise_pred, alpha_first, step.schedule.alpha_bar(grid[1], like=x_noisy))
    target = sample_ddim(
        step.model, x, grid[1:], step.conditioning, step.guidance_scale, step.cfg_mode, disable=True
    )
    return target, len(grid) - 1


@register_strategy("ode-target")
@dataclass(frozen=True)
class OdeTarget:
    """κ from ``noise``; target ẑ0 = a k-step DDIM solve of the PF-ODE from x_{t′} (module docstring).

    Attributes:
        noise: the strategy that gives κ: an instance, or a name (its defaults); default ``inversion``.
        steps: k ≥ 1 timesteps of the solve (k − 1 extra evaluations per step).
        t_end: the solve's last timestep (clamped to ≤ t).
    """

    noise: NoiseStrategy | str = "inversion"
    steps: int = 6
    t_end: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.noise, str):
            object.__setattr__(self, "noise", make_strategy(self.noise))
        check_int("ode.steps", self.steps, low=1)
        check_int("ode.t_end", self.t_end, low=0)

    def check(self, preset: Preset) -> None:
        """The κ strategy's configuration check, if it has one."""
        check = getattr(self.noise, "check", None)
        if check is not None:
            check(preset)

    def __call__(self, step: StepContext) -> NoiseEstimate:
        return self.noise(step)

    def target(self, step: StepContext, x_noisy: Tensor, noise_pred: Tensor) -> tuple[Tensor, int]:
        return solve_ode_target(step, x_noisy, noise_pred, ode_grid(step.t, self.t_end, self.steps))
