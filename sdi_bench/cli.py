"""``sdi-bench``: the paper's Table 1 for any threestudio configs, on one GPU or across a Slurm cluster.

sdi-bench plan   --suite paper43 --methods sdi,sds,vsd --seeds 0,1
sdi-bench run    --threestudio /path/to/threestudio --out bench/ --suite paper43 --methods sdi,sds,vsd --gpus 0,1
sdi-bench score  --out bench/
sdi-bench report --out bench/
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import pathlib
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from threestudio_sdi.testing.cpu_harness import check_checkout

from . import preflight
from .errors import BenchError
from .methods import BUILTIN_METHODS, load_methods_file, select_methods
from .plan import Plan, build_plan, gpu_hours, parse_seeds
from .store import DATABASE, Store, check_folder
from .suites import SUITES, load_suite

EXAMPLES = """
examples:
  sdi-bench plan --suite paper43 --methods sdi,sds,vsd --seeds 0,1
  sdi-bench run --threestudio ~/threestudio --out bench --suite paper43 --methods sdi,sds,vsd --gpus 0,1,2,3
  sdi-bench run --threestudio ~/threestudio --out bench --suite paper43 --methods sdi,sds,vsd \\
      --executor slurm --partition gpu --time 480 --max-parallel 16
  sdi-bench score --out bench --clip-model openai/clip-vit-base-patch32
  sdi-bench report --out bench
"""


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("plan: prompts × methods × seeds")
    group.add_argument(
        "--suite", choices=sorted(SUITES), help="a built-in prompt suite (paper43: the paper's 43 prompts)"
    )
    group.add_argument(
        "--prompts", type=pathlib.Path, help="a text file of prompts, one per line (instead of --suite)"
    )
    group.add_argument("--first", type=int, metavar="N", help="only the first N prompts of the suite")
    group.add_argument(
        "--methods",
        default="sdi,sds,vsd",
        help=f"comma-separated methods (default sdi,sds,vsd; built-in: {', '.join(BUILTIN_METHODS)})",
    )
    group.add_argument(
        "--methods-file", type=pathlib.Path, help="YAML file adding methods (docs/benchmark.md)"
    )
    group.add_argument(
        "--seeds", default="0", help="comma-separated seeds or ranges, e.g. 0,1 or 0-4 (default 0)"
    )
    group.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="threestudio override for every run, after the method's own (repeatable), e.g. trainer.max_steps=2000",
    )
    group.add_argument(
        "--overlay",
        action="append",
        default=[],
        type=pathlib.Path,
        metavar="YAML",
        help="YAML merged over every method's config before the overrides (repeatable)",
    )


def plan_from(args: argparse.Namespace) -> Plan:
    suite = load_suite(args.suite, args.prompts)
    if args.first is not None:
        preflight.at_least([("--first", args.first, 1)])
        suite = dataclasses.replace(suite, prompts=suite.prompts[: args.first])
    if args.methods_file:
        preflight.require(args.command, ["yaml"])
    available = load_methods_file(args.methods_file) if args.methods_file else dict(BUILTIN_METHODS)
    methods = select_methods(args.methods, available)
    for method in methods:
        if not method.config.is_file():
            raise BenchError(f"method {method.name!r}: config {method.config} does not exist")
    return build_plan(suite, methods, parse_seeds(args.seeds), args.settings, args.overlay)


def command_plan(args: argparse.Namespace) -> int:
    plan = plan_from(args)
    statuses = {}
    if args.out is not None:
        out = pathlib.Path(args.out).expanduser().resolve()
        check_folder(out)
        if (out / DATABASE).exists():
            store = Store(out, mode="read")
            statuses = {run["run_id"]: run["status"] for run in store.runs()}
            store.close()
        else:
            print(f"(no results store in --out {out} yet: every run is new)")
    minutes = {method.name: method.minutes for method in plan.methods}
    if not args.quiet:
        for number, run in enumerate(plan.runs, start=1):
            estimate = "?" if minutes[run.method] is None else f"{minutes[run.method]:.0f} min"
            status = f"  [{statuses.get(run.run_id, 'new')}]" if statuses else ""
            print(f"{number:5d}  {run.run_id}  ({estimate}){status}")
        print()
    print(
        f"suite {plan.suite}: {len(plan.runs) // max(1, len(plan.methods) * len(plan.seeds))} prompts × "
        f"{len(plan.methods)} methods × {len(plan.seeds)} seeds = {len(plan.runs)} runs"
    )
    total, known = 0.0, True
    for row in gpu_hours(plan):
        if row.hours is None:
            known = False
            print(
                f"  {row.method:14s} {row.runs:5d} runs ×   ? min = ? GPU-h (add minutes: to the methods file)"
            )
        else:
            total += row.hours
            print(
                f"  {row.method:14s} {row.runs:5d} runs × {row.minutes_per_run:4.0f} min = {row.hours:7.1f} GPU-h  [{row.source}]"
            )
    print(f"expected: {total:.1f} GPU-hours" + ("" if known else " + the methods of unknown time"))
    return 0


def parse_gpus(text: str) -> list[str]:
    gpus = [gpu.strip() for gpu in text.split(",") if gpu.strip()]
    if not gpus or len(set(gpus)) != len(gpus):
        raise BenchError(f"--gpus {text!r}: give distinct GPU ids, e.g. 0,1,2,3")
    return gpus


def parse_pairs(entries: Sequence[str], option: str) -> dict[str, str]:
    pairs = {}
    for entry in entries:
        key, equals, value = entry.partition("=")
        if not equals or not key:
            raise BenchError(f"{option} {entry!r} is not of the form KEY=VALUE")
        pairs[key] = value
    return pairs


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[dict[str, int]]:
    """While inside, SIGTERM and SIGINT set ``stop`` (the executors then give their runs back and
    return); yields a dict that receives the first signal's number. The old handlers come back after."""
    received: dict[str, int] = {}

    def handler(signum: int, frame: object) -> None:
        if not stop.is_set():
            name = signal.Signals(signum).name
            print(f"\nsdi-bench: {name}: stopping; running attempts are given back", file=sys.stderr)
        received.setdefault("signal", signum)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_ids_to_run(store: Store, plan: Plan | None) -> list[str]:
    """The plan's run ids (added to the store), or every run of the store when no plan is given."""
    if plan is None:
        run_ids = [run["run_id"] for run in store.runs()]
        if not run_ids:
            raise BenchError(f"--out {store.out_dir} has no runs yet: give --suite or --prompts")
        return run_ids
    added = store.sync_plan(plan.runs)
    print(f"sdi-bench: {len(plan.runs)} runs in the plan ({added} new) in {store.path}")
    return [run.run_id for run in plan.runs]


