"""The product at plugin size (ARCHITECTURE.md): what a threestudio user installs stays small, loads
nothing of the research or the test fixtures, and has no import cycle.

* the product — ``threestudio_sdi`` without ``experimental/`` and ``testing/``, plus the extension's root
  ``__init__.py`` — has at most :data:`PRODUCT_LINE_BUDGET` lines;
* importing the plugin (with the threestudio stand-in) and running a default guidance step import no
  module of ``experimental`` or ``testing``, in a fresh interpreter; asking for a research strategy by
  name does;
* the module-level imports of both packages form no cycle (Tarjan's strongly connected components).
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

from test_layering import imported_modules, module_name, package_files

REPO = pathlib.Path(__file__).resolve().parents[1]
PRODUCT_LINE_BUDGET = 4500
OUTSIDE_THE_PRODUCT = ("experimental", "testing")


def product_files() -> list[pathlib.Path]:
    package = REPO / "threestudio_sdi"
    files = [p for p in package.rglob("*.py") if p.relative_to(package).parts[0] not in OUTSIDE_THE_PRODUCT]
    return sorted([*files, REPO / "__init__.py"])


def test_the_product_is_at_most_the_line_budget() -> None:
    lines = {
        str(p.relative_to(REPO)): len(p.read_text(encoding="utf-8").splitlines()) for p in product_files()
    }
    total = sum(lines.values())
    print(f"product: {total} lines in {len(lines)} files")
    assert total <= PRODUCT_LINE_BUDGET, sorted(lines.items(), key=lambda item: -item[1])[:10]


LOADED = """
import sys
sys.path.insert(0, {tests!r})
from threestudio_standin.activate import standin_threestudio
with standin_threestudio():
    import threestudio_sdi.threestudio  # the plugin: registers sdi-guidance and sdi-ext-system
    import torch
    from threestudio_sdi.classifier_free import Conditioning
    from threestudio_sdi.score_distillation import GuidanceConfig, guidance_step

    class Zero:
        prediction_type = "epsilon"
        alphas_cumprod = torch.linspace(0.999, 0.01, 1000)
        def predict_noise(self, x, t, cond):
            return torch.zeros_like(x)

    for preset in ("paper", "official"):
        for noise in ("inversion", "uncond-inversion", "random"):
            guidance_step(Zero(), torch.zeros(2, 4, 8, 8), 700, Conditioning(cond=1),
                          GuidanceConfig(preset=preset, noise=noise))
    print(sorted(m for m in sys.modules if m.startswith("threestudio_sdi")))
"""


def loaded_modules(code: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", code.format(tests=str(REPO / "tests"))],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


def test_the_plugin_and_a_default_step_load_nothing_experimental_or_testing() -> None:
    loaded = loaded_modules(LOADED)
    assert (
        "threestudio_sdi.threestudio.guidance" in loaded and "threestudio_sdi.strategies.inversion" in loaded
    )
    outside = [m for m in loaded if m.split(".")[1:2] and m.split(".")[1] in OUTSIDE_THE_PRODUCT]
    assert not outside, outside


def test_a_research_name_is_what_loads_the_experimental_package() -> None:
    code = LOADED.replace(
        'noise in ("inversion", "uncond-inversion", "random")', 'noise in ("newton-krylov",)'
    )
    assert "threestudio_sdi.experimental.strategies.newton_krylov" in loaded_modules(code)


def module_level_import_lines(tree: ast.Module) -> set[int]:
    """Lines of the imports outside function bodies (``if TYPE_CHECKING:`` blocks included)."""
    lines: set[int] = set()
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            lines.add(node.lineno)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            pending.extend(ast.iter_child_nodes(node))
    return lines


def import_graph() -> dict[str, set[str]]:
    """Module → the modules of the two packages it imports outside functions (function-level imports are
    lazy by design and left out; ``from package import name`` points at ``package.name`` when that is a
    module, else at the package)."""
    files = {module_name(p): p for p in package_files()}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        top_level = module_level_import_lines(ast.parse(path.read_text(encoding="utf-8")))
        edges = set()
        for line, name in imported_modules(path):
            if line not in top_level:
                continue
            target = name if name in files else name.rsplit(".", 1)[0]
            if target in files and target != module:
                edges.add(target)
        graph[module] = edges
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module (each one an import cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    assert strongly_connected(import_graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []
