"""``sdi-lab``: 2D distillation side by side on an exact-score model, with a table, PNGs and JSON.

    sdi-lab                              # digits mixture, every class, CPU, < 1 min
    sdi-lab --model gaussian             # power-law Gaussian: kept variance per frequency band
    sdi-lab --model tiny-sd --prompt "a hamburger"   # the tiny random Stable Diffusion stack ([diffusers])

A method is ``ddim``, ``ddim-cache``, ``sds``, ``sdi`` or ``ism``; ``sdi@G`` runs SDI with inversion
CFG γ_inv = G (the paper's CFG ablation, Fig. 10). A sample that blew up (NaN, ±Inf or max |x| > 10) is
counted in the table's ``blown_up`` column, left out of the other measures, and marked in red on the
PNGs. A bad option gets one line naming it and its value (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...errors import check_finite_number, check_int, check_range
from ...score_distillation import GuidanceConfig, NonFiniteGuidanceWarning
from ...strategies import InversionConfig
from .distill import METHODS, LabRun, distill_2d, sample_reference_2d
from .extras import DIFFUSERS_MODULES, DIGITS_MODULES, LAB_MODULES, check_installed
from .figures import save_band_plot, save_image_grid
from .metrics import (
    BLOWN_UP,
    blown_up,
    grouped_diversity,
    grouped_total_variation,
    mean_pairwise_distance,
    rms_distance,
)

DEFAULT_METHODS = "ddim,ddim-cache,sds,sdi,sdi@0,sdi@7.5,ism"
MAX_SEED = 2**32 - 1
"""The largest seed the labs take: threestudio's (numpy's) limit, so a seed means the same everywhere."""


@dataclass(frozen=True)
class Run:
    """One row of the lab: a method and its inversion CFG."""

    label: str
    method: str
    inversion_guidance_scale: float


def parse_runs(spec: str, default_inversion_scale: float) -> list[Run]:
    """``"ddim,sdi,sdi@0"`` → runs; ValueError naming a bad entry."""
    runs = []
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        method, _, scale = entry.partition("@")
        if method not in METHODS:
            raise ValueError(f"--methods entry {entry!r}: method must be one of {', '.join(METHODS)}")
        try:
            inversion_scale = float(scale) if scale else default_inversion_scale
        except ValueError:
            raise ValueError(f"--methods entry {entry!r}: {scale!r} is not a number") from None
        runs.append(Run(entry, method, inversion_scale))
    if not runs:
        raise ValueError("--methods is empty")
    return runs


@dataclass
class LabSetup:
    """What a model contributes to a lab run."""

    model: Any
    cond: Any
    batch: int
    labels: Tensor
    column_titles: list[str]
    to_images: Callable[[Tensor], Tensor]
    measure: Callable[[Tensor, Tensor], dict[str, Any]]
    """(samples, their labels) → outcome measures; called on the samples that did not blow up."""
    value_range: tuple[float, float] = (-1.0, 1.0)


def digits_setup(args: argparse.Namespace) -> LabSetup:
    """Gaussian mixture fit to scikit-learn's digits, conditioned on each class."""
    from ...testing.mixture import GaussianMixtureModel, load_digits_images

    model = GaussianMixtureModel.from_digits()
    real, real_labels = load_digits_images()
    labels = torch.arange(model.num_classes).repeat_interleave(args.per_class)
    real_tv = grouped_total_variation(real, real_labels)
    real_diversity = grouped_diversity(real, real_labels)

    def measure(samples: Tensor, kept_labels: Tensor) -> dict[str, float]:
        posterior = model.class_log_posterior(samples.to(torch.float64))
        measures = {"sharpness_tv_vs_real": float(grouped_total_variation(samples, kept_labels) / real_tv)}
        if int(kept_labels.bincount().max()) >= 2:  # diversity needs two samples of one class
            measures["diversity_vs_real"] = float(grouped_diversity(samples, kept_labels) / real_diversity)
        measures["class_accuracy"] = float((posterior.argmax(1) == kept_labels).double().mean())
        return measures

    return LabSetup(
        model,
        labels,
        labels.numel(),
        labels,
        [str(c) for c in range(model.num_classes)],
        lambda x: x,
        measure,
    )


