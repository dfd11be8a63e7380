"""The docs match the tree: every link and path they name exists, every command's script and flags exist,
every docs page is linked from the README, and the README stays short."""

from __future__ import annotations

import pathlib
import re
import shlex

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", REPO / "ARCHITECTURE.md", *(REPO / "docs").glob("*.md")])
OUR_PREFIXES = ("threestudio_sdi/", "sdi_bench/", "benchmarks/", "tests/", "configs/", "docs/", ".ci/")
CONSOLE_SCRIPTS = dict(re.findall(r'"([\w-]+)=([\w.]+):main"', (REPO / "setup.py").read_text()))
"""Console script → its module, from setup.py."""


def page_id(path: pathlib.Path) -> str:
    return str(path.relative_to(REPO))


def links(page: pathlib.Path) -> list[str]:
    return [target for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()) if "://" not in target]


def code_paths(page: pathlib.Path) -> list[str]:
    """Backticked tokens that name a file or folder of this repository."""
    tokens = re.findall(r"`([^`\s]+)`", page.read_text())
    return [t.rstrip(".,:;") for t in tokens if t.startswith(OUR_PREFIXES) and "*" not in t and "<" not in t]


def commands(page: pathlib.Path) -> list[list[str]]:
    """Command lines of the page's ```bash / ```sh / ```text blocks (continuations joined)."""
    found = []
    for block in re.findall(r"```(?:bash|sh|text)\n(.*?)```", page.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            for part in re.split(r"&&|\|", line):
                if part.strip() and not part.strip().startswith("#"):
                    found.append(shlex.split(part.strip()))
    return found


def script_source(words: list[str]) -> tuple[str, str] | None:
    """(the script named by a command, its source text) for commands of this repository, else None."""
    words = [w for w in words if "=" not in w or w.startswith("-")]  # drop VAR=value prefixes
    for index, word in enumerate(words):
        name = pathlib.Path(word).name
        if name in CONSOLE_SCRIPTS:
            module = CONSOLE_SCRIPTS[name]
            package = REPO / pathlib.Path(*module.split("."))
            folder = package.parent
            return name, "\n".join(p.read_text() for p in sorted(folder.rglob("*.py")))
        if word.endswith((".py", ".sh")) and word.startswith(OUR_PREFIXES):
            assert (REPO / word).is_file(), f"{word} does not exist"
            return word, (REPO / word).read_text()
        if word == "-m" and index + 1 < len(words) and words[index + 1].startswith("threestudio_sdi"):
            module = REPO / pathlib.Path(*words[index + 1].split("."))
            path = module / "__main__.py" if module.is_dir() else module.with_suffix(".py")
            assert path.is_file(), f"python -m {words[index + 1]}: no such module"
            return words[index + 1], "\n".join(p.read_text() for p in sorted(path.parent.rglob("*.py")))
    return None


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_links_and_paths_exist(page: pathlib.Path) -> None:
    missing = [t for t in links(page) if not (page.parent / t).exists()]
    missing += [t for t in code_paths(page) if not (REPO / t).exists()]
    assert not missing, f"{page_id(page)} names what does not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_commands_name_existing_scripts_and_flags(page: pathlib.Path) -> None:
    wrong = []
    for words in commands(page):
        found = script_source(words)
        if found is None:
            continue
        script, source = found
        flags = {w.split("=")[0] for w in words if w.startswith("--")}
        wrong += [f"{script} {flag}" for flag in sorted(flags) if f'"{flag}"' not in source]
    assert not wrong, f"{page_id(page)}: flags that the scripts do not define: {wrong}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(REPO / target).resolve() for target in links(REPO / "README.md")}
    unlinked = [page_id(p) for p in PAGES if p.name != "README.md" and p.resolve() not in linked]
    assert not unlinked, unlinked


def test_the_readme_is_short() -> None:
    assert (REPO / "README.md").stat().st_size < 15_000


def test_the_checks_see_a_wrong_command() -> None:
    assert script_source(["python", "benchmarks/fidelity.py", "--quick"])[0] == "benchmarks/fidelity.py"
    with pytest.raises(AssertionError, match="does not exist"):
        script_source(["python", "benchmarks/no_such_benchmark.py"])
    name, source = script_source(["sdi-lab", "--model", "gaussian"])
    assert name == "sdi-lab" and '"--model"' in source and '"--no-such-flag"' not in source
