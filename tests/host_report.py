"""The report of a real-host harness (threestudio, threestudio-3dgs) run once per test module.

Each real-host test module runs its harness script in a subprocess with THREESTUDIO_PYTHON (default: this
Python), which must have the host's requirements (tests/threestudio_cpu/make_venv.sh --full), and checks
the JSON report it writes; a scenario that raised is stored as ``{"error": traceback}``.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterable

import pytest

TIMEOUT_SECONDS = 3600
"""A hung harness is stopped after this long; it is a timeout, not a performance bound."""


def run_harness(script: pathlib.Path, arguments: list[str], report_path: pathlib.Path) -> dict:
    """The report ``script`` writes to ``report_path``; the test fails with its output's tail if it fails."""
    python = os.environ.get("THREESTUDIO_PYTHON", sys.executable)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [python, str(script), *arguments], env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS
    )
    if result.returncode != 0 or not report_path.is_file():
        pytest.fail(
            f"{script.name} failed ({result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
        )
    return json.loads(report_path.read_text())


def section(report: dict, name: str) -> dict:
    """A scenario's report; its traceback as the failure if it raised."""
    value = report[name]
    if isinstance(value, dict) and set(value) == {"error"} and isinstance(value["error"], str):
        pytest.fail(f"scenario {name} raised:\n{value['error']}")
    return value


def all_finite(values: Iterable[float]) -> bool:
    values = list(values)
    return bool(values) and all(math.isfinite(value) for value in values)
