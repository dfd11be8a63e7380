"""The launch wrapper: runs threestudio's own ``launch.py`` in this process, measured.

    python -m sdi_bench.launcher --threestudio ROOT --report FILE [--device gpu|cpu] \
        [--overlay FILE ...] -- --config CONFIG --train --gpu 0 key=value ...

``launch.py`` runs as ``python launch.py ...`` would run it (``runpy``, its own argument parser and
``main``), with one addition: when ``launch.py`` imports ``pytorch_lightning``, its ``Trainer`` class is
replaced by a subclass that appends :class:`.probe.BenchProbe` to the callbacks. Nothing in threestudio
is changed. When ``launch.py`` returns or raises, the wrapper writes ``FILE`` (JSON): the outcome
(``ok``, ``oom``, ``nan``, ``empty``, ``error``), the error, the measurements and the versions.

The training belongs to its supervisor (the ``sdi-bench run`` process, or the Slurm job). The
supervisor hands it the read end of a pipe (its descriptor in ``SDI_BENCH_LIFELINE_FD``) and holds the
only write end: when the supervisor ends, however it ends (``kill -9`` included), the kernel closes
that end and the read returns at once. The wrapper writes its own identity to ``training.json`` beside
the report, does not start if the supervisor is already gone, and otherwise kills its process group
(itself and whatever threestudio started) the moment the read returns.

``--overlay`` merges YAML files over the config (OmegaConf, in order) into ``config.yaml`` beside the
report, which ``launch.py`` then reads. ``--device cpu`` runs real threestudio on a CPU for tests: the
stand-ins and patches of :mod:`threestudio_sdi.testing.cpu_harness`, and the Trainer built with
``accelerator="cpu", devices=1`` instead of ``launch.py``'s GPU trainer.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import json
import os
import pathlib
import resource
import runpy
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from . import ownership
from .measurements import EMPTY_COVERAGE, Measurements

LIFELINE_ENV = "SDI_BENCH_LIFELINE_FD"
"""The descriptor of the read end of the pipe whose write end only the supervisor holds."""


class PatchAfterImport(importlib.abc.MetaPathFinder):
    """Calls ``patch(module)`` right after the module ``name`` is first imported (a one-shot hook)."""

    def __init__(self, name: str, patch: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.patch = patch

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module
        patch = self.patch

        def exec_module(module: ModuleType) -> None:
            execute(module)
            patch(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def when_imported(name: str, patch: Callable[[ModuleType], None]) -> None:
    """``patch(module)`` now if ``name`` is imported, else right after its first import."""
    if name in sys.modules:
        patch(sys.modules[name])
    else:
        sys.meta_path.insert(0, PatchAfterImport(name, patch))


def trainer_patch(record: Measurements, cpu: bool) -> Callable[[ModuleType], None]:
    """A patch of ``pytorch_lightning`` whose ``Trainer`` appends a :class:`.probe.BenchProbe`."""

    def patch(lightning: ModuleType) -> None:
        from .probe import BenchProbe

        base = lightning.Trainer

        class Trainer(base):  # type: ignore[misc, valid-type]
            """threestudio's Trainer plus the benchmark's probe (and the CPU in ``--device cpu``)."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                callbacks = kwargs.get("callbacks") or []
                callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
                kwargs["callbacks"] = [*callbacks, BenchProbe(record)]
                if cpu:
                    kwargs.update(accelerator="cpu", devices=1)
                super().__init__(*args, **kwargs)

        lightning.Trainer = Trainer

    return patch


def merge_overlays(launch_args: list[str], overlays: Sequence[str], target: pathlib.Path) -> list[str]:
    """``launch_args`` with ``--config`` pointing to the config merged with the overlays (OmegaConf)."""
    from omegaconf import OmegaConf

    try:
        index = launch_args.index("--config") + 1
        config = launch_args[index]
    except (ValueError, IndexError):
        raise SystemExit("sdi-bench launcher: --overlay needs a --config argument for launch.py") from None
    merged = OmegaConf.merge(OmegaConf.load(config), *(OmegaConf.load(path) for path in overlays))
    target.write_text(OmegaConf.to_yaml(merged, resolve=False), encoding="utf-8")
    return [*launch_args[:index], str(target), *launch_args[index + 1 :]]


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA (or any) out-of-memory error, by type or by torch's message."""
    return type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower()


