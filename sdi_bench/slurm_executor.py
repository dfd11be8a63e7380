"""``--executor slurm``: submitit job arrays; each array task runs one attempt (:func:`.execution.execute_run`).

This process stays the only writer of the store: it claims runs, submits them as one array (Slurm runs
at most ``--max-parallel`` tasks of it at a time), renews the claims while the jobs run, and records each
job's outcome as it ends; failed runs with retries left go into a new array. Stopped (SIGTERM, Ctrl-C),
it cancels its jobs and gives their runs back. With ``--cluster local`` submitit's local executor runs
the same path on this machine (the tests); it starts every task at once, so here at most
``--max-parallel`` runs are claimed at a time.

A job whose submitting ``run`` died (``kill -9``, a lost login node) runs on: its training belongs to
the job, not to the submitter. The next ``run`` on the store finds its claim's owner gone and the job's
heartbeat fresh, says so, waits for it, and records its result from the attempt folder; it trains the
run again only if the job ended without one. A job still queued when the next ``run`` retakes its
claim finds its attempt abandoned when it starts, and exits without training.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import BenchError
from .execution import RunSettings, execute_run, spec_for
from .outcome import classify, recover
from .runner import Heartbeat, OrphanWatch, Progress, RunOptions, failed_to_start, record
from .store import Claim, Store


@dataclass(frozen=True)
class SlurmOptions:
    """Slurm resources of one array task (one run) and the array's parallelism."""

    cluster: str = "slurm"
    partition: str | None = None
    time_minutes: int = 360
    gpus_per_task: int = 1
    cpus_per_task: int = 8
    mem_gb: float | None = None
    max_parallel: int = 8
    extra: Mapping[str, str] = field(default_factory=dict)
    poll_seconds: float = 15.0


def make_executor(folder: str, options: SlurmOptions) -> Any:
    """A submitit ``AutoExecutor`` for ``options.cluster`` with the task's resources."""
    try:
        import submitit
    except ImportError:
        raise BenchError(
            "--executor slurm needs submitit: pip install submitit (or threestudio-sdi[bench])"
        ) from None
    executor = submitit.AutoExecutor(folder=folder, cluster=options.cluster)
    parameters: dict[str, Any] = {
        "name": "sdi-bench",
        "timeout_min": options.time_minutes,
        "gpus_per_node": options.gpus_per_task,
        "cpus_per_task": options.cpus_per_task,
        "tasks_per_node": 1,
        "nodes": 1,
        "slurm_array_parallelism": options.max_parallel,
    }
    if options.partition:
        parameters["slurm_partition"] = options.partition
    if options.mem_gb is not None:
        parameters["mem_gb"] = options.mem_gb
    if options.extra:
        parameters["slurm_additional_parameters"] = dict(options.extra)
    executor.update_parameters(**parameters)
    return executor


def job_outcome(job: Any, claim: Claim, interrupted: bool) -> Any:
    """The :class:`.outcome.Outcome` a finished job returned, or one built from its attempt folder."""
    try:
        return job.result()
    except Exception as error:  # noqa: BLE001 - a failed or cancelled job is an outcome too
        outcome = classify(claim.attempt_dir, None, None, claim.args, claim.prompt, interrupted=interrupted)
        if outcome.status == "failed":
            reason = (str(error).strip().splitlines() or [type(error).__name__])[-1][:500]
            outcome.error = f"job {job.job_id} ended without a result: {reason}"
        return outcome


def submit(
    executor: Any,
    store: Store,
    claims: Sequence[Claim],
    settings: RunSettings,
    cluster: str,
    in_flight: dict[Any, Claim],
) -> None:
    """Submit the claimed runs as one job array; remember each job with its claim."""
    try:
        jobs = executor.map_array(execute_run, [spec_for(claim, settings) for claim in claims])
    except Exception as error:  # noqa: BLE001 - e.g. sbatch refused the array
        for claim in claims:
            record(store, claim, failed_to_start(claim, error))
        raise BenchError(f"submitting {len(claims)} runs failed: {error}") from None
    for job, claim in zip(jobs, claims):
        in_flight[job] = claim
        store.set_job_ref(claim, {"cluster": cluster, "job_id": str(job.job_id)})


def run_slurm(
    store: Store,
    run_ids: Sequence[str],
    settings: RunSettings,
    options: RunOptions,
    slurm: SlurmOptions,
    owner: str,
    stop: threading.Event,
    progress: bool = True,
) -> None:
    """Run every claimable run of ``run_ids`` as submitit array tasks until none is left or ``stop``."""
    executor = make_executor(str(store.out_dir / "submitit" / "%j"), slurm)
    wanted = set(run_ids)
    capacity = slurm.max_parallel if slurm.cluster != "slurm" else len(wanted)
    in_flight: dict[Any, Claim] = {}
    orphans = OrphanWatch(owner, options.lease_seconds, wanted)
    heartbeat = Heartbeat(Store(store.out_dir, mode="write"), owner, options.lease_seconds)
    heartbeat.start()
    bar = Progress(store, run_ids, options.retries, enabled=progress)
    try:
        while True:
            claims: list[Claim] = []
            exhausted = False
            while not stop.is_set() and len(in_flight) + len(claims) < capacity:
                claim = store.claim(owner, options.retries, options.lease_seconds, wanted, recover=recover)
                if claim is None:
                    exhausted = True
                    break
                claims.append(claim)
            if claims:
                submit(executor, store, claims, settings, slurm.cluster, in_flight)
            if stop.is_set() or (exhausted and not in_flight and not orphans.waiting(store)):
                break
            finished = [job for job in in_flight if job.done()]
            for job in finished:
                claim = in_flight.pop(job)
                record(store, claim, job_outcome(job, claim, interrupted=stop.is_set()))
            bar.update()
            if not finished:  # else claim again at once: a failed run may be claimable for a retry
                time.sleep(slurm.poll_seconds)
    finally:
        for job, claim in in_flight.items():
            job.cancel(check=False)
            store.release(claim)
        heartbeat.stop()
        heartbeat.store.close()
        bar.close()
