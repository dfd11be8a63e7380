"""The results store: one SQLite database (``results.sqlite``) in the output folder.

Table ``runs`` has one row per run of the plan (its id, config hash, status, attempt count, timings,
peak memory, outcome, log tail); ``scores`` one row per run and metric; ``metric_models`` what each
metric's model label means (weights, packages and versions).

Status: ``pending`` → ``running`` (claimed with a lease) → ``done`` | ``diverged`` | ``failed``. A
failed run is claimed again while its ``failures`` ≤ ``retries``; a ``running`` run whose lease ran
out (its ``sdi-bench run`` was killed) is claimed again by the next ``run``. Every change is one
transaction; a claim is ``BEGIN IMMEDIATE`` (one writer at a time), so two ``run`` processes on the
same store never take the same run, and a result is written only by the claim (owner and attempt)
that launched it.
"""

from __future__ import annotations

import json
import pathlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

from .errors import BenchError
from .outcome import Outcome
from .plan import PlannedRun

DATABASE = "results.sqlite"
SCHEMA_VERSION = "1"
FINISHED = ("done", "diverged")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    prompt TEXT NOT NULL,
    prompt_index INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    config TEXT NOT NULL,
    overlays TEXT NOT NULL,
    args TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'diverged', 'failed')),
    outcome TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    lease_until REAL,
    job_ref TEXT,
    attempt_dir TEXT,
    trial_dir TEXT,
    started_at REAL,
    finished_at REAL,
    wall_seconds REAL,
    train_seconds REAL,
    steps INTEGER,
    steps_per_second REAL,
    peak_vram_bytes INTEGER,
    peak_rss_bytes INTEGER,
    gpu_name TEXT,
    exit_code INTEGER,
    error TEXT,
    log_tail TEXT,
    details TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS scores (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    view_std REAL,
    n_views INTEGER NOT NULL,
    model TEXT NOT NULL,
    scored_at REAL NOT NULL,
    PRIMARY KEY (run_id, metric)
);
CREATE TABLE IF NOT EXISTS metric_models (
    model TEXT NOT NULL,
    metric TEXT NOT NULL,
    details TEXT NOT NULL,
    PRIMARY KEY (model, metric)
);
"""

RESULT_COLUMNS = tuple(item.name for item in fields(Outcome) if item.name != "status")
"""The columns an attempt's :class:`Outcome` writes (its ``status`` is written beside them)."""


@dataclass(frozen=True)
class Claim:
    """A run taken by one ``sdi-bench run``: only this owner and attempt may write its result."""

    run_id: str
    owner: str
    attempt: int
    attempt_dir: pathlib.Path
    config: str
    overlays: tuple[str, ...]
    args: tuple[str, ...]


def attempt_folder(out_dir: pathlib.Path, run_id: str, attempt: int) -> pathlib.Path:
    """Where attempt ``attempt`` of a run keeps its working directory, log and threestudio outputs."""
    return out_dir / "runs" / run_id / f"attempt-{attempt}"


