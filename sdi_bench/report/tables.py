"""``table.md`` and ``results.json``: the method summaries, the metric models, the paper's Table 1."""

from __future__ import annotations

import datetime
import json
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from .aggregate import MethodSummary
from .paper import PAPER_TABLE1, PAPER_TABLE1_HEADER, paper_table_markdown

PAPER_ORDER = ("clip", "clipiqa_quality", "clipiqa_sharpness", "clipiqa_real", "imagereward", "hpsv2")
"""Table 1's column order; other metrics follow in name order."""


def metric_order(metrics: Iterable[str]) -> list[str]:
    found = set(metrics)
    return [metric for metric in PAPER_ORDER if metric in found] + sorted(found - set(PAPER_ORDER))


def _number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}".replace("-", "−")


def metric_cell(summary: MethodSummary, metric: str) -> str:
    found = summary.metrics.get(metric)
    if found is None:
        return "–"
    mark = "" if summary.complete else "*"
    return f"{_number(found.mean)} ± {_number(found.std)}{mark}"


def headings(metric_models: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, str]:
    """Metric key → table heading (from the scorers that computed them)."""
    found = {metric: metric for metric in metrics}
    for model in metric_models:
        heading = model["details"].get("headings", {}).get(model["metric"])
        if heading:
            found[model["metric"]] = heading
    return found


def method_table(
    summaries: Sequence[MethodSummary], metrics: Sequence[str], names: Mapping[str, str]
) -> list[str]:
    """The per-method table as Markdown lines."""
    header = ["method", "runs done / planned", *(names[metric] for metric in metrics)]
    header += ["diverged %", "median time (min)", "steps/s", "peak VRAM (GB, mean / max)", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for summary in summaries:
        vram = (
            "–"
            if summary.mean_peak_vram_gb is None
            else f"{_number(summary.mean_peak_vram_gb, 1)} / {_number(summary.max_peak_vram_gb, 1)}"
        )
        row = [
            summary.method,
            f"{summary.done} / {summary.planned}",
            *(metric_cell(summary, metric) for metric in metrics),
            _number(summary.diverged_percent, 1),
            _number(summary.median_minutes, 1),
            _number(summary.median_steps_per_second, 2),
            vram,
            summary.status() if summary.complete else f"**{summary.status()}**",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def model_lines(metric_models: Sequence[Mapping[str, Any]], scores: Sequence[Mapping[str, Any]]) -> list[str]:
    """Which weights and package versions computed each metric (every label the store's scores use)."""
    used: dict[str, set[str]] = {}
    for score in scores:
        used.setdefault(score["metric"], set()).add(score["model"])
    grouped: dict[tuple[str, str], list[str]] = {}
    details: dict[tuple[str, str], Mapping[str, Any]] = {}
    for model in metric_models:
        if model["model"] in used.get(model["metric"], set()):
            key = (model["details"].get("scorer", model["metric"]), model["model"])
            grouped.setdefault(key, []).append(model["metric"])
            details[key] = model["details"]
    lines = []
    for key, metrics in grouped.items():
        packages = ", ".join(
            f"{name} {version}" for name, version in sorted(details[key].get("packages", {}).items())
        )
        pairs = details[key].get("prompt_pairs") or {}
        extra = (
            "; prompt pairs " + ", ".join(f"{k} ({' / '.join(v)})" for k, v in pairs.items()) if pairs else ""
        )
        names = ", ".join(f"`{metric}`" for metric in metric_order(metrics))
        lines.append(f"- {names}: {key[1]} — {packages}{extra}")
    mixed = sorted(metric for metric, labels in used.items() if len(labels) > 1)
    if mixed:
        lines.append(f"- **mixed models** for {', '.join(mixed)}: rescore with `sdi-bench score --rescore`")
    return lines


def write_table(
    path: pathlib.Path,
    summaries: Sequence[MethodSummary],
    metrics: Sequence[str],
    metric_models: Sequence[Mapping[str, Any]],
    scores: Sequence[Mapping[str, Any]],
    context: Mapping[str, Any],
) -> None:
    """``table.md``: our table, how to read it, the metric models, the paper's Table 1."""
    names = headings(metric_models, metrics)
    lines = [
        f"# sdi-bench results: {context['out_dir']}",
        "",
        f"Generated {context['generated_at']} from {context['runs']} runs in `{context['database']}`.",
        "",
        *method_table(summaries, metrics, names),
        "",
        "Metrics: mean ± standard deviation over the scored runs (each run: its mean over "
        f"{context['views']} test views). diverged % = diverged / (done + diverged): out of memory, NaN, "
        "or an empty volume. Time: median wall time of a done run (launch to exit, test renders included); "
        "steps/s over the training loop. VRAM: peak `torch.cuda.max_memory_allocated` of a run (– on a CPU). "
        "`*`: the method is incomplete (see status), its numbers cover only the runs listed as done.",
    ]
    gpus = sorted({gpu for summary in summaries for gpu in summary.gpus})
    if gpus:
        lines += ["", f"GPUs: {', '.join(gpus)}."]
    lines += [
        "",
        "## Metric models",
        "",
        *(model_lines(metric_models, scores) or ["- none (run `sdi-bench score`)"]),
    ]
    lines += ["", "## The paper's Table 1, for comparison", "", *paper_table_markdown(), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_json(
    path: pathlib.Path,
    summaries: Sequence[MethodSummary],
    metric_models: Sequence[Mapping[str, Any]],
    runs: Sequence[Mapping[str, Any]],
    scores: Sequence[Mapping[str, Any]],
    context: Mapping[str, Any],
) -> None:
    """``results.json``: the summaries, every run (without its log) with its metrics, the metric models."""
    metrics_by_run: dict[str, dict[str, Any]] = {}
    for score in scores:
        metrics_by_run.setdefault(score["run_id"], {})[score["metric"]] = {
            key: score[key] for key in ("value", "view_std", "n_views", "model")
        }
    data = {
        **context,
        "methods": [
            {**asdict(summary), "complete": summary.complete, "status": summary.status()}
            for summary in summaries
        ],
        "metric_models": list(metric_models),
        "runs": [
            {
                **{
                    key: value
                    for key, value in run.items()
                    if key not in ("log_tail", "details", "args", "overlays")
                },
                "details": json.loads(run["details"]) if run["details"] else None,
                "args": json.loads(run["args"]),
                "metrics": metrics_by_run.get(run["run_id"], {}),
            }
            for run in runs
        ],
        "paper_table1": [dict(zip(PAPER_TABLE1_HEADER, row)) for row in PAPER_TABLE1],
    }
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
