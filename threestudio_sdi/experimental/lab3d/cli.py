"""``sdi-lab3d``: score distillation of a known 3D asset, every method side by side, with a table and a PNG.

    sdi-lab3d                                   # class "ball", seed 0, every method: the CPU default
    sdi-lab3d --prior inconsistent              # the variant is chosen by the view (content drift, Janus)
    sdi-lab3d --variants 1                      # one variant per class: the known-answer sanity setting
    sdi-lab3d --class all --seeds 0-2 --methods sds,sdi-paper

Also ``python -m threestudio_sdi.experimental.lab3d``. Writes ``<out>/metrics.json`` (settings, one row per run, the
per-method summary) and ``<out>/turntable_<class>.png`` (held-out views of the first seed's asset, one
row per method, beside the class's true variants and their mean), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..lab.cli import parse_and_run
from .assets import CLASS_NAMES
from .cameras import CameraRanges
from .distill import DistillSettings
from .experiment import PRIORS, Lab3D, LabSettings, run_grid, seed_list
from .figures import run_label, save_turntables
from .methods import ALL_METHODS, METHODS, RESEARCH_METHODS
from .renderer import RenderSettings
from .report import format_table, summarise


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


def run_lab3d(args: argparse.Namespace) -> dict[str, Any]:
    """Run every (method, class, seed) of the command line; write metrics.json and the turntables."""
    methods = parse_methods(args.methods)
    seeds = seed_list(args.seeds)
    lab = Lab3D(settings_from_args(args))
    names = list(lab.assets.class_names) if args.class_name == "all" else [args.class_name]
    class_indices = [lab.class_index(name) for name in names]

    def progress(row: dict[str, Any]) -> None:
        if not args.quiet:
            psnr = row.get("psnr_nearest", float("nan"))
            print(
                f"{row['method']:>13} {row['class']} seed {row['seed']}: nearest #{row.get('nearest_variant')} "
                f"{psnr:.1f} dB, class mean {row.get('psnr_class_mean', float('nan')):.1f} dB "
                f"({row['seconds']:.0f} s)",
                flush=True,
            )

    start = time.perf_counter()
    rows, firsts = run_grid(lab, methods, class_indices, seeds, progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = summarise(rows)
    report = {
        "settings": lab.settings.as_dict(),
        "methods": {name: asdict(ALL_METHODS[name]) for name in methods},
        "seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
        "summary": summaries,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2, default=str))
    settings = lab.settings
    for class_index in class_indices:
        name = lab.assets.class_names[class_index]
        save_turntables(
            lab.truth_turntables(class_index),
            {run_label(r.row): r.turntable for r in (firsts[(m, class_index)] for m in methods)},
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
    parser.add_argument("--prior", choices=PRIORS, default=defaults.prior)
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated (default: {', '.join(METHODS)}; research: {', '.join(RESEARCH_METHODS)})",
    )
    parser.add_argument("--class", dest="class_name", choices=(*CLASS_NAMES, "all"), default=CLASS_NAMES[0])
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
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default="outputs3d")
    parser.add_argument("--quiet", action="store_true", help="no line per finished run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, report = parse_and_run(build_parser(), argv, run_lab3d)
    print(format_table(report["summary"]))
    print(
        f"\nwrote {Path(args.out) / 'metrics.json'} and turntable PNGs in {args.out}/ ({report['seconds']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
