"""The two SDI presets (docs/method.md §3) and the inversion grid and overshoot δ each one implies.

| key                  | ``paper`` (eqs. + App. A)          | ``official`` (released code)                  |
|----------------------|------------------------------------|-----------------------------------------------|
| t range (annealed)   | 1.0 → 0.2                          | 0.98 → 0.25                                   |
| overshoot δ above t  | U(0, T/30), floored to an integer  | U{0 … T/n − 1}                                |
| inversion grid       | 0, T/n, 2T/n, … below t, then t'   | −(T/n − offset), offset, T/n + offset, … < t, then t' |
| eta                  | once at the end on κ               | after every hop, scaled by DDIM's ς           |
| CFG without Perp-Neg | ε_u + γ (ε_c − ε_u)                | ε_c + γ (ε_c − ε_u)                           |

``offset`` is the scheduler's ``steps_offset`` (1 for Stable Diffusion, so the official grid is
−99, 1, 101, …, 901: 11 evaluations at t = 980, 4 at t = 250). The paper grid starts at timestep 0
(z0 taken as x_0) and spends ⌈n t / T⌉ evaluations: the paper's int(10 t) hops plus the partial one
to t' (10 at t = 980, 3 at t = 250).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import check_choice, check_int

OVERSHOOTS = ("fraction", "stride")
GRIDS = ("paper", "official")
ETA_PLACEMENTS = ("end", "every-hop")


@dataclass(frozen=True)
class Preset:
    """Everything in which the paper and the released code differ (table in the module docstring)."""

    name: str
    min_step_percent: float
    max_step_percent: float
    grid: str
    overshoot: str
    eta_placement: str
    cfg_mode: str


PRESETS: dict[str, Preset] = {
    "paper": Preset("paper", 0.2, 1.0, "paper", "fraction", "end", "standard"),
    "official": Preset("official", 0.25, 0.98, "official", "stride", "every-hop", "quirk"),
}
PAPER_OVERSHOOT_FRACTION = 1 / 30
"""τ ~ U(0, 1/30) of the paper's App. A.1, as a fraction of T."""


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ValueError listing the valid names otherwise."""
    return PRESETS[check_choice("preset", name, tuple(PRESETS))]


def inversion_stride(n_steps: int, num_train_timesteps: int) -> int:
    """T // n, the grid stride of an n-step inversion."""
    n_steps = check_int("inversion.n_steps", n_steps, low=1)
    if n_steps > num_train_timesteps:
        raise ValueError(
            f"inversion.n_steps must be <= {num_train_timesteps} training timesteps, got {n_steps}"
        )
    return num_train_timesteps // n_steps


def inversion_timesteps(
    t: int, t_prime: int, n_steps: int, preset: Preset, num_train_timesteps: int, steps_offset: int = 0
) -> list[int]:
    """Ascending timesteps of the inversion z0 → x_{t'}: the preset's grid points below t, then t'."""
    stride = inversion_stride(n_steps, num_train_timesteps)
    if not 0 < t <= t_prime < num_train_timesteps:
        raise ValueError(f"need 0 < t <= t' < {num_train_timesteps}, got t={t}, t'={t_prime}")
    return [*preset_grid(t, stride, n_steps, preset, steps_offset), t_prime]


def preset_grid(t: int, stride: int, n_steps: int, preset: Preset, steps_offset: int) -> list[int]:
    """The preset's grid points below t: k·stride (paper), or −(stride − offset), offset, stride + offset,
    … (official, ``offset`` the scheduler's ``steps_offset``)."""
    offset = steps_offset if preset.grid == "official" else 0
    grid = [k * stride + offset for k in range(n_steps) if k * stride + offset < t]
    return [offset - stride, *grid] if preset.grid == "official" else grid


def draw_overshoot(
    preset: Preset, n_steps: int, num_train_timesteps: int, generator: torch.Generator | None = None
) -> int:
    """δ ≥ 0 to add to t: floor(u · T/30) (paper) or floor(u · T/n) (official), u ~ U[0, 1)."""
    if preset.overshoot == "fraction":
        width = num_train_timesteps * PAPER_OVERSHOOT_FRACTION
    else:
        width = inversion_stride(n_steps, num_train_timesteps)
    device = generator.device if generator is not None else "cpu"
    u = float(torch.rand((), generator=generator, device=device))  # a CPU generator: no device sync
    return int(math.floor(u * width))
