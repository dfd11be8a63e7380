"""What a method may bind its guidance to: the run's own asset, renderer settings and seed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from .renderer import RenderSettings


@dataclass(frozen=True)
class RunContext:
    """One distillation run, as :meth:`threestudio_sdi.experimental.lab3d.methods.Method.run_config` sees it.

    Attributes:
        seed: the run's seed.
        density: returns the asset's current density σ [R, R, R] (detached).
        render_settings: the renderer's image size, samples per ray and background.
    """

    seed: int
    density: Callable[[], Tensor]
    render_settings: RenderSettings
