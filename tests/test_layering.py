"""The layers point one way (ARCHITECTURE.md): core ← models ← plugin; core, models ← testing ←
experimental; sdi_bench on its own; benchmarks and tests on top.

Every import statement of every Python file (module level or inside a function, absolute or relative)
is read from the source with ``ast`` and checked against :data:`ALLOWED`; tests and benchmarks must not
import each other. A new subpackage fails the test until it is given a layer. The product (core, models,
plugin) must stay importable without ``experimental`` or ``testing``: :mod:`test_package_shape` checks
that at run time, and the absence of import cycles.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("threestudio_sdi", "sdi_bench")
LAYER_OF = {
    "models": "models",
    "threestudio": "plugin",
    "testing": "testing",
    "experimental": "experimental",
    "doctor": "tool",
}
"""Subpackage (or module) of threestudio_sdi → layer; every other module of it (and ``strategies``) is
the core. ``doctor`` (sdi-doctor) is a tool on top of the product: it runs the CPU harness's smoke run."""
ALLOWED = {
    "core": {"core"},
    "models": {"core", "models"},
    "plugin": {"core", "models", "plugin"},
    "cpu_harness": {"cpu_harness"},
    "testing": {"core", "models", "testing", "cpu_harness"},
    "experimental": {"core", "models", "testing", "experimental", "plugin"},
    "bench": {"core", "cpu_harness", "bench"},
    "tool": {"core", "models", "testing", "cpu_harness", "tool"},
}
"""Layer → the layers it may import from."""


def layer(module: str) -> str:
    """The layer of a module of the two packages, by its dotted name."""
    parts = module.split(".")
    if parts[0] == "sdi_bench":
        return "bench"
    if parts[1:3] == ["testing", "cpu_harness"]:
        return "cpu_harness"
    return LAYER_OF.get(parts[1], "core") if len(parts) > 1 else "core"


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source`` of ``module``; relative ones resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names if node.level]
    return found


def imported_modules(path: pathlib.Path) -> list[tuple[int, str]]:
    """:func:`imports_of` the file at ``path``."""
    return imports_of(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")


def package_files() -> list[pathlib.Path]:
    stubs = REPO / "threestudio_sdi" / "testing" / "cpu_harness" / "stubs"  # stand-ins of others' packages
    files = [p for package in PACKAGES for p in (REPO / package).rglob("*.py")]
    return sorted(p for p in files if stubs not in p.parents)


def test_every_subpackage_has_a_layer() -> None:
    subpackages = {p.parent.name for p in (REPO / "threestudio_sdi").glob("*/__init__.py")}
    assert subpackages - {"strategies"} <= set(LAYER_OF), subpackages - set(LAYER_OF)


@pytest.mark.parametrize("path", package_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_package_imports_point_down(path: pathlib.Path) -> None:
    own = layer(module_name(path))
    wrong = []
    for line, name in imported_modules(path):
        if name.split(".")[0] in ("tests", "benchmarks"):
            wrong.append(f"line {line}: {name} (the package never imports tests or benchmarks)")
        elif name.split(".")[0] in PACKAGES and layer(name) not in ALLOWED[own]:
            wrong.append(f"line {line}: {name} (layer {layer(name)!r})")
    assert not wrong, f"{path.relative_to(REPO)} is in layer {own!r} but imports " + "; ".join(wrong)


@pytest.mark.parametrize(
    ("folder", "forbidden"), [("tests", "benchmarks"), ("benchmarks", "tests")], ids=["tests", "benchmarks"]
)
def test_tests_and_benchmarks_do_not_import_each_other(folder: str, forbidden: str) -> None:
    wrong = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for line, name in imported_modules(path):
            if name.split(".")[0] == forbidden:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {name}")
        if f'/ "{forbidden}"' in path.read_text(encoding="utf-8"):  # sys.path tricks start with a path
            wrong.append(f"{path.relative_to(REPO)} builds a path into {forbidden}/")
    assert not wrong, wrong


def test_the_checker_sees_a_violation() -> None:
    """Relative imports are resolved, so a core module importing ``..models`` is caught."""
    assert layer("threestudio_sdi.prediction") == "core" and layer("threestudio_sdi.models.x") == "models"
    assert (
        layer("sdi_bench.store") == "bench"
        and layer("threestudio_sdi.testing.cpu_harness.x") == "cpu_harness"
    )
    assert "models" not in ALLOWED["core"] and "experimental" not in ALLOWED["plugin"]
    names = [
        name for _, name in imports_of("from ..models import tiny\n", "threestudio_sdi.strategies.x", False)
    ]
    assert names == ["threestudio_sdi.models", "threestudio_sdi.models.tiny"]
    assert all(layer(name) not in ALLOWED["core"] for name in names)
    plugin = imports_of("from ..experimental import x\n", "threestudio_sdi.threestudio.guidance", False)
    assert {layer(name) for _, name in plugin} == {"experimental"} and "experimental" not in ALLOWED["plugin"]
