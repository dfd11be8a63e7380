"""Methods: a name, a threestudio config and command-line overrides; the built-ins and a methods file.

A methods file (``--methods-file my_methods.yaml``) adds methods or replaces built-ins::

    methods:
      sdi-5inv:                  # SDI with 5 inversion steps (paper Fig. 11)
        base: sdi                # start from a built-in (its config and overrides) ...
        overrides: [system.guidance.inversion.n_steps=5]
        minutes: 80              # expected minutes per run on the reference GPU (for GPU-hours)
      dreamfusion-64:
        config: /path/to/threestudio/configs/dreamfusion-sd.yaml   # ... or name a config
        minutes: 66

A relative ``config`` is relative to the methods file.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from threestudio_sdi.extension import config_dir

from .errors import BenchError

CONFIG_DIR = config_dir()
"""Our configs (:func:`threestudio_sdi.extension.config_dir`)."""

PAPER_TIMINGS = "paper Table 1 (A6000)"


@dataclass(frozen=True)
class Method:
    """One column of the benchmark.

    Attributes:
        name: what tables call it (also a folder name: letters, digits, ``-``, ``_``, ``.``).
        config: the threestudio config (absolute path).
        overrides: threestudio command-line overrides (``key=value``) applied after the config.
        minutes: expected minutes per run on the reference GPU, for GPU-hour estimates (None: unknown).
        minutes_source: where ``minutes`` comes from.
        description: one line for ``sdi-bench plan``.
    """

    name: str
    config: pathlib.Path
    overrides: tuple[str, ...] = ()
    minutes: float | None = None
    minutes_source: str = ""
    description: str = ""


BUILTIN_METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method(
            "sdi",
            CONFIG_DIR / "sdi.yaml",
            minutes=119,
            minutes_source=PAPER_TIMINGS,
            description="SDI (ours), paper preset, 10k steps",
        ),
        Method(
            "sdi-official",
            CONFIG_DIR / "sdi-official.yaml",
            minutes=119,
            minutes_source=f"{PAPER_TIMINGS}, SDI row",
            description="SDI (ours), official preset (what the released code does), 10k steps",
        ),
        Method(
            "sds",
            CONFIG_DIR / "sds.yaml",
            minutes=66,
            minutes_source=PAPER_TIMINGS,
            description="threestudio's built-in SDS with sdi.yaml's geometry, cameras and budget",
        ),
        Method(
            "vsd",
            CONFIG_DIR / "vsd.yaml",
            minutes=334,
            minutes_source=PAPER_TIMINGS,
            description="threestudio's built-in VSD (first stage) with sdi.yaml's geometry and cameras",
        ),
        Method(
            "sdi-2view",
            CONFIG_DIR / "sdi-2view.yaml",
            minutes=119,
            minutes_source="estimate: the SDI row's UNet budget (2 views x 5k steps)",
            description="SDI (ours), two cameras per step at half the steps: the same UNet budget",
        ),
        Method(
            "sdi-consistent-shared",
            CONFIG_DIR / "sdi-consistent-shared.yaml",
            minutes=66,
            minutes_source="estimate: 1 UNet evaluation per step, as the SDS row of the paper's Table 1",
            description="research: consistent noise + a shared component (1 UNet eval/step) in sdi.yaml's setting",
        ),
        Method(
            "sdi-gs",
            CONFIG_DIR / "sdi-gs.yaml",
            description="SDI (ours) on 3D Gaussians: threestudio-3dgs, batch 4, 5k steps (needs threestudio-3dgs)",
        ),
        Method(
            "sds-gs",
            CONFIG_DIR / "sds-gs.yaml",
            description="threestudio-3dgs's own SDS config (SD 2.1-base mirror): sdi-gs's geometry and budget",
        ),
    )
}
NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def check_name(name: object, where: str) -> str:
    """``name`` if it is usable as a method name (and folder name), else BenchError."""
    if not isinstance(name, str) or not name or not set(name) <= NAME_CHARACTERS or name.startswith("."):
        raise BenchError(f"{where}: method name {name!r} must be letters, digits, '-', '_' or '.'")
    return name


def check_overrides(overrides: object, where: str) -> tuple[str, ...]:
    """A list of ``key=value`` strings, else BenchError."""
    if overrides is None:
        return ()
    if isinstance(overrides, str) or not isinstance(overrides, Sequence):
        raise BenchError(f"{where}: overrides must be a list of key=value strings, got {overrides!r}")
    for entry in overrides:
        if not isinstance(entry, str) or "=" not in entry or entry.startswith("="):
            raise BenchError(f"{where}: override {entry!r} is not of the form key=value")
    return tuple(overrides)


def _minutes(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise BenchError(f"{where}: minutes must be a positive number, got {value!r}")
    return float(value)


def method_from_entry(
    name: str, entry: Mapping[str, Any], folder: pathlib.Path, known: Mapping[str, Method]
) -> Method:
    """One entry of a methods file (see the module docstring)."""
    where = f"methods file, method {name!r}"
    check_name(name, where)
    unknown = set(entry) - {"base", "config", "overrides", "minutes", "description"}
    if unknown:
        raise BenchError(
            f"{where}: unknown keys {sorted(unknown)} (expected base, config, overrides, minutes, description)"
        )
    base = entry.get("base")
    if base is not None and base not in known:
        raise BenchError(f"{where}: base {base!r} is not a method; known: {', '.join(known)}")
    parent = known[base] if base is not None else None
    if entry.get("config") is None and parent is None:
        raise BenchError(f"{where}: give a config (a threestudio YAML) or a base method")
    overrides = check_overrides(entry.get("overrides"), where)
    if entry.get("config") is not None:
        config = pathlib.Path(str(entry["config"])).expanduser()
        config = (folder / config).resolve() if not config.is_absolute() else config
    else:
        assert parent is not None
        config = parent.config
    minutes = _minutes(entry.get("minutes"), where)
    return Method(
        name=name,
        config=config,
        overrides=(parent.overrides if parent is not None else ()) + overrides,
        minutes=minutes,
        minutes_source="methods file" if minutes is not None else "",
        description=str(
            entry.get("description") or (f"{base} + {' '.join(overrides)}" if parent else config.name)
        ),
    )


def load_methods_file(
    path: str | pathlib.Path, known: Mapping[str, Method] = BUILTIN_METHODS
) -> dict[str, Method]:
    """The built-ins plus the methods of a YAML methods file (a method of the same name replaces a built-in)."""
    import yaml

    path = pathlib.Path(path).expanduser().resolve()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise BenchError(f"--methods-file {path}: cannot read it ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise BenchError(f"--methods-file {path}: not valid YAML ({error})") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("methods"), Mapping):
        raise BenchError(
            f"--methods-file {path}: expected a mapping 'methods: {{name: {{config|base, ...}}}}'"
        )
    methods = dict(known)
    for name, entry in data["methods"].items():
        if not isinstance(entry, Mapping):
            raise BenchError(f"--methods-file {path}: method {name!r} must be a mapping, got {entry!r}")
        methods[str(name)] = method_from_entry(str(name), entry, path.parent, methods)
    return methods


def select_methods(names: str, available: Mapping[str, Method]) -> list[Method]:
    """``"sdi,sds,vsd"`` → those methods, in that order; BenchError naming an unknown one."""
    selected: list[Method] = []
    for name in filter(None, (part.strip() for part in names.split(","))):
        if name not in available:
            raise BenchError(f"--methods: {name!r} is not a method; known: {', '.join(available)}")
        if any(method.name == name for method in selected):
            raise BenchError(f"--methods: {name!r} is listed twice")
        selected.append(available[name])
    if not selected:
        raise BenchError("--methods is empty")
    return selected
