"""Make the threestudio STAND-IN importable as ``threestudio`` for a while (see README.md here)."""

from __future__ import annotations

import contextlib
import pathlib
import sys
from collections.abc import Iterator
from types import ModuleType

STANDIN_ROOT = pathlib.Path(__file__).resolve().parent
_PREFIXES = ("threestudio", "threestudio_sdi.threestudio")


def _owned(name: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in _PREFIXES)


@contextlib.contextmanager
def standin_threestudio() -> Iterator[ModuleType]:
    """Yield the stand-in ``threestudio`` module; restore ``sys.modules`` and ``sys.path`` on exit.

    Any ``threestudio`` (real or stand-in) and plugin modules already imported are set aside, so the
    plugin is imported fresh against the stand-in, and put back afterwards.
    """
    saved = {name: module for name, module in sys.modules.items() if _owned(name)}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(STANDIN_ROOT))
    try:
        import threestudio

        if getattr(threestudio, "__standin__", False) is not True:
            raise RuntimeError(f"expected the threestudio stand-in, imported {threestudio.__file__}")
        yield threestudio
    finally:
        sys.path.remove(str(STANDIN_ROOT))
        for name in [name for name in sys.modules if _owned(name)]:
            del sys.modules[name]
        sys.modules.update(saved)
        # ``import a.b`` also sets attribute ``b`` on package ``a``: point it back at the restored module.
        parent = sys.modules.get("threestudio_sdi")
        if parent is not None:
            if "threestudio_sdi.threestudio" in saved:
                parent.threestudio = saved["threestudio_sdi.threestudio"]
            elif hasattr(parent, "threestudio"):
                del parent.threestudio
