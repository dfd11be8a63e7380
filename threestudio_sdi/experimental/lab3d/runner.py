"""Runs 3D-lab jobs (a setting, a method, a class, a seed) in this process or in worker processes.

:func:`run_jobs` yields each finished run as it ends, with its index in the job list, so a caller can
keep it at once (a kill then loses only the runs in progress), and reports every training step of
every job to ``on_step`` (progress bars). With ``workers > 1`` the jobs go to that many processes (one
torch thread each; forked on Linux, so the imports are not paid again), each building the
:class:`~threestudio_sdi.experimental.lab3d.experiment.Lab3D` of a setting once. A run that fails in a
worker, or a worker that dies, raises :class:`RunFailed` naming the job; the remaining workers are
stopped. Ctrl-C reaches only the parent, which stops them too; a worker whose parent was killed
stops at its next step.

A run's numbers do not depend on where it ran: every draw comes from the run's seed
(:mod:`threestudio_sdi.experimental.lab3d.distill`).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .experiment import Lab3D, LabSettings, RunRecord

StepCallback = Callable[[int, int], None]
"""``on_step(job index, steps done)``, after every training step of a job."""
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Job:
    """One run of the lab: distil class ``class_index`` with ``method`` from ``seed``, in ``settings``."""

    settings: LabSettings
    method: str
    class_index: int
    seed: int

    def describe(self) -> str:
        names = self.settings.class_names
        name = names[self.class_index] if 0 <= self.class_index < len(names) else f"class {self.class_index}"
        return f"{self.method}, {name}, seed {self.seed}"


class RunFailed(RuntimeError):
    """A job raised in a worker, or its worker died."""


def run_jobs(
    jobs: Sequence[Job],
    workers: int = 1,
    on_step: StepCallback | None = None,
    labs: Mapping[LabSettings, Lab3D] | None = None,
) -> Iterator[tuple[int, RunRecord]]:
    """Every job's record, as ``(index in jobs, record)`` in the order the runs finish (module docstring).

    ``labs`` (optional): labs already built, used here and, forked, by the workers (no rebuild).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    labs = dict(labs or {})
    if workers == 1 or len(jobs) == 1:
        yield from _run_here(jobs, on_step, labs)
    else:
        yield from _run_in_workers(jobs, min(workers, len(jobs)), on_step, labs)


def _run_here(
    jobs: Sequence[Job], on_step: StepCallback | None, labs: dict[LabSettings, Lab3D]
) -> Iterator[tuple[int, RunRecord]]:
    for index, job in enumerate(jobs):
        lab = labs.get(job.settings) or labs.setdefault(job.settings, Lab3D(job.settings))
        callback = None if on_step is None else _step_reporter(on_step, index)
        yield index, lab.run(job.method, job.class_index, job.seed, callback)


def _step_reporter(on_step: StepCallback, index: int) -> Callable[[dict[str, Any]], None]:
    return lambda info: on_step(index, info["step"] + 1)


def _worker(tasks: Any, results: Any, labs: dict[LabSettings, Lab3D], parent: int) -> None:
    """A worker process: runs ``(index, job)`` tasks until ``None``; sends steps, records and errors.
    It stops at the next step when its parent is gone (killed): no orphan keeps computing."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the workers
    torch.set_num_threads(1)

    def report_step(index: int, info: dict[str, Any]) -> None:
        if os.getppid() != parent:
            os._exit(1)  # at once: nobody reads the results any more, so nothing is flushed
        results.put(("step", index, info["step"] + 1))

    while (task := tasks.get()) is not None:
        index, job = task
        try:
            lab = labs.get(job.settings) or labs.setdefault(job.settings, Lab3D(job.settings))
            record = lab.run(
                job.method, job.class_index, job.seed, lambda info, i=index: report_step(i, info)
            )
            results.put(("done", index, (record.row, record.turntable.numpy())))
        except Exception:
            results.put(("error", index, traceback.format_exc()))
            return


def _context() -> Any:
    """Fork on Linux (cheap: the parent's imports are reused), spawn elsewhere."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _run_in_workers(
    jobs: Sequence[Job], workers: int, on_step: StepCallback | None, labs: dict[LabSettings, Lab3D]
) -> Iterator[tuple[int, RunRecord]]:
    context = _context()
    if context.get_start_method() != "fork":
        labs = {}  # a spawned worker builds its own (pickling a lab costs more than building it)
    tasks, results = context.Queue(), context.Queue()
    for task in enumerate(jobs):
        tasks.put(task)
    for _ in range(workers):
        tasks.put(None)
    processes = [
        context.Process(target=_worker, args=(tasks, results, labs, os.getpid()), daemon=True)
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    pending = set(range(len(jobs)))
    running: dict[int, int] = {}  # job index -> steps done, for the error of a dead worker
    try:
        while pending:
            try:
                kind, index, payload = results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    names = "; ".join(jobs[i].describe() for i in running) or "no run"
                    raise RunFailed(
                        f"a worker process died (exit code {dead[0]}) while running: {names}"
                    ) from None
                continue
            if kind == "step":
                running[index] = payload
                if on_step is not None:
                    on_step(index, payload)
            elif kind == "done":
                pending.discard(index)
                running.pop(index, None)
                row, turntable = payload
                yield index, RunRecord(row, torch.from_numpy(turntable))
            else:
                raise RunFailed(f"run {jobs[index].describe()} failed in a worker:\n{payload}")
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()
