"""Per-method summaries of the store: metrics (mean ± std over runs), diverged %, time, memory, completeness."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class MetricSummary:
    """A metric over the scored runs of one method."""

    mean: float
    std: float
    runs: int


@dataclass
class MethodSummary:
    """One row of the table.

    ``complete`` is False while any run of the method is pending, running, waiting for a retry or
    failed for good, or a done run lacks a metric: the row is then marked incomplete, with the counts.
    """

    method: str
    planned: int
    done: int = 0
    diverged: int = 0
    failed: int = 0
    unfinished: int = 0
    unscored: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, MetricSummary] = field(default_factory=dict)
    diverged_percent: float | None = None
    median_minutes: float | None = None
    median_steps_per_second: float | None = None
    mean_peak_vram_gb: float | None = None
    max_peak_vram_gb: float | None = None
    gpus: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.unfinished == 0 and self.failed == 0 and not any(self.unscored.values())

    def status(self) -> str:
        """``complete`` or ``incomplete: …`` with what is missing."""
        if self.complete:
            return "complete"
        parts = [
            f"{count} {what}"
            for what, count in (("unfinished", self.unfinished), ("failed", self.failed))
            if count
        ]
        parts += [f"{count} unscored ({metric})" for metric, count in self.unscored.items() if count]
        return "incomplete: " + ", ".join(parts)


def label_setups(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The runs, each method with more than one setup (config file, overlays, overrides: the
    ``setup_hash``) renamed ``<method>@<setup_hash[:6]>``, so results of two setups never mix."""
    setups: dict[str, set[str]] = {}
    for run in runs:
        setups.setdefault(run["method"], set()).add(run["setup_hash"])
    return [
        {**run, "method": f"{run['method']}@{run['setup_hash'][:6]}"}
        if len(setups[run["method"]]) > 1
        else dict(run)
        for run in runs
    ]


def _median(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def summarize(
    runs: Sequence[Mapping[str, Any]],
    scores: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    retries: int | None = None,
) -> list[MethodSummary]:
    """One :class:`MethodSummary` per method, in order of first appearance.

    Args:
        runs: rows of the store's ``runs`` table.
        scores: rows of the store's ``scores`` table.
        metrics: the metric keys to summarise (every done run should have each).
        retries: when given, a failed run with failures ≤ retries counts as unfinished (it will be retried).
    """
    by_run: dict[str, dict[str, float]] = {}
    for score in scores:
        by_run.setdefault(score["run_id"], {})[score["metric"]] = score["value"]
    summaries: dict[str, MethodSummary] = {}
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        grouped.setdefault(run["method"], []).append(run)
    for method, method_runs in grouped.items():
        summary = MethodSummary(method=method, planned=len(method_runs))
        summaries[method] = summary
        for run in method_runs:
            status = run["status"]
            if status == "failed" and retries is not None and run["failures"] <= retries:
                status = "pending"
            if status in ("pending", "running"):
                summary.unfinished += 1
            else:
                setattr(summary, status, getattr(summary, status) + 1)
            if run["outcome"]:
                summary.outcomes[run["outcome"]] = summary.outcomes.get(run["outcome"], 0) + 1
        done = [run for run in method_runs if run["status"] == "done"]
        for metric in metrics:
            values = [
                by_run[run["run_id"]][metric] for run in done if metric in by_run.get(run["run_id"], {})
            ]
            summary.unscored[metric] = len(done) - len(values)
            if values:
                summary.metrics[metric] = MetricSummary(
                    statistics.fmean(values), statistics.pstdev(values), len(values)
                )
        finished = summary.done + summary.diverged
        summary.diverged_percent = 100.0 * summary.diverged / finished if finished else None
        wall = _median([run["wall_seconds"] for run in done])
        summary.median_minutes = None if wall is None else wall / 60.0
        summary.median_steps_per_second = _median([run["steps_per_second"] for run in done])
        peaks = [run["peak_vram_bytes"] / 2**30 for run in done if run["peak_vram_bytes"]]
        summary.mean_peak_vram_gb = statistics.fmean(peaks) if peaks else None
        summary.max_peak_vram_gb = max(peaks) if peaks else None
        summary.gpus = sorted({run["gpu_name"] for run in done if run["gpu_name"]})
    return list(summaries.values())
