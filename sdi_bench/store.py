"""The results store: one SQLite database (``results.sqlite``) in the output folder.

Table ``runs`` has one row per run of the plan (its id, config hash, status, attempt count, timings,
peak memory, outcome, log tail); ``scores`` one row per run and metric; ``metric_models`` what each
metric's model label means (weights, packages and versions).

A run is its config: its id ends with its config hash (:mod:`.plan`), so a changed config is another
run, and a row is only ever added by the plan, never rewritten.

Status: ``pending`` → ``running`` (claimed) → ``done`` | ``diverged`` | ``failed``. A failed run is
claimed again while its ``failures`` ≤ ``retries``. A ``running`` run is claimed again only when its
owner is provably gone (:mod:`.ownership`: its process on this host, or its lease on another) and its
last attempt's training provably is too; a training that outlived its ``run`` is waited for and its
result recorded. Every change is one transaction; a claim is ``BEGIN IMMEDIATE`` (one writer at a
time), so two ``run`` processes never take the same run, and a result is written only by the claim
(owner and attempt) that launched it.

A store that is not right (empty, not SQLite, damaged, not ours, of another schema) is refused with
one line that names the file and what to do; nothing is deleted. ``read`` opens it read-only.
"""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, fields
from typing import Any, Literal

from . import ownership
from .errors import BenchError
from .outcome import Outcome
from .plan import PlannedRun

DATABASE = "results.sqlite"
SCHEMA_VERSION = 2
"""2: run ids end with the config hash, ``setup_hash`` (1: one row per method, prompt and seed)."""
FINISHED = ("done", "diverged")
TABLES = ("meta", "runs", "scores", "metric_models")
DAMAGED = (
    "Restore it from a backup, or move it away (mv {path} {path}.broken) to start a new store here "
    "(runs/ is kept; new attempts get new folders)."
)
Mode = Literal["create", "write", "read"]

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
    setup_hash TEXT NOT NULL,
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


class _Probe(Exception):
    """Rolls back the write that checks a store is writable."""


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
    prompt: str


def attempt_folder(out_dir: pathlib.Path, run_id: str, attempt: int) -> pathlib.Path:
    """Where attempt ``attempt`` of a run keeps its working directory, log and threestudio outputs."""
    return out_dir / "runs" / run_id / f"attempt-{attempt}"


