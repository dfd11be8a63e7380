"""Fidelity of score-distillation noise choices on models with exact scores, per model evaluation.

    python benchmarks/fidelity.py --quick      # < 3 min on 2 CPU cores -> benchmarks/results/quick/
    python benchmarks/fidelity.py              # the documented full run -> benchmarks/results/

Two known-answer models (docs/method.md §6): the power-law Gaussian (d = 64, p = 1.5, unconditional, so CFG is a
no-op) and the Gaussian mixture fit to scikit-learn's digits (one component per class, conditioned on
the class with CFG γ = 7.5). Every method runs the lab's image-space distillation (exact update
x0 ← ẑ0, 50 timesteps, ``threestudio_sdi.experimental.lab``) from the same x_T per seed:

* ``ddim`` (the reference sampler), ``ddim-cache`` (κ = previous ε̂, equal to DDIM), ``sds`` (κ ~ N(0, I));
* ``sdi-paper`` / ``sdi-official`` (the two presets), ``ism`` (unconditional inversion), each at several
  inversion step counts n;
* fewer-evaluation options of the ``official`` preset: ``skip-origin``, ``adaptive`` (fewer hops at
  small t), both together, and ``order2`` (multistep second-order inversion);
* ``fixed-point``: the paper preset's inversion refined by Anderson iteration (k iterations at most)
  and by plain fixed-point iteration (damped, β = 1).

Metrics (mean ± std over seeds): kept variance per frequency band (Gaussian), sharpness, within-class
diversity and class accuracy (digits), RMS distance of each sample to the DDIM sample of the same
seed, distance to the true distribution — MMD (RBF kernel, median bandwidth; saturates for blown-up
samples, which are counted separately) and the empirical W2 (optimal matching to as many true
samples) with their floors (the same distance between two true samples) — and at probe steps three
κ measures: the residual ‖F(κ) − κ‖/‖κ‖ of the fixed-point equation of docs/method.md §1 at CFG γ_fwd (the
"eq. 8 error" of the paper's Fig. 9), the error against the exact fixed point (closed form on the
Gaussian; ``solve_fixed_point_reference`` to 1e-8 in float64 on the digits, for n = 10 and the
single-setting methods, over the samples where it converges), and the difference to a 200-step
reference inversion. Writes ``fidelity.json``, ``fidelity.md`` and ``fidelity_<model>.png`` (metric vs
model evaluations per guidance step, one line per method).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, machine, markdown_table, mean_std, pm
from torch import Tensor

from threestudio_sdi.classifier_free import Conditioning, Guide
from threestudio_sdi.ddim import ddim_invert
from threestudio_sdi.experimental.lab import LabRun, distill_2d, sample_reference_2d
from threestudio_sdi.experimental.lab.metrics import (
    BLOWN_UP,
    blown_up,
    grouped_diversity,
    grouped_total_variation,
    rms_distance,
)
from threestudio_sdi.experimental.solvers import (
    fixed_point_map,
    relative_residuals,
    solve_fixed_point_reference,
)
from threestudio_sdi.experimental.strategies import FixedPointNoise, ResearchInversionNoise
from threestudio_sdi.presets import inversion_timesteps
from threestudio_sdi.score_distillation import GuidanceConfig, GuidanceOutput
from threestudio_sdi.strategies import InversionConfig

GUIDANCE_SCALE = 7.5
INVERSION_SCALE = -7.5
STEPS = 50


@dataclass
class Run:
    """One benchmark row: a method (family) at one setting."""

    label: str
    family: str
    config: GuidanceConfig | None  # None = DDIM sampling
    n: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def inversion(**options: Any) -> ResearchInversionNoise:
    """The inversion with research options (``research-inversion``)."""
    return ResearchInversionNoise(**options)


def fixed_point(**options: Any) -> FixedPointNoise:
    """The ``fixed-point`` strategy refined to 1e-6 at most, with further options."""
    return FixedPointNoise(tolerance=1e-6, **options)


def with_steps(config: GuidanceConfig, n: int) -> GuidanceConfig:
    """``config`` with an n-step inversion."""
    return replace(config, inversion=replace(config.inversion, n_steps=n))


def build_runs(ns: Sequence[int], fixed_point_iterations: Sequence[int]) -> list[Run]:
    base = GuidanceConfig(
        guidance_scale=GUIDANCE_SCALE, inversion=InversionConfig(guidance_scale=INVERSION_SCALE)
    )
    official = replace(base, preset="official")
    runs = [
        Run("ddim", "ddim", None),
        Run("ddim-cache", "ddim-cache", replace(base, noise="cached"), extra={"kappa_reference": True}),
        Run("sds", "sds", replace(base, noise="random"), extra={"kappa_reference": True}),
    ]
    families = {
        "sdi-paper": base,
        "sdi-official": official,
        "ism": replace(base, noise="uncond-inversion"),
        "official+skip-origin": replace(official, noise=inversion(skip_origin=True)),
        "official+adaptive": replace(official, noise=inversion(adaptive_steps=True)),
        "official+skip+adaptive": replace(official, noise=inversion(skip_origin=True, adaptive_steps=True)),
        "official+order2": replace(official, noise=inversion(order=2)),
    }
    for family, config in families.items():
        for n in ns:
            extra = {"kappa_reference": n == 10}
            runs.append(Run(f"{family} n={n}", family, with_steps(config, n), n, extra))
    for k in fixed_point_iterations:
        config = replace(base, noise=fixed_point(max_iterations=k))
        runs.append(Run(f"fixed-point k={k}", "fixed-point", config, 10, {"k": k, "kappa_reference": True}))
    k = max(fixed_point_iterations)
    plain = replace(base, noise=fixed_point(method="damped", mixing=1.0, max_iterations=k))
    runs.append(
        Run(f"fixed-point plain k={k}", "fixed-point plain", plain, 10, {"k": k, "kappa_reference": True})
    )
    return runs


# ----------------------------------------------------------------------------- models
@dataclass
class Setup:
    name: str
    model: Any
    cond: Any
    batch: int
    labels: Tensor
    true_samples: Tensor  # for MMD
    true_samples_2: Tensor  # distance floors; W2 reference (as many as the batch)
    true_samples_3: Tensor  # W2 floor
    kappa_samples: int  # samples of the κ probe


def gaussian_setup(quick: bool) -> Setup:
    from threestudio_sdi.testing.gaussian import GaussianModel

    model = GaussianModel(shape=(1, 8, 8), exponent=1.5)
    batch = 128 if quick else 256
    generator = torch.Generator().manual_seed(12345)
    return Setup(
        "gaussian",
        model,
        None,
        batch,
        torch.zeros(batch, dtype=torch.long),
        model.sample(1000, generator),
        model.sample(batch, generator),
        model.sample(batch, generator),
        batch,
    )


def digits_setup(quick: bool) -> Setup:
    from threestudio_sdi.testing.mixture import GaussianMixtureModel

    model = GaussianMixtureModel.from_digits()
    per_class = 8
    labels = torch.arange(model.num_classes).repeat_interleave(per_class)
    generator = torch.Generator().manual_seed(12345)
    true_labels = torch.arange(model.num_classes).repeat_interleave(100)
    return Setup(
        "digits",
        model,
        labels,
        labels.numel(),
        labels,
        model.sample(true_labels.numel(), true_labels, generator),
        model.sample(labels.numel(), labels, generator),
        model.sample(labels.numel(), labels, generator),
        10,
    )


# ----------------------------------------------------------------------------- metrics
def median_bandwidth(samples: Tensor) -> float:
    flat = samples.flatten(1).double()
    distances = torch.cdist(flat, flat)
    return float(distances[distances > 0].median())


def mmd(x: Tensor, y: Tensor, bandwidth: float) -> float:
    """Biased (V-statistic) MMD with an RBF kernel exp(−‖a − b‖² / (2 h²)), as a distance (≥ 0)."""
    x, y = x.flatten(1).double(), y.flatten(1).double()

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(-torch.cdist(a, b).pow(2) / (2 * bandwidth**2))

    value = kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()
    return float(value.clamp_min(0).sqrt())


def empirical_w2(x: Tensor, y: Tensor) -> float:
    """W2 between two equal-size point clouds: RMS distance of the optimal one-to-one matching."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(x.flatten(1).double(), y.flatten(1).double()).pow(2)
    rows, columns = linear_sum_assignment(cost.numpy())
    return float(cost[rows, columns].mean().sqrt())


