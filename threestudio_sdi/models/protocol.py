"""The base of this package's models: the denoiser interface's schedule attributes from one schedule.

The interface itself is defined in the core, :mod:`threestudio_sdi.denoiser`.
"""

from __future__ import annotations

from torch import Tensor

from ..schedule import NoiseSchedule


class ScheduledModel:
    """Base of our models: the protocol's schedule attributes, derived from ``self.schedule``."""

    schedule: NoiseSchedule

    @property
    def alphas_cumprod(self) -> Tensor:
        return self.schedule.alphas_cumprod

    @property
    def initial_alpha_cumprod(self) -> float:
        return self.schedule.initial_alpha_cumprod

    @property
    def steps_offset(self) -> int:
        return self.schedule.steps_offset
