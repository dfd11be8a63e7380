"""Noise strategies of a guidance step: the κ of SDS, DDIM, SDI, ISM and research variants, by name.

See :mod:`threestudio_sdi.strategies.base` for the interface. Importing this package registers the
built-in strategies: ``random``, ``cached``, ``inversion``, ``uncond-inversion``, ``fixed-point``, and
the research strategies ``newton-krylov``, ``safeguarded-anderson``, ``consistent-noise``, ``ode-target``.
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
from .consistent_noise import ConsistentNoise, NoiseField
from .fixed_point import FixedPointNoise
from .inversion import InversionConfig, InversionNoise, UnconditionalInversionNoise
from .newton_krylov import NewtonKrylovNoise, SafeguardedAndersonNoise
from .ode_target import OdeTarget
from .random_noise import RandomNoise

__all__ = [
    "CachedNoise",
    "ConsistentNoise",
    "FixedPointNoise",
    "InversionConfig",
    "InversionNoise",
    "NewtonKrylovNoise",
    "NoiseEstimate",
    "NoiseField",
    "NoiseStrategy",
    "OdeTarget",
    "RandomNoise",
    "SafeguardedAndersonNoise",
    "StepContext",
    "UnconditionalInversionNoise",
    "make_strategy",
    "one_step_target",
    "register_strategy",
    "strategy_class",
    "strategy_names",
]