def gaussian_w2(samples: Tensor, variances: Tensor) -> float:
    """W2 between the Gaussian fit of ``samples`` and N(0, diag(λ)), relative to sqrt(tr Λ) (Bures)."""
    x = samples.flatten(1).double()
    mean = x.mean(0)
    covariance = torch.cov(x.T)
    root = variances.double().sqrt()
    middle = root[:, None] * covariance * root[None, :]
    eigenvalues = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0)
    squared = mean.pow(2).sum() + covariance.trace() + variances.sum() - 2 * eigenvalues.sqrt().sum()
    return float(squared.clamp_min(0).sqrt() / variances.sum().sqrt())


def outcome_metrics(setup: Setup, x: Tensor, reference: Tensor, bandwidth: float) -> dict[str, Any]:
    """Outcome metrics over the samples that did not blow up (their fraction is reported)."""
    kept = ~blown_up(x)
    row: dict[str, Any] = {"blown_up_fraction": float(1 - kept.double().mean())}
    if kept.sum() < 2:
        return row
    xf, labels = x[kept], setup.labels[kept]
    row["distance_to_ddim"] = float(rms_distance(xf, reference[kept]).mean())
    row["mmd"] = mmd(xf, setup.true_samples, bandwidth)
    row["w2"] = empirical_w2(xf, setup.true_samples_2[kept])
    if setup.name == "gaussian":
        row["band_variance_ratio"] = [float(v) for v in setup.model.band_variance_ratio(xf)]
        row["w2_relative"] = gaussian_w2(xf, setup.model.variances)
    else:
        real = setup.true_samples
        real_labels = torch.arange(setup.model.num_classes).repeat_interleave(real.shape[0] // 10)
        if labels.unique().numel() == setup.model.num_classes:
            row["sharpness_tv_vs_true"] = float(
                grouped_total_variation(xf, labels) / grouped_total_variation(real, real_labels)
            )
            row["diversity_vs_true"] = float(
                grouped_diversity(xf, labels) / grouped_diversity(real, real_labels)
            )
        posterior = setup.model.class_log_posterior(xf.double())
        row["class_accuracy"] = float((posterior.argmax(1) == labels).double().mean())
    return row


class KappaProbe:
    """κ error at probe steps: vs the exact fixed point (at t', CFG γ_fwd) and a 200-step inversion."""

    def __init__(self, setup: Setup, run: Run) -> None:
        self.setup, self.run = setup, run
        self.fixed_point_error: list[float] = []
        self.residual: list[float] = []
        self.inversion_200_difference: list[float] = []
        self.reference_converged: list[float] = []
        self.seconds = 0.0

    def __call__(self, i: int, t: int, x0: Tensor, output: GuidanceOutput) -> None:
        """At probe step i (timestep t): x0 is the image the step started from, ``output`` the step."""
        start = time.perf_counter()
        setup, config = self.setup, self.run.config
        assert config is not None
        count = setup.kappa_samples
        x0, kappa = x0[:count].double(), output.noise[:count].double()
        t_prime = output.t_prime
        cond = None if setup.cond is None else setup.cond[:count]
        conditioning = Conditioning(cond=cond)
        mode = config.resolved_cfg_mode
        # 200-step reference inversion with the method's own inversion settings (SDI's for the others).
        inverts = config.strategy.name in ("inversion", "uncond-inversion")
        inversion_config = config if inverts else GuidanceConfig()
        grid = inversion_timesteps(
            t,
            t_prime,
            200,
            inversion_config.preset_spec,
            setup.model.schedule.num_train_timesteps,
            setup.model.schedule.steps_offset,
        )
        inverted = ddim_invert(
            setup.model,
            x0,
            grid,
            conditioning.unconditional()
            if inversion_config.strategy.name == "uncond-inversion"
            else conditioning,
            INVERSION_SCALE,
            mode,
        ).noise
        self.inversion_200_difference.append(float((kappa - inverted).norm() / inverted.norm()))
        guide = Guide(setup.model, conditioning, GUIDANCE_SCALE, mode)
        mapped = fixed_point_map(guide, x0, kappa, t_prime)
        self.residual.append(float(relative_residuals(mapped - kappa, kappa).mean()))
        if setup.name == "gaussian":
            exact = setup.model.schedule.sigma(t_prime) * x0 / setup.model.variances.reshape(1, 1, 8, 8)
            converged = torch.ones(count, dtype=torch.bool)
        elif self.run.extra.get("kappa_reference"):
            reference = solve_fixed_point_reference(guide, x0, t_prime, inverted, max_iterations=15)
            exact = reference.noise
            converged = reference.sample_residuals < 1e-8
        else:
            self.seconds += time.perf_counter() - start
            return
        self.reference_converged.append(float(converged.double().mean()))
        if converged.any():
            error = (kappa[converged] - exact[converged]).norm() / exact[converged].norm()
            self.fixed_point_error.append(float(error))
        self.seconds += time.perf_counter() - start


# ----------------------------------------------------------------------------- running
class StepLog:
    """The lab's callback: collects every step's evaluations and fixed-point result, runs the κ probe."""

    def __init__(self, probe: KappaProbe | None, probe_steps: Sequence[int]) -> None:
        self.probe, self.probe_steps = probe, probe_steps
        self.evaluations: list[int] = []
        self.fixed_points: list[Any] = []

    def __call__(self, info: dict[str, Any]) -> None:
        output = info["output"]
        if self.probe is not None and info["i"] in self.probe_steps:
            self.probe(info["i"], info["t"], info["z0"], output)
        self.evaluations.append(output.model_evaluations)
        if output.noise_details is not None:
            self.fixed_points.append(output.noise_details)


def run_model(
    setup: Setup, runs: list[Run], seeds: Sequence[int], probe_steps: Sequence[int]
) -> dict[str, Any]:
    bandwidth = median_bandwidth(setup.true_samples)
    results: dict[str, Any] = {}
    floor = mmd(setup.true_samples_2, setup.true_samples, bandwidth)
    w2_floor = empirical_w2(setup.true_samples_3, setup.true_samples_2)
    for seed in seeds:
        lab = LabRun(steps=STEPS, seed=seed, batch=setup.batch, cond=setup.cond)
        ddim = GuidanceConfig(guidance_scale=GUIDANCE_SCALE)
        reference = sample_reference_2d(setup.model, ddim, lab, disable=True)
        for run in runs:
            start = time.perf_counter()
            probe = KappaProbe(setup, run) if run.config is not None and seed == seeds[0] else None
            outputs = StepLog(probe, probe_steps)
            if run.config is None:
                x = sample_reference_2d(setup.model, ddim, lab, disable=True)
            else:
                x = distill_2d(setup.model, run.config, lab, callback=outputs, disable=True)
            evaluations, fixed_points = outputs.evaluations, outputs.fixed_points
            row = outcome_metrics(setup, x, reference, bandwidth)
            # evaluations per guidance step; DDIM: one per timestep (its first x̂0 is shared by all)
            row["evaluations_per_step"] = sum(evaluations) / len(evaluations) if evaluations else 1.0
            row["seconds"] = time.perf_counter() - start - (probe.seconds if probe else 0.0)
            if probe is not None:
                row["kappa_error_fixed_point"] = probe.fixed_point_error
                row["kappa_residual"] = probe.residual
                row["kappa_difference_inversion_200"] = probe.inversion_200_difference
                row["kappa_reference_converged"] = probe.reference_converged
            if fixed_points:
                row["fixed_point"] = {
                    "converged_fraction": sum(f.converged for f in fixed_points) / len(fixed_points),
                    "diverged_fraction": sum(f.diverged for f in fixed_points) / len(fixed_points),
                    "mean_iterations": sum(f.iterations for f in fixed_points) / len(fixed_points),
                    "median_final_residual": float(torch.tensor([f.residual for f in fixed_points]).median()),
                    "median_start_residual": float(
                        torch.tensor([f.residuals[0] for f in fixed_points]).median()
                    ),
                }
            entry = results.setdefault(
                run.label, {"family": run.family, "n": run.n, **run.extra, "per_seed": {}}
            )
            entry["per_seed"][str(seed)] = row
    return {"mmd_floor": floor, "w2_floor": w2_floor, "bandwidth": bandwidth, "runs": results}


def summary_value(entry: dict[str, Any], key: str, index: int | None = None) -> list[float]:
    values = []
    for row in entry["per_seed"].values():
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, list):
            if index is None:  # κ probes: mean over probe steps
                value = sum(value) / len(value) if value else float("nan")
            else:
                value = value[index]
        values.append(float(value))
    return values