def gaussian_setup(args: argparse.Namespace) -> LabSetup:
    """Zero-mean Gaussian with power-law spectrum λ_k = k^−p (unconditional: CFG is a no-op)."""
    from ...testing.gaussian import GaussianModel

    model = GaussianModel(shape=(1, 8, 8), exponent=args.exponent)
    batch = args.per_class * 32
    labels = torch.zeros(batch, dtype=torch.long)

    def measure(samples: Tensor, kept_labels: Tensor) -> dict[str, Any]:
        ratios = model.band_variance_ratio(samples.to(torch.float64), n_bands=4)
        return {"band_variance_ratio": [float(r) for r in ratios]}

    return LabSetup(model, None, batch, labels, [], lambda x: x, measure, (-3.0, 3.0))


def tiny_sd_setup(args: argparse.Namespace) -> LabSetup:
    """The tiny random Stable Diffusion stack (built into a temp folder unless --model-path)."""
    from ...models.model_source import ModelSourceError, check_model_source
    from ...models.stable_diffusion import load_stable_diffusion
    from ...testing.tiny_sd import tiny_stable_diffusion

    path = args.model_path or tiny_stable_diffusion(Path(tempfile.mkdtemp(prefix="sdi-tiny-sd-")))
    try:  # the source is checked before diffusers loads anything
        check_model_source(str(path), "--model-path", local_files_only=True)
        parts = load_stable_diffusion(path, local_files_only=True, setting="--model-path")
    except ModelSourceError as error:  # its first line names the option, the value and the cause
        raise ValueError(str(error).splitlines()[0]) from None
    check_latent_shape(args.shape, parts.model.unet.config)
    embedding = parts.prompts.encode([args.prompt])
    labels = torch.zeros(args.per_class, dtype=torch.long)

    def to_images(latents: Tensor) -> Tensor:
        return parts.codec.decode(latents.to(torch.float32)) * 2 - 1

    def measure(samples: Tensor, kept_labels: Tensor) -> dict[str, float]:
        return {
            "sharpness_tv_images": float(grouped_total_variation(to_images(samples), kept_labels)),
            "diversity_latents": float(mean_pairwise_distance(samples)),
        }

    return LabSetup(parts.model, embedding, args.per_class, labels, [], to_images, measure)


def check_latent_shape(shape: Sequence[int], unet_config: Any) -> None:
    """ValueError naming ``--shape`` unless it is [C, H, W] with the UNet's C and H, W multiples of its
    downsampling factor 2^(levels − 1)."""
    channels = unet_config.in_channels
    factor = 2 ** (len(unet_config.block_out_channels) - 1)
    text = " ".join(map(str, shape))
    if len(shape) != 3 or shape[0] != channels:
        raise ValueError(
            f"--shape {text}: must be {channels} H W (the UNet takes {channels}-channel latents)"
        )
    if min(shape[1:]) < factor or shape[1] % factor or shape[2] % factor:
        raise ValueError(
            f"--shape {text}: H and W must be positive multiples of {factor} (the UNet's downsampling)"
        )


SETUPS: dict[str, Callable[[argparse.Namespace], LabSetup]] = {
    "digits": digits_setup,
    "gaussian": gaussian_setup,
    "tiny-sd": tiny_sd_setup,
}


MODEL_MODULES = {"digits": DIGITS_MODULES, "gaussian": {}, "tiny-sd": DIFFUSERS_MODULES}
"""What each model needs installed beyond the lab's own modules."""


def check_args(args: argparse.Namespace) -> None:
    """ValueError naming the first bad option and its value (before anything runs)."""
    check_int("--steps", args.steps, low=2)
    check_int("--per-class", args.per_class, low=2)  # diversity compares two samples of a class
    check_range("--seed", args.seed, 0, MAX_SEED)
    check_finite_number("--guidance-scale", args.guidance_scale)
    check_finite_number("--inversion-guidance-scale", args.inversion_guidance_scale)
    check_range("--lr", args.lr, 0.0, low_open=True)
    check_int("--inner-steps", args.inner_steps, low=1)
    check_range("--exponent", args.exponent, 0.0, low_open=True)
    check_int("--threads", args.threads, low=1)
    if args.model == "digits":
        check_range("--show-class", args.show_class, 0, 9)
    if args.model == "tiny-sd" and (len(args.shape) != 3 or min(args.shape) < 1):
        raise ValueError(f"--shape {' '.join(map(str, args.shape))}: must be three positive sizes, C H W")
    check_out_folder(args.out)


