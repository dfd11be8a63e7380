"""The plugin inside a REAL threestudio checkout, on the CPU (skipped unless THREESTUDIO_ROOT is set).

    THREESTUDIO_ROOT=/path/to/threestudio python -m pytest tests/test_threestudio_integration.py

runs tests/threestudio_cpu/run_smoke.py in a subprocess with the Python of THREESTUDIO_PYTHON (default:
this one), which must have threestudio's requirements and this package installed (README, "Using SDI in threestudio").
The CPU stand-ins for tinycudann / nvdiffrast / torchvision and the pure-torch nerfacc replacements live
in tests/threestudio_cpu/; nothing is written into the threestudio checkout.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys
import time

import pytest

HARNESS = pathlib.Path(__file__).resolve().parent / "threestudio_cpu" / "run_smoke.py"
ROOT = os.environ.get("THREESTUDIO_ROOT")

pytestmark = pytest.mark.skipif(
    not ROOT,
    reason="THREESTUDIO_ROOT is not set: point it to a threestudio checkout to run the real-threestudio test",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = pathlib.Path(ROOT)
    if not (root / "threestudio" / "__init__.py").is_file() or not (root / "launch.py").is_file():
        pytest.fail(f"THREESTUDIO_ROOT={ROOT} is not a threestudio checkout (no threestudio/ or launch.py)")
    workdir = tmp_path_factory.mktemp("threestudio-run")
    report_path = workdir / "report.json"
    python = os.environ.get("THREESTUDIO_PYTHON", sys.executable)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "CUDA_VISIBLE_DEVICES": ""}
    started = time.perf_counter()
    result = subprocess.run(
        [
            python,
            str(HARNESS),
            "--threestudio-root",
            str(root),
            "--workdir",
            str(workdir),
            "--report",
            str(report_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        pytest.fail(
            f"run_smoke.py failed ({result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
        )
    data = json.loads(report_path.read_text())
    data["wall_seconds"] = elapsed
    print(f"real-threestudio smoke run: {elapsed:.1f} s")
    return data


def test_custom_folder_registers_beside_the_builtin_sdi(report):
    assert report["builtin_modules"] >= 50
    registered = report["registered"]
    assert registered["sdi-guidance"] == "threestudio_sdi.threestudio.guidance.SDIGuidance"
    assert registered["sdi-ext-system"] == "threestudio_sdi.threestudio.system.SDIExtSystem"
    assert registered["stable-diffusion-sdi-guidance"].startswith("threestudio.models.guidance.")
    assert registered["sdi-system"].startswith("threestudio.systems.")


def test_ab_configs_fit_threestudios_builtins(report):
    assert report["builtin_configs"] == {
        "sds.yaml": ["dreamfusion-system", "stable-diffusion-guidance"],
        "vsd.yaml": ["prolificdreamer-system", "stable-diffusion-vsd-guidance"],
    }


def test_three_training_steps_move_the_geometry(report):
    assert report["global_step"] == 3
    assert len(report["losses"]) == 3 and all(math.isfinite(loss) for loss in report["losses"])
    assert math.isfinite(report["logged"]["train/loss_sdi"])
    for key in ("orient", "sparsity", "opaque", "z_variance", "convex"):
        assert math.isfinite(report["logged"][f"train/loss_{key}"]), key
    assert report["geometry_params_changed"], "no geometry parameter changed"


def test_validation_image_and_test_video_exist(report):
    files, sizes = report["files"], report["file_sizes"]
    for name in ("it3-0.png", "it3-test/0.png", "it3-test.mp4"):
        assert name in files and sizes[name] > 0, name
    height, width, _ = report["validation_image_shape"]
    assert height == 32 and width >= 6 * 32  # render, normal, opacity, noisy, κ, target


def test_it_runs_in_under_five_minutes(report):
    assert report["wall_seconds"] < 300