COLUMNS = {
    "gaussian": [
        ("blown up", "blown_up_fraction"),
        ("band var. 1/2/3/4", "band_variance_ratio"),
        ("dist. to DDIM", "distance_to_ddim"),
        ("MMD", "mmd"),
        ("W2", "w2"),
        ("W2 Gauss. fit (rel.)", "w2_relative"),
        ("κ residual", "kappa_residual"),
        ("κ err vs fixed pt", "kappa_error_fixed_point"),
        ("κ vs 200-step inv.", "kappa_difference_inversion_200"),
    ],
    "digits": [
        ("blown up", "blown_up_fraction"),
        ("sharpness", "sharpness_tv_vs_true"),
        ("diversity", "diversity_vs_true"),
        ("class acc.", "class_accuracy"),
        ("dist. to DDIM", "distance_to_ddim"),
        ("MMD", "mmd"),
        ("W2", "w2"),
        ("κ residual", "kappa_residual"),
        ("κ err vs fixed pt", "kappa_error_fixed_point"),
        ("ref. converged", "kappa_reference_converged"),
        ("κ vs 200-step inv.", "kappa_difference_inversion_200"),
    ],
}


def markdown(report: dict[str, Any]) -> str:
    info = report["machine"]
    parts = [
        "# Fidelity benchmark",
        "",
        f"Command: `{report['command']}` ({report['elapsed_seconds']:.0f} s) on {info['cpu']}, "
        f"{info['cpu_count']} cores, torch {info['torch']}, {info['torch_threads']} threads; no GPU involved.",
        "",
        f"{STEPS}-step image-space distillation (exact update), CFG γ = {GUIDANCE_SCALE}, γ_inv = "
        f"{INVERSION_SCALE}, η = 0.3, seeds {report['seeds']}: mean ± std over seeds. Outcome metrics "
        f"exclude blown-up samples (max |x| > {BLOWN_UP:g}), counted in 'blown up'. evals/step = guided "
        "model evaluations per guidance step (each a CFG pair on the digits). κ columns: seed "
        f"{report['seeds'][0]}, mean over probe steps {report['probe_steps']} of the relative quantity "
        "(residual ‖F(κ) − κ‖/‖κ‖ at γ_fwd; ‖κ − κ_ref‖/‖κ_ref‖); κ includes the η entropy noise.",
    ]
    for name, model in report["models"].items():
        columns = COLUMNS[name]
        parts += [
            "",
            f"## {name}",
            "",
            f"Floors (two true samples): MMD {model['mmd_floor']:.3g}, W2 {model['w2_floor']:.3g}.",
            "",
        ]
        rows = []
        for label, entry in model["runs"].items():
            row = [label, f"{mean_std(summary_value(entry, 'evaluations_per_step'))[0]:.2f}"]
            for _title, key in columns:
                if key == "band_variance_ratio":
                    means = [mean_std(summary_value(entry, key, band))[0] for band in range(4)]
                    row.append("/".join(f"{v:.2g}" for v in means))
                else:
                    row.append(pm(summary_value(entry, key)))
            rows.append(row)
        parts.append(markdown_table(["method", "evals/step", *(title for title, _key in columns)], rows))
        fixed = {k: v for k, v in model["runs"].items() if v["family"].startswith("fixed-point")}
        if fixed:
            parts += [
                "",
                "Fixed-point refinement per guidance step (mean over seeds of the per-run statistic):",
                "",
            ]
            keys = (
                "converged_fraction",
                "diverged_fraction",
                "mean_iterations",
                "median_start_residual",
                "median_final_residual",
            )
            fixed_rows = []
            for label, entry in fixed.items():
                stats = [row.get("fixed_point", {}) for row in entry["per_seed"].values()]
                fixed_rows.append([label, *(mean_std([s.get(k, math.nan) for s in stats])[0] for k in keys)])
            header = ["method", "converged", "diverged", "iterations", "start residual", "final residual"]
            parts.append(markdown_table(header, fixed_rows))
    return "\n".join(parts) + "\n"