class Store:
    """The SQLite results store of one output folder (safe for several processes on one host)."""

    def __init__(self, out_dir: str | pathlib.Path, create: bool = True) -> None:
        self.out_dir = pathlib.Path(out_dir).expanduser().resolve()
        self.path = self.out_dir / DATABASE
        if not create and not self.path.is_file():
            raise BenchError(
                f"--out {self.out_dir}: no results store ({DATABASE}) there; run `sdi-bench run` first"
            )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        self._connection.row_factory = sqlite3.Row
        self._connection.execute("PRAGMA foreign_keys = ON")
        with self.transaction() as db:
            for statement in filter(str.strip, SCHEMA.split(";")):
                db.execute(statement)
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
            )
        version = self.meta("schema_version")
        if version != SCHEMA_VERSION:
            raise BenchError(f"{self.path}: schema version {version}, this sdi-bench writes {SCHEMA_VERSION}")

    def close(self) -> None:
        self._connection.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any error): one writer at a time."""
        db = self._connection
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # --- metadata -------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row["value"]

    def set_meta(self, values: Mapping[str, str]) -> None:
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(values.items()))

    # --- the plan -------------------------------------------------------------------------------

    def sync_plan(self, runs: Sequence[PlannedRun], rerun_changed: bool = False) -> dict[str, int]:
        """Add the runs the store lacks; update unfinished runs whose config hash changed.

        A finished run whose config changed is an error (its result would no longer match its
        config) unless ``rerun_changed``: then it becomes pending again and its scores are dropped.
        Returns counts: ``added``, ``updated``, ``reset``.
        """
        now = time.time()
        counts = {"added": 0, "updated": 0, "reset": 0}
        with self.transaction() as db:
            existing = {
                row["run_id"]: row for row in db.execute("SELECT run_id, config_hash, status FROM runs")
            }
            changed_finished = [
                run.run_id
                for run in runs
                if run.run_id in existing
                and existing[run.run_id]["config_hash"] != run.config_hash
                and existing[run.run_id]["status"] in FINISHED
            ]
            if changed_finished and not rerun_changed:
                listed = ", ".join(changed_finished[:5]) + (" …" if len(changed_finished) > 5 else "")
                raise BenchError(
                    f"{len(changed_finished)} finished run(s) were made with another config or settings "
                    f"({listed}); pass --rerun-changed to run them again, or use another --out"
                )
            for run in runs:
                values = (run.config, json.dumps(run.overlays), json.dumps(run.args), run.config_hash)
                row = existing.get(run.run_id)
                if row is None:
                    db.execute(
                        "INSERT INTO runs (run_id, method, prompt, prompt_index, seed, config, overlays, args,"
                        " config_hash, status, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                        (run.run_id, run.method, run.prompt, run.prompt_index, run.seed, *values, now),
                    )
                    counts["added"] += 1
                elif row["config_hash"] != run.config_hash:
                    if row["status"] in FINISHED:
                        db.execute("DELETE FROM scores WHERE run_id = ?", (run.run_id,))
                        counts["reset"] += 1
                    else:
                        counts["updated"] += 1
                    db.execute(
                        "UPDATE runs SET config = ?, overlays = ?, args = ?, config_hash = ?, prompt_index = ?,"
                        " status = CASE WHEN status = 'running' THEN status ELSE 'pending' END,"
                        " attempt_dir = CASE WHEN status = 'running' THEN attempt_dir END,"
                        " failures = 0, updated_at = ? WHERE run_id = ?",
                        (*values, run.prompt_index, now, run.run_id),
                    )
        return counts

    # --- claims ---------------------------------------------------------------------------------

    def claim(
        self,
        owner: str,
        retries: int,
        lease_seconds: float,
        run_ids: Iterable[str] | None = None,
        recover: Callable[[pathlib.Path], Outcome | None] | None = None,
        now: float | None = None,
    ) -> Claim | None:
        """Take the next claimable run for ``owner`` (pending, failed with retries left, or lease expired).

        A run whose last attempt was never recorded (its lease expired, or it was given back) is first
        offered to ``recover`` with that attempt's folder: if the attempt finished (its supervisor was
        killed after the training process ended), that result is recorded and the run is not trained
        again. Returns None when nothing is claimable.
        """
        wanted = None if run_ids is None else set(run_ids)
        while True:
            now_ = time.time() if now is None else now
            with self.transaction() as db:
                rows = db.execute(
                    "SELECT * FROM runs WHERE status = 'pending' OR (status = 'failed' AND failures <= ?)"
                    " OR (status = 'running' AND lease_until < ?) ORDER BY seed, prompt_index, method",
                    (retries, now_),
                ).fetchall()
                row = next((row for row in rows if wanted is None or row["run_id"] in wanted), None)
                if row is None:
                    return None
                previous = pathlib.Path(row["attempt_dir"]) if row["attempt_dir"] else None
                recovered = None
                if row["status"] in ("running", "pending") and previous is not None and recover is not None:
                    recovered = recover(previous)
                if recovered is not None:
                    self._write_result(db, row["run_id"], recovered, now_)
                    continue
                attempt = row["attempts"] + 1
                attempt_dir = attempt_folder(self.out_dir, row["run_id"], attempt)
                db.execute(
                    "UPDATE runs SET status = 'running', owner = ?, lease_until = ?, attempts = ?, attempt_dir = ?,"
                    " job_ref = NULL, started_at = ?, updated_at = ? WHERE run_id = ?",
                    (owner, now_ + lease_seconds, attempt, str(attempt_dir), now_, now_, row["run_id"]),
                )
                return Claim(
                    run_id=row["run_id"],
                    owner=owner,
                    attempt=attempt,
                    attempt_dir=attempt_dir,
                    config=row["config"],
                    overlays=tuple(json.loads(row["overlays"])),
                    args=tuple(json.loads(row["args"])),
                )

    def renew(self, owner: str, lease_seconds: float) -> int:
        """Extend the leases of every run ``owner`` holds; returns how many."""
        now = time.time()
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE runs SET lease_until = ?, updated_at = ? WHERE owner = ? AND status = 'running'",
                (now + lease_seconds, now, owner),
            )
            return cursor.rowcount

    def set_job_ref(self, claim: Claim, job_ref: Mapping[str, Any]) -> None:
        """Remember which cluster job trains a claimed run (for the log and for ``scancel``)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET job_ref = ? WHERE run_id = ? AND owner = ? AND attempts = ? AND status = 'running'",
                (json.dumps(job_ref), claim.run_id, claim.owner, claim.attempt),
            )

    def release(self, claim: Claim) -> bool:
        """Give an interrupted run back (pending, the attempt not counted as a failure)."""
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE runs SET status = 'pending', owner = NULL, lease_until = NULL, job_ref = NULL,"
                " updated_at = ? WHERE run_id = ? AND owner = ? AND attempts = ? AND status = 'running'",
                (time.time(), claim.run_id, claim.owner, claim.attempt),
            )
            return cursor.rowcount == 1

    def finish(self, claim: Claim, outcome: Outcome) -> bool:
        """Record the result of a claimed attempt; False (nothing written) if the claim was lost."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT owner, attempts, status FROM runs WHERE run_id = ?", (claim.run_id,)
            ).fetchone()
            if row is None or (row["owner"], row["attempts"], row["status"]) != (
                claim.owner,
                claim.attempt,
                "running",
            ):
                return False
            self._write_result(db, claim.run_id, outcome, time.time())
            return True

    @staticmethod
    def _write_result(db: sqlite3.Connection, run_id: str, outcome: Outcome, now: float) -> None:
        values = outcome.columns()
        db.execute(
            f"UPDATE runs SET status = ?, failures = failures + ?, owner = NULL, lease_until = NULL,"
            f" {', '.join(f'{name} = ?' for name in RESULT_COLUMNS)}, updated_at = ? WHERE run_id = ?",
            (
                outcome.status,
                1 if outcome.status == "failed" else 0,
                *(values[name] for name in RESULT_COLUMNS),
                now,
                run_id,
            ),
        )
        db.execute("DELETE FROM scores WHERE run_id = ?", (run_id,))

    # --- queries --------------------------------------------------------------------------------

    def runs(self, run_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Every run (or the given ones) as a dict, in plan order."""
        rows = self._connection.execute("SELECT * FROM runs ORDER BY seed, prompt_index, method").fetchall()
        wanted = None if run_ids is None else set(run_ids)
        return [dict(row) for row in rows if wanted is None or row["run_id"] in wanted]

    # --- scores ---------------------------------------------------------------------------------

    def add_scores(
        self, run_id: str, values: Mapping[str, tuple[float, float | None, int]], model: str
    ) -> None:
        """Store a run's metrics (value, per-view std, number of views) computed with ``model``."""
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO scores (run_id, metric, value, view_std, n_views, model, scored_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(run_id, metric, value, std, n, model, now) for metric, (value, std, n) in values.items()],
            )

    def add_metric_model(self, model: str, metrics: Sequence[str], details: Mapping[str, Any]) -> None:
        """Say what a model label means (weights, fingerprint, packages and versions)."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO metric_models (model, metric, details) VALUES (?, ?, ?)",
                [(model, metric, json.dumps(details, sort_keys=True)) for metric in metrics],
            )

    def scores(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._connection.execute("SELECT * FROM scores ORDER BY run_id, metric")]

    def scored_with(self, metric: str, model: str) -> set[str]:
        """The runs that already have ``metric`` computed with ``model``."""
        rows = self._connection.execute(
            "SELECT run_id FROM scores WHERE metric = ? AND model = ?", (metric, model)
        )
        return {row["run_id"] for row in rows}

    def metric_models(self) -> list[dict[str, Any]]:
        rows = self._connection.execute("SELECT * FROM metric_models ORDER BY metric, model").fetchall()
        return [{**dict(row), "details": json.loads(row["details"])} for row in rows]
