"""What the `sdi-bench` end-to-end tests share: a benchmark folder run against the stand-in of
threestudio's launch.py (tests/bench_standin), its store and its ledger, and real processes to signal.

The stand-in's ledger has a line when a training process starts and one when it ends (run id, attempt,
time), so "exactly once" and "never two at a time" are checked on what really ran.
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
STANDIN = REPO / "tests" / "bench_standin"
FAULTS = {
    "ok": [],
    "flaky": ["standin.fault=fail-first"],
    "broken": ["standin.fault=fail"],
    "oom": ["standin.fault=oom"],
    "crash": ["standin.fault=crash"],
    "slow": ["standin.step_seconds=0.25"],
    "long": ["standin.step_seconds=0.5", "standin.child=true"],
    "light": ["standin.lightning=true"],
    "light-nan": ["standin.lightning=true", "standin.fault=nan"],
    "light-empty": ["standin.lightning=true", "standin.fault=empty"],
}
"""Methods of the tests' methods file: sds (its config) with the stand-in's knobs."""


def wait_for(predicate: Callable[[], bool], what: str, seconds: float = 120.0) -> None:
    """Poll until ``predicate()`` (a guard against hanging, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


class StderrReader(threading.Thread):
    """Collects the stderr lines of a running process (so a test can wait for one)."""

    def __init__(self, process: subprocess.Popen) -> None:
        super().__init__(daemon=True)
        self.process, self.lines = process, []
        self.start()

    def run(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    @property
    def text(self) -> str:
        return "".join(self.lines)


def pid_alive(pid: int) -> bool:
    """Whether a process exists and has not exited (a zombie has)."""
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def without_root_override() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes file permissions bind a root child too (drops CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH from its bounding set before exec); None when not root."""
    if os.geteuid() != 0:
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def drop() -> None:
        for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


def cli(*argv: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """``python -m sdi_bench.cli ARGV`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "sdi_bench.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env=env or {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        **kwargs,
    )


class Bench:
    """One benchmark folder: ``run`` commands on a prompts file and the methods of :data:`FAULTS`."""

    def __init__(self, folder: pathlib.Path, prompts: list[str] | None = None) -> None:
        self.folder = folder
        self.out = folder / "out"
        self.methods = folder / "methods.yaml"
        self.methods.write_text(
            yaml.safe_dump(
                {"methods": {name: {"base": "sds", "overrides": extra} for name, extra in FAULTS.items()}}
            )
        )
        self.prompts = folder / "prompts.txt"
        lines = prompts or [f"prompt number {index}" for index in range(6)]
        self.prompts.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        self.ledger_file = folder / "ledger.txt"
        self.env = {
            **os.environ,
            "SDI_BENCH_STANDIN_LEDGER": str(self.ledger_file),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.started: list[subprocess.Popen] = []

    def close(self) -> None:
        """Kill the `run` processes a failed test left running (their trainings die with them)."""
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()

    def command(self, methods: str, prompts: int, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "sdi_bench.cli", "run",
            "--threestudio", str(STANDIN), "--out", str(self.out),
            "--prompts", str(self.prompts), "--first", str(prompts),
            "--methods-file", str(self.methods), "--methods", methods,
            "--set", "trainer.max_steps=4", "--set", "standin.test_views=6", "--no-progress", *extra,
        ]  # fmt: skip

    def run(self, methods: str, prompts: int, *extra: str, env: dict | None = None):
        return subprocess.run(
            self.command(methods, prompts, *extra),
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def start(self, methods: str, prompts: int, *extra: str, env: dict | None = None) -> subprocess.Popen:
        process = subprocess.Popen(
            self.command(methods, prompts, *extra),
            env=env or self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(process)
        return process

    def rows(self) -> dict[str, dict]:
        with sqlite3.connect(self.out / "results.sqlite") as db:
            db.row_factory = sqlite3.Row
            return {row["run_id"]: dict(row) for row in db.execute("SELECT * FROM runs")}

    def events(self) -> list[tuple[str, str, str, float]]:
        """(event, run id, attempt, time) of every ledger line."""
        if not self.ledger_file.exists():
            return []
        lines = [line.split() for line in self.ledger_file.read_text().splitlines()]
        return [(event, run, attempt, float(at)) for event, run, attempt, at in lines]

    def ledger(self, event: str) -> list[str]:
        """The run ids of every ``event`` (start or end) line."""
        return [run for kind, run, _, _ in self.events() if kind == event]

    def overlaps(self) -> list[str]:
        """Runs whose training started while a training of another of their attempts was alive."""
        return self.ledger("overlap")
