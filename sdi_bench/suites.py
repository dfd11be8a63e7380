"""Prompt suites: the paper's 43 prompts (package data) or any text file with one prompt per line."""

from __future__ import annotations

import hashlib
import pathlib
import re
from dataclasses import dataclass

from .errors import BenchError
from .overrides import MISSING_MARKER

SUITE_DIR = pathlib.Path(__file__).resolve().parent / "suites"
SUITES = {"paper43": "paper43.txt"}
"""Built-in suites: name → file in ``suites/``. ``paper43``: the SDI paper's 43 prompts (App. A.4), verbatim."""


@dataclass(frozen=True)
class Suite:
    """A named, ordered list of distinct prompts."""

    name: str
    prompts: tuple[str, ...]
    source: str


def read_prompts(path: pathlib.Path) -> tuple[str, ...]:
    """The prompts of a text file: one per line; blank lines and lines starting with ``#`` are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise BenchError(f"--prompts {path}: cannot read it ({error.strerror or error})") from None
    prompts: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        prompt = line.strip()
        if not prompt or prompt.startswith("#"):
            continue
        if prompt in prompts:
            raise BenchError(f"--prompts {path}: line {number} repeats the prompt {prompt!r}")
        if prompt == MISSING_MARKER:
            raise BenchError(
                f"--prompts {path}: line {number} is {prompt!r}, OmegaConf's marker of a missing value, "
                "which threestudio cannot be given as a prompt: reword it"
            )
        prompts.append(prompt)
    if not prompts:
        raise BenchError(f"--prompts {path}: the file has no prompts (one per line)")
    return tuple(prompts)


def load_suite(suite: str | None = None, prompts_file: str | pathlib.Path | None = None) -> Suite:
    """A built-in suite by name, or the prompts of a text file (exactly one of the two)."""
    if (suite is None) == (prompts_file is None):
        raise BenchError("give either --suite NAME or --prompts FILE (exactly one)")
    if prompts_file is not None:
        path = pathlib.Path(prompts_file).expanduser().resolve()
        return Suite(name=path.stem, prompts=read_prompts(path), source=str(path))
    if suite not in SUITES:
        raise BenchError(f"--suite {suite!r} is not a suite; the suites are: {', '.join(SUITES)}")
    path = SUITE_DIR / SUITES[suite]
    return Suite(name=suite, prompts=read_prompts(path), source=f"sdi_bench/suites/{path.name}")


def prompt_slug(prompt: str, length: int = 48) -> str:
    """A file-name-safe, readable and unique name for a prompt: ``a_ripe_strawberry-1f3a9c``."""
    words = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:length].rstrip("_")
    digest = hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:6]
    return f"{words or 'prompt'}-{digest}"
