"""Aggregates of 3D-lab runs per method (mean ± std over seeds and classes) and their tables.

Per method: every outcome of :mod:`threestudio_sdi.experimental.lab3d.metrics` as mean ± sample std over the runs
that produced a finite asset; **recovered** = runs whose held-out renders reach PSNR ≥ 30 dB to their
nearest true variant (the issue's target); **variants** = the nearest variant of each seed, per class
(diversity across seeds: how many different variants the seeds landed on); **diverged** = runs that
diverged (:mod:`threestudio_sdi.experimental.lab3d.experiment`).

:func:`verdict` says what became of one run in words: diverged; **recovered** a variant; a **blend**
(closer to the class-mean render than to any variant: mode averaging); or nearest to a variant
without recovering it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

RECOVERED_PSNR = 30.0
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("psnr_nearest", "PSNR nearest", ".1f"),
    ("ssim_nearest", "SSIM nearest", ".2f"),
    ("psnr_class_mean", "PSNR class mean", ".1f"),
    ("ssim_class_mean", "SSIM class mean", ".2f"),
    ("sharpness", "sharpness", ".2f"),
    ("silhouette_iou", "silhouette IoU", ".2f"),
    ("view_consistency", "view consistency", ".2f"),
    ("psnr_view_target", "PSNR view target", ".1f"),
    ("evaluations_per_step", "evals/step", ".1f"),
    ("seconds", "s/run", ".0f"),
)
"""(row key, column title, number format) of the aggregated outcomes, in table order."""


def verdict(row: dict[str, Any]) -> str:
    """One run's outcome in a few words (module docstring), with the PSNR that decides it."""
    if row.get("diverged"):
        return "DIVERGED: " + ("non-finite asset" if "psnr_nearest" not in row else "silhouette lost")
    nearest, to_mean = row["psnr_nearest"], row["psnr_class_mean"]
    if nearest >= RECOVERED_PSNR:
        return f"recovered #{row['nearest_variant']} ({nearest:.1f} dB)"
    if to_mean > nearest:
        return f"a blend of the variants ({to_mean:.1f} dB to their mean)"
    return f"nearest #{row['nearest_variant']}, not recovered ({nearest:.1f} dB)"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary per method (in order of first appearance) of the runs in ``rows``."""
    methods = list(dict.fromkeys(row["method"] for row in rows))
    summaries = []
    for method in methods:
        runs = [row for row in rows if row["method"] == method]
        summary: dict[str, Any] = {"method": method, "runs": len(runs)}
        for key, _, _ in COLUMNS:
            values = [row[key] for row in runs if row.get(key) is not None and math.isfinite(row[key])]
            if values:
                summary[key] = mean_std(values)
        summary["recovered"] = sum(row.get("psnr_nearest", -math.inf) >= RECOVERED_PSNR for row in runs)
        summary["diverged"] = sum(bool(row["diverged"]) for row in runs)
        variants: dict[str, list[int | None]] = {}
        for row in sorted(runs, key=lambda r: r["seed"]):
            variants.setdefault(row["class"], []).append(row.get("nearest_variant"))
        summary["variants"] = variants
        summaries.append(summary)
    return summaries


def _cell(value: Any, number_format: str) -> str:
    if value is None:
        return "–"
    mean, std = value
    return f"{mean:{number_format}} ± {std:{number_format}}" if std else f"{mean:{number_format}}"


def _variants_cell(variants: dict[str, list[int | None]]) -> str:
    return "; ".join(
        f"{name} {' '.join('–' if v is None else str(v) for v in seeds)}" for name, seeds in variants.items()
    )


def format_table(summaries: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """The summaries as a table: plain aligned text, or Markdown with ``markdown=True``.

    Columns with no value in any summary (e.g. PSNR view target on the consistent prior) are left out.
    """
    columns = [c for c in COLUMNS if any(c[0] in s for s in summaries)]
    header = ["method", *(title for _, title, _ in columns), "recovered", "variants per seed", "diverged"]
    body = [
        [
            s["method"],
            *(_cell(s.get(key), number_format) for key, _, number_format in columns),
            f"{s['recovered']}/{s['runs']}",
            _variants_cell(s["variants"]),
            f"{s['diverged']}/{s['runs']}",
        ]
        for s in summaries
    ]
    if markdown:
        lines = [header, ["---"] * len(header), *body]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    render = [["-" * w for w in widths]]
    return "\n".join(
        "  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in [header, *render, *body]
    )