def plot(report: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, model in report["models"].items():
        panels = [
            ("distance_to_ddim", None, "RMS distance to the DDIM sample", False),
            ("w2", None, "W2 to the true distribution", True),
            ("kappa_residual", None, "κ residual ‖F(κ) − κ‖/‖κ‖ (probes)", True),
        ]
        if name == "gaussian":
            panels.append(("band_variance_ratio", 3, "kept variance, finest band (1 = truth)", True))
        else:
            panels.append(("diversity_vs_true", None, "within-class diversity / true", False))
        figure, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2))
        families: dict[str, list[tuple[float, float, str]]] = {}
        for label, entry in model["runs"].items():
            families.setdefault(entry["family"], []).append((label, entry))  # type: ignore[arg-type]
        for axis, (key, index, title, log) in zip(axes, panels):
            palette = plt.get_cmap("tab20").colors
            for number, (family, entries) in enumerate(families.items()):
                points = []
                for _label, entry in entries:
                    x = mean_std(summary_value(entry, "evaluations_per_step"))[0]
                    y = mean_std(summary_value(entry, key, index))[0]
                    if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log):
                        points.append((x, y))
                if not points:
                    continue
                points.sort()
                style = "o-" if len(points) > 1 else "sD^v<>"[number % 6]
                axis.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    style,
                    label=family,
                    markersize=5,
                    color=palette[(2 * number) % 20 + (number // 10) % 2],
                )
            if log:
                axis.set_yscale("log")
            axis.set_xscale("log")
            axis.set_xlabel("guided model evaluations per guidance step")
            axis.set_title(title, fontsize=10)
            axis.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        figure.suptitle(f"{name}: {STEPS}-step image-space distillation, exact update (lines: inversion n)")
        figure.tight_layout()
        path = out / f"fidelity_{name}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path.name)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer seeds, step counts and probes (< 3 min)")
    parser.add_argument("--models", default="gaussian,digits")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3, quick 1)")
    parser.add_argument("--out", default=None, help="default benchmarks/results (quick: .../quick)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: the models are too small to gain, and on a shared machine more "
        "threads only contend)",
    )
    parser.add_argument(
        "--replot", action="store_true", help="rewrite the .md and .png from the existing JSON"
    )
    args = parser.parse_args(argv)
    if args.replot:
        out = Path(args.out) if args.out else (RESULTS / "quick" if args.quick else RESULTS)
        report = json.loads((out / "fidelity.json").read_text())
        (out / "fidelity.md").write_text(markdown(report))
        print(f"rewrote {out / 'fidelity.md'} and {', '.join(plot(report, out))}")
        return 0
    torch.set_num_threads(max(args.threads, 1))
    quick = args.quick
    out = Path(args.out) if args.out else (RESULTS / "quick" if quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds if args.seeds else (1 if quick else 3)))
    ns = (5, 10) if quick else (3, 5, 10, 20)
    fixed_point_iterations = (3,) if quick else (1, 3, 10)
    probe_steps = (25,) if quick else (5, 15, 25, 35, 45)
    runs = build_runs(ns, fixed_point_iterations)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "command": "python benchmarks/fidelity.py" + (" --quick" if quick else ""),
        "machine": machine(),
        "seeds": seeds,
        "inversion_steps": list(ns),
        "probe_steps": list(probe_steps),
        "guidance_scale": GUIDANCE_SCALE,
        "inversion_guidance_scale": INVERSION_SCALE,
        "models": {},
    }
    setups = {"gaussian": gaussian_setup, "digits": digits_setup}
    for name in filter(None, args.models.split(",")):
        model_start = time.perf_counter()
        report["models"][name] = run_model(setups[name](quick), runs, seeds, probe_steps)
        print(f"{name}: {time.perf_counter() - model_start:.0f} s", flush=True)
    report["elapsed_seconds"] = time.perf_counter() - started
    (out / "fidelity.json").write_text(json.dumps(report, indent=1))
    (out / "fidelity.md").write_text(markdown(report))
    figures = plot(report, out)
    print(markdown(report))
    print(f"wrote {out / 'fidelity.json'}, fidelity.md and {', '.join(figures)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
