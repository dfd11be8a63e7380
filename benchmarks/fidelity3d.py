"""Known-answer 3D: does score distillation recover a known asset? Every method, several seeds.

    python benchmarks/fidelity3d.py --quick     # a smoke check: 12 short runs -> outputs/fidelity3d/quick/
    python benchmarks/fidelity3d.py --workers 2 --out benchmarks/results   # the documented full run

Runs ``threestudio_sdi.experimental.lab3d`` (procedural voxel assets, 3 classes × 3 variants; an exact per-view
mixture prior over their renders; Adam on a 32³ voxel grid through a differentiable ray marcher; one
guidance step per iteration on random threestudio-style views) for every method of
``threestudio_sdi.experimental.lab3d.methods.METHODS`` and measures the distilled asset against the known assets on
8 held-out turntable views: PSNR / SSIM to the nearest true variant and to the class-mean render,
sharpness (high-frequency energy ÷ the truth's), silhouette IoU, view consistency, which variant each
seed landed on, divergence, and guided evaluations per step. Mean ± std over seeds and classes.

* full: the view-consistent prior on every class and the view-inconsistent prior (the variant chosen by
  the view) on the ``ball`` class, 3 seeds, the lab's default run (400 steps × 4 views, 32² px):
  72 runs, 113 min on 2 shared CPU cores with ``--workers 2`` (docs/lab3d.md);
* ``--quick``: the view-consistent prior on the ``ball`` class, 2 seeds, at the budget of
  ``sdi-lab3d --demo`` (160 steps × 2 views, 24² px, 32 samples per ray, lr 0.1): 12 runs;
* research runs: ``--methods`` (any of ``ALL_METHODS``, the research candidates included), ``--classes``,
  ``--seeds``, ``--priors``, ``--steps`` select a sub-grid; ``--name`` the output files' stem, e.g.
  ``--methods sdi-paper,consistent-flow --classes ball,tower --seeds 0-1 --priors consistent
  --name fidelity3d-research --out benchmarks/results``.

Writes into ``--out`` (default ``outputs/fidelity3d[/quick]``, which git ignores: the committed results
in ``benchmarks/results/`` change only when ``--out`` says so) ``<name>.json`` (machine, command,
settings, one row per run, summaries), ``<name>.md`` (one table per prior) and
``<name>_<prior>_<class>.png`` (held-out turntables of the first seed, one row per method beside the
truth). Progress: a bar over every training step and a line per finished run. The JSON and the tables
are rewritten after every finished run (``"complete": false`` until the last), so a kill loses only
the runs in progress. ``--workers N`` runs N processes. Imports only the package.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from common import machine

from threestudio_sdi.experimental.lab.cli import check_out_folder
from threestudio_sdi.experimental.lab3d.cli import StepBar, parse_classes, parse_methods, parse_seeds
from threestudio_sdi.experimental.lab3d.demo import DEMO_DEFAULTS
from threestudio_sdi.experimental.lab3d.distill import DistillSettings
from threestudio_sdi.experimental.lab3d.experiment import Lab3D, LabSettings
from threestudio_sdi.experimental.lab3d.figures import save_turntables
from threestudio_sdi.experimental.lab3d.methods import ALL_METHODS, METHODS
from threestudio_sdi.experimental.lab3d.renderer import RenderSettings
from threestudio_sdi.experimental.lab3d.report import format_table, summarise
from threestudio_sdi.experimental.lab3d.runner import Job, run_jobs

QUICK = LabSettings(
    render=RenderSettings(DEMO_DEFAULTS["image_size"], DEMO_DEFAULTS["samples_per_ray"]),
    distill=DistillSettings(DEMO_DEFAULTS["steps"], DEMO_DEFAULTS["views_per_step"], DEMO_DEFAULTS["lr"]),
)
"""``--quick``: the lab at the demo's budget (``sdi-lab3d --demo``)."""


