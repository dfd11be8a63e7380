"""``research-inversion``: SDI's inversion with research options that change its grid or its order.

All off by default, where it equals ``inversion`` exactly:

* ``skip_origin`` (``official`` grid only): drop the origin −(T/n − offset), whose hop to ``offset``
  spends one evaluation to move z0 from ᾱ_0 to ᾱ_offset (a near no-op: 0.99915 → 0.99830 for SD);
  z0 is taken as x at ``offset`` instead. One evaluation fewer at every t (10 at t = 980, 3 at t = 250).
* ``adaptive_steps`` (:func:`adaptive_inversion_steps`): the grid of n_eff = max(1, ⌊n·t/T + ½⌋)
  steps instead of n, so about n·(t/T)² grid points lie below t instead of n·t/T: fewer hops at small t
  (unchanged near t = T). The overshoot δ keeps the stride T/n of the configured n.
* ``order=2``: a multistep second-order inversion at the same cost. In x̄ = x/sqrt(ᾱ) and
  σ = sqrt((1−ᾱ)/ᾱ) a DDIM hop is Euler's step x̄_b = x̄_a + (σ_b − σ_a) ε̂ of dx̄/dσ = ε_θ; from the
  second hop on, ε̂ is replaced by the two-step Adams–Bashforth extrapolation of this hop's and the
  previous hop's evaluations (:func:`adams_bashforth_epsilon`).

Evaluations per step, ``official`` preset, n = 10, t = 980 / 500 / 250: default 11 / 6 / 4 inversion
hops; ``skip_origin`` 10 / 5 / 3; ``adaptive_steps`` 11 / 4 / 2; the ``paper`` preset 10 / 5 / 3 and
adaptive 10 / 3 / 1; ``order`` does not change them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ...classifier_free import Conditioning, guided_epsilon
from ...ddim import InversionResult, ddim_hop, ddim_sigma, noise_of
from ...errors import check_bool, check_int
from ...noise import randn_like
from ...presets import Preset, inversion_stride, preset_grid
from ...schedule import NoiseSchedule
from ...strategies.base import StepContext, register_strategy
from ...strategies.inversion import InversionNoise

INVERSION_ORDERS = (1, 2)


def adaptive_inversion_steps(n_steps: int, t: int, num_train_timesteps: int) -> int:
    """n_eff = max(1, ⌊n·t/T + ½⌋): the inversion steps of the ``adaptive`` rule at timestep t.

    The grid of stride T/n_eff has about n_eff·t/T ≈ n·(t/T)² points below t: with n = 10 and the
    ``paper`` grid, 10 hops at t = 980, 3 at t = 500 and 1 at t = 250 instead of 10, 5 and 3.
    """
    n_steps = check_int("inversion.n_steps", n_steps, low=1)
    t = check_int("t", t, low=1)
    return max(1, min(n_steps, math.floor(n_steps * t / num_train_timesteps + 0.5)))


def check_skip_origin(skip_origin: bool, preset: Preset) -> None:
    """ValueError unless ``skip_origin`` is off or the grid is the ``official`` one (it has the origin)."""
    if skip_origin and preset.grid != "official":
        raise ValueError(
            "noise_options.skip_origin applies to the 'official' grid only (its evaluation at a negative "
            f"timestep); this preset has the {preset.grid!r} grid"
        )


def research_timesteps(
    t: int,
    t_prime: int,
    n_steps: int,
    preset: Preset,
    num_train_timesteps: int,
    steps_offset: int = 0,
    skip_origin: bool = False,
) -> list[int]:
    """The preset's inversion timesteps (:func:`~threestudio_sdi.presets.inversion_timesteps`), with
    the ``official`` grid's origin dropped under ``skip_origin`` unless no other grid point lies below t."""
    check_skip_origin(skip_origin, preset)
    stride = inversion_stride(n_steps, num_train_timesteps)
    if not 0 < t <= t_prime < num_train_timesteps:
        raise ValueError(f"need 0 < t <= t' < {num_train_timesteps}, got t={t}, t'={t_prime}")
    grid = preset_grid(t, stride, n_steps, preset, steps_offset)
    if skip_origin and len(grid) > 1:
        grid = grid[1:]
    return [*grid, t_prime]


