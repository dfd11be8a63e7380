"""A model of whole-run time, SDI ÷ SDS and the options, from evaluation counts and the paper's timings.

    python benchmarks/whole_run.py            # writes benchmarks/results/cost-whole-run.json and .md

**This is a model, not a measurement.** Assumptions:

1. A training step costs F + e·c: F is everything but the guided UNet evaluations (the 512×512 NeRF
   render and its backward, the VAE encode and its backward, the optimizer, logging), the same for
   every method at the same render settings; e is the step's guided evaluations (one batched UNet call
   of every CFG / Perp-Neg branch each) and c the cost of one.
2. F and c are fitted (least squares) to the paper's five SDI run times at n = 3, 5, 10, 20, 30 inversion
   steps (Fig. 11; 10 000 steps, 512×512 renders, Perp-Neg, SD 2.1, one A6000), with e the exact mean
   evaluations per step of the released (``official``) grid over the annealing 0.98 → 0.25, counted
   with this package's grid code. The fit's residuals are listed.
3. The other rows reuse F and c: the ``paper`` preset and the fewer-evaluation options change e only;
   ``sdi-2view`` (5 000 steps, two views per step) doubles F (two renders) and costs β·c per
   evaluation, β = 2 assumed (no gain from batching two views: an upper bound, not measured on a GPU).
4. The SDS row is SDS at SDI's render settings (e = 1): the guidance-only difference. The paper's own
   SDS run (66 min) used threestudio's DreamFusion config (other renders, CFG 100), so it is listed beside
   the model, not fitted.
5. The last row is hypothetical: official SDI with c halved (the issue's GPU target of ≤ 0.5× the
   released guidance step), divided by SDS at full c; it was not measured.
6. The frontier rows (``benchmarks/frontier.py``, issue 19) put each strategy of the cost–outcome
   frontier at SD scale with the evaluations per step it spent in the 3D lab (mean over its runs, read
   from ``benchmarks/results/frontier.json``) and the same F and c. Consistent noise's extra pass of the
   geometry's density (no gradient, at the latents' 64² rays) is not in F: the model leaves it out.

Where ``benchmarks/results/cost-sd21-random.json`` exists (``cost.py --model sd21-random``), the measured
SDI ÷ SDS of a guidance step at real size is set beside the ratio of evaluations that assumption 1
implies for that step.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

import numpy as np
from common import RESULTS, markdown_table, spread

from threestudio_sdi.experimental.lab3d.methods import FRONTIER_METHODS
from threestudio_sdi.experimental.strategies.research_inversion import (
    adaptive_inversion_steps,
    research_timesteps,
)
from threestudio_sdi.presets import get_preset
from threestudio_sdi.timesteps import annealed_timestep

PAPER_SDI_MINUTES = {3: 82.0, 5: 104.0, 10: 119.0, 20: 174.0, 30: 247.0}
"""SDI whole-run minutes by inversion steps n (paper Fig. 11; n = 10 is Table 1's 119 min)."""
PAPER_SDS_MINUTES = 66.0
"""SDS (DreamFusion config, 10 000 steps), paper Table 1."""
STEPS = 10_000
TWO_VIEW_BATCH_FACTOR = 2.0
"""β of assumption 3: cost of one evaluation at two views ÷ at one view."""


def mean_evaluations(
    preset: str = "official",
    n_steps: int = 10,
    steps: int = STEPS,
    skip_origin: bool = False,
    adaptive: bool = False,
) -> float:
    """Mean guided evaluations per training step (inversion hops + 1 prediction) over the annealing."""
    spec = get_preset(preset)
    total = 0
    for step in range(steps):
        t = annealed_timestep(step, steps, spec.min_step_percent, spec.max_step_percent, 1000)
        n = adaptive_inversion_steps(n_steps, t, 1000) if adaptive else n_steps
        total += len(research_timesteps(t, t, n, spec, 1000, 1, skip_origin))  # hops = len − 1, +1 prediction
    return total / steps


def fit() -> dict[str, Any]:
    """F and c (minutes per 10 000 steps) fitted to :data:`PAPER_SDI_MINUTES`, with the residuals."""
    counts = {n: mean_evaluations(n_steps=n) for n in PAPER_SDI_MINUTES}
    design = np.array([[1.0, counts[n]] for n in PAPER_SDI_MINUTES])
    minutes = np.array(list(PAPER_SDI_MINUTES.values()))
    (fixed, per_evaluation), *_ = np.linalg.lstsq(design, minutes, rcond=None)
    fitted = design @ np.array([fixed, per_evaluation])
    return {
        "fixed_minutes": float(fixed),
        "per_evaluation_minutes": float(per_evaluation),
        "fixed_seconds_per_step": 60 * float(fixed) / STEPS,
        "per_evaluation_ms": 60_000 * float(per_evaluation) / STEPS,
        "evaluations": counts,
        "residual_minutes": {n: float(f - m) for n, f, m in zip(PAPER_SDI_MINUTES, fitted, minutes)},
    }


def rows(model: dict[str, Any]) -> list[dict[str, Any]]:
    """The table: (setting, steps, evaluations per step, predicted minutes, paper's minutes)."""
    fixed, per = model["fixed_minutes"], model["per_evaluation_minutes"]

    def row(name: str, evaluations: float, steps: int = STEPS, views: int = 1, paper: float | None = None,
            per_evaluation: float = per) -> dict[str, Any]:  # fmt: skip
        factor = TWO_VIEW_BATCH_FACTOR if views == 2 else 1.0
        minutes = steps / STEPS * (views * fixed + evaluations * factor * per_evaluation)
        return {"setting": name, "steps": steps, "views": views, "evaluations_per_step": evaluations,
                "minutes": minutes, "paper_minutes": paper}  # fmt: skip

    table = [row("SDS at SDI's render settings", 1.0, paper=None)]
    for n, paper in PAPER_SDI_MINUTES.items():
        table.append(row(f"SDI official, n = {n}", model["evaluations"][n], paper=paper))
    official = model["evaluations"][10]
    table += [
        row("SDI paper preset, n = 10", mean_evaluations("paper")),
        row("SDI official + skip_origin", mean_evaluations(skip_origin=True)),
        row("SDI official + adaptive_inversion_steps", mean_evaluations(adaptive=True)),
        row("SDI official + both", mean_evaluations(skip_origin=True, adaptive=True)),
        row(
            "sdi-2view (paper preset, 2 views × 5 000 steps, β = 2)",
            mean_evaluations("paper", steps=5000),
            steps=5000,
            views=2,
        ),  # fmt: skip
        row(
            "SDI official, c halved (hypothetical: the ≤ 0.5× GPU target, not measured; SDS at full c)",
            official,
            per_evaluation=per / 2,
        ),  # fmt: skip
    ]
    sds = table[0]["minutes"]
    for entry in table:
        entry["ratio_to_sds"] = entry["minutes"] / sds
    return table


def frontier_rows(model: dict[str, Any], path: pathlib.Path) -> list[dict[str, Any]]:
    """Assumption 6: each frontier strategy at its lab-measured evaluations per step (none without the file)."""
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())["rows"]
    methods = [method for method in FRONTIER_METHODS if any(row["method"] == method for row in rows)]
    fixed, per = model["fixed_minutes"], model["per_evaluation_minutes"]
    sds = fixed + per
    table = []
    for method in methods:
        counts = [row["evaluations_per_step"] for row in rows if row["method"] == method]
        evaluations = sum(counts) / len(counts)
        minutes = fixed + evaluations * per
        table.append(
            {
                "strategy": method,
                "runs": len(counts),
                "evaluations_per_step": evaluations,
                "minutes": minutes,
                "ratio_to_sds": minutes / sds,
            }
        )
    return table


