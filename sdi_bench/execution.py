"""One attempt of one run: its working folder, the training process, and its outcome.

The same function, :func:`execute_run`, runs an attempt in a worker thread of the local executor and
inside a submitit job (Slurm, or submitit's local executor in the tests). It starts the launch wrapper
(:mod:`.launcher`) in the attempt folder, which is threestudio's working directory: ``custom/`` links
to the checkout's extensions (plus this repository's ``custom/threestudio-sdi`` when the checkout has
none), ``load`` to the checkout's ``load/``, and threestudio writes to ``outputs/`` there.

The attempt folder is new (the claim chose a number whose folder did not exist) and is never emptied
or replaced. Before the training starts, the supervisor takes the attempt's gate
(:func:`.ownership.take_gate`); if a ``run`` that retook the claim took it first, the attempt is
abandoned without training. While the training runs, the supervisor touches the gate (its heartbeat);
when it has exited, it writes ``ended``. The training dies with its supervisor (:mod:`.launcher`).
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from threestudio_sdi.extension import SOURCE_ROOT

from . import layout, ownership
from .launcher import LIFELINE_ENV
from .outcome import Outcome, classify
from .store import Claim

STOP_GRACE_SECONDS = 15.0
"""How long a stopped training process gets between SIGTERM and SIGKILL."""


@dataclass(frozen=True)
class RunSettings:
    """What every attempt of a ``run`` shares."""

    threestudio: pathlib.Path
    python: str = sys.executable
    device: str = "gpu"


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker (thread or cluster job) needs to run one attempt; picklable."""

    run_id: str
    attempt: int
    attempt_dir: str
    threestudio: str
    python: str
    device: str
    config: str
    overlays: tuple[str, ...]
    args: tuple[str, ...]
    prompt: str


def spec_for(claim: Claim, settings: RunSettings) -> RunSpec:
    return RunSpec(
        run_id=claim.run_id,
        attempt=claim.attempt,
        attempt_dir=str(claim.attempt_dir),
        threestudio=str(settings.threestudio),
        python=settings.python,
        device=settings.device,
        config=claim.config,
        overlays=claim.overlays,
        args=claim.args,
        prompt=claim.prompt,
    )


def launch_command(spec: RunSpec) -> list[str]:
    """``python -m sdi_bench.launcher ... -- --config ... --train --gpu 0 <overrides>``."""
    attempt_dir = pathlib.Path(spec.attempt_dir)
    command = [spec.python, "-m", "sdi_bench.launcher", "--threestudio", spec.threestudio]
    command += ["--report", str(attempt_dir / layout.REPORT), "--device", spec.device]
    for overlay in spec.overlays:
        command += ["--overlay", overlay]
    # launch.py uses CUDA_VISIBLE_DEVICES when it is set (by a worker or by Slurm), else --gpu
    command += ["--", "--config", spec.config, "--train", "--gpu", "0", *spec.args]
    return [*command, f"exp_root_dir={attempt_dir / layout.OUTPUTS}"]


def prepare_attempt(attempt_dir: pathlib.Path, threestudio: pathlib.Path) -> None:
    """The attempt folder (whose gate this process holds) set up as threestudio's working directory
    (links only)."""
    custom = attempt_dir / "custom"
    custom.mkdir()
    source = threestudio / "custom"
    entries = sorted(source.iterdir()) if source.is_dir() else []
    for entry in entries:
        if entry.name != "__pycache__":
            (custom / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    if not (custom / "threestudio-sdi").exists() and (SOURCE_ROOT / "__init__.py").is_file():
        (custom / "threestudio-sdi").symlink_to(SOURCE_ROOT, target_is_directory=True)
    if (threestudio / "load").is_dir():
        (attempt_dir / "load").symlink_to((threestudio / "load").resolve(), target_is_directory=True)


def stop_process_group(process: subprocess.Popen, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM the process group of ``process``, then SIGKILL what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def end_group(process: subprocess.Popen) -> None:
    """SIGKILL what the training left in its process group after it exited (a child it started and did
    not wait for): nothing of an attempt outlives it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def execute_run(spec: RunSpec, gpu: str | None = None, stop: threading.Event | None = None) -> Outcome:
    """Run one attempt to its end (or until ``stop`` is set) and classify it.

    Args:
        spec: the attempt.
        gpu: ``CUDA_VISIBLE_DEVICES`` for the training process (None: inherit, as in a Slurm job).
        stop: when set, the training process is stopped and the attempt counts as interrupted
            (unless it had already finished).
    """
    attempt_dir = pathlib.Path(spec.attempt_dir)
    if ownership.take_gate(attempt_dir, ownership.ProcessId.current().to_dict()) is not None:
        return Outcome(
            status="abandoned",
            outcome="abandoned",
            attempt_dir=str(attempt_dir),
            error="another `sdi-bench run` retook the claim before this attempt started",
        )
    prepare_attempt(attempt_dir, pathlib.Path(spec.threestudio))
    lifeline, held = os.pipe()  # the training reads; only this process holds the write end
    env = {
        **os.environ,
        LIFELINE_ENV: str(lifeline),
        "PYTHONUNBUFFERED": "1",
        "SDI_BENCH_RUN_ID": spec.run_id,
        "SDI_BENCH_ATTEMPT": str(spec.attempt),
        # threestudio's code snapshot runs `git ls-files` in its working directory: not in ours
        "GIT_CEILING_DIRECTORIES": str(attempt_dir.parent),
    }
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    started = time.perf_counter()
    interrupted = False
    stop = stop or threading.Event()
    try:
        with (attempt_dir / layout.LOG).open("wb") as log:
            try:
                process = subprocess.Popen(
                    launch_command(spec),
                    cwd=attempt_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # its own group: a Ctrl-C reaches sdi-bench, which stops it
                    pass_fds=(lifeline,),
                )
            finally:
                os.close(lifeline)
            try:
                beat = time.monotonic()
                while process.poll() is None:
                    if stop.wait(0.2):
                        interrupted = True
                        stop_process_group(process)
                    elif time.monotonic() - beat > ownership.HEARTBEAT_SECONDS:
                        ownership.heartbeat(attempt_dir)
                        beat = time.monotonic()
            finally:
                if process.poll() is None:
                    interrupted = True
                    stop_process_group(process)
                end_group(process)
                ownership.mark_ended(attempt_dir)
    finally:
        os.close(held)
    return classify(
        attempt_dir, process.returncode, time.perf_counter() - started, spec.args, spec.prompt, interrupted
    )
