"""The layers point one way: core ← models ← lab / lab3d / plugin / bench ← benchmarks (ARCHITECTURE.md).

Every import statement of every Python file (module level or inside a function, absolute or relative)
is read from the source with ``ast`` and checked against :data:`ALLOWED`; tests and benchmarks must not
import each other. A new subpackage fails the test until it is given a layer.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "threestudio_sdi"
LAYER_OF = {
    "models": "models",
    "lab": "lab",
    "lab3d": "lab3d",
    "threestudio": "plugin",
    "bench": "bench",
    "cpu_harness": "cpu_harness",
}
"""Subpackage → layer; every other module of the package (and ``strategies``) is the core."""
ALLOWED = {
    "core": {"core"},
    "models": {"core", "models"},
    "lab": {"core", "models", "lab"},
    "lab3d": {"core", "models", "lab", "lab3d"},
    "plugin": {"core", "models", "plugin"},
    "cpu_harness": {"cpu_harness"},
    "bench": {"core", "models", "cpu_harness", "bench"},
}
"""Layer → the layers it may import from."""


def layer(module: str) -> str:
    """The layer of a module of the package, by its dotted name."""
    parts = module.split(".")
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
    stubs = REPO / PACKAGE / "cpu_harness" / "stubs"  # stand-ins of other packages, not ours
    return sorted(p for p in (REPO / PACKAGE).rglob("*.py") if stubs not in p.parents)


def test_every_subpackage_has_a_layer() -> None:
    subpackages = {p.parent.name for p in (REPO / PACKAGE).glob("*/__init__.py")}
    assert subpackages - {"strategies"} <= set(LAYER_OF), subpackages - set(LAYER_OF)


@pytest.mark.parametrize("path", package_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_package_imports_point_down(path: pathlib.Path) -> None:
    own = layer(module_name(path))
    wrong = []
    for line, name in imported_modules(path):
        if name.split(".")[0] in ("tests", "benchmarks"):
            wrong.append(f"line {line}: {name} (the package never imports tests or benchmarks)")
        elif name.split(".")[0] == PACKAGE and layer(name) not in ALLOWED[own]:
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
    assert layer("threestudio_sdi.prediction") == "core" and layer("threestudio_sdi.models.tiny") == "models"
    assert "models" not in ALLOWED["core"] and "plugin" not in ALLOWED["lab"]
    names = [
        name for _, name in imports_of("from ..models import tiny\n", "threestudio_sdi.strategies.x", False)
    ]
    assert names == ["threestudio_sdi.models", "threestudio_sdi.models.tiny"]
    assert all(layer(name) not in ALLOWED["core"] for name in names)
