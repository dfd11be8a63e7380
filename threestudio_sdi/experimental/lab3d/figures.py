"""The 3D lab's figure: a turntable row per method beside the truth (the class's variants and mean)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from ..lab.figures import save_image_grid
from .report import verdict

CAPTION = (
    "Rows: the class's true variants (truth #k) and their per-view average (class mean), then each "
    "method's asset, from the same held-out views.\n"
    "recovered = PSNR ≥ 30 dB to a true variant; a blend = closer to the class mean than to any variant "
    "(mode averaging); red = the run diverged."
)


def save_turntables(
    truth_rows: Mapping[str, Tensor],
    method_rows: Mapping[str, tuple[dict[str, Any], Tensor]],
    azimuths: Sequence[float],
    path: Path,
    title: str = "",
) -> Path:
    """One row of held-out renders [V, 3, H, W] (in [−1, 1]) per entry: the truth rows first, then one
    per method (its run's row and renders), labelled with :func:`run_label` and marked in red across
    when the run diverged; the columns are titled with the views' azimuths."""
    rows = {**truth_rows}
    marks: dict[str, list[str]] = {}
    for run, turntable in method_rows.values():
        label = run_label(run)
        rows[label] = turntable
        if run.get("diverged"):
            marks[label] = ["diverged"] * turntable.shape[0]
    return save_image_grid(
        rows,
        path,
        [f"{azimuth:.0f}°" for azimuth in azimuths],
        (-1.0, 1.0),
        title=title,
        marks=marks,
        caption=CAPTION,
    )


def run_label(row: dict[str, Any]) -> str:
    """A method row's label: its name and :func:`~threestudio_sdi.experimental.lab3d.report.verdict`,
    and the views whose guidance went non-finite when there were any."""
    label = f"{row['method']}\n{verdict(row)}".replace(" (", "\n(", 1)
    skipped = row.get("nonfinite_views", 0)
    return f"{label}\n({skipped} non-finite views skipped)" if skipped else label
