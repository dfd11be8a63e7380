"""The 3D lab's figure: a turntable row per method beside the truth (the class's variants and mean)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from ..lab.figures import save_image_grid


def save_turntables(
    truth_rows: Mapping[str, Tensor],
    method_rows: Mapping[str, Tensor],
    azimuths: Sequence[float],
    path: Path,
    title: str = "",
) -> Path:
    """One row of held-out renders [V, 3, H, W] (in [−1, 1]) per entry: the truth rows first, then the
    methods'; the columns are titled with the views' azimuths."""
    return save_image_grid(
        {**truth_rows, **method_rows},
        path,
        [f"{azimuth:.0f}°" for azimuth in azimuths],
        (-1.0, 1.0),
        title=title,
    )


def run_label(row: dict[str, Any]) -> str:
    """A method row's label: its name, the variant it landed nearest to, and the PSNR to it."""
    psnr = row.get("psnr_nearest")
    if psnr is None or not math.isfinite(psnr):
        return f"{row['method']}\n(diverged)" if row.get("diverged") else row["method"]
    return f"{row['method']}\n→ #{row['nearest_variant']} {psnr:.1f} dB"
