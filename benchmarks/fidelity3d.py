"""Known-answer 3D: does score distillation recover a known asset? Every method, several seeds.

    python benchmarks/fidelity3d.py --quick     # < 5 min on 2 CPU cores -> benchmarks/results/quick/
    python benchmarks/fidelity3d.py             # the documented full run -> benchmarks/results/

Runs ``threestudio_sdi.experimental.lab3d`` (procedural voxel assets, 3 classes × 3 variants; an exact per-view
mixture prior over their renders; Adam on a 32³ voxel grid through a differentiable ray marcher; one
guidance step per iteration on random threestudio-style views) for every method of
``threestudio_sdi.experimental.lab3d.methods.METHODS`` and measures the distilled asset against the known assets on
8 held-out turntable views: PSNR / SSIM to the nearest true variant and to the class-mean render,
sharpness (high-frequency energy ÷ the truth's), silhouette IoU, view consistency, which variant each
seed landed on, divergence, and guided evaluations per step. Mean ± std over seeds and classes.

* full: the view-consistent prior on every class and the view-inconsistent prior (the variant chosen by
  the view) on the ``ball`` class, 3 seeds, the lab's default run (400 steps × 4 views, 32² px):
  72 runs, about 2 hours on 2 shared CPU cores with ``--workers 2``;
* ``--quick``: the view-consistent prior on the ``ball`` class, 2 seeds, 200 steps × 2 views;
* research runs: ``--methods`` (any of ``ALL_METHODS``, the research candidates included), ``--classes``,
  ``--seeds``, ``--priors`` select a sub-grid; ``--name`` the output files' stem, e.g.
  ``--methods sdi-paper,consistent-flow --classes ball,tower --seeds 0-1 --priors consistent
  --name fidelity3d-research``.

Writes ``<name>.json`` (machine, command, settings, one row per run, summaries), ``<name>.md`` (one
table per prior) and ``<name>_<prior>_<class>.png`` (held-out turntables of the first seed,
one row per method beside the truth). ``--workers N`` runs N processes. Imports only the package.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, machine

from threestudio_sdi.experimental.lab3d.cli import parse_methods
from threestudio_sdi.experimental.lab3d.distill import DistillSettings
from threestudio_sdi.experimental.lab3d.experiment import Lab3D, LabSettings, seed_list
from threestudio_sdi.experimental.lab3d.figures import run_label, save_turntables
from threestudio_sdi.experimental.lab3d.methods import ALL_METHODS, METHODS
from threestudio_sdi.experimental.lab3d.report import format_table, summarise

Job = tuple[str, int, str, int]  # prior, class index, method, seed


def plan(quick: bool) -> tuple[dict[str, LabSettings], dict[str, list[str]], list[int]]:
    """The settings per prior, the classes per prior, and the seeds."""
    if quick:
        settings = LabSettings(distill=DistillSettings(steps=200, views_per_step=2))
        return {"consistent": settings}, {"consistent": ["ball"]}, [0, 1]
    base = LabSettings()
    priors = {"consistent": base, "inconsistent": replace(base, prior="inconsistent")}
    return priors, {"consistent": list(base.class_names), "inconsistent": ["ball"]}, [0, 1, 2]


_LABS: dict[str, Lab3D] = {}


def _run(settings: LabSettings, job: Job) -> tuple[Job, dict[str, Any], torch.Tensor]:
    """One job in this process (the lab of each prior built once per process)."""
    torch.set_num_threads(1)
    prior, class_index, method, seed = job
    if prior not in _LABS:
        _LABS[prior] = Lab3D(settings)
    record = _LABS[prior].run(method, class_index, seed)
    return job, record.row, record.turntable


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="< 5 min on 2 CPU cores -> results/quick/")
    parser.add_argument("--workers", type=int, default=1, help="processes (one torch thread each)")
    parser.add_argument("--out", default=None, help="output folder (default benchmarks/results[/quick])")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated, any of {', '.join(ALL_METHODS)}"
    )
    parser.add_argument("--classes", default=None, help="comma-separated classes (default: the plan's)")
    parser.add_argument("--seeds", default=None, help="'0,1,2' or '0-2' (default: the plan's)")
    parser.add_argument("--priors", default=None, help="comma-separated priors (default: the plan's)")
    parser.add_argument("--name", default="fidelity3d", help="stem of the output files")
    args = parser.parse_args()
    out = Path(args.out) if args.out else RESULTS / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    priors, classes, seeds = plan(args.quick)
    try:
        methods = parse_methods(args.methods)
    except ValueError as error:
        parser.error(str(error))
    if args.priors:
        wanted = args.priors.split(",")
        if not set(wanted) <= set(priors):
            parser.error(f"--priors {args.priors!r}: known priors are {', '.join(priors)}")
        priors = {prior: priors[prior] for prior in wanted}
    if args.classes:
        known = LabSettings().class_names
        if not set(args.classes.split(",")) <= set(known):
            parser.error(f"--classes {args.classes!r}: known classes are {', '.join(known)}")
        classes = {prior: args.classes.split(",") for prior in priors}
    seeds = seed_list(args.seeds) if args.seeds else seeds
    jobs: list[Job] = []
    for prior, settings in priors.items():
        names = list(settings.class_names)
        jobs += [
            (prior, names.index(name), method, seed)
            for name in classes[prior]
            for method in methods
            for seed in seeds
        ]
    start = time.perf_counter()
    rows: dict[str, list[dict[str, Any]]] = {prior: [] for prior in priors}
    turntables: dict[tuple[str, int, str], tuple[str, torch.Tensor]] = {}

    def collect(job: Job, row: dict[str, Any], turntable: torch.Tensor) -> None:
        prior, class_index, method, seed = job
        rows[prior].append(row)
        if seed == seeds[0]:
            turntables[(prior, class_index, method)] = (run_label(row), turntable)
        print(
            f"[{time.perf_counter() - start:6.0f} s] {prior:>12} {row['class']:>5} {method:>13} seed {seed}: "
            f"#{row.get('nearest_variant')} {row.get('psnr_nearest', float('nan')):.1f} dB, "
            f"class mean {row.get('psnr_class_mean', float('nan')):.1f} dB",
            flush=True,
        )

    if args.workers > 1:
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_run, priors[job[0]], job) for job in jobs]
            for future in futures:  # in submission order, so the rows keep the jobs' order
                collect(*future.result())
    else:
        for job in jobs:
            collect(*_run(priors[job[0]], job))
    seconds = time.perf_counter() - start
    summaries = {prior: summarise(prior_rows) for prior, prior_rows in rows.items()}
    command = " ".join(["python benchmarks/fidelity3d.py", *sys.argv[1:]])
    report = {
        "machine": machine(),
        "command": command,
        "seconds": round(seconds, 1),
        "seeds": seeds,
        "classes": classes,
        "settings": {prior: settings.as_dict() for prior, settings in priors.items()},
        "methods": {name: asdict(ALL_METHODS[name]) for name in methods},
        "rows": rows,
        "summary": summaries,
    }
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=2, default=str))
    (out / f"{args.name}.md").write_text(markdown(report))
    for prior, settings in priors.items():
        lab = Lab3D(settings)
        for name in classes[prior]:
            class_index = lab.class_index(name)
            save_turntables(
                lab.truth_turntables(class_index),
                dict(turntables[(prior, class_index, method)] for method in methods),
                lab.eval_cameras.azimuth.tolist(),
                out / f"{args.name}_{prior}_{name}.png",
                title=f"{name}, {prior} prior, seed {seeds[0]}: {settings.distill.steps} steps × "
                f"{settings.distill.views_per_step} views",
            )
    print(markdown(report))
    print(f"wrote {out}/{args.name}.json, .md and PNGs in {seconds:.0f} s")
    return 0


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
