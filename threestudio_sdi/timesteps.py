"""Timestep policies of score distillation (docs/method.md §2 step 1).

* annealed (SDI): t = int(T · ((max − min)(1 − step/max_steps) + min)), shared by every view of a
  step — the released code's formula, 980 → 250 for the ``official`` range over 10 000 steps;
* uniform random (SDS): t ~ U{int(T·min) … int(T·max)}.

Both clamp t into 1 … T−1 (the paper's range ends at 1.0, i.e. T, which is not a timestep).
"""

from __future__ import annotations

import torch

from .errors import check_int, check_range


def check_step_range(min_step_percent: float, max_step_percent: float) -> tuple[float, float]:
    """Both percents in (0, 1] and min ≤ max, else ValueError naming the setting."""
    low = check_range("min_step_percent", min_step_percent, 0.0, 1.0, low_open=True)
    high = check_range("max_step_percent", max_step_percent, 0.0, 1.0, low_open=True)
    if low > high:
        raise ValueError(
            f"min_step_percent must be <= max_step_percent, got min_step_percent={min_step_percent} "
            f"> max_step_percent={max_step_percent}"
        )
    return low, high


def clamp_timestep(t: int, num_train_timesteps: int) -> int:
    """t clamped into 1 … T−1, the timesteps a guidance step accepts."""
    return min(max(t, 1), num_train_timesteps - 1)


def annealed_timestep(
    step: int, max_steps: int, min_step_percent: float, max_step_percent: float, num_train_timesteps: int
) -> int:
    """Linearly annealed t at training ``step`` of ``max_steps`` (held at min after max_steps)."""
    low, high = check_step_range(min_step_percent, max_step_percent)
    max_steps = check_int("trainer_max_steps", max_steps, low=1)
    step = check_int("step", step, low=0)
    progress = min(step / max_steps, 1.0)
    fraction = (high - low) * (1 - progress) + low
    return clamp_timestep(int(num_train_timesteps * fraction), num_train_timesteps)


def random_timestep(
    min_step_percent: float,
    max_step_percent: float,
    num_train_timesteps: int,
    generator: torch.Generator | None = None,
) -> int:
    """t ~ U{int(T·min) … int(T·max)}, clamped into 1 … T−1."""
    low, high = check_step_range(min_step_percent, max_step_percent)
    first = clamp_timestep(int(num_train_timesteps * low), num_train_timesteps)
    last = clamp_timestep(int(num_train_timesteps * high), num_train_timesteps)
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(first, last + 1, (), generator=generator, device=device))
