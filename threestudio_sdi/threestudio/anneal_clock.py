"""Which step of SDI's schedules a training step is at, and what a resume with a new run length does.

SDI's timestep t and the convexity weight are schedules over the run (docs/method.md §2, §4): t decays linearly
from the preset's maximum to its minimum over ``trainer_max_steps`` steps, and the convexity weight
has its knee at 40 % of them. Both read the *position* p(step) of an :class:`AnnealClock` in a
schedule of ``length`` steps. A fresh run has p(step) = min(step, length).

A checkpoint keeps the clock. A run resumed with another length (``trainer.max_steps=20000`` after a
10 000-step run) never restarts the anneal; ``system.guidance.resume_schedule`` says what happens:

* ``keep`` (default): the schedule keeps its length; after it t stays at its minimum (and the
  convexity weight at its final value) for the extra steps;
* ``stretch``: from the resume step s on, the rest of the schedule is spread over the new run:
  p(step) = p(s) + (step − s)·(length − p(s))/(new_end − s), so t continues from its current value
  and reaches its minimum at the new end (no jump).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

from ..errors import check_choice, check_int

RESUME_SCHEDULES = ("keep", "stretch")


@dataclass(frozen=True)
class AnnealClock:
    """The position in a schedule of ``length`` steps at each training step (module docstring).

    Attributes:
        length: steps of the schedule (the run's ``trainer_max_steps`` when it started).
        anchor_step: from this training step on, the position advances linearly ...
        anchor_position: ... from this position ...
        end_step: ... to ``length`` at this training step (None: ``length``, i.e. p(step) = step).
    """

    length: int
    anchor_step: int = 0
    anchor_position: int = 0
    end_step: Optional[int] = None  # noqa: UP045

    def __post_init__(self) -> None:
        check_int("trainer_max_steps", self.length, low=1)
        check_int("anchor_step", self.anchor_step, low=0)
        if not 0 <= check_int("anchor_position", self.anchor_position, low=0) <= self.length:
            raise ValueError(f"anchor_position must be <= length={self.length}, got {self.anchor_position}")
        if self.end_step is not None and self.end_step <= self.anchor_step:
            raise ValueError(f"end_step must be > anchor_step={self.anchor_step}, got {self.end_step}")

    @property
    def end(self) -> int:
        """The training step at which the position reaches ``length``."""
        return self.length if self.end_step is None else self.end_step

    def position(self, step: int) -> int:
        """p(step) in 0 … length, floored; steps before the anchor count from it."""
        step = max(int(step), self.anchor_step)
        done = (step - self.anchor_step) / (self.end - self.anchor_step)
        remaining = self.length - self.anchor_position
        return min(self.anchor_position + math.floor(done * remaining + 1e-9), self.length)

    def stretched(self, step: int, new_end: int) -> AnnealClock:
        """The clock that continues from p(step) and reaches ``length`` at ``new_end`` (> step)."""
        return AnnealClock(self.length, int(step), self.position(step), int(new_end))

    def state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AnnealClock:
        return cls(**state)


def resumed_clock(
    clock: AnnealClock, step: int, saved_run_steps: int, run_steps: int, mode: str
) -> tuple[AnnealClock, Optional[str]]:  # noqa: UP045
    """The clock of a run resumed at ``step`` with ``run_steps`` steps from one of ``saved_run_steps``.

    Returns the clock and, when the run length changed, the warning that says what happens.
    """
    check_choice("resume_schedule", mode, RESUME_SCHEDULES)
    if run_steps == saved_run_steps:
        return clock, None
    position = clock.position(step)
    message = (
        f"resumed at step {step} with trainer.max_steps={run_steps}; the checkpoint's run had {saved_run_steps} "
        f"steps. SDI's schedules (t, convexity weight) are at step {position} of {clock.length} and are not "
        "restarted: "
    )
    if mode == "stretch" and run_steps > step and position < clock.length:
        clock = clock.stretched(step, run_steps)
        return clock, message + (
            f"resume_schedule=stretch spreads the remaining {clock.length - position} schedule steps over "
            f"steps {step}..{run_steps}"
        )
    return clock, message + (
        f"resume_schedule={mode} keeps them; t reaches its minimum at step {clock.end} and stays there"
        + ("" if mode == "keep" else " (nothing left to stretch)")
        + " (system.guidance.resume_schedule=stretch spreads the rest of the schedule over the new run)"
    )