def measured_step(path: pathlib.Path) -> dict[str, Any] | None:
    """The real-size CPU measurement's SDI ÷ SDS per guidance step beside its ratio of evaluations."""
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    variants = report["variants"]
    ratio = next((h for h in report["headlines"] if h["what"] == "SDI ÷ SDS, ours"), None)
    if ratio is None:
        return None
    return {
        "source": str(path.relative_to(RESULTS.parents[1])),
        "device": report["device"],
        "timesteps": report["timesteps"]["official"],
        "wall": ratio["ratios"],
        "cpu": ratio.get("cpu_ratios"),
        "evaluations": variants["sdi-official"]["evaluations_per_step"]
        / variants["sds"]["evaluations_per_step"],
    }


def markdown(report: dict[str, Any]) -> str:
    model = report["model"]
    table = [
        [
            r["setting"],
            r["steps"],
            f"{r['evaluations_per_step']:.2f}",
            f"{r['minutes']:.0f}",
            f"{r['ratio_to_sds']:.2f}",
            "–" if r["paper_minutes"] is None else f"{r['paper_minutes']:.0f}",
        ]
        for r in report["rows"]
    ]
    residuals = ", ".join(f"n = {n}: {r:+.0f}" for n, r in model["residual_minutes"].items())
    parts = [
        "# Whole-run time: a model (not a measurement)",
        "",
        "Command: `python benchmarks/whole_run.py`. Assumptions: the docstring of "
        "`benchmarks/whole_run.py` (a step costs F + e·c; F and c fitted to the paper's SDI times; e counted "
        "exactly from the grids).",
        "",
        f"Fit to the paper's Fig. 11 (A6000): F = {model['fixed_minutes']:.1f} min per 10 000 steps "
        f"({model['fixed_seconds_per_step']:.3f} s per step), c = {model['per_evaluation_minutes']:.2f} min "
        f"per evaluation per 10 000 steps ({model['per_evaluation_ms']:.0f} ms per guided evaluation). "
        f"Residuals (model − paper, minutes): {residuals}.",
        "",
        markdown_table(
            [
                "setting",
                "steps",
                "guided evals/step",
                "model minutes (A6000)",
                "÷ SDS (model)",
                "paper minutes",
            ],
            table,
        ),
        "",
        f"The paper's SDS run took {PAPER_SDS_MINUTES:.0f} min (DreamFusion config, other render settings): "
        f"its SDI ÷ SDS is {PAPER_SDI_MINUTES[10] / PAPER_SDS_MINUTES:.2f}; threestudio's README says 1.5×.",
    ]
    frontier = report.get("frontier") or []
    if frontier:
        parts += [
            "",
            "## The frontier's strategies at SD scale (a model, assumption 6)",
            "",
            "Guided evaluations per step as each strategy spent them in the 3D lab's frontier "
            "(`benchmarks/results/frontier.json`, mean over its runs; the annealed ones over the anneal), "
            "priced with the F and c above for a 10 000-step run on the A6000. What each buys is in "
            "`benchmarks/results/frontier.md`.",
            "",
            markdown_table(
                ["strategy", "runs", "guided evals/step (lab)", "model minutes (A6000)", "÷ SDS (model)"],
                [
                    [
                        r["strategy"],
                        r["runs"],
                        f"{r['evaluations_per_step']:.2f}",
                        f"{r['minutes']:.0f}",
                        f"{r['ratio_to_sds']:.2f}",
                    ]  # fmt: skip
                    for r in frontier
                ],
            ),
        ]
    step = report.get("measured_step")
    if step is not None:
        parts += [
            "",
            f"Check of assumption 1 at real size ({step['source']}, {step['device']}, t = "
            f"{step['timesteps']}): a guidance step's SDI ÷ SDS measured {spread(step['wall'])} in wall "
            f"time and {spread(step['cpu'])} in CPU time (median, IQR over rounds) against a ratio of "
            f"evaluations of {step['evaluations']:.2f}.",
        ]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args(argv)
    model = fit()
    report = {
        "model": model,
        "rows": rows(model),
        "measured_step": measured_step(RESULTS / "cost-sd21-random.json"),
        "frontier": frontier_rows(model, RESULTS / "frontier.json"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cost-whole-run.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (args.out / "cost-whole-run.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