def check_folder(out_dir: pathlib.Path, option: str = "--out") -> None:
    """BenchError if ``out_dir`` or a folder above it is a file."""
    for folder in (out_dir, *out_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                where = "is a file" if folder == out_dir else f"is under {folder}, which is a file"
                raise BenchError(f"{option} {out_dir} {where}: give a folder")
            return


def _reason(error: BaseException) -> str:
    return (getattr(error, "strerror", None) or str(error)).strip() or type(error).__name__


class Store:
    """The SQLite results store of one output folder (safe for several processes on one host).

    ``mode``: ``create`` (``run``: the folder and the store are made if missing), ``write`` (``score``)
    or ``read`` (``plan --out``, ``report``: opened read-only, so a read-only store can be reported).
    """

    def __init__(self, out_dir: str | pathlib.Path, mode: Mode = "create") -> None:
        self.out_dir = pathlib.Path(out_dir).expanduser().resolve()
        self.path = self.out_dir / DATABASE
        check_folder(self.out_dir)
        if not self.path.exists():
            if mode != "create":
                raise BenchError(
                    f"--out {self.out_dir}: no results store ({DATABASE}) there; run `sdi-bench run` first"
                )
            self._create()
        try:
            self._connection = self._open(mode == "read")
            self._connection.row_factory = sqlite3.Row
            self._connection.execute("PRAGMA foreign_keys = ON")
            self._check(writable=mode != "read")
        except sqlite3.OperationalError as error:  # e.g. locked by another process for a minute
            raise self._refuse(f"cannot be opened ({_reason(error)})", "Try again.") from None
        except sqlite3.DatabaseError as error:
            raise self._refuse(f"is damaged ({_reason(error)})", DAMAGED.format(path=self.path)) from None

    def _refuse(self, what: str, advice: str) -> BenchError:
        return BenchError(f"{self.path} {what}. Nothing was changed. {advice}")

    def _create(self) -> None:
        """A new store, made beside its place and linked in whole: never a half-made or empty file."""
        temporary = self.out_dir / f".{DATABASE}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            temporary.open("xb").close()
            with closing(sqlite3.connect(temporary, isolation_level=None)) as db:
                db.executescript(SCHEMA)
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            os.link(temporary, self.path)
        except FileExistsError:
            pass  # another `run` made it at the same moment: use that one
        except (OSError, sqlite3.Error) as error:
            raise BenchError(
                f"--out {self.out_dir} is not writable ({_reason(error)}): `sdi-bench run` keeps "
                f"{DATABASE} and runs/ there; give a folder you can write"
            ) from None
        finally:
            temporary.unlink(missing_ok=True)

    def _open(self, read_only: bool) -> sqlite3.Connection:
        size = self.path.stat().st_size
        if size == 0:
            raise self._refuse(
                "is empty (0 bytes): no sdi-bench store",
                f"Restore it from a backup, or move it away (mv {self.path} {self.path}.empty) to start "
                "a new store here (runs/ is kept; new attempts get new folders).",
            )
        try:
            with self.path.open("rb") as handle:
                header = handle.read(16)
        except OSError as error:
            raise self._refuse(f"cannot be read ({_reason(error)})", "Check its permissions.") from None
        if header != b"SQLite format 3\x00":
            raise self._refuse(
                "is not an SQLite database (file is not a database)", DAMAGED.format(path=self.path)
            )
        uri = f"file:{urllib.parse.quote(str(self.path))}?mode={'ro' if read_only else 'rw'}"
        connection = sqlite3.connect(
            uri, uri=True, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        if read_only:
            try:
                connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError as error:
                if getattr(error, "sqlite_errorname", "") != "SQLITE_READONLY_ROLLBACK":
                    raise
                # a `run` was killed inside a write: SQLite rolls the write back on a writable open
                connection.close()
                try:
                    with closing(self._open(read_only=False)) as writable:
                        writable.execute("SELECT count(*) FROM sqlite_master").fetchone()
                except sqlite3.Error as again:
                    raise self._refuse(
                        f"holds an unfinished write of a killed `sdi-bench run` ({DATABASE}-journal) "
                        f"and cannot be rolled back here ({_reason(again)})",
                        "Run `sdi-bench score --out` on it once where it is writable.",
                    ) from None
                return self._open(read_only=True)
        return connection

    def _check(self, writable: bool) -> None:
        """Refuse a damaged store, another program's database, another schema, or (``writable``) a
        store this process cannot write."""
        damaged = DAMAGED.format(path=self.path)
        try:
            check = self._connection.execute("PRAGMA quick_check").fetchone()[0]
            tables = {row[0] for row in self._connection.execute("SELECT name FROM sqlite_master")}
        except sqlite3.OperationalError:
            raise  # locked, say: not damaged
        except sqlite3.DatabaseError as error:
            raise self._refuse(f"is damaged ({_reason(error)})", damaged) from None
        if check != "ok":
            raise self._refuse(f"is damaged (integrity check: {check})", damaged)
        missing = [table for table in TABLES if table not in tables]
        if missing:
            raise self._refuse(
                f"is not an sdi-bench store (no table {missing[0]!r})",
                "Give `sdi-bench` an --out of its own.",
            )
        version = self.meta("schema_version") or "?"
        if version != str(SCHEMA_VERSION):
            newer = version.isdigit() and int(version) > SCHEMA_VERSION
            raise self._refuse(
                f"was written by {'a newer' if newer else 'an older'} sdi-bench (schema {version}; "
                f"this one reads schema {SCHEMA_VERSION})",
                "Upgrade threestudio-sdi (pip install -U) to read it."
                if newer
                else "Give this sdi-bench a new --out (that one stays readable by the sdi-bench that wrote it).",
            )
        if writable:
            try:  # a write that is rolled back: it needs the file and the folder (its journal) writable
                with self.transaction() as db:
                    db.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
                    raise _Probe
            except _Probe:
                pass
            except sqlite3.OperationalError as error:
                raise self._refuse(
                    f"is read-only ({_reason(error)})",
                    f"`sdi-bench run` and `score` write it: make it and {self.out_dir} writable, or copy "
                    "the folder somewhere writable.",
                ) from None

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
        return None if row is None else row[0]

    def set_meta(self, values: Mapping[str, str]) -> None:
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(values.items()))

    # --- the plan -------------------------------------------------------------------------------

    def sync_plan(self, runs: Sequence[PlannedRun]) -> int:
        """Add the runs the store lacks (a row is never rewritten: a changed config is another run id);
        returns how many were added."""
        now = time.time()
        added = 0
        with self.transaction() as db:
            existing = dict(db.execute("SELECT run_id, config_hash FROM runs").fetchall())
            for run in runs:
                if run.run_id in existing:
                    if existing[run.run_id] != run.config_hash:
                        raise BenchError(
                            f"run {run.run_id}: the store has it with config {existing[run.run_id]}, the "
                            f"plan with {run.config_hash} (a hash collision): use another --out"
                        )
                    continue
                db.execute(
                    "INSERT INTO runs (run_id, method, prompt, prompt_index, seed, config, overlays, args,"
                    " config_hash, setup_hash, status, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                    (
                        run.run_id,
                        run.method,
                        run.prompt,
                        run.prompt_index,
                        run.seed,
                        run.config,
                        json.dumps(run.overlays),
                        json.dumps(run.args),
                        run.config_hash,
                        run.setup_hash,
                        now,
                    ),
                )
                added += 1
        return added

    # --- claims ---------------------------------------------------------------------------------

    def _last_attempt(self, row: sqlite3.Row, me: str | None, lease_seconds: float, now: float) -> str:
        """``held`` (its owner is alive), ``running`` (its owner is gone, its training may not be),
        ``ended`` or ``abandoned`` (see :func:`.ownership.attempt_state`; ``me`` takes a free gate,
        None only looks)."""
        if row["status"] == "running":
            alive = None
            holder = ownership.owner_process(row["owner"])
            if holder is not None:
                alive = holder.alive()
            if alive or (alive is None and (row["lease_until"] or 0) >= now):
                return "held"
        if row["status"] == "failed" or not row["attempt_dir"]:
            return "ended"  # recorded after its training ended, or never started
        return ownership.attempt_state(pathlib.Path(row["attempt_dir"]), me, lease_seconds)

    def claim(
        self,
        owner: str,
        retries: int,
        lease_seconds: float,
        run_ids: Iterable[str] | None = None,
        recover: Callable[[pathlib.Path, Sequence[str], str], Outcome | None] | None = None,
        now: float | None = None,
    ) -> Claim | None:
        """Take the next claimable run for ``owner``: pending, failed with retries left, or running
        with its owner and its training provably gone. Returns None when nothing is claimable.

        A run whose last attempt was never recorded is first offered to ``recover`` (attempt folder,
        overrides, prompt): if that attempt finished (its supervisor was killed after the training
        ended), its result is recorded and the run is not trained again.
        """
        wanted = None if run_ids is None else set(run_ids)
        while True:
            now_ = time.time() if now is None else now
            with self.transaction() as db:
                rows = db.execute(
                    "SELECT * FROM runs WHERE status IN ('pending', 'running')"
                    " OR (status = 'failed' AND failures <= ?) ORDER BY seed, prompt_index, method, run_id",
                    (retries,),
                ).fetchall()
                recorded = False
                for row in rows:
                    if wanted is not None and row["run_id"] not in wanted:
                        continue
                    state = self._last_attempt(row, owner, lease_seconds, now_)
                    if state in ("held", "running"):
                        continue
                    if state == "ended" and row["status"] != "failed" and row["attempt_dir"] and recover:
                        args = tuple(json.loads(row["args"]))
                        recovered = recover(pathlib.Path(row["attempt_dir"]), args, row["prompt"])
                        if recovered is not None:
                            self._write_result(db, row["run_id"], recovered, now_)
                            recorded = True
                            break
                    return self._take(db, row, owner, lease_seconds, now_)
                if not recorded:
                    return None

    def _take(
        self, db: sqlite3.Connection, row: sqlite3.Row, owner: str, lease_seconds: float, now: float
    ) -> Claim:
        """Claim ``row`` for its next attempt, in a folder that does not exist yet (none is reused)."""
        attempt = row["attempts"] + 1
        while attempt_folder(self.out_dir, row["run_id"], attempt).exists():
            attempt += 1
        attempt_dir = attempt_folder(self.out_dir, row["run_id"], attempt)
        db.execute(
            "UPDATE runs SET status = 'running', owner = ?, lease_until = ?, attempts = ?, attempt_dir = ?,"
            " job_ref = NULL, started_at = ?, updated_at = ? WHERE run_id = ?",
            (owner, now + lease_seconds, attempt, str(attempt_dir), now, now, row["run_id"]),
        )
        return Claim(
            run_id=row["run_id"],
            owner=owner,
            attempt=attempt,
            attempt_dir=attempt_dir,
            config=row["config"],
            overlays=tuple(json.loads(row["overlays"])),
            args=tuple(json.loads(row["args"])),
            prompt=row["prompt"],
        )

    def orphans(
        self, owner: str, lease_seconds: float, run_ids: Iterable[str] | None = None
    ) -> list[tuple[str, pathlib.Path]]:
        """(run id, attempt folder) of the runs (of ``run_ids``) whose owner is gone but whose training
        may still run: they are claimed (or recorded) once it ends. Nothing is written."""
        wanted = None if run_ids is None else set(run_ids)
        now = time.time()
        found = []
        for row in self._connection.execute(
            "SELECT * FROM runs WHERE status IN ('pending', 'running') AND attempt_dir IS NOT NULL"
            " AND (owner IS NULL OR owner != ?)",
            (owner,),
        ).fetchall():
            if wanted is not None and row["run_id"] not in wanted:
                continue
            if self._last_attempt(row, None, lease_seconds, now) == "running":
                found.append((row["run_id"], pathlib.Path(row["attempt_dir"])))
        return found

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
