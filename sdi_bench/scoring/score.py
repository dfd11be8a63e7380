"""``sdi-bench score``: the metrics of every finished run, stored per run and metric."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image
from tqdm import tqdm

from .. import layout
from ..store import Store
from .base import Scorer
from .images import UnreadableRender, load_render, select_views


@dataclass
class ScoreSummary:
    """What one ``score`` did: (run, scorer) pairs scored and skipped (already scored with the same
    model), runs without (readable) test views, runs with fewer test views than asked for, and the
    unreadable renders that were skipped (run id, file)."""

    scored: int = 0
    skipped: int = 0
    missing_views: set[str] = field(default_factory=set)
    short_runs: set[str] = field(default_factory=set)
    unreadable: set[tuple[str, str]] = field(default_factory=set)


def collect_views(trial_dir: pathlib.Path, count: int) -> tuple[list[Image.Image], list[str]]:
    """``count`` render panels of a trial's test turntable, evenly spaced (all if it has fewer), and
    the views that could not be read (skipped, so the rest still counts)."""
    size = layout.eval_size(trial_dir)
    images, unreadable = [], []
    for path in select_views(layout.test_views(trial_dir), count):
        try:
            images.append(load_render(path, None if size is None else size[0]))
        except UnreadableRender as error:
            unreadable.append(str(error))
    return images, unreadable


def score_runs(
    store: Store, scorers: Sequence[Scorer], views: int, rescore: bool = False, progress: bool = True
) -> ScoreSummary:
    """Score every ``done`` run with every scorer (skipping what is scored with the same model)."""
    summary = ScoreSummary()
    runs = [run for run in store.runs() if run["status"] == "done"]
    for scorer in scorers:
        model = scorer.load()
        store.add_metric_model(
            model.label,
            list(scorer.metrics),
            {**model.details, "scorer": scorer.name, "headings": scorer.metrics},
        )
        done = set.intersection(*(store.scored_with(metric, model.label) for metric in scorer.metrics))
        todo = [run for run in runs if rescore or run["run_id"] not in done]
        summary.skipped += len(runs) - len(todo)
        for run in tqdm(todo, desc=f"score {scorer.name}", unit="run", disable=not progress):
            trial_dir = pathlib.Path(run["trial_dir"]) if run["trial_dir"] else None
            images, unreadable = collect_views(trial_dir, views) if trial_dir is not None else ([], [])
            summary.unreadable.update((run["run_id"], path) for path in unreadable)
            if not images:
                summary.missing_views.add(run["run_id"])
                continue
            if len(images) < views:
                summary.short_runs.add(run["run_id"])
            values = scorer.score(images, run["prompt"])
            store.add_scores(
                run["run_id"],
                {metric: (value, std, len(images)) for metric, (value, std) in values.items()},
                model.label,
            )
            summary.scored += 1
    return summary
