"""The threestudio this plugin runs on: version 0.2.3 or newer, checked once when the plugin loads."""

from __future__ import annotations

import threestudio

from ..extension import MIN_THREESTUDIO_VERSION, parse_version

__all__ = ["MIN_THREESTUDIO_VERSION", "check_threestudio_version", "parse_version"]


def check_threestudio_version() -> str:
    """threestudio's version string; ImportError with the fix when it is older than the minimum."""
    found = getattr(threestudio, "__version__", None)
    minimum = ".".join(map(str, MIN_THREESTUDIO_VERSION))
    if found is None or parse_version(str(found)) < MIN_THREESTUDIO_VERSION:
        raise ImportError(
            f"threestudio-sdi needs threestudio >= {minimum}, found {found or 'a threestudio without __version__'} "
            f"at {getattr(threestudio, '__file__', '?')}: update it (git pull in your threestudio clone)"
        )
    return str(found)
