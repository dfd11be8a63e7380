"""``sdi-lab3d``: score distillation of a known 3D asset, every method side by side, with a table and a PNG.

    sdi-lab3d --demo                            # SDS, SDI, consistent-shared-10 on the ball: ~1 min
    sdi-lab3d                                   # class "ball", seed 0, every method: the lab's default run
    sdi-lab3d --prior inconsistent              # the variant is chosen by the view (content drift, Janus)
    sdi-lab3d --variants 1                      # one variant per class: the known-answer sanity setting
    sdi-lab3d --classes all --seeds 0-2 --methods sds,sdi-paper --workers 2

Also ``python -m threestudio_sdi.experimental.lab3d``. Writes ``<out>/metrics.json`` (settings, one row
per run, the per-method summary) and ``<out>/turntable_<class>.png`` (held-out views of the first seed's
asset, one row per method, beside the class's true variants and their mean), shows a progress bar over
every training step and a line per finished run, and prints the table (with ``--demo``, the short
table of :mod:`.demo` and what its columns mean). A bad option gets one line naming it and its value.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ...errors import check_int, check_range
from ..lab.cli import MAX_SEED, check_out_folder, parse_and_run
from ..lab.extras import LAB_MODULES, check_installed
from .assets import CLASS_NAMES
from .cameras import CameraRanges
from .demo import DEMO_DEFAULTS, demo_table, legend
from .distill import DistillSettings
from .experiment import PRIORS, Lab3D, LabSettings, seed_list
from .figures import save_turntables
from .methods import ALL_METHODS, METHODS, RESEARCH_METHODS
from .renderer import RenderSettings
from .report import format_table, summarise
from .runner import Job, run_jobs


def settings_from_args(args: argparse.Namespace) -> LabSettings:
    """The lab setting the command line describes."""
    return LabSettings(
        grid_resolution=args.grid,
        variants_per_class=args.variants,
        asset_seed=args.asset_seed,
        render=RenderSettings(args.image_size, args.samples_per_ray),
        prior=args.prior,
        noise_std=args.noise_std,
        temperature=args.temperature,
        eval_views=args.eval_views,
        distill=DistillSettings(args.steps, args.views_per_step, args.lr, CameraRanges()),
    )


def parse_methods(spec: str) -> list[str]:
    """``"sds,sdi-paper"`` → method names; ValueError naming an unknown one."""
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    for method in methods:
        if method not in ALL_METHODS:
            raise ValueError(f"--methods entry {method!r}: method must be one of {', '.join(ALL_METHODS)}")
    if not methods:
        raise ValueError("--methods is empty")
    return methods


def parse_classes(spec: str, known: Sequence[str] = CLASS_NAMES) -> list[str]:
    """``"ball,tower"`` or ``"all"`` → class names; ValueError naming an unknown one."""
    if spec.strip() == "all":
        return list(known)
    names = [name.strip() for name in spec.split(",") if name.strip()]
    for name in names:
        if name not in known:
            raise ValueError(f"--classes entry {name!r}: class must be one of {', '.join(known)} (or all)")
    if not names:
        raise ValueError("--classes is empty")
    return names


def parse_seeds(spec: str) -> list[int]:
    """``"0,1,2"`` or ``"0-3"`` → seeds in 0 … :data:`~threestudio_sdi.experimental.lab.cli.MAX_SEED`."""
    seeds = seed_list(spec)
    for seed in seeds:
        check_range("--seeds entry", seed, 0, MAX_SEED)
    return seeds


class StepBar:
    """One progress bar over every training step of the jobs, and a line above it per finished run."""

    def __init__(self, jobs: Sequence[Job], steps: int, quiet: bool, disable: bool) -> None:
        self.done = [0] * len(jobs)
        self.quiet = quiet
        self.bar = tqdm(
            total=len(jobs) * steps,
            desc=f"{len(jobs)} run{'s' * (len(jobs) > 1)} × {steps} steps",
            unit="step",
            disable=disable,
            dynamic_ncols=True,
        )

    def step(self, index: int, done: int) -> None:
        self.bar.update(done - self.done[index])
        self.done[index] = done

    def finished(self, row: dict[str, Any]) -> None:
        if not self.quiet:
            psnr, to_mean = row.get("psnr_nearest", math.nan), row.get("psnr_class_mean", math.nan)
            self.bar.write(
                f"{row['method']:>20} {row['class']} seed {row['seed']}: nearest #{row.get('nearest_variant')} "
                f"{psnr:.1f} dB, class mean {to_mean:.1f} dB ({row['seconds']:.0f} s)"
            )

    def close(self) -> None:
        self.bar.close()


def run_lab3d(args: argparse.Namespace) -> dict[str, Any]:
    """Run every (method, class, seed) of the command line; write metrics.json and the turntables."""
    methods = parse_methods(args.methods)
    seeds = parse_seeds(args.seeds)
    names = parse_classes(args.classes)
    check_int("--workers", args.workers, low=1)
    settings = settings_from_args(args)
    out = check_out_folder(args.out)
    class_indices = [settings.class_names.index(name) for name in names]
    jobs = [Job(settings, m, c, s) for c in class_indices for m in methods for s in seeds]
    start = time.perf_counter()
    rows: list[dict[str, Any] | None] = [None] * len(jobs)
    firsts: dict[tuple[str, int], tuple[dict[str, Any], Any]] = {}
    lab = Lab3D(settings)  # the assets, the prior and the truth's renders: for the runs and the pictures
    bar = StepBar(jobs, settings.distill.steps, args.quiet, args.no_progress)
    try:
        for index, record in run_jobs(jobs, args.workers, bar.step, {settings: lab}):
            rows[index] = record.row
            job = jobs[index]
            if job.seed == seeds[0]:
                firsts[(job.method, job.class_index)] = (record.row, record.turntable)
            bar.finished(record.row)
    finally:
        bar.close()
    done = [row for row in rows if row is not None]  # all of them: run_jobs raises otherwise
    report = {
        "settings": settings.as_dict(),
        "methods": {name: asdict(ALL_METHODS[name]) for name in methods},
        "seconds": round(time.perf_counter() - start, 1),
        "rows": done,
        "summary": summarise(done),
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2, default=str))
    for class_index in class_indices:
        name = settings.class_names[class_index]
        save_turntables(
            lab.truth_turntables(class_index),
            {m: firsts[(m, class_index)] for m in methods},
            lab.eval_cameras.azimuth.tolist(),
            out / f"turntable_{name}.png",
            title=f"{name}, {settings.prior} prior, seed {seeds[0]}: {settings.distill.steps} steps × "
            f"{settings.distill.views_per_step} views, {settings.render.image_size}² px, "
            f"{settings.grid_resolution}³ voxels",
        )
    return report


def build_parser() -> argparse.ArgumentParser:
    defaults = LabSettings()
    parser = argparse.ArgumentParser(
        prog="sdi-lab3d", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="the first command: SDS, SDI and consistent-shared-10 on the ball, 160 steps x 2 views at "
        "24x24 px, one process per method, and a table that says what it shows; options given with it "
        "override the demo's",
    )
    parser.add_argument("--prior", choices=PRIORS, default=defaults.prior)
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated (default: {', '.join(METHODS)}; research: {', '.join(RESEARCH_METHODS)})",
    )
    parser.add_argument(
        "--classes",
        "--class",
        dest="classes",
        default=CLASS_NAMES[0],
        help=f"comma-separated, of {', '.join(CLASS_NAMES)}, or all (default {CLASS_NAMES[0]})",
    )
    parser.add_argument("--seeds", default="0", help="e.g. 0,1,2 or 0-3")
    parser.add_argument("--steps", type=int, default=defaults.distill.steps)
    parser.add_argument("--views-per-step", type=int, default=defaults.distill.views_per_step)
    parser.add_argument("--lr", type=float, default=defaults.distill.lr, help="Adam learning rate")
    parser.add_argument("--image-size", type=int, default=defaults.render.image_size)
    parser.add_argument("--samples-per-ray", type=int, default=defaults.render.samples_per_ray)
    parser.add_argument("--grid", type=int, default=defaults.grid_resolution, help="voxel grid size R")
    parser.add_argument("--variants", type=int, default=defaults.variants_per_class, help="per class")
    parser.add_argument("--noise-std", type=float, default=defaults.noise_std, help="s of the prior")
    parser.add_argument(
        "--temperature", type=float, default=defaults.temperature, help="τ of the inconsistent prior"
    )
    parser.add_argument("--eval-views", type=int, default=defaults.eval_views)
    parser.add_argument("--asset-seed", type=int, default=defaults.asset_seed)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes, one torch thread each (the rows do not depend on it)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (with --workers 1)")
    parser.add_argument("--out", default="outputs3d")
    parser.add_argument("--quiet", action="store_true", help="no line per finished run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    check_installed("sdi-lab3d", LAB_MODULES)
    parser = build_parser()
    if parser.parse_known_args(argv)[0].demo:
        parser.set_defaults(**DEMO_DEFAULTS)  # what the command line gives still wins
    args, report = parse_and_run(parser, argv, run_lab3d)
    classes = list(dict.fromkeys(row["class"] for row in report["rows"]))
    picture = Path(args.out) / f"turntable_{classes[0] if len(classes) == 1 else '<class>'}.png"
    if args.demo:
        print("\n" + demo_table(report["rows"]))
        print(legend(str(picture), args.variants, args.eval_views))
    else:
        print(format_table(report["summary"]))
    print(f"\nwrote {Path(args.out) / 'metrics.json'} and {picture} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
