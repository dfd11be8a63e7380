"""Runs of configs/sdi-gs.yaml (and sds-gs.yaml) through threestudio's launch.py with threestudio-3dgs.

Each returns a JSON-able report that tests/test_gaussians_threestudio.py checks:

* :func:`conventions` — the harness's camera matrices equal threestudio's ``get_cam_info_gaussian``, and a
  small Gaussian rendered by threestudio-3dgs's renderer at the 3D lab's cameras lands on the pixel
  whose lab ray passes through it (the known-answer runs compare the two renderers' images);
* :func:`smoke`, :func:`perp_neg` — 3 steps at batch 4 with Perp-Neg off / on, validation, test video;
* :func:`advanced` — the ``diff-gaussian-rasterizer-advanced`` renderer (depth and alpha: the depth TV
  loss of gaussian-splatting-system runs);
* :func:`sds` — configs/sds-gs.yaml with threestudio's own ``stable-diffusion-guidance``;
* :func:`resume` — 4 steps straight == 2 steps + ``resume=`` + 2 steps, with the ``sdi-guidance-state``
  mixin; :func:`resume_without_mixin` — the same with plain ``gaussian-splatting-system``: its
  checkpoints do not hold the guidance's state, so the resumed draws differ (documented behaviour);
* :func:`noise_field` — ``noise: consistent-noise`` on the Gaussians through densification and pruning,
  its state in the checkpoint and a resume with it;
* :func:`test_again`, :func:`export` — ``--test`` and ``--export`` (``gaussian-mesh-exporter``) from the
  checkpoint of :func:`resume`;
* :func:`known_answer` — the exact prior's ball recovered through threestudio-3dgs (:mod:`known_answer_gs`).
"""

from __future__ import annotations

import math
from typing import Any

from harness import DETERMINISTIC, steps
from harness3dgs import SIZE, GaussianHarness


def finite(values: list[float]) -> bool:
    return bool(values) and all(math.isfinite(value) for value in values)


def files_of(trial) -> dict[str, int]:
    save = trial / "save"
    return {str(path.relative_to(save)): path.stat().st_size for path in save.rglob("*") if path.is_file()}


