"""The threestudio this plugin runs on: version 0.2.3 or newer, checked once when the plugin loads."""

from __future__ import annotations

import re

import threestudio

MIN_THREESTUDIO_VERSION = (0, 2, 3)
"""threestudio 0.2.3 (HEAD 28d9d80, December 2024) is what the plugin is tested against."""


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.2.3"`` -> (0, 2, 3); the leading numeric parts of a version string (``"0.3.0.dev1"`` ->
    (0, 3, 0)); () when it starts with no number."""
    match = re.match(r"\d+(\.\d+)*", text.strip())
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


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
