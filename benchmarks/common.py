"""Helpers shared by the benchmark scripts: the machine description written into every result file,
Markdown tables, mean ± std over seeds, median and interquartile range over timing rounds. (The
distillation itself is the lab's, :mod:`threestudio_sdi.experimental.lab`.)
"""

from __future__ import annotations

import os
import pathlib
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from threestudio_sdi.score_distillation import GuidanceOutput  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
Probe = Callable[[int, int, Tensor, GuidanceOutput], None]


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU, threads, load, versions, and the GPU if one is present
    (detected, never assumed)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": load,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "gpu_present": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda,
    }
    for name in ("diffusers", "transformers"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    return info


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; floats with 3 significant digits, None as '–'."""

    def cell(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            if value != value:
                return "nan"
            return f"{value:.3g}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation of finite values; nan when there are none."""
    finite = [float(v) for v in values if v == v and abs(v) != float("inf")]
    if not finite:
        return float("nan"), float("nan")
    mean = sum(finite) / len(finite)
    return mean, (sum((v - mean) ** 2 for v in finite) / len(finite)) ** 0.5


def pm(values: Sequence[float]) -> str:
    """'mean ± std' over seeds (just the value for one seed)."""
    mean, std = mean_std(values)
    if mean != mean:
        return "nan"
    if len(values) == 1:
        return f"{mean:.3g}"
    return f"{mean:.3g} ± {std:.2g}"


def median_iqr(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile) of ``values`` (quartiles interpolated inclusively, so a
    single value gives it three times)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("median_iqr needs at least one value")
    if len(values) == 1:
        return values[0], values[0], values[0]
    first, _, third = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), first, third


def spread(values: Sequence[float] | None, digits: int = 2) -> str:
    """'median (Q1–Q3)' of ``values``; '–' for None or none."""
    if not values:
        return "–"
    median, first, third = median_iqr(values)
    return f"{median:.{digits}f} ({first:.{digits}f}–{third:.{digits}f})"