def slurm_options(args: argparse.Namespace) -> Any:
    from .slurm_executor import SlurmOptions

    preflight.at_least(
        [
            ("--max-parallel", args.max_parallel, 1),
            ("--time", args.time, 1),
            ("--gpus-per-task", args.gpus_per_task, 0),
            ("--cpus-per-task", args.cpus_per_task, 1),
            ("--mem-gb", args.mem_gb, 0.001),
            ("--poll-seconds", args.poll_seconds, 0.01),
        ]
    )
    default_poll = 15.0 if args.cluster == "slurm" else 0.5
    return SlurmOptions(
        cluster=args.cluster,
        partition=args.partition,
        time_minutes=args.time,
        gpus_per_task=args.gpus_per_task,
        cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb,
        max_parallel=args.max_parallel,
        extra=parse_pairs(args.slurm_param, "--slurm-param"),
        poll_seconds=default_poll if args.poll_seconds is None else args.poll_seconds,
    )


def print_run_summary(store: Store, run_ids: Sequence[str], retries: int) -> None:
    runs = store.runs(run_ids)
    statuses = ("done", "diverged", "failed", "pending", "running")
    print("sdi-bench: " + ", ".join(f"{sum(run['status'] == s for run in runs)} {s}" for s in statuses))
    for run in runs:
        if run["status"] == "failed" and run["failures"] > retries:
            print(f"  failed: {run['run_id']} after {run['failures']} failed attempt(s): {run['error']}")
            print(f"    log: {run['attempt_dir']}/launch.log")


def command_run(args: argparse.Namespace) -> int:
    from .execution import RunSettings
    from .ownership import new_owner
    from .runner import RunOptions

    preflight.require("run", ["yaml", "omegaconf", *(["submitit"] if args.executor == "slurm" else [])])
    try:
        root = check_checkout(args.threestudio)
    except ValueError as error:
        raise BenchError(f"--threestudio: {error}") from None
    python = shutil.which(args.python) or args.python
    if not pathlib.Path(python).is_file():
        raise BenchError(f"--python {args.python!r} is not an interpreter")
    preflight.at_least([("--retries", args.retries, 0), ("--lease-seconds", args.lease_seconds, 10)])
    gpus = parse_gpus(args.gpus) if args.executor == "local" else []
    slurm = slurm_options(args) if args.executor == "slurm" else None
    plan = plan_from(args) if args.suite is not None or args.prompts is not None else None
    preflight.check_training_python(python)
    store = Store(args.out)
    run_ids = run_ids_to_run(store, plan)
    store.set_meta({"threestudio": str(root), "retries": str(args.retries)})
    settings = RunSettings(threestudio=root, python=python, device=args.device)
    options = RunOptions(retries=args.retries, lease_seconds=args.lease_seconds)
    stop = threading.Event()
    with stop_on_signals(stop) as received:
        if slurm is None:
            from .local_executor import run_local

            run_local(
                store, run_ids, settings, options, gpus, new_owner(), stop, progress=not args.no_progress
            )
        else:
            from .slurm_executor import run_slurm

            run_slurm(
                store, run_ids, settings, options, slurm, new_owner(), stop, progress=not args.no_progress
            )
    print_run_summary(store, run_ids, args.retries)
    if stop.is_set():
        print("sdi-bench: stopped; run the same command again to resume", file=sys.stderr)
        return 128 + received.get("signal", signal.SIGTERM)
    return 0