def adams_bashforth_epsilon(
    epsilon: Tensor, previous_epsilon: Tensor, sigma_previous: Tensor, sigma_a: Tensor, sigma_b: Tensor
) -> Tensor:
    """ε̂ of a second-order multistep hop a → b from the evaluations at σ_previous and σ_a.

    Two-step Adams–Bashforth with variable steps on dx̄/dσ = ε: with h = σ_b − σ_a and
    h' = σ_a − σ_previous, ε_eff = ε_a + h/(2h') (ε_a − ε_previous); :func:`ddim_hop` with ε_eff is
    then x̄_b = x̄_a + h ε_eff. Exact when ε is affine in σ along the path.
    """
    ratio = ((sigma_b - sigma_a) / (2 * (sigma_a - sigma_previous))).to(epsilon)
    return epsilon + ratio * (epsilon - previous_epsilon)


@torch.no_grad()
def multistep_invert(
    model: Any,
    z0: Tensor,
    timesteps: Sequence[int],
    conditioning: Conditioning | None = None,
    guidance_scale: float = 0.0,
    cfg_mode: str = "standard",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> InversionResult:
    """Second-order multistep inversion of z0 along ascending ``timesteps`` (module docstring): the
    first hop is DDIM's, every later one uses :func:`adams_bashforth_epsilon`; η as in
    :func:`~threestudio_sdi.ddim.ddim_invert`."""
    schedule = NoiseSchedule.of_model(model)
    conditioning = conditioning or Conditioning()
    x = z0.detach()
    previous: tuple[Tensor, Tensor] | None = None
    hops = list(zip(timesteps, timesteps[1:]))
    for a, b in hops:
        alpha_a, alpha_b = schedule.alpha_bar(a, like=x), schedule.alpha_bar(b, like=x)
        eps = guided_epsilon(model, x, a, conditioning, guidance_scale, cfg_mode, schedule)
        sigma_a, sigma_b = schedule.sigma(a), schedule.sigma(b)
        step_eps = eps
        if previous is not None:
            step_eps = adams_bashforth_epsilon(eps, previous[1], previous[0], sigma_a, sigma_b)
        previous = (sigma_a, eps)
        x = ddim_hop(x, step_eps, alpha_a, alpha_b)
        if eta > 0:
            x = x + eta * ddim_sigma(alpha_b, alpha_a) * randn_like(x, generator)
    alpha_end = schedule.alpha_bar(timesteps[-1], like=x)
    return InversionResult(x=x, noise=noise_of(x, z0.detach(), alpha_end), model_evaluations=len(hops))


@register_strategy("research-inversion")
@dataclass(frozen=True)
class ResearchInversionNoise(InversionNoise):
    """SDI's κ with the research options of the module docstring (defaults: ``inversion`` exactly).

    Attributes:
        order: 1 = DDIM inversion; 2 = multistep second-order inversion (same evaluations).
        skip_origin: drop the ``official`` grid's evaluation at its negative origin (one fewer per step).
        adaptive_steps: n_eff = max(1, ⌊n·t/T + ½⌋) steps at timestep t (fewer hops at small t).
    """

    order: int = 1
    skip_origin: bool = False
    adaptive_steps: bool = False

    def __post_init__(self) -> None:
        if check_int("noise_options.order", self.order) not in INVERSION_ORDERS:
            raise ValueError(f"noise_options.order must be one of {INVERSION_ORDERS}, got {self.order!r}")
        check_bool("noise_options.skip_origin", self.skip_origin)
        check_bool("noise_options.adaptive_steps", self.adaptive_steps)

    def check(self, preset: Preset) -> None:
        """ValueError for options that the preset's grid does not have (at configuration time)."""
        check_skip_origin(self.skip_origin, preset)

    def timesteps(self, step: StepContext, t_prime: int) -> list[int]:
        num_train = step.schedule.num_train_timesteps
        n_steps = step.inversion.n_steps
        if self.adaptive_steps:
            n_steps = adaptive_inversion_steps(n_steps, step.t, num_train)
        offset = step.schedule.steps_offset
        return research_timesteps(step.t, t_prime, n_steps, step.preset, num_train, offset, self.skip_origin)

    def run_inversion(
        self, step: StepContext, timesteps: list[int], conditioning: Conditioning, eta: float
    ) -> InversionResult:
        if self.order == 1:
            return super().run_inversion(step, timesteps, conditioning, eta)
        return multistep_invert(
            step.model, step.z0, timesteps, conditioning, step.inversion.guidance_scale, step.cfg_mode,
            eta, step.generator,
        )  # fmt: skip
