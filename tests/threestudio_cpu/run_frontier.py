"""The cost–outcome frontier inside REAL threestudio on the CPU (resumable), or the noise field's checks.

    python tests/threestudio_cpu/run_frontier.py --threestudio-root /path/to/threestudio --workdir /tmp/tsf \\
        --out benchmarks/results/frontier3d-threestudio.json [--methods ...] [--classes ...] [--seeds 0-2]
    python tests/threestudio_cpu/run_frontier.py --threestudio-root ... --workdir ... --check report.json

Every (seed, class, method) of the grid is a known-answer run through launch.py (:mod:`frontier`);
each finished run is appended to ``--out`` at once (written atomically), and a rerun skips the runs
the file holds, so a killed grid is finished by running the same command again. Runs go seed by
seed, and within a seed method by method in the order of ``--methods``, each over every class: a
partial grid holds every class of the first methods of the first seeds. ``--check`` runs
:func:`frontier.noise_field_checks` and a two-strategy frontier of ``--check-steps`` steps instead, for
``tests/test_threestudio_noise_field.py``. The method names are the 3D lab's; the default grid is
``benchmarks/frontier.py``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time
import traceback

sys.dont_write_bytecode = True  # never write __pycache__ into the threestudio checkout
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from harness import open_harness  # noqa: E402

from threestudio_sdi.errors import parse_seeds  # noqa: E402
from threestudio_sdi.experimental.lab3d.cli import parse_methods  # noqa: E402
from threestudio_sdi.experimental.lab3d.methods import FRONTIER_METHODS  # noqa: E402

CLASSES = ("ball", "tower", "crate", "orb")


def machine(root: pathlib.Path) -> dict:
    import torch

    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    cpu = platform.processor() or platform.machine()
    for line in (
        pathlib.Path("/proc/cpuinfo").read_text().splitlines()
        if pathlib.Path("/proc/cpuinfo").exists()
        else []
    ):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threestudio_commit": commit.stdout.strip() or None,
    }


def save(path: pathlib.Path, report: dict) -> None:
    temporary = path.with_suffix(".json.part")
    temporary.write_text(json.dumps(report, indent=1, default=str))
    os.replace(temporary, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threestudio-root", required=True, type=pathlib.Path)
    parser.add_argument("--workdir", required=True, type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, help="the frontier's results file (JSON, resumable)")
    parser.add_argument("--methods", default=",".join(FRONTIER_METHODS))
    parser.add_argument("--classes", default=",".join(CLASSES))
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps (default: the known-answer run's)"
    )
    parser.add_argument("--keep-trials", action="store_true", help="keep each run's trial folder")
    parser.add_argument("--check", type=pathlib.Path, help="run the noise field's checks, write this report")
    parser.add_argument("--check-steps", type=int, default=8)
    args = parser.parse_args()
    if args.out is None and args.check is None:
        parser.error("give --out (the frontier) or --check (the noise field's checks)")
    try:
        methods = parse_methods(args.methods)
        seeds = list(parse_seeds("--seeds", args.seeds))
    except ValueError as error:
        parser.error(str(error))
    classes = args.classes.split(",")
    unknown = sorted(set(classes) - set(CLASSES))
    if unknown:
        parser.error(f"--classes {unknown}: known classes are {', '.join(CLASSES)}")
    out = None if args.out is None else args.out.resolve()
    check = None if args.check is None else args.check.resolve()
    command = " ".join(["python tests/threestudio_cpu/run_frontier.py", *sys.argv[1:]])
    opened = open_harness(args.threestudio_root, args.workdir)
    h = opened.harness

    import frontier

    max_steps = args.steps or frontier.FRONTIER_STEPS
    if check is not None:
        started = time.perf_counter()
        report = {"noise_field": frontier.noise_field_checks(h, args.check_steps), "frontier": []}
        for method in methods:
            row, _ = frontier.frontier_run(h, method, classes[0], seeds[0], args.check_steps)
            report["frontier"].append(row)
        report["seconds"] = round(time.perf_counter() - started, 1)
        check.write_text(json.dumps(report, indent=2, default=str))
        print(json.dumps(report, indent=2, default=str))
        return 0

    report = json.loads(out.read_text()) if out.is_file() else {"rows": [], "commands": [], "failures": []}
    report["machine"] = machine(h.root)
    report["commands"].append(command)
    report["settings"] = {"steps": max_steps, "variants_per_class": frontier.VARIANTS}
    held = {(row["method"], row["class"], row["seed"]) for row in report["rows"]}
    jobs = [(m, c, s) for s in seeds for m in methods for c in classes if (m, c, s) not in held]
    save(out, report)
    print(f"{len(jobs)} runs to go ({len(held)} held)", flush=True)
    started = time.perf_counter()
    for method, class_name, seed in jobs:
        try:
            cpu = time.process_time()
            row, run = frontier.frontier_run(h, method, class_name, seed, max_steps)
            row["cpu_seconds"] = round(time.process_time() - cpu, 1)  # one torch thread
            del run
        except Exception:
            report["failures"].append(
                {"method": method, "class": class_name, "seed": seed, "error": traceback.format_exc()}
            )
            save(out, report)
            print(f"{method} {class_name} seed {seed} FAILED:\n{traceback.format_exc()}", flush=True)
            continue
        row["source"] = "tests/threestudio_cpu/run_frontier.py"
        report["rows"].append(row)
        save(out, report)
        if not args.keep_trials:
            import shutil

            shutil.rmtree(h.trial(f"frontier-{method}-{class_name}-{seed}-{max_steps}"), ignore_errors=True)
        print(
            f"[{time.perf_counter() - started:6.0f} s] {class_name:>5} {method:>28} seed {seed}: "
            f"#{row.get('nearest_variant')} {row.get('psnr_nearest', float('nan')):.1f} dB, class mean "
            f"{row.get('psnr_class_mean', float('nan')):.1f} dB, {row['evaluations_per_step']:.2f} evals/step, "
            f"{row['seconds']:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