def plan(quick: bool) -> tuple[dict[str, LabSettings], dict[str, list[str]], list[int]]:
    """The settings per prior, the classes per prior, and the seeds."""
    if quick:
        return {"consistent": QUICK}, {"consistent": ["ball"]}, [0, 1]
    base = LabSettings()
    priors = {"consistent": base, "inconsistent": replace(base, prior="inconsistent")}
    return priors, {"consistent": list(base.class_names), "inconsistent": ["ball"]}, [0, 1, 2]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="12 short runs: a smoke check")
    parser.add_argument("--workers", type=int, default=1, help="processes (one torch thread each)")
    parser.add_argument(
        "--out", default=None, help="output folder (default outputs/fidelity3d[/quick], git-ignored)"
    )
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated, any of {', '.join(ALL_METHODS)}"
    )
    parser.add_argument(
        "--classes", default=None, help="comma-separated classes, or all (default: the plan's)"
    )
    parser.add_argument("--seeds", default=None, help="'0,1,2' or '0-2' (default: the plan's)")
    parser.add_argument("--priors", default=None, help="comma-separated priors (default: the plan's)")
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps per run (default: the plan's)"
    )
    parser.add_argument("--name", default="fidelity3d", help="stem of the output files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    priors, classes, seeds = plan(args.quick)
    try:
        methods = parse_methods(args.methods)
        if args.priors:
            wanted = args.priors.split(",")
            if not set(wanted) <= set(priors):
                raise ValueError(f"--priors {args.priors!r}: known priors are {', '.join(priors)}")
            priors = {prior: priors[prior] for prior in wanted}
        if args.classes:
            classes = {prior: parse_classes(args.classes) for prior in priors}
        seeds = parse_seeds(args.seeds) if args.seeds else seeds
        if args.steps is not None:
            priors = {p: replace(s, distill=replace(s.distill, steps=args.steps)) for p, s in priors.items()}
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        out = check_out_folder(
            args.out or os.path.join("outputs", "fidelity3d", "quick" if args.quick else "")
        )
    except ValueError as error:
        parser.error(str(error))
    jobs = [
        Job(settings, method, settings.class_names.index(name), seed)
        for prior, settings in priors.items()
        for name in classes[prior]
        for method in methods
        for seed in seeds
    ]
    torch.set_num_threads(1)  # one thread per process (more only adds OpenMP waits on a busy machine)
    prior_of = {settings: prior for prior, settings in priors.items()}
    labs = {settings: Lab3D(settings) for settings in priors.values()}
    command = " ".join(["python benchmarks/fidelity3d.py", *sys.argv[1:]])
    report: dict[str, Any] = {
        "machine": machine(),
        "command": command,
        "complete": False,
        "runs_planned": len(jobs),
        "seeds": seeds,
        "classes": {prior: classes[prior] for prior in priors},
        "settings": {prior: settings.as_dict() for prior, settings in priors.items()},
        "methods": {name: asdict(ALL_METHODS[name]) for name in methods},
    }
    rows: dict[int, dict[str, Any]] = {}
    turntables: dict[tuple[str, int, str], tuple[dict[str, Any], torch.Tensor]] = {}
    start = time.perf_counter()
    bar = StepBar(jobs, max(s.distill.steps for s in priors.values()), False, args.no_progress)
    try:
        for index, record in run_jobs(jobs, args.workers, bar.step, labs):
            job = jobs[index]
            rows[index] = record.row
            if job.seed == seeds[0]:
                turntables[(prior_of[job.settings], job.class_index, job.method)] = (
                    record.row,
                    record.turntable,
                )
            bar.finished(record.row)
            write_report(report, jobs, rows, prior_of, time.perf_counter() - start, out, args.name)
    except KeyboardInterrupt:
        bar.close()
        print(
            f"interrupted: {len(rows)} of {len(jobs)} runs kept in {out / args.name}.json (complete: false)"
        )
        return 130
    bar.close()
    report["complete"] = True
    write_report(report, jobs, rows, prior_of, time.perf_counter() - start, out, args.name)
    for prior, settings in priors.items():
        lab = labs[settings]
        for name in classes[prior]:
            class_index = lab.class_index(name)
            save_turntables(
                lab.truth_turntables(class_index),
                {method: turntables[(prior, class_index, method)] for method in methods},
                lab.eval_cameras.azimuth.tolist(),
                out / f"{args.name}_{prior}_{name}.png",
                title=f"{name}, {prior} prior, seed {seeds[0]}: {settings.distill.steps} steps × "
                f"{settings.distill.views_per_step} views",
            )
    print(markdown(report))
    print(f"wrote {out}/{args.name}.json, .md and PNGs in {report['seconds']:.0f} s")
    return 0


def write_report(
    report: dict[str, Any],
    jobs: list[Job],
    rows: dict[int, dict[str, Any]],
    prior_of: dict[LabSettings, str],
    seconds: float,
    out: Path,
    name: str,
) -> None:
    """``<name>.json`` and ``<name>.md`` with the runs finished so far, in the plan's order; each file is
    written beside and renamed over the old one, so a kill never leaves half a file."""
    by_prior: dict[str, list[dict[str, Any]]] = {prior: [] for prior in report["settings"]}
    for index in sorted(rows):
        by_prior[prior_of[jobs[index].settings]].append(rows[index])
    report.update(
        seconds=round(seconds, 1),
        runs_done=len(rows),
        rows=by_prior,
        summary={prior: summarise(prior_rows) for prior, prior_rows in by_prior.items() if prior_rows},
    )
    for suffix, text in ((".json", json.dumps(report, indent=2, default=str)), (".md", markdown(report))):
        partial = out / f"{name}{suffix}.partial"
        partial.write_text(text)
        partial.replace(out / f"{name}{suffix}")


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: machine, command, settings, and one table per prior."""
    machine_line = ", ".join(
        f"{key} {value}" for key, value in report["machine"].items() if value is not None
    )
    lines = [
        "# Known-answer 3D fidelity (`benchmarks/fidelity3d.py`)",
        "",
        f"Machine: {machine_line}. Command: `{report['command']}` ({report['seconds']:.0f} s). "
        f"Seeds {report['seeds']}; mean ± std over seeds and classes.",
    ]
    if not report["complete"]:
        lines += ["", f"**Partial: {report['runs_done']} of {report['runs_planned']} runs finished.**"]
    for prior, summaries in report["summary"].items():
        settings = report["settings"][prior]
        distill, render = settings["distill"], settings["render"]
        lines += [
            "",
            f"## {prior} prior — classes {', '.join(report['classes'][prior])}",
            "",
            f"{settings['variants_per_class']} variants per class, {settings['grid_resolution']}³ voxels, "
            f"{render['image_size']}² px, {render['samples_per_ray']} samples per ray, "
            f"{distill['steps']} steps × {distill['views_per_step']} views, Adam lr {distill['lr']}, "
            f"prior s = {settings['noise_std']}"
            + (f", τ = {settings['temperature']}" if prior == "inconsistent" else "")
            + f"; {settings['eval_views']} held-out views.",
            "",
            format_table(summaries, markdown=True),
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
