"""Whether a finished attempt was made by its run's config: threestudio's ``configs/parsed.yaml``
(written when it loaded the config) against the run's overrides, the prompt among them.

A result is recorded only against the config that trained it. ``parsed.yaml`` holds the config after
threestudio's first resolution, so each override must be there with the value it sets (an override
whose value interpolates other keys is skipped: its value depends on the rest of the config; where two
set the same key, the later one counts, as in OmegaConf), and the prompt as :mod:`.overrides` escaped
it for the resolutions still to come.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

from .overrides import PROMPT_KEY, THREESTUDIO_RESOLUTIONS, escape_interpolations

_MISSING = object()


def _lookup(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


def _overlaps(key: str, other: str) -> bool:
    return key == other or key.startswith(other + ".") or other.startswith(key + ".")


def config_mismatch(trial_dir: pathlib.Path, args: Sequence[str], prompt: str) -> str | None:
    """None when ``trial_dir/configs/parsed.yaml`` agrees with ``args`` and ``prompt``; else what differs."""
    from omegaconf import OmegaConf

    path = trial_dir / "configs" / "parsed.yaml"
    try:
        parsed = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as error:  # noqa: BLE001 - unreadable or not YAML: the result cannot be attributed
        return f"cannot read {path} ({type(error).__name__}: {error})"
    keys = [arg.partition("=")[0] for arg in args]
    for index, (arg, key) in enumerate(zip(args, keys)):
        if any(_overlaps(key, later) for later in keys[index + 1 :]):
            continue  # a later override sets it (or a part of it): that one is checked
        if key == PROMPT_KEY:
            expected: Any = escape_interpolations(prompt, THREESTUDIO_RESOLUTIONS - 1)
        else:
            expected = _lookup(OmegaConf.to_container(OmegaConf.from_dotlist([arg]), resolve=False), key)
            if isinstance(expected, str) and "${" in expected:
                continue
        actual = _lookup(parsed, key)
        if actual != expected:
            found = "no such key" if actual is _MISSING else repr(actual)
            return f"{path}: {key} is {found}, this run's config sets {expected!r}"
    return None