def versions(threestudio_root: pathlib.Path) -> dict[str, str]:
    """Versions of what ran: threestudio (and its git commit), torch, Lightning, diffusers, Python."""
    found = {"python": sys.version.split()[0]}
    for name in ("threestudio", "torch", "pytorch_lightning", "diffusers", "transformers"):
        module = sys.modules.get(name)
        if module is not None:
            found[name] = str(getattr(module, "__version__", "?"))
    head = threestudio_root / ".git" / "HEAD"
    try:
        reference = head.read_text().strip()
        if reference.startswith("ref: "):
            reference = (threestudio_root / ".git" / reference[5:]).read_text().strip()
        found["threestudio_commit"] = reference[:12]
    except OSError:
        pass
    return found


def write_json(path: pathlib.Path, data: dict[str, Any]) -> None:
    """Write atomically: a reader sees the whole file or none."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(temporary, path)


def belong_to_supervisor(attempt_dir: pathlib.Path) -> None:
    """Record this process in ``training.json``; exit if the supervisor is already gone; kill this
    process group the moment it goes (a thread reading the lifeline, which returns only at its end)."""
    write_json(attempt_dir / ownership.TRAINING, ownership.ProcessId.current().to_dict())
    lifeline = os.environ.get(LIFELINE_ENV)
    if not lifeline:
        return
    descriptor = int(lifeline)
    os.set_inheritable(descriptor, False)  # threestudio's own children need not hold it
    if select.select([descriptor], [], [], 0)[0]:  # readable before anything was written: its end
        raise SystemExit("sdi-bench launcher: the supervisor is gone; not starting")

    def watch() -> None:
        try:
            os.read(descriptor, 1)
        except OSError:
            pass
        if os.getpgrp() == os.getpid():  # the group sdi-bench made for this training
            os.killpg(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="sdi-bench-lifeline", daemon=True).start()


def run_launch(root: pathlib.Path, launch_args: list[str]) -> tuple[str, str | None, int]:
    """Run ``root/launch.py`` with ``launch_args`` here; (outcome, error, exit code).

    A ``KeyboardInterrupt`` (the run was stopped) propagates: no report, so the attempt counts as
    interrupted rather than failed.
    """
    script = root / "launch.py"
    sys.argv = [str(script), *launch_args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if code != 0:
            return "error", f"launch.py exited with status {stop.code}", code
    except Exception as error:  # noqa: BLE001 - every failure of a run is reported, none is lost
        traceback.print_exc()
        message = f"{type(error).__name__}: {error}".strip()[:2000]
        return ("oom" if is_out_of_memory(error) else "error"), message, 1
    return "ok", None, 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sdi_bench.launcher",
        description="Run threestudio's launch.py measured (used by sdi-bench run; arguments after -- go to launch.py).",
    )
    parser.add_argument("--threestudio", required=True, type=pathlib.Path, help="threestudio checkout")
    parser.add_argument("--report", required=True, type=pathlib.Path, help="JSON report to write at the end")
    parser.add_argument(
        "--device", choices=("gpu", "cpu"), default="gpu", help="cpu: real threestudio on a CPU (tests)"
    )
    parser.add_argument(
        "--overlay", action="append", default=[], help="YAML merged over the config (repeatable)"
    )
    parser.add_argument("--empty-coverage", type=float, default=EMPTY_COVERAGE, help="empty-volume threshold")
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    launch_args = argv[split + 1 :]
    belong_to_supervisor(args.report.parent)
    started = time.perf_counter()
    root = args.threestudio.resolve()
    if args.overlay:
        launch_args = merge_overlays(launch_args, args.overlay, args.report.parent / "config.yaml")

    record = Measurements()
    if args.device == "cpu":
        from threestudio_sdi.testing.cpu_harness import import_threestudio, patches

        import_threestudio(root)
        patches.apply()
    else:
        sys.path.insert(0, str(root))
    when_imported("pytorch_lightning", trainer_patch(record, cpu=args.device == "cpu"))

    try:
        outcome, error, exit_code = run_launch(root, launch_args)
    finally:
        if os.environ.get(LIFELINE_ENV):  # in the group sdi-bench run made for it: nothing outlives it
            ownership.end_rest_of_group()
    if outcome == "ok":
        outcome = record.divergence(args.empty_coverage) or "ok"
    report = {
        "outcome": outcome,
        "error": error,
        "exit_code": exit_code,
        "wall_seconds": time.perf_counter() - started,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        **record.report(),
        "versions": versions(root),
    }
    write_json(args.report, report)
    print(f"sdi-bench launcher: {outcome}" + (f" ({error})" if error else ""), flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
