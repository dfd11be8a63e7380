"""The docs match the tree and what was run.

Every link and path they name exists, every command's script and flags exist, every docs page is
linked from the README, the README stays short, and two markers (HTML comments, invisible on GitHub)
tie the docs to behaviour:

* ``<!-- runnable -->`` or ``<!-- runnable: ARGS -->`` on the line before a fenced block: the tests run
  every command of the block and require exit status 0. Set-up commands (``python3 -m venv``,
  ``pip install``) are skipped (``.ci/run`` runs them); ``.venv/bin/X`` and console scripts run from the
  test's environment, ``python`` is the test's interpreter; ARGS are appended to every command (to make
  it short: e.g. ``--steps 2``). Each runs in a fresh temporary folder, so outputs stay there.
* ``<!-- numbers: FILE[, FILE…] -->`` on the line before a table or a paragraph: every number in it
  (in a table, every cell but the first column's) must appear, at the precision printed, among the
  numbers of the named result files (``.json``: every number and every number inside a string;
  ``.md``: every number of the text), e.g. ``26.2 ± 5.2`` needs a 26.2… and a 5.2… there.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

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


# ---------------------------------------------------------------------------------------- markers
MARKER = re.compile(r"^<!-- (runnable|numbers)(?::(.*?))? -->$")


def marked_blocks(page: pathlib.Path, kind: str) -> list[tuple[int, str, str]]:
    """(line number, the marker's argument, the block) for each ``kind`` marker of the page: the fenced
    block that follows (runnable), or the lines up to the next blank line (numbers)."""
    lines = page.read_text().splitlines()
    found = []
    for number, line in enumerate(lines):
        match = MARKER.match(line.strip())
        if not match or match.group(1) != kind:
            continue
        rest = lines[number + 1 :]
        if kind == "runnable":
            assert rest and rest[0].startswith("```"), (
                f"{page_id(page)}:{number + 1}: no fenced block follows"
            )
            end = next(i for i in range(1, len(rest)) if rest[i].startswith("```"))
            block = rest[1:end]
        else:
            end = next((i for i, text in enumerate(rest) if not text.strip()), len(rest))
            block = rest[:end]
        found.append((number + 1, (match.group(2) or "").strip(), "\n".join(block)))
    return found


def runnable(block: str, extra: str) -> Iterator[list[str]]:
    """The argv of each command of a runnable block (module docstring), set-up commands left out."""
    for line in block.replace("\\\n", " ").splitlines():
        line = line.split(" #")[0].strip()
        for part in filter(None, (p.strip() for p in line.split("&&"))):
            words = shlex.split(part)
            program = pathlib.Path(words[0]).name
            if words[1:3] == ["-m", "venv"] or (program.startswith("pip") and "install" in words):
                continue
            if program in CONSOLE_SCRIPTS:
                argv = [sys.executable, "-m", CONSOLE_SCRIPTS[program], *words[1:]]
            elif program in ("python", "python3"):
                script = words[1]
                if script.endswith(".py") and (REPO / script).is_file():
                    script = str(REPO / script)
                argv = [sys.executable, script, *words[2:]]
            else:
                raise AssertionError(
                    f"a runnable block runs {words[0]!r}: the tests run only python and our scripts"
                )
            yield argv + shlex.split(extra)


RUNNABLE = [
    pytest.param(argv, id=f"{page_id(page)}:{line}:{' '.join(argv[2:5])}")
    for page in PAGES
    for line, extra, block in marked_blocks(page, "runnable")
    for argv in runnable(block, extra)
]


@pytest.mark.parametrize("argv", RUNNABLE)
def test_runnable_commands_run(argv: list[str], tmp_path: pathlib.Path) -> None:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=environment)
    assert done.returncode == 0, (
        f"{argv} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )


def test_the_readme_marks_its_demos_runnable() -> None:
    """Both demos of the README (the 3D first command, the 2D second) run in the tests."""
    modules = {argv.values[0][2] for argv in RUNNABLE if argv.id.startswith("README.md")}
    assert modules == {"threestudio_sdi.experimental.lab3d.cli", "threestudio_sdi.experimental.lab.cli"}


def test_the_readme_test_command_is_what_ci_runs() -> None:
    """The README's second set-up command is the line .ci/run runs (verbatim)."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    tests = [line for block in blocks for line in block.splitlines() if "pytest" in line and "venv" in line]
    assert len(tests) == 1, tests
    assert tests[0].strip() in (REPO / ".ci" / "run").read_text().splitlines()


NUMBER = re.compile(
    r"(?<![A-Za-z0-9_.#])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?(?:e[+-]?\d+)?)(?![A-Za-z0-9_])(\s*%)?"
)
"""A number as printed: thousands grouped by commas (21,001), decimals, exponents; a % after it."""


def numbers_in_text(text: str) -> list[tuple[str, bool]]:
    """(number as printed, followed by %) of a Markdown text: code spans and link targets left out."""
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return [(m.group(1).replace(",", ""), bool(m.group(2))) for m in NUMBER.finditer(text)]


def block_numbers(block: str) -> list[tuple[str, bool]]:
    """The numbers a numbers-marked block quotes: in a table, every cell but the first column's."""
    lines = block.splitlines()
    if not lines or not lines[0].lstrip().startswith("|"):
        return numbers_in_text(block)
    cells = []
    for line in lines[2:]:  # the header and the separator say what, not how much
        cells += line.strip().strip("|").split("|")[1:]
    return numbers_in_text(" | ".join(cells))


def result_numbers(files: list[str]) -> list[float]:
    """Every number of the result files (module docstring), as absolute values."""
    values: list[float] = []

    def walk(value: Any) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, (int, float)):
            values.append(abs(float(value)))
        elif isinstance(value, str):
            values.extend(float(token) for token, _ in numbers_in_text(value))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for name in files:
        path = REPO / name
        assert path.is_file(), f"{name} does not exist"
        if path.suffix == ".json":
            walk(json.loads(path.read_text()))
        else:
            values.extend(float(token) for token, _ in numbers_in_text(path.read_text()))
    return values