def model_dest(scorer: type) -> str:
    """The argparse destination of a scorer's weights option."""
    return scorer.name.replace("-", "_") + "_model"


def command_score(args: argparse.Namespace) -> int:
    from .scoring import DEFAULT_METRICS, scorer_class
    from .scoring.score import score_runs

    preflight.require("score", ["torchmetrics", "transformers", "PIL", "yaml"])
    preflight.at_least([("--views", args.views, 1)])
    device = preflight.check_device(args.device)
    store = Store(args.out, mode="write")
    scorers = []
    for name in filter(None, (part.strip() for part in (args.metrics or DEFAULT_METRICS).split(","))):
        cls = scorer_class(name)
        scorers.append(cls(model=getattr(args, model_dest(cls), None), device=device))
    summary = score_runs(store, scorers, args.views, rescore=args.rescore, progress=not args.no_progress)
    print(f"sdi-bench: scored {summary.scored}, already scored {summary.skipped} (run, metric family) pairs")
    if summary.unreadable:
        runs = {run_id for run_id, _ in summary.unreadable}
        print(
            f"  {len(summary.unreadable)} unreadable test render(s) in {len(runs)} run(s) were skipped; "
            "the other views of those runs were scored:"
        )
        for _, reason in sorted(summary.unreadable)[:5]:
            print(f"    {reason}")
    if summary.missing_views:
        print(
            f"  {len(summary.missing_views)} done run(s) have no readable test views (not scored): {', '.join(sorted(summary.missing_views)[:3])}"
        )
    if summary.short_runs:
        print(
            f"  {len(summary.short_runs)} run(s) have fewer than {args.views} test views; all of theirs were used"
        )
    return 0


def command_report(args: argparse.Namespace) -> int:
    from .report import write_report

    preflight.require("report", ["matplotlib", "PIL", "yaml"])
    preflight.at_least([("--view", args.view, 0)])
    store = Store(args.out, mode="read")
    if args.to is None:
        try:
            folder = preflight.writable_folder(store.out_dir, "--out")
        except BenchError as error:
            raise BenchError(f"{error}; or pass --to FOLDER to write the report elsewhere") from None
    else:
        folder = preflight.writable_folder(args.to, "--to")
    report = write_report(store, folder, view=args.view)
    for summary in report.summaries:
        print(f"  {summary.method}: {summary.done}/{summary.planned} done, {summary.status()}")
    if report.unreadable:
        print(
            f"  {len(report.unreadable)} render(s) in grid.png could not be read (marked there): "
            + ", ".join(report.unreadable[:3])
        )
    for path in report.files:
        print(path)
    return 0


