"""Consistent noise inside a REAL threestudio checkout, on the CPU (skipped unless THREESTUDIO_ROOT is set).

    THREESTUDIO_ROOT=/path/to/threestudio python -m pytest tests/test_threestudio_noise_field.py

runs ``tests/threestudio_cpu/run_frontier.py --check`` once in a subprocess (THREESTUDIO_PYTHON, default
this Python, with threestudio's requirements: tests/threestudio_cpu/make_venv.sh --full): short
known-answer runs of ``sdi-ext-system`` with threestudio's ``implicit-volume`` and
``nerf-volume-renderer`` and ``sdi-guidance``'s ``consistent-noise`` (both attachments, and the
low-frequency shared component) at a batch of 4 views, then a resume, then a two-strategy frontier of a
few steps. The host-free parts of the same known answers (whitening, empty volume, the source against
the 3D lab, the state) run everywhere in tests/test_noise_field.py.
"""

from __future__ import annotations

import math
import os
import pathlib

import pytest
from host_report import run_harness

RUNNER = pathlib.Path(__file__).resolve().parent / "threestudio_cpu" / "run_frontier.py"
ROOT = os.environ.get("THREESTUDIO_ROOT")

pytestmark = pytest.mark.skipif(
    not ROOT,
    reason="THREESTUDIO_ROOT is not set: point it to a threestudio checkout to run the real-threestudio test",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("threestudio-noise-field")
    report_path = workdir / "check.json"
    arguments = ["--threestudio-root", str(ROOT), "--workdir", str(workdir / "work")]
    arguments += ["--check", str(report_path), "--methods", "sdi-paper-n1,consistent-shared-10"]
    return run_harness(RUNNER, [*arguments, "--classes", "orb"], report_path)


@pytest.mark.parametrize("method", ["consistent-noise", "consistent-surface", "consistent-lowfreq-10"])
def test_the_nerf_field_is_bound_and_renders_unit_noise_at_the_guidances_shape(report, method):
    checked = report["noise_field"][method]
    assert checked["type"] == "NerfNoiseField"
    assert checked["attachment"] == ("surface" if method == "consistent-surface" else "integrated")
    assert checked["losses_finite"] and checked["evaluations_per_step"] == 1.0  # the prediction only
    kappa = checked["kappa"]
    assert kappa["shape"] == [4, 3, 32, 32] and checked["batch_views"] == 4 and kappa["finite"]
    # each pixel is N(0, 1) exactly (tests/test_noise_field.py); pooled over 12 288 correlated values:
    assert abs(kappa["mean"]) < 0.25 and 0.75 < kappa["std"] < 1.25, kappa
    assert checked["empty_equals_background"] < 1e-6  # an empty geometry shows the background noise
    expected_scale = 2 if method == "consistent-lowfreq-10" else 0
    assert checked["state"] == {
        "seed": 0,
        "field_resolution": 64,
        "shared": 0.1 if method == "consistent-lowfreq-10" else 0.0,
        "shared_scale": expected_scale,
    }


def test_a_resumed_run_continues_the_same_noise_and_refuses_another_field(report):
    resume = report["noise_field"]["resume"]
    assert len(resume["straight_losses"]) == 4 and len(resume["resumed_losses"]) == 2
    assert resume["resumed_losses"] == resume["straight_losses"][2:]  # bit for bit
    assert resume["checkpoint_noise_field"] == {
        "seed": 0,
        "field_resolution": 64,
        "shared": 0.1,
        "shared_scale": 0,
    }
    assert "seed=0 (config: 5)" in resume["other_seed_error"]


def test_the_frontier_runs_rows_with_the_labs_outcomes(report):
    rows = {row["method"]: row for row in report["frontier"]}
    assert set(rows) == {"sdi-paper-n1", "consistent-shared-10"}
    for row in rows.values():
        assert row["class"] == "orb" and row["finite"] and row["losses_finite"]
        for key in ("psnr_nearest", "psnr_class_mean", "sharpness", "view_consistency", "seconds"):
            assert math.isfinite(row[key])
    assert rows["consistent-shared-10"]["evaluations_per_step"] == 1.0
    assert rows["sdi-paper-n1"]["evaluations_per_step"] == 2.0  # one inversion hop + the prediction
