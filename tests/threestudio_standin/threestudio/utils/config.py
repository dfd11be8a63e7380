"""STAND-IN: config parsing as threestudio does it (structured dataclass: unknown keys are errors)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def parse_structured(fields: Any, cfg: Any = None) -> Any:
    return OmegaConf.structured(fields(**(cfg or {})))


def config_to_primitive(config: Any, resolve: bool = True) -> Any:
    """Like threestudio's: only OmegaConf objects (a plain list is a ValueError, so ``C([...])`` is too)."""
    return OmegaConf.to_container(config, resolve=resolve)