def add_command(
    commands: Any, name: str, handler: Callable[[argparse.Namespace], int], summary: str, description: str
) -> argparse.ArgumentParser:
    """The sub-command ``name``: its one-line ``summary`` (in ``sdi-bench --help``), its ``description``
    (in its own ``--help``) and the function that runs it."""
    parser = commands.add_parser(
        name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    from .scoring import DEFAULT_METRICS, SCORERS, scorer_class

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="sdi-bench",
        description="The SDI paper's Table 1 for any threestudio configs, on one GPU or across a Slurm cluster: "
        "plan the runs, run them through threestudio's launch.py, score them, report.",
        epilog=EXAMPLES,
        formatter_class=formatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{plan,run,score,report}")

    plan = add_command(
        commands,
        "plan",
        command_plan,
        summary="print the runs of a plan and the GPU-hours they need",
        description="Print every run of prompts × methods × seeds and the GPU-hours expected from the paper's timings (A6000).",
    )
    add_plan_arguments(plan)
    plan.add_argument("--out", type=pathlib.Path, help="also show each run's status in this results folder")
    plan.add_argument("--quiet", action="store_true", help="only the summary, not every run")

    run = add_command(
        commands,
        "run",
        command_run,
        summary="run every pending run through threestudio's launch.py (train, then test)",
        description=(
            "Run every pending run of the plan through threestudio's own launch.py (train, then test), "
            "measured (time, steps/s, peak GPU memory, outcome), into a SQLite store in --out. "
            "Re-invoked, it resumes: finished runs are skipped, failed ones retried up to --retries. "
            "A run is its config: with other settings, the same prompt, method and seed is another run. "
            "Without --suite/--prompts it runs what the store already holds."
        ),
    )
    run.add_argument(
        "--threestudio", required=True, type=pathlib.Path, help="the threestudio checkout (holds launch.py)"
    )
    run.add_argument("--out", required=True, type=pathlib.Path, help="results folder (results.sqlite, runs/)")
    add_plan_arguments(run)
    run.add_argument(
        "--executor",
        choices=("local", "slurm"),
        default="local",
        help="local GPUs or Slurm via submitit (default local)",
    )
    run.add_argument(
        "--retries", type=int, default=1, help="run a failed run again up to this many times (default 1)"
    )
    run.add_argument(
        "--python", default=sys.executable, help="Python of threestudio's environment (default: this one)"
    )
    run.add_argument(
        "--device",
        choices=("gpu", "cpu"),
        default="gpu",
        help="cpu: real threestudio on a CPU with threestudio_sdi.testing.cpu_harness (tests; needs a CPU --overlay)",
    )
    run.add_argument(
        "--lease-seconds",
        type=float,
        default=600.0,
        help="claim lease: how long a claim of a `run` on another host, or a Slurm job's heartbeat, "
        "holds without a sign of life (default 600)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    local = run.add_argument_group("--executor local")
    local.add_argument("--gpus", default="0", help="GPU ids, one worker each (default 0)")
    slurm = run.add_argument_group("--executor slurm (submitit job arrays; one array task per run)")
    slurm.add_argument("--partition", help="Slurm partition")
    slurm.add_argument(
        "--time", type=int, default=360, metavar="MINUTES", help="time limit of one run (default 360)"
    )
    slurm.add_argument("--gpus-per-task", type=int, default=1, help="GPUs of one run (default 1)")
    slurm.add_argument("--cpus-per-task", type=int, default=8, help="CPUs of one run (default 8)")
    slurm.add_argument("--mem-gb", type=float, help="host memory of one run")
    slurm.add_argument("--max-parallel", type=int, default=8, help="array tasks running at once (default 8)")
    slurm.add_argument(
        "--slurm-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other sbatch option, e.g. account=proj (repeatable)",
    )
    slurm.add_argument(
        "--cluster",
        choices=("slurm", "local"),
        default="slurm",
        help="slurm, or local: submitit's local executor runs the same path on this machine (tests)",
    )
    slurm.add_argument(
        "--poll-seconds", type=float, help="how often job states are checked (default 15; local 0.5)"
    )

    score = add_command(
        commands,
        "score",
        command_score,
        summary="compute the metrics of every finished run",
        description=(
            "Collect --views test views per done run (evenly spaced over threestudio's test turntable) and "
            "compute the metrics. Every metric names the weights it used; a missing model is an error that "
            "says how to provide local weights. Runs already scored with the same model are skipped."
        ),
    )
    score.add_argument("--out", required=True, type=pathlib.Path, help="results folder of `sdi-bench run`")
    score.add_argument(
        "--metrics",
        default=DEFAULT_METRICS,
        help=f"comma-separated: {', '.join(SCORERS)} or package.module:Class (default {DEFAULT_METRICS})",
    )
    score.add_argument("--views", type=int, default=50, help="test views per run (paper: 50)")
    for name in SCORERS:
        cls = scorer_class(name)
        score.add_argument(
            cls.option, dest=model_dest(cls), help=f"{cls.model_help} (default {cls.default_model})"
        )
    score.add_argument(
        "--device", default="auto", help="torch device for the metric models (default: cuda if available)"
    )
    score.add_argument(
        "--rescore", action="store_true", help="score again runs already scored with the same model"
    )
    score.add_argument("--no-progress", action="store_true", help="no progress bar")

    report = add_command(
        commands,
        "report",
        command_report,
        summary="write table.md, results.json, grid.png and metrics.png",
        description=(
            "Per method: mean ± std of every metric, diverged %, median time, steps/s, peak VRAM, runs done and "
            "pending, and the metric models and versions; a method missing runs is marked incomplete. "
            "Also grid.png (prompts × methods, one test view each) and metrics.png (distributions)."
        ),
    )
    report.add_argument("--out", required=True, type=pathlib.Path, help="results folder of `sdi-bench run`")
    report.add_argument("--to", type=pathlib.Path, help="write the report files here (default --out)")
    report.add_argument("--view", type=int, default=0, help="test view shown in grid.png (default 0)")
    report.epilog = "The store is opened read-only: a read-only --out can be reported with --to."
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except BenchError as error:
        print(f"sdi-bench {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
