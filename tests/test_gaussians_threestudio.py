"""sdi-guidance driving the REAL threestudio-3dgs on the CPU (skipped unless THREESTUDIO_ROOT and
THREESTUDIO_3DGS_ROOT are set).

    THREESTUDIO_ROOT=/path/to/threestudio THREESTUDIO_3DGS_ROOT=/path/to/threestudio-3dgs \
        THREESTUDIO_PYTHON=/tmp/venv-ts/bin/python python -m pytest tests/test_gaussians_threestudio.py

runs tests/threestudio_3dgs_cpu/run_3dgs.py once in a subprocess with THREESTUDIO_PYTHON (default: this
Python), which needs threestudio's requirements, plyfile and pymeshlab (tests/threestudio_cpu/make_venv.sh
--full), and checks its report. threestudio-3dgs's code runs unmodified; its CUDA rasterizer and k-NN
are the pure-torch stand-ins of tests/threestudio_3dgs_cpu/stubs (tested in test_gaussians_standins.py)
and its hard-coded ``"cuda"`` goes through the harness's shim. Nothing is written into either checkout.
"""

from __future__ import annotations

import os
import pathlib

import pytest
from host_report import all_finite, run_harness, section

RUNNER = pathlib.Path(__file__).resolve().parent / "threestudio_3dgs_cpu" / "run_3dgs.py"
ROOT = os.environ.get("THREESTUDIO_ROOT")
GS_ROOT = os.environ.get("THREESTUDIO_3DGS_ROOT")

