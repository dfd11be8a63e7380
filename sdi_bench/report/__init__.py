"""``sdi-bench report``: ``table.md``, ``results.json``, ``grid.png`` and ``metrics.png`` from the store."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

from ..errors import BenchError
from ..store import Store
from .aggregate import MethodSummary, label_setups, summarize
from .figures import write_grid, write_metric_plot
from .tables import headings, metric_order, now, write_json, write_table

FILES = ("table.md", "results.json", "grid.png", "metrics.png")


@dataclass
class Report:
    """What ``write_report`` wrote and summarised."""

    files: list[pathlib.Path]
    summaries: list[MethodSummary]
    unreadable: list[str]
    """Runs whose render in grid.png could not be read."""


def write_report(store: Store, folder: pathlib.Path | None = None, view: int = 0) -> Report:
    """Write the four report files into ``folder`` (default: the store's folder).

    A failed run counts as unfinished while it has retries left (``--retries`` of the last ``run``). A
    method whose runs were made with more than one setup is one column per setup
    (:func:`.aggregate.label_setups`).
    """
    runs = label_setups(store.runs())
    if not runs:
        raise BenchError(f"--out {store.out_dir}: the store has no runs yet")
    folder = store.out_dir if folder is None else folder
    folder.mkdir(parents=True, exist_ok=True)
    scores = store.scores()
    metric_models = store.metric_models()
    metrics = metric_order({score["metric"] for score in scores})
    retries = store.meta("retries")
    summaries = summarize(runs, scores, metrics, retries=None if retries is None else int(retries))
    methods = [summary.method for summary in summaries]
    context = {
        "generated_at": now(),
        "out_dir": str(store.out_dir),
        "database": str(store.path),
        "runs": len(runs),
        "views": max((score["n_views"] for score in scores), default=0),
        "threestudio": store.meta("threestudio"),
    }
    paths = [folder / name for name in FILES]
    write_table(paths[0], summaries, metrics, metric_models, scores, context)
    write_json(paths[1], summaries, metric_models, runs, scores, context)
    unreadable = write_grid(paths[2], runs, methods, view=view)
    write_metric_plot(paths[3], runs, scores, methods, headings(metric_models, metrics))
    return Report(files=paths, summaries=summaries, unreadable=unreadable)