def check_out_folder(out: str) -> Path:
    """``--out`` as a folder that exists or can be made; ValueError naming it when it is a file, lies
    under a file, or cannot be created (no permission, read-only file system)."""
    path = Path(out)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            where = "is a file" if part == path else f"lies under {part}, which is a file"
            raise ValueError(f"--out {out}: {where}, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"--out {out}: cannot create the folder ({error.strerror or error})") from None
    return path


def run_lab(args: argparse.Namespace) -> dict[str, Any]:
    """Run every method on the chosen model; write the grid, plots and metrics.json into args.out."""
    check_installed(
        f"sdi-lab --model {args.model}",
        MODEL_MODULES[args.model],
        "diffusers" if args.model == "tiny-sd" else None,
    )
    runs = parse_runs(args.methods, args.inversion_guidance_scale)
    check_args(args)
    setup = SETUPS[args.model](args)
    shape = getattr(setup.model, "shape", None) or tuple(args.shape)
    results: dict[str, Any] = {}
    samples: dict[str, Tensor] = {}
    reference: Tensor | None = None
    for run in runs:
        start = time.perf_counter()
        steps: list[dict[str, Any]] = []
        with warnings.catch_warnings():  # counted below as nonfinite_views instead of one line per step
            warnings.simplefilter("ignore", NonFiniteGuidanceWarning)
            x0 = _distill(setup, run, args, shape, steps.append)
        evaluations = [info["output"].model_evaluations for info in steps if "output" in info]
        skipped = sum(len(info["output"].nonfinite) for info in steps if "output" in info)
        if run.method == "ddim":
            reference = x0
        samples[run.label] = x0
        kept = ~blown_up(x0)
        row: dict[str, Any] = {
            "method": run.method,
            "inversion_guidance_scale": run.inversion_guidance_scale,
            "seconds": round(time.perf_counter() - start, 3),
            "model_evaluations_per_sample": (sum(evaluations) + 1) if evaluations else args.steps,
            "nonfinite_views": skipped,
            "blown_up": f"{int((~kept).sum())}/{kept.numel()}",
        }
        if int(kept.sum()) >= 2:
            row.update(setup.measure(x0[kept], setup.labels[kept]))
            if reference is not None:
                row["distance_to_ddim"] = float(rms_distance(x0[kept], reference[kept]).mean())
        results[run.label] = row
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "model": args.model,
        "settings": {k: v for k, v in vars(args).items() if k not in {"out", "no_progress"}},
        "results": results,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    shown = {label: _first_of_each_group(setup, x) for label, x in samples.items()}
    save_image_grid(
        {_row_label(label, results[label]): setup.to_images(x) for label, x in shown.items()},
        out / "grid.png",
        setup.column_titles or None,
        setup.value_range,
        title=f"{args.model}: {args.steps} steps, CFG {args.guidance_scale}, preset {args.preset}, "
        f"update {args.update}, seed {args.seed}",
        marks={_row_label(label, results[label]): _marks(x) for label, x in shown.items()},
        caption=BLOWN_UP_CAPTION,
    )
    if args.model == "digits":
        chosen = {label: x[setup.labels == args.show_class][:8] for label, x in samples.items()}
        save_image_grid(
            {_row_label(label, results[label]): x for label, x in chosen.items()},
            out / "diversity.png",
            None,
            setup.value_range,
            title=f"class {args.show_class}: 8 samples per method (diversity)",
            marks={_row_label(label, results[label]): _marks(x) for label, x in chosen.items()},
            caption=BLOWN_UP_CAPTION,
        )
    if args.model == "gaussian":
        save_band_plot(
            {
                _row_label(label, row).replace("\n", " "): row["band_variance_ratio"]
                for label, row in results.items()
                if "band_variance_ratio" in row
            },
            out / "bands.png",
            title=f"power-law Gaussian p={args.exponent}: kept variance per band ({args.steps} steps)",
        )
    return report


BLOWN_UP_CAPTION = (
    f"Red: a sample that blew up (NaN, Inf or max |x| > {BLOWN_UP:g}: the update diverged); "
    "it is shown clipped, and left out of the table's measures."
)


def _row_label(label: str, row: dict[str, Any]) -> str:
    """A method's row label, with how many of its samples blew up when any did."""
    count = int(row["blown_up"].split("/")[0])
    return f"{label}\n({row['blown_up']} blown up)" if count else label


def _marks(samples: Tensor) -> list[str]:
    """ "blown up" for each sample of [N, ...] that blew up, else ""."""
    return ["blown up" if bad else "" for bad in blown_up(samples).tolist()]


def _distill(
    setup: LabSetup, run: Run, args: argparse.Namespace, shape: tuple[int, ...], callback: Callable
) -> Tensor:
    """The run's samples: DDIM sampling for ``ddim``, else distill_2d with the run's GuidanceConfig."""
    config = GuidanceConfig(
        preset=args.preset,
        noise=METHODS[run.method] or "cached",
        guidance_scale=args.guidance_scale,
        inversion=InversionConfig(guidance_scale=run.inversion_guidance_scale),
    )
    lab = LabRun(steps=args.steps, seed=args.seed, batch=setup.batch, cond=setup.cond, shape=shape)
    if run.method == "ddim":
        return sample_reference_2d(setup.model, config, lab, callback=callback, disable=args.no_progress)
    return distill_2d(
        setup.model,
        config,
        lab,
        update=args.update,
        lr=args.lr,
        inner_steps=args.inner_steps,
        callback=callback,
        disable=args.no_progress,
    ).detach()


def _first_of_each_group(setup: LabSetup, samples: Tensor) -> Tensor:
    """The first sample of each class (the grid's columns), or the first 8; not yet decoded."""
    if setup.column_titles:
        return torch.stack([samples[setup.labels == label][0] for label in setup.labels.unique()])
    return samples[:8]


def format_table(report: dict[str, Any]) -> str:
    """The metrics of every run as an aligned text table."""
    rows = report["results"]
    keys: list[str] = []
    for row in rows.values():
        keys += [k for k in row if k not in keys and k not in {"method", "inversion_guidance_scale"}]
    header = ["method", *keys]
    lines = [[label, *(_format_value(row.get(key)) for key in keys)] for label, row in rows.items()]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    render = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([render(header), render(["-" * w for w in widths]), *map(render, lines)])


def _format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3g}"
    if isinstance(value, list):
        return "/".join(f"{v:.2g}" for v in value)
    return str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdi-lab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=tuple(SETUPS), default="digits")
    parser.add_argument(
        "--methods", default=DEFAULT_METHODS, help=f"comma-separated (default {DEFAULT_METHODS})"
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=8, help="samples per class (digits) or per prompt")
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--inversion-guidance-scale", type=float, default=-7.5)
    parser.add_argument("--preset", choices=("paper", "official"), default="paper")
    parser.add_argument("--update", choices=("exact", "adam"), default="exact")
    parser.add_argument("--lr", type=float, default=0.1, help="Adam learning rate (--update adam)")
    parser.add_argument("--inner-steps", type=int, default=25, help="Adam steps per guidance call")
    parser.add_argument("--exponent", type=float, default=1.5, help="power-law exponent p (gaussian)")
    parser.add_argument("--prompt", default="a DSLR photo of a hamburger", help="prompt (tiny-sd)")
    parser.add_argument("--model-path", default=None, help="Stable Diffusion folder or hub id (tiny-sd)")
    parser.add_argument("--shape", type=int, nargs="+", default=[4, 8, 8], help="latent shape (tiny-sd)")
    parser.add_argument("--show-class", type=int, default=3, help="class shown in diversity.png (digits)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (the built-in models are too small to gain)"
    )
    parser.add_argument("--out", default="outputs")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def parse_and_run(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, run: Callable[[argparse.Namespace], Any]
) -> tuple[argparse.Namespace, Any]:
    """Parse ``argv``, set the torch threads (``--threads``), run; a ValueError (a bad option or value)
    becomes one line, ``<prog>: error: <message>``, and exit status 2."""
    args = parser.parse_args(argv)
    torch.set_num_threads(max(args.threads, 1))
    try:
        return args, run(args)
    except ValueError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> int:
    check_installed("sdi-lab", LAB_MODULES)
    args, report = parse_and_run(build_parser(), argv, run_lab)
    print(format_table(report))
    print(
        f"\nblown_up: samples whose update diverged (NaN, Inf or max |x| > {BLOWN_UP:g}; red on the PNGs), "
        "left out of the measures to its right."
    )
    print(f"\nwrote {Path(args.out) / 'metrics.json'} and PNGs in {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