pytestmark = pytest.mark.skipif(
    not (ROOT and GS_ROOT),
    reason="THREESTUDIO_ROOT and THREESTUDIO_3DGS_ROOT are not both set: point them to a threestudio and a "
    "threestudio-3dgs checkout to run sdi-guidance inside threestudio-3dgs",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("threestudio-3dgs-run")
    report_path = workdir / "report.json"
    roots = ["--threestudio-root", ROOT, "--threestudio-3dgs-root", GS_ROOT]
    data = run_harness(RUNNER, [*roots, "--workdir", str(workdir), "--report", str(report_path)], report_path)
    print(f"threestudio-3dgs harness, seconds per scenario: {data['seconds']}")
    return data


def test_the_shim_covers_threestudio_3dgs_and_rewrites_its_cuda(report):
    shimmed = report["shimmed"]
    assert "threestudio-3dgs.geometry.gaussian_base" in shimmed and "threestudio.utils.ops" in shimmed
    assert "threestudio-3dgs.renderer.diff_gaussian_rasterizer" in shimmed
    assert report["cuda_rewrites"]["zeros"] > 0 and report["cuda_rewrites"]["zeros_like"] > 0


def test_cameras_agree_with_threestudio_and_with_the_lab(report):
    """The harness's matrices are threestudio's; a Gaussian at p renders where the lab's ray through p
    leaves the camera (measured: 17 of 18 views on the pixel, one 1 px off; none mirrored)."""
    conventions = section(report, "conventions")
    assert conventions["matrix_max_error"] < 1e-5
    assert conventions["point_hits"] >= conventions["point_views"] - 2
    assert conventions["point_max_pixel_error"] <= 1 and conventions["point_mirrored_hits"] == 0


@pytest.mark.parametrize("name", ["smoke", "perp_neg"])
def test_sdi_guidance_trains_threestudio_3dgs_at_batch_4(report, name):
    run = section(report, name)
    assert run["system_class"] == "gaussian-splatting-system.sdi-guidance-state"
    assert run["guidance_class"] == "SDIGuidance"
    assert run["global_step"] == 3 and all_finite(run["losses"])
    assert {"geometry._xyz", "geometry._features_dc", "geometry._opacity"} <= set(
        run["geometry_params_changed"]
    )
    assert run["timesteps"] == [999, 733, 466]  # the paper preset's anneal over 3 steps
    assert all(evaluations >= 3 for evaluations in run["model_evaluations"])  # an inversion every step
    for name_ in ("it3-0.png", "it3-test/0.png", "it3-test/1.png", "it3-test.mp4", "point_cloud.ply"):
        assert run["files"].get(name_, 0) > 0, name_


def test_perp_neg_changes_the_step(report):
    off, on = section(report, "smoke"), section(report, "perp_neg")
    assert section(report, "perp_neg")["use_perp_neg"]
    assert off["losses"] != on["losses"]


def test_the_advanced_renderer_trains_too(report):
    run = section(report, "advanced")
    assert run["global_step"] == 2 and all_finite(run["losses"]) and run["geometry_params_changed"]


def test_sds_gs_runs_threestudios_own_sds_on_the_same_system(report):
    run = section(report, "sds")
    assert run["guidance_class"] == "StableDiffusionGuidance" and run["system_class"] == "GaussianSplatting"
    assert run["global_step"] == 1 and all_finite(run["losses"])
    assert "train/loss_sds" in run["logged"] and run["geometry_params_changed"]


def test_resume_through_launch_py_continues_exactly_with_the_mixin(report):
    """4 steps straight == 2 steps, ``resume=`` the step-2 checkpoint, 2 more: same losses, t, weights
    and generator, because the checkpoint holds ``sdi_guidance_state``."""
    resume = section(report, "resume")
    assert resume["straight_steps"] == [1, 2, 3, 4] and resume["resumed_steps"] == [3, 4]
    assert resume["resumed_losses"] == resume["straight_losses"][2:]
    assert resume["resumed_timesteps"] == resume["straight_timesteps"][2:] == [600, 400]
    assert resume["final_weights_equal"] and resume["resumed_generator_equals_straight"]
    assert "sdi_guidance_state" in resume["checkpoint_keys"]
    assert len(set(resume["straight_losses"])) == 4


def test_without_the_mixin_a_resume_redraws_the_guidances_noise(report):
    """Documented behaviour of plain gaussian-splatting-system: no guidance state in its checkpoints, so
    the resumed run's generator restarts from the seed (t still follows the step: same run length)."""
    plain = section(report, "resume_without_mixin")
    assert plain["system_class"] == "GaussianSplatting"
    assert "sdi_guidance_state" not in plain["checkpoint_keys"]
    assert plain["resumed_timesteps"] == plain["straight_timesteps"][2:]
    assert plain["resumed_losses"] != plain["straight_losses"][2:]
    assert not plain["final_weights_equal"] and not plain["resumed_generator_equals_straight"]


def test_consistent_noise_lives_on_the_gaussians_through_densification(report):
    run = section(report, "noise_field")
    assert run["source"] == "GaussianNoiseField" and all_finite(run["losses"])
    assert run["model_evaluations"] == [1, 1, 1, 1, 1]  # no inversion: the field is the noise
    assert run["gauss_num"][0] == 256 and run["gaussians"] > 256  # densified (and split) twice
    assert run["rows"] == run["gaussians"] == run["checkpoint_rows"]
    assert run["kappa_finite"] and run["kappa_repeatable"]
    assert abs(run["kappa_mean"]) < 0.2 and 0.7 < run["kappa_std"] < 1.3


def test_test_mode_renders_from_a_checkpoint(report):
    files = section(report, "test_again")["files"]
    assert files.get("it0-test.mp4", 0) > 0 and files.get("point_cloud.ply", 0) > 0


def test_mesh_export_needs_threestudio_3dgs_missing_import_and_then_writes_a_mesh(report):
    """threestudio-3dgs 8c2ab7b's gaussian-mesh-exporter raises NameError (gaussian_3d_coeff is not
    imported in gaussian_io.py) whatever the guidance; given that name, our run exports an OBJ."""
    export = section(report, "export")
    assert export["as_is"]["error"] == "NameError: name 'gaussian_3d_coeff' is not defined"
    fixed = export["with_the_missing_import"]
    assert fixed["error"] is None and fixed["vertices"] > 100 and fixed["faces"] > 100
    assert any(name.endswith("-export/model.obj") for name in fixed["files"])


def test_the_known_answer_ball_is_recovered_through_threestudio_3dgs(report):
    """The exact prior's ball (one variant) distilled into threestudio-3dgs's Gaussians by sdi-gs.yaml's
    SDI for 100 steps, scored on the lab's held-out views. Measured (seed 0): KNOWN_ANSWER_MEASURED."""
    run = section(report, "known_answer")
    final, initial = run["final"], run["initial"]
    print(f"known answer on Gaussians: {final}, initial {initial}, densification {run['densification']}")
    assert run["steps"] == 100 and run["losses_finite"] and not final["diverged"]
    assert final["psnr_nearest"] >= max(17.0, initial["psnr_nearest"] + 8)
    assert final["ssim_nearest"] >= 0.65 and final["silhouette_iou"] >= 0.85
    assert run["densification"]["added"] > 0  # densification fires at sdi-gs.yaml's loss scale
    assert run["model_evaluations"] >= 3 * 100  # an inversion every step
