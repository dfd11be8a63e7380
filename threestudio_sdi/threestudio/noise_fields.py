"""Noise fields fixed on the asset, for the strategies that use one (``uses_noise_field``).

Consistent noise (research: ``noise: consistent-noise``) needs, at every step, the render of a noise
field that lives on the asset — on the geometry, like its colour — into the step's views. Only the system
can render it, so the system gives the guidance a **source**: ``source(batch, shape) -> κ`` with
``batch`` the step's batch (cameras, rays) and ``shape`` = z0's [B, C, h, w], returning N(0, 1) noise of
that shape on z0's device. A source may have ``state_dict()`` / ``load_state_dict()``: the guidance's
checkpointed state carries it, so a resumed run continues the same field.

Sources are made per renderer: ``@register_noise_field("nerf-volume-renderer")`` on a function
``system -> source``. The research sources are in ``threestudio_sdi.experimental.threestudio``, imported
the first time one is asked for. :func:`bind_noise_field` is what a system calls once its guidance is
built (``sdi-ext-system`` does it when training starts).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import Tensor

NoiseFieldSource = Callable[[Mapping[str, Any], tuple[int, ...]], Tensor]
"""(batch, z0's shape) -> the views' render of the noise field, N(0, 1) per element, z0's shape."""
SourceFactory = TypeVar("SourceFactory", bound=Callable[[Any], NoiseFieldSource])
EXPERIMENTAL_SOURCES = "threestudio_sdi.experimental.threestudio"
_SOURCES: dict[str, Callable[[Any], NoiseFieldSource]] = {}


def register_noise_field(renderer_type: str) -> Callable[[SourceFactory], SourceFactory]:
    """Decorator: ``factory(system) -> source`` makes the noise field of systems with this renderer."""

    def decorator(factory: SourceFactory) -> SourceFactory:
        _SOURCES[renderer_type] = factory
        return factory

    return decorator


def noise_field_renderers() -> tuple[str, ...]:
    """The renderer types that have a noise field source (the research ones imported)."""
    try:
        importlib.import_module(EXPERIMENTAL_SOURCES)
    except ModuleNotFoundError as error:
        if error.name is None or not EXPERIMENTAL_SOURCES.startswith(error.name):
            raise
    return tuple(sorted(_SOURCES))


def bind_noise_field(system: Any) -> None:
    """Give ``system.guidance`` the noise field of the system's renderer, if its strategy uses one.

    ValueError naming ``system.renderer_type`` when that renderer has no source.
    """
    guidance = getattr(system, "guidance", None)
    if not getattr(guidance, "uses_noise_field", False):
        return
    renderer_type = system.cfg.renderer_type
    known = noise_field_renderers()
    if renderer_type not in known:
        raise ValueError(
            f"system.guidance.noise={guidance.cfg.noise!r} needs a noise field fixed on the asset, rendered "
            f"by the system's renderer, but system.renderer_type={renderer_type!r} has none; renderers "
            f"with one: {', '.join(known) or 'none'}"
        )
    guidance.noise_field = _SOURCES[renderer_type](system)
