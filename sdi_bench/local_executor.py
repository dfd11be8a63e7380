"""``--executor local``: one worker thread per GPU of ``--gpus``, each claiming runs from the store.

Each worker has its own database connection, claims one run at a time and runs it with
``CUDA_VISIBLE_DEVICES`` set to its GPU. Several ``run`` processes (on one host) can share a store:
the claims keep them apart. When nothing is claimable but a training of a gone ``run`` still runs, the
workers wait for it (its result is then recorded, or its run claimed).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from .execution import RunSettings, execute_run, spec_for
from .outcome import recover
from .runner import ORPHAN_POLL_SECONDS, Heartbeat, OrphanWatch, Progress, RunOptions, failed_to_start, record
from .store import Store


def run_local(
    store: Store,
    run_ids: Sequence[str],
    settings: RunSettings,
    options: RunOptions,
    gpus: Sequence[str],
    owner: str,
    stop: threading.Event,
    progress: bool = True,
) -> None:
    """Run every claimable run of ``run_ids`` on ``gpus`` until none is left or ``stop`` is set."""
    wanted = set(run_ids)
    orphans = OrphanWatch(owner, options.lease_seconds, wanted)

    def worker(gpu: str) -> None:
        own = Store(store.out_dir, mode="write")
        try:
            while not stop.is_set():
                claim = own.claim(owner, options.retries, options.lease_seconds, wanted, recover=recover)
                if claim is None:
                    if not orphans.waiting(own) or stop.wait(ORPHAN_POLL_SECONDS):
                        return
                    continue
                try:
                    outcome = execute_run(spec_for(claim, settings), gpu=gpu, stop=stop)
                except Exception as error:  # noqa: BLE001 - recorded as a failed attempt, never lost
                    outcome = failed_to_start(claim, error)
                record(own, claim, outcome)
        finally:
            own.close()

    heartbeat = Heartbeat(Store(store.out_dir, mode="write"), owner, options.lease_seconds)
    heartbeat.start()
    bar = Progress(store, run_ids, options.retries, enabled=progress)
    threads = [threading.Thread(target=worker, args=(gpu,), name=f"sdi-bench-gpu{gpu}") for gpu in gpus]
    for thread in threads:
        thread.start()
    try:
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(timeout=0.5)
            bar.update()
    finally:
        heartbeat.stop()
        heartbeat.store.close()
        bar.close()
