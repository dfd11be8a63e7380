"""What both executors share: the lease heartbeat, the progress bar, the watch over trainings that
outlived their ``run``, and the step that records an attempt's outcome."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from tqdm import tqdm

from . import ownership
from .outcome import Outcome
from .store import Claim, Store

ORPHAN_POLL_SECONDS = 2.0
"""How often a ``run`` that waits for a training of a gone ``run`` looks again."""


@dataclass(frozen=True)
class RunOptions:
    """How ``run`` treats failures and claims.

    Attributes:
        retries: a failed run is run again while its failures are at most this many.
        lease_seconds: a claim not renewed for this long may be taken by another ``run``.
    """

    retries: int = 1
    lease_seconds: float = 600.0


def failed_to_start(claim: Claim, error: BaseException) -> Outcome:
    """The outcome of an attempt that sdi-bench could not start or supervise."""
    return Outcome(
        status="failed",
        outcome="error",
        attempt_dir=str(claim.attempt_dir),
        error=f"sdi-bench could not run the attempt: {type(error).__name__}: {error}",
    )


def record(store: Store, claim: Claim, outcome: Outcome) -> None:
    """Store an attempt's outcome, or give the run back when the attempt was interrupted (or never
    started: another ``run`` abandoned it)."""
    if outcome.status in ("interrupted", "abandoned"):
        store.release(claim)
    else:
        store.finish(claim, outcome)


class OrphanWatch:
    """The runs of a plan whose ``run`` is gone but whose training may still run (a Slurm job, or a
    training process a moment before it stops itself): each is reported once, and waited for."""

    def __init__(self, owner: str, lease_seconds: float, run_ids: Iterable[str]) -> None:
        self.owner, self.lease_seconds, self.run_ids = owner, lease_seconds, set(run_ids)
        self.reported: set[str] = set()
        self.lock = threading.Lock()

    def waiting(self, store: Store) -> bool:
        """Whether any such run is left (reporting the new ones on stderr)."""
        found = store.orphans(self.owner, self.lease_seconds, self.run_ids)
        with self.lock:
            for run_id, attempt_dir in found:
                if run_id not in self.reported:
                    self.reported.add(run_id)
                    print(
                        f"sdi-bench: {run_id}: its training ({ownership.describe(attempt_dir)}) outlived the "
                        "`sdi-bench run` that started it; waiting for it to end, then its result is recorded",
                        file=sys.stderr,
                        flush=True,
                    )
        return bool(found)


class Heartbeat(threading.Thread):
    """Renews the leases of every run ``owner`` holds, every quarter lease, until stopped."""

    def __init__(self, store: Store, owner: str, lease_seconds: float) -> None:
        super().__init__(name="sdi-bench-heartbeat", daemon=True)
        self.store, self.owner, self.lease_seconds = store, owner, lease_seconds
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.lease_seconds / 4):
            self.store.renew(self.owner, self.lease_seconds)

    def stop(self) -> None:
        self.done.set()
        self.join()


class Progress:
    """A live progress bar over the plan's runs: finished (done, diverged, failed for good) of all."""

    def __init__(self, store: Store, run_ids: Iterable[str], retries: int, enabled: bool = True) -> None:
        self.store, self.run_ids, self.retries = store, set(run_ids), retries
        self.bar = tqdm(total=len(self.run_ids), desc="sdi-bench run", unit="run", disable=not enabled)
        self.update()

    def counts(self) -> dict[str, int]:
        """done, diverged, failed (for good), retrying (failed with retries left), running, pending."""
        counts = dict.fromkeys(("done", "diverged", "failed", "retrying", "running", "pending"), 0)
        for run in self.store.runs(self.run_ids):
            status = run["status"]
            if status == "failed" and run["failures"] <= self.retries:
                status = "retrying"
            counts[status] += 1
        return counts

    def update(self) -> dict[str, int]:
        counts = self.counts()
        self.bar.n = counts["done"] + counts["diverged"] + counts["failed"]
        self.bar.set_postfix(
            running=counts["running"], diverged=counts["diverged"], failed=counts["failed"], refresh=False
        )
        self.bar.refresh()
        return counts

    def close(self) -> None:
        self.update()
        self.bar.close()