def printed_as(value: float, token: str) -> bool:
    """True when ``value`` prints as ``token`` at the token's precision (fixed or exponent notation)."""
    if "e" in token:
        mantissa, exponent = token.split("e")
        digits = len(mantissa.partition(".")[2])
        return f"{value:.{digits}e}" == f"{float(mantissa):.{digits}f}e{int(exponent):+03d}"
    digits = len(token.partition(".")[2])
    return f"{value:.{digits}f}" == token


def missing_numbers(block: str, files: list[str]) -> list[str]:
    values = result_numbers(files)
    missing = []
    for token, percent in block_numbers(block):
        candidates = values + ([100 * v for v in values] if percent else [])
        if not any(printed_as(value, token) for value in candidates):
            missing.append(token + ("%" if percent else ""))
    return missing


NUMBER_BLOCKS = [
    pytest.param(page, line, files, block, id=f"{page_id(page)}:{line}")
    for page in PAGES
    for line, files, block in marked_blocks(page, "numbers")
]


@pytest.mark.parametrize("page, line, files, block", NUMBER_BLOCKS)
def test_quoted_numbers_come_from_the_result_files(
    page: pathlib.Path, line: int, files: str, block: str
) -> None:
    names = [name.strip() for name in files.split(",")]
    missing = missing_numbers(block, names)
    assert not missing, f"{page_id(page)}:{line}: {missing} are in none of {names}"


def test_the_number_check_sees_a_wrong_number(tmp_path: pathlib.Path) -> None:
    table = "| method | PSNR |\n|---|---|\n| `sds` (CFG 7.5) | 26.2 ± 5.2 |\n| b | 1/9, 16 % |"
    assert [token for token, _ in block_numbers(table)] == ["26.2", "5.2", "1", "9", "16"]
    assert [token for token, _ in numbers_in_text("21,001 points, seeds 0,1")] == ["21001", "0", "1"]
    assert printed_as(26.1999, "26.2") and not printed_as(26.26, "26.2") and printed_as(5.66e8, "5.7e8")
    result = tmp_path / "r.json"
    result.write_text(
        json.dumps({"rows": [{"psnr": 26.23, "std": [5.18]}, {"count": "1/9"}, {"share": 0.16}]})
    )
    name = str(result)  # absolute: REPO / name is the file itself
    assert missing_numbers(table, [name]) == []
    assert missing_numbers(table.replace("26.2", "26.3"), [name]) == ["26.3"]
