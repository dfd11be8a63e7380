"""What became of one attempt: done, diverged (out of memory, NaN, empty volume) or failed.

"Diverged" follows the paper (Table 1): the run ran out of GPU memory or ended with an empty volume;
a run whose loss or parameters became NaN/inf counts too. A diverged run is final (not retried); a
failed run (any other error, a missing report, no test renders, outputs that another config made) is
retried up to ``--retries``. A run is ``done`` only when its ``parsed.yaml`` (and, where the training
process reports it, the prompt its prompt processor held) agree with its config (:mod:`.attribution`).
"""

from __future__ import annotations

import json
import pathlib
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from . import layout
from .attribution import config_mismatch

DIVERGED = ("oom", "nan", "empty")
LOG_TAIL_LINES = 40
LOG_TAIL_CHARS = 6000
_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError|out of memory", re.IGNORECASE)


MEASURED = ("train_seconds", "steps", "steps_per_second", "peak_vram_bytes", "peak_rss_bytes", "gpu_name")
"""The measurements the training process reports and an :class:`Outcome` keeps."""


@dataclass
class Outcome:
    """The result of one attempt, as the store records it.

    ``status`` is ``done``, ``diverged``, ``failed``, ``interrupted`` (given back, not counted) or
    ``abandoned`` (never started: another ``run`` retook the claim); ``outcome`` says why: ``ok``,
    ``oom``, ``nan``, ``empty``, ``error``, ``no-report``, ``no-renders``, ``config-mismatch``,
    ``interrupted`` or ``abandoned``.
    """

    status: str
    outcome: str
    attempt_dir: str
    trial_dir: str | None = None
    exit_code: int | None = None
    wall_seconds: float | None = None
    train_seconds: float | None = None
    steps: int | None = None
    steps_per_second: float | None = None
    peak_vram_bytes: int | None = None
    peak_rss_bytes: int | None = None
    gpu_name: str | None = None
    error: str | None = None
    log_tail: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    finished_at: float = field(default_factory=time.time)

    def columns(self) -> dict[str, Any]:
        """The store's column values (``details`` as JSON)."""
        values = asdict(self)
        values["details"] = json.dumps(self.details, sort_keys=True)
        return values


def log_tail(path: pathlib.Path, lines: int = LOG_TAIL_LINES, chars: int = LOG_TAIL_CHARS) -> str:
    """The last lines of a log (progress-bar carriage returns become line breaks)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 8 * chars))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line.rstrip() for line in text.replace("\r", "\n").split("\n") if line.strip()]
    return "\n".join(kept[-lines:])[-chars:]


def read_report(attempt_dir: pathlib.Path) -> dict[str, Any] | None:
    """The launch wrapper's report of an attempt, or None if it wrote none (killed, crashed early)."""
    try:
        return json.loads((attempt_dir / layout.REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def classify(
    attempt_dir: pathlib.Path,
    exit_code: int | None,
    wall_seconds: float | None,
    args: Sequence[str],
    prompt: str,
    interrupted: bool = False,
) -> Outcome:
    """The outcome of an attempt from its report, its exit code, its log, its test renders, and its
    ``parsed.yaml`` checked against the run's overrides ``args`` and ``prompt``."""
    report = read_report(attempt_dir)
    tail = log_tail(attempt_dir / layout.LOG)
    trial_dir = layout.find_trial_dir(attempt_dir)
    outcome = Outcome(
        status="failed",
        outcome="error",
        attempt_dir=str(attempt_dir),
        trial_dir=None if trial_dir is None else str(trial_dir),
        exit_code=exit_code,
        wall_seconds=wall_seconds,
        log_tail=tail,
    )
    if report is None:
        if interrupted:
            outcome.status, outcome.outcome, outcome.error = (
                "interrupted",
                "interrupted",
                "stopped by sdi-bench",
            )
        elif _OOM.search(tail):
            outcome.status, outcome.outcome, outcome.error = "diverged", "oom", "out of memory (from the log)"
        else:
            outcome.outcome = "no-report"
            outcome.error = f"the training process exited with code {exit_code} and wrote no {layout.REPORT}"
        return outcome
    for key in MEASURED:
        setattr(outcome, key, report.get(key))
    outcome.details = {
        key: report.get(key)
        for key in (
            "nonfinite_losses",
            "params_finite",
            "test_views",
            "max_opacity_coverage",
            "prompt",
            "versions",
        )
    }
    outcome.error = report.get("error")
    kind = report.get("outcome")
    if kind in DIVERGED:
        outcome.status, outcome.outcome = "diverged", kind
    elif kind == "ok" and exit_code == 0:
        if trial_dir is None or not layout.test_views(trial_dir):
            outcome.outcome, outcome.error = "no-renders", "training ended but wrote no save/it<N>-test/*.png"
        else:
            trained = report.get("prompt")
            mismatch = config_mismatch(trial_dir, args, prompt) or (
                None
                if trained is None or trained == prompt
                else f"the prompt processor trained on {trained!r}, this run's prompt is {prompt!r}"
            )
            if mismatch is None:
                outcome.status, outcome.outcome = "done", "ok"
            else:
                outcome.outcome, outcome.error = "config-mismatch", mismatch
    elif interrupted:
        outcome.status, outcome.outcome = "interrupted", "interrupted"
    elif kind == "ok":
        outcome.error = f"the training process reported success but exited with code {exit_code}"
    return outcome


def recover(attempt_dir: pathlib.Path, args: Sequence[str], prompt: str) -> Outcome | None:
    """The outcome of an attempt whose supervisor died, if the attempt itself finished (wrote a report)."""
    report = read_report(attempt_dir)
    if report is None:
        return None
    return classify(attempt_dir, report.get("exit_code"), report.get("wall_seconds"), args, prompt)
