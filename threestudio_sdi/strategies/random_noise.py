"""``random``: κ ~ N(0, I) drawn afresh every step at t′ = t — the noise of SDS (docs/method.md §1)."""

from __future__ import annotations

from dataclasses import dataclass

from ..noise import randn_like
from .base import NoiseEstimate, StepContext, register_strategy


@register_strategy("random")
@dataclass(frozen=True)
class RandomNoise:
    """SDS noise: κ ~ N(0, I) from the step's generator; no model evaluation."""

    def __call__(self, step: StepContext) -> NoiseEstimate:
        return NoiseEstimate(randn_like(step.z0, step.generator), step.t)
