"""The research noise strategies, registered on import (see :mod:`threestudio_sdi.experimental`)."""

from .consistent_noise import ConsistentNoise, NoiseField
from .fixed_point import FixedPointNoise
from .newton_krylov import NewtonKrylovNoise, SafeguardedAndersonNoise
from .ode_target import OdeTarget
from .research_inversion import ResearchInversionNoise

__all__ = [
    "ConsistentNoise",
    "FixedPointNoise",
    "NewtonKrylovNoise",
    "NoiseField",
    "OdeTarget",
    "ResearchInversionNoise",
    "SafeguardedAndersonNoise",
]
