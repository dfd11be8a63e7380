"""``cached``: κ given by the caller — DDIM's own previous prediction ε̂ (the κ-cache, docs/method.md §1).

In 2D, where the image is the parameter and does not change between guidance calls, caching κ makes
score distillation reproduce DDIM sampling exactly (a known-answer test). In 3D every step renders a
new view, so the cache is meaningless there.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import check_same_shape
from .base import NoiseEstimate, StepContext, register_strategy


@register_strategy("cached")
@dataclass(frozen=True)
class CachedNoise:
    """κ = the ``noise=`` passed to the guidance step (typically the previous ``noise_pred``)."""

    takes_cached_noise = True

    def __call__(self, step: StepContext) -> NoiseEstimate:
        assert step.cached is not None
        check_same_shape("noise", step.cached, step.z0, "z0")
        return NoiseEstimate(step.cached.detach().to(step.z0), step.t)
