"""STAND-IN for threestudio's registry (tests only; see ../README.md). Not threestudio."""

from __future__ import annotations

import logging

__standin__ = True
__version__ = "0.2.3"  # the version the stand-in imitates (the plugin checks it)
__modules__: dict[str, type] = {}

logger = logging.getLogger("threestudio-standin")


def register(name: str):
    """Class decorator storing the class under ``name``; a taken name raises ValueError."""

    def decorator(cls: type) -> type:
        if name in __modules__:
            raise ValueError(f"Module {name} already exists! (stand-in registry)")
        __modules__[name] = cls
        return cls

    return decorator


def find(name: str) -> type:
    """The class registered as ``name`` (KeyError when unknown)."""
    return __modules__[name]


def info(*args, **kwargs) -> None:
    logger.info(*args, **kwargs)


def warn(*args, **kwargs) -> None:
    logger.warning(*args, **kwargs)


def debug(*args, **kwargs) -> None:
    logger.debug(*args, **kwargs)
