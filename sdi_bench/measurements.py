"""What the training process measures about itself, and the verdict it draws (the launch report)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

EMPTY_COVERAGE = 0.001
"""A test view is empty when less than this fraction of its pixels has opacity > 0.5; a run whose test
views are all empty diverged ("empty volume")."""


@dataclass
class Measurements:
    """Filled by :class:`.probe.BenchProbe` during fit and test."""

    steps: int = 0
    first_step_at: float | None = None
    last_step_at: float | None = None
    nonfinite_losses: int = 0
    last_loss_finite: bool | None = None
    params_finite: bool | None = None
    peak_vram_bytes: int | None = None
    gpu_name: str | None = None
    opacity_coverage: list[float] = field(default_factory=list)
    prompt: str | None = None
    """The prompt the system's prompt processor holds (``system.prompt_processor.prompt``), if it has one."""

    @property
    def train_seconds(self) -> float | None:
        if self.first_step_at is None or self.last_step_at is None:
            return None
        return self.last_step_at - self.first_step_at

    @property
    def steps_per_second(self) -> float | None:
        seconds = self.train_seconds
        return self.steps / seconds if seconds and seconds > 0 else None

    def divergence(self, empty_coverage: float = EMPTY_COVERAGE) -> str | None:
        """``"nan"``, ``"empty"`` or None: how a run that raised nothing still diverged."""
        if self.last_loss_finite is False or self.params_finite is False:
            return "nan"
        if self.opacity_coverage and max(self.opacity_coverage) < empty_coverage:
            return "empty"
        return None

    def report(self) -> dict[str, Any]:
        """The measured fields of the launch report."""
        coverage = max(self.opacity_coverage) if self.opacity_coverage else None
        return {
            "steps": self.steps if self.first_step_at is not None else None,
            "train_seconds": self.train_seconds,
            "steps_per_second": self.steps_per_second,
            "peak_vram_bytes": self.peak_vram_bytes,
            "gpu_name": self.gpu_name,
            "nonfinite_losses": self.nonfinite_losses,
            "params_finite": self.params_finite,
            "test_views": len(self.opacity_coverage),
            "max_opacity_coverage": None if coverage is None or math.isnan(coverage) else coverage,
            "prompt": self.prompt,
        }
