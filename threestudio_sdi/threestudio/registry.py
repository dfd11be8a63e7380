"""Registration into threestudio's global registry that tolerates being run twice.

threestudio's ``register(name)`` raises ValueError for a name that is taken. Our modules can run
more than once in one process (``importlib.reload``, a test importing the plugin and launch.py
loading ``custom/threestudio-sdi`` after it, ...), so :func:`register` accepts a name that is taken
by *our own* class (same module and qualified name: the new definition replaces the old one) and
raises a ValueError naming the other class when the name belongs to someone else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import threestudio

T = TypeVar("T", bound=type)


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(name: str) -> Callable[[T], T]:
    """Class decorator: ``threestudio.register(name)``, idempotent for our own class."""

    def decorator(cls: T) -> T:
        modules = threestudio.__modules__
        existing = modules.get(name)
        if existing is None:
            return threestudio.register(name)(cls)
        if existing is cls:
            return cls
        if _qualified_name(existing) == _qualified_name(cls):
            modules[name] = cls
            return cls
        raise ValueError(
            f"threestudio already has a module registered as {name!r} "
            f"({_qualified_name(existing)}); threestudio-sdi cannot register "
            f"{_qualified_name(cls)} under the same name. Remove the other extension from custom/ "
            "or rename one of them."
        )

    return decorator
