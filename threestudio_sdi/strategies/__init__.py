"""Noise strategies of a guidance step: the κ of SDS, DDIM, SDI and ISM, by name.

See :mod:`threestudio_sdi.strategies.base` for the interface. Importing this package registers
``random``, ``cached``, ``inversion`` and ``uncond-inversion``; the research strategies are registered
by :mod:`threestudio_sdi.experimental` when a name asks for them.
"""

from .base import (
    InversionConfig,
    NoiseEstimate,
    NoiseStrategy,
    StepContext,
    make_strategy,
    one_step_target,
    register_strategy,
    strategy_class,
    strategy_names,
    strategy_options,
)
from .cached import CachedNoise
from .inversion import InversionNoise, UnconditionalInversionNoise
from .random_noise import RandomNoise

__all__ = [
    "CachedNoise",
    "InversionConfig",
    "InversionNoise",
    "NoiseEstimate",
    "NoiseStrategy",
    "RandomNoise",
    "StepContext",
    "UnconditionalInversionNoise",
    "make_strategy",
    "one_step_target",
    "register_strategy",
    "strategy_class",
    "strategy_names",
    "strategy_options",
]
