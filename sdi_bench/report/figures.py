"""``grid.png`` (prompts × methods, one test view each) and ``metrics.png`` (per-metric distributions)."""

from __future__ import annotations

import pathlib
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from .. import layout
from ..scoring.images import UnreadableRender, load_render


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(width, height), dpi=100)


def cell_image(run: Mapping[str, Any], view: int) -> Any:
    """The render panel of test view ``view`` of a done run (the last view if it has fewer), or None;
    :class:`UnreadableRender` if that file cannot be read."""
    if run["status"] != "done" or not run["trial_dir"]:
        return None
    trial_dir = pathlib.Path(run["trial_dir"])
    views = layout.test_views(trial_dir)
    if not views:
        return None
    size = layout.eval_size(trial_dir)
    return load_render(views[min(view, len(views) - 1)], None if size is None else size[0])


def write_grid(
    path: pathlib.Path, runs: Sequence[Mapping[str, Any]], methods: Sequence[str], view: int = 0
) -> list[str]:
    """Rows: prompts (first seed that has a run); columns: methods; a label where a run has no render.
    Returns the runs whose render could not be read (labelled so in their cell)."""
    import matplotlib.pyplot as plt

    seed = min(run["seed"] for run in runs)
    table: dict[tuple[str, str], Mapping[str, Any]] = {
        (run["prompt"], run["method"]): run for run in runs if run["seed"] == seed
    }
    prompts = sorted({run["prompt"]: run["prompt_index"] for run in runs}.items(), key=lambda item: item[1])
    unreadable: list[str] = []
    label_inches, cell_inches = 1.8, 1.6
    width = label_inches + cell_inches * len(methods)
    height = 0.7 + cell_inches * len(prompts)
    figure = _figure(width, height)
    grid = figure.add_gridspec(
        len(prompts),
        len(methods),
        left=label_inches / width,
        right=0.99,
        top=1 - 0.35 / height,
        bottom=0.35 / height,
    )
    for row, (prompt, _) in enumerate(prompts):
        for column, method in enumerate(methods):
            axes = figure.add_subplot(grid[row, column])
            axes.set_xticks([])
            axes.set_yticks([])
            run = table.get((prompt, method))
            try:
                image = cell_image(run, view) if run is not None else None
                label = "not planned" if run is None else (run["outcome"] or run["status"])
            except UnreadableRender:
                image, label = None, "unreadable render"
                unreadable.append(run["run_id"])
            if image is not None:
                axes.imshow(image)
            else:
                axes.text(0.5, 0.5, label, ha="center", va="center", fontsize=8, transform=axes.transAxes)
            if row == 0:
                axes.set_title(method, fontsize=9)
            if column == 0:
                axes.set_ylabel(textwrap.fill(prompt, 26), fontsize=6, rotation=0, ha="right", va="center")
    figure.text(0.01, 0.01, f"test view {view}, seed {seed}", fontsize=8, va="bottom")
    figure.savefig(path)
    plt.close(figure)
    return unreadable


def write_metric_plot(
    path: pathlib.Path,
    runs: Sequence[Mapping[str, Any]],
    scores: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    names: Mapping[str, str],
) -> None:
    """One panel per metric: each method's per-run values (box plot and the points)."""
    import matplotlib.pyplot as plt

    method_of = {run["run_id"]: run["method"] for run in runs}
    metrics = list(names)
    figure = _figure(
        max(4.0, 1.2 * len(methods)) * max(1, min(3, len(metrics))), 3.2 * max(1, -(-len(metrics) // 3))
    )
    for index, metric in enumerate(metrics or ["(no scores)"]):
        axes = figure.add_subplot(max(1, -(-len(metrics) // 3)), max(1, min(3, len(metrics))), index + 1)
        values = [
            [
                score["value"]
                for score in scores
                if score["metric"] == metric and method_of.get(score["run_id"]) == method
            ]
            for method in methods
        ]
        if any(values):
            axes.boxplot([column if column else [float("nan")] for column in values], showfliers=False)
            for position, column in enumerate(values, start=1):
                axes.plot([position] * len(column), column, "o", alpha=0.5, markersize=3)
        axes.set_xticks(range(1, len(methods) + 1))
        axes.set_xticklabels(methods, rotation=30, fontsize=8)
        axes.set_title(names.get(metric, metric), fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