def _checkpoint(path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def _weights_equal(first: dict, second: dict) -> bool:
    import torch

    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def summary(g: GaussianHarness, name: str, run) -> dict[str, Any]:
    logged = [step["logged"] for step in run.steps]
    return {
        "global_step": int(run.system.global_step),
        "system_class": type(run.system).__name__,
        "guidance_class": type(run.system.guidance).__name__,
        "losses": [step["loss"] for step in run.steps],
        "timesteps": [entry.get("train/timestep") for entry in logged],
        "model_evaluations": [entry.get("train/model_evaluations") for entry in logged],
        "gauss_num": [entry.get("gauss_num") for entry in logged],
        "logged": logged[-1] if logged else {},
        "geometry_params_changed": run.changed_parameters("geometry."),
        "files": files_of(g.h.trial(name)),
    }


# ------------------------------------------------------------------ conventions
def conventions(g: GaussianHarness) -> dict[str, Any]:
    import torch
    from gaussian_cameras import gaussian_camera
    from threestudio.utils.ops import get_cam_info_gaussian

    from threestudio_sdi.experimental.lab3d import CameraRanges, sample_cameras
    from threestudio_sdi.experimental.lab3d.cameras import camera_rays

    generator = torch.Generator().manual_seed(0)
    cameras = sample_cameras(6, CameraRanges(), generator)
    matrix_error = 0.0
    for index in range(6):
        c2w, fovy = cameras.c2w[index].float(), math.radians(float(cameras.fovy[index]))
        theirs = get_cam_info_gaussian(c2w=c2w, fovx=fovy, fovy=fovy, znear=0.1, zfar=100)
        ours = gaussian_camera(c2w.double(), fovy, SIZE, SIZE)
        for mine, other in zip((ours.viewmatrix, ours.projmatrix, ours.campos), theirs):
            matrix_error = max(matrix_error, float((mine.float() - other.cpu()).abs().max()))

    # one small dark Gaussian on white at points inside the lab's box, rendered by threestudio-3dgs
    renderer = _renderer(g, "diff-gaussian-rasterizer")
    points = torch.tensor([[0.3, -0.2, 0.1], [-0.4, 0.25, -0.3], [0.1, 0.5, 0.4]])
    origins, directions = camera_rays(cameras, SIZE)
    hits, mirrored_hits, total, worst = 0, 0, 0, 0
    for point in points:
        _set_single_gaussian(renderer.geometry, point)
        images = _render_views(g, renderer, cameras.c2w.float(), torch.deg2rad(cameras.fovy.float()))
        for view in range(6):
            dark = images[view].sum(0)
            found = divmod(int(dark.argmin()), SIZE)
            offset = point.double() - origins[view]
            along = (directions[view] * offset).sum(-1, keepdim=True)
            distance = (offset - along * directions[view]).norm(dim=-1)
            expected = divmod(int(distance.argmin()), SIZE)
            total += 1
            hits += found == expected
            worst = max(worst, abs(found[0] - expected[0]), abs(found[1] - expected[1]))
            mirrored_hits += found == (expected[0], SIZE - 1 - expected[1])
    return {
        "matrix_max_error": matrix_error,
        "point_hits": hits,
        "point_mirrored_hits": mirrored_hits,
        "point_views": total,
        "point_max_pixel_error": worst,
    }


def _renderer(g: GaussianHarness, renderer_type: str) -> Any:
    """threestudio-3dgs's renderer over a fresh ``gaussian-splatting`` geometry (eval mode)."""
    threestudio = g.h.threestudio
    geometry = threestudio.find("gaussian-splatting")({"init_num_pts": 4})
    geometry.update_learning_rate(0)  # also sets color_clip, which get_features reads
    material = threestudio.find("no-material")({"n_output_dims": 0})
    background = threestudio.find("solid-color-background")({})
    renderer = threestudio.find(renderer_type)(
        {"invert_bg_prob": 1.0}, geometry=geometry, material=material, background=background
    )
    return renderer.eval()


def _set_single_gaussian(geometry: Any, point: Any) -> None:
    import torch

    with torch.no_grad():
        count = geometry.get_xyz.shape[0]
        keep = torch.zeros(count, dtype=torch.bool)
        keep[0] = True
        geometry.prune_points(~keep)
        geometry._xyz.copy_(point[None])
        geometry._scaling.fill_(math.log(0.01))
        geometry._opacity.fill_(6.0)
        geometry._features_dc.fill_(-2.0)  # colour 0.5 - 2·C0 < 0: black


def _render_views(g: GaussianHarness, renderer: Any, c2w: Any, fovy: Any) -> Any:
    """[B, 3, H, W] renders on white (eval mode inverts the renderer's background: pass black)."""
    import torch

    module = g.gs_module("geometry.gaussian_base")
    from threestudio.utils.ops import get_cam_info_gaussian

    images = []
    for index in range(c2w.shape[0]):
        w2c, proj, centre = get_cam_info_gaussian(
            c2w=c2w[index], fovx=fovy[index], fovy=fovy[index], znear=0.1, zfar=100
        )
        camera = module.Camera(
            FoVx=fovy[index],
            FoVy=fovy[index],
            image_width=SIZE,
            image_height=SIZE,
            world_view_transform=w2c,
            full_proj_transform=proj,
            camera_center=centre,
        )
        with torch.no_grad():
            images.append(renderer(camera, torch.zeros(3))["render"])
    return torch.stack(images)


# ------------------------------------------------------------------ training
def smoke(g: GaussianHarness) -> dict[str, Any]:
    """3 steps of sdi-gs.yaml at batch 4 (Perp-Neg off, as the config), validation, test views, video."""
    return summary(g, "smoke", g.h.run(g.sdi_gs("smoke", steps(3))))


def perp_neg(g: GaussianHarness) -> dict[str, Any]:
    """The same with Perp-Neg on (three negatives per view, each paired with its own view)."""
    layer = {"system": {"prompt_processor": {"use_perp_neg": True}}}
    run = g.h.run(g.sdi_gs("perp-neg", layer, steps(3)))
    report = summary(g, "perp-neg", run)
    report["use_perp_neg"] = bool(run.system.prompt_processor.cfg.use_perp_neg)
    return report


def advanced(g: GaussianHarness) -> dict[str, Any]:
    """2 steps with ``diff-gaussian-rasterizer-advanced`` (it also returns depth and alpha). Its depth TV
    loss must be off: gaussian-splatting-system computes it from ``comp_normal`` too, which this renderer
    does not return (threestudio-3dgs uses it only in its Zero123 system)."""
    layer = {
        "system": {
            "renderer_type": "diff-gaussian-rasterizer-advanced",
            "loss": {"lambda_depth_tv_loss": 0.0},
        }
    }
    return summary(g, "advanced", g.h.run(g.sdi_gs("advanced", layer, steps(2))))


def sds(g: GaussianHarness) -> dict[str, Any]:
    """1 step of configs/sds-gs.yaml: threestudio's stable-diffusion-guidance on the same system (it
    resizes every render to 512×512, so even the tiny SD takes minutes a step on a CPU)."""
    return summary(g, "sds", g.h.run(g.sds_gs("sds", steps(1))))


NO_DENSIFICATION = {
    "data": DETERMINISTIC["data"],
    "system": {
        "geometry": {"densify_from_iter": 1000, "prune_from_iter": 1000},
        "renderer": {"invert_bg_prob": 1.0},
    },
}
"""Resume checks: threestudio's cameras fixed (tests/threestudio_cpu/harness.py), no densification in the window (its split draws from the global RNG, which Lightning
does not restore) and no background inversion (numpy's RNG)."""


def _resume_pair(g: GaussianHarness, name: str, *layers: dict[str, Any]) -> dict[str, Any]:
    config = g.sdi_gs(f"{name}-straight", NO_DENSIFICATION, *layers, steps(4, checkpoint_every=2))
    straight = g.h.run(config)
    trial = g.h.trial(f"{name}-straight")
    ckpt = trial / "ckpts" / "epoch=0-step=2.ckpt"
    resumed = g.h.run(trial / "configs" / "parsed.yaml", "train", f"resume={ckpt}", f"tag={name}-resumed")
    return {
        "straight_steps": [step["global_step"] for step in straight.steps],
        "resumed_steps": [step["global_step"] for step in resumed.steps],
        "straight_losses": [step["loss"] for step in straight.steps],
        "resumed_losses": [step["loss"] for step in resumed.steps],
        "straight_timesteps": [step["logged"]["train/timestep"] for step in straight.steps],
        "resumed_timesteps": [step["logged"]["train/timestep"] for step in resumed.steps],
        "final_weights_equal": _weights_equal(
            _checkpoint(trial / "ckpts" / "epoch=0-step=4.ckpt")["state_dict"],
            _checkpoint(g.h.trial(f"{name}-resumed") / "ckpts" / "epoch=0-step=4.ckpt")["state_dict"],
        ),
        "checkpoint_keys": sorted(_checkpoint(ckpt)),
        "system_class": type(resumed.system).__name__,
        "resumed_generator_equals_straight": bool(
            (
                resumed.system.guidance.generator.get_state()
                == straight.system.guidance.generator.get_state()
            ).all()
        ),
    }


def resume(g: GaussianHarness) -> dict[str, Any]:
    """sdi-gs.yaml (with the mixin): 4 steps straight (checkpoints at 2 and 4) vs resume at 2."""
    return _resume_pair(g, "resume")


def resume_without_mixin(g: GaussianHarness) -> dict[str, Any]:
    """The same with plain ``gaussian-splatting-system``: the checkpoint lacks the guidance's state."""
    return _resume_pair(g, "plain", {"system_type": "gaussian-splatting-system"})


def noise_field(g: GaussianHarness) -> dict[str, Any]:
    """consistent-noise on the Gaussians: densification and pruning every 2 steps (threshold 0: every
    visible Gaussian is cloned or split), the field's rows follow; its state is checkpointed."""
    import torch

    layer = {
        "system": {
            "guidance": {"noise": "consistent-noise"},
            "geometry": {
                "densify_from_iter": 1,
                "prune_from_iter": 1,
                "densification_interval": 2,
                "prune_interval": 2,
                "densify_grad_threshold": 0.0,
                "split_thresh": 0.05,
            },
        }
    }
    run = g.h.run(g.sdi_gs("noise-field", layer, steps(5, checkpoint_every=5)))
    system = run.system
    source = system.guidance.noise_field
    batch = next(iter(run.trainer.datamodule.train_dataloader()))
    shape = (batch["c2w"].shape[0], 4, 8, 8)
    first, second = source(batch, shape), source(batch, shape)
    checkpoint = _checkpoint(g.h.trial("noise-field") / "ckpts" / "epoch=0-step=5.ckpt")
    state = checkpoint.get("sdi_guidance_state", {}).get("noise_field", {})
    report = summary(g, "noise-field", run)
    report.update(
        source=type(source).__name__,
        rows=int(source.values.shape[0]),
        gaussians=int(system.geometry.get_xyz.shape[0]),
        kappa_mean=float(first.mean()),
        kappa_std=float(first.std()),
        kappa_finite=bool(first.isfinite().all()),
        kappa_repeatable=bool(torch.equal(first, second)),
        checkpoint_rows=int(state["values"].shape[0]) if "values" in state else None,
    )
    return report


def test_again(g: GaussianHarness) -> dict[str, Any]:
    """``--test`` from the last checkpoint of :func:`resume`: the test views, the video, the point cloud."""
    trial = g.h.trial("resume-straight")
    g.h.run(
        trial / "configs" / "parsed.yaml", "test", f"resume={trial / 'ckpts' / 'last.ckpt'}", "tag=test-again"
    )
    return {"files": files_of(g.h.trial("test-again"))}


def _export(g: GaussianHarness, tag: str) -> dict[str, Any]:
    trial = g.h.trial("resume-straight")
    run = g.h.run(
        trial / "configs" / "parsed.yaml",
        "export",
        f"resume={trial / 'ckpts' / 'last.ckpt'}",
        f"tag={tag}",
        keep_error=True,
    )
    files = files_of(g.h.trial(tag)) if (g.h.trial(tag) / "save").is_dir() else {}
    obj = next((name for name in files if name.endswith(".obj")), None)
    text = (g.h.trial(tag) / "save" / obj).read_text() if obj else ""
    return {
        "error": None if run.error is None else f"{type(run.error).__name__}: {run.error}",
        "files": files,
        "vertices": sum(line.startswith("v ") for line in text.splitlines()),
        "faces": sum(line.startswith("f ") for line in text.splitlines()),
    }


def export(g: GaussianHarness) -> dict[str, Any]:
    """``--export`` from the last checkpoint of :func:`resume` with ``gaussian-mesh-exporter``.

    As threestudio-3dgs 8c2ab7b is, it fails for any guidance: ``gaussian_io.extract_fields`` calls
    ``gaussian_3d_coeff``, which ``gaussian_base`` defines and ``gaussian_io`` never imports. With that one
    name given to ``gaussian_io`` (the upstream fix, applied here in memory only), the export runs:
    marching cubes of the Gaussians' density, cleaned by pymeshlab, written as an OBJ.
    """
    as_is = _export(g, "export-as-is")
    gaussian_io = g.gs_module("geometry.gaussian_io")
    gaussian_io.gaussian_3d_coeff = g.gs_module("geometry.gaussian_base").gaussian_3d_coeff
    try:
        fixed = _export(g, "export")
    finally:
        del gaussian_io.gaussian_3d_coeff
    return {"as_is": as_is, "with_the_missing_import": fixed}


def known_answer(g: GaussianHarness) -> dict[str, Any]:
    """The exact prior's ball (one variant) distilled by sdi-gs.yaml's SDI into threestudio-3dgs's
    Gaussians for 100 steps, scored on held-out views (:mod:`known_answer_gs`, seed 0)."""
    import known_answer_gs

    spec = {
        "class": "ball",
        "variants_per_class": 1,
        "method": "sdi",
        "seed": 0,
        "steps": 100,
        "initial_points": known_answer_gs.INITIAL_POINTS,
        "max_points": known_answer_gs.MAX_POINTS,
        "sdi_loss": None,
    }
    return known_answer_gs.run_one(g, spec)


SCENARIOS = {
    "conventions": conventions,
    "smoke": smoke,
    "perp_neg": perp_neg,
    "advanced": advanced,
    "sds": sds,
    "resume": resume,
    "resume_without_mixin": resume_without_mixin,
    "noise_field": noise_field,
    "test_again": test_again,
    "export": export,
    "known_answer": known_answer,
}
"""In order: ``test_again`` and ``export`` use the checkpoints of ``resume``."""
