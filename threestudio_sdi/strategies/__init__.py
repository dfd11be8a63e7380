"""Noise strategies of a guidance step: the κ of SDS, DDIM, SDI, ISM and research variants, by name.

See :mod:`threestudio_sdi.strategies.base` for the interface. Importing this package registers the
built-in strategies: ``random``, ``cached``, ``inversion``, ``uncond-inversion``, ``fixed-point``.
"""

from .base import (
    NoiseEstimate,
    NoiseStrategy,
    StepContext,
    make_strategy,
    one_step_target,
    register_strategy,
    strategy_class,
    strategy_names,
)
from .cached import CachedNoise
from .fixed_point import FixedPointNoise
from .inversion import InversionConfig, InversionNoise, UnconditionalInversionNoise
from .random_noise import RandomNoise

__all__ = [
    "CachedNoise",
    "FixedPointNoise",
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
]
