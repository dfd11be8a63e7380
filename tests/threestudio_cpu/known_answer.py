"""The known-answer 3D run inside real threestudio: ``sdi-ext-system`` distils the lab's exact prior.

    python tests/threestudio_cpu/run_smoke.py --threestudio-root ... --workdir ... --only known_answer

threestudio's own pieces train, through its ``launch.py``: ``random-camera-datamodule`` (the lab's
camera ranges, no camera perturbation), ``implicit-volume`` (pure-torch frequency encoding and MLP,
the magic3d density blob of ``configs/sdi.yaml``, which is also the lab's initial asset),
``no-material`` (the lab's assets are unshaded), a fixed white ``solid-color-background`` (the lab
renders on white) and ``nerf-volume-renderer`` with the importance estimator, 32×32 px, 4 views per
step. ``sdi-guidance`` (``paper`` preset, CFG 7.5, 10 inversion steps) gets the lab's exact
view-conditioned prior through ``model_factory`` (:mod:`threestudio_sdi.experimental.lab3d.threestudio_prior`, all three
classes as in the lab, so that CFG's unconditional branch mixes them), the prompt naming the class.
Only ``loss_sdi`` trains (the lab distils without regularisers).

Afterwards the asset is rendered by threestudio's renderer at the lab's 8 held-out turntable views
(rays from threestudio's ``get_ray_directions`` / ``get_rays``, as its data module makes them) and
scored by the lab's metrics against the true assets rendered by the lab at the same cameras: PSNR and
SSIM to the nearest variant and to the class mean, sharpness, silhouette IoU, which variant, view
consistency, divergence, model evaluations. Two references frame the numbers: the initial blob,
scored the same way (the floor), and the same geometry fitted for the same steps directly to the
true renders (:func:`supervised_fit`, the ceiling of this geometry and optimiser at this length).
"""

from __future__ import annotations

import math
import time
from typing import Any

from harness import Harness, steps

from threestudio_sdi.experimental.lab3d.threestudio_prior import EXACT_PRIOR_FACTORY, exact_prior

CLASS_NAME = "ball"
MAX_STEPS = 300
VIEWS_PER_STEP = 4
LEARNING_RATE = 0.01
"""``configs/sdi.yaml``'s geometry learning rate (with its Adam betas (0.9, 0.99) and eps 1e-15)."""
IMAGE_SIZE = 32
EVAL_VIEWS = 8
"""Held-out turntable views, as the lab's (``LabSettings.eval_views``)."""
DIVERGED_IOU = 0.5
"""A run diverged when its asset is non-finite or its silhouette IoU with the nearest variant is below
this (the lab's rule, ``threestudio_sdi.experimental.lab3d.experiment``)."""

GEOMETRY = {
    "radius": 1.0,  # the box [-1, 1]^3 of the lab's assets
    "normal_type": None,
    "density_bias": "blob_magic3d",
    "density_activation": "softplus",
    "density_blob_scale": 10.0,
    "density_blob_std": 0.5,
    "pos_encoding_config": {"otype": "ProgressiveBandFrequency", "n_frequencies": 8, "include_xyz": True},
    "mlp_network_config": {
        "otype": "VanillaMLP",
        "activation": "ReLU",
        "output_activation": "none",
        "n_neurons": 64,
        "n_hidden_layers": 1,
    },
}
MATERIAL = {"n_output_dims": 3, "color_activation": "sigmoid"}
BACKGROUND = {"color": [1.0, 1.0, 1.0], "learned": False}
RENDERER = {
    "radius": 1.0,
    "estimator": "importance",
    "num_samples_per_ray": 16,
    "num_samples_per_ray_importance": 16,
    "near_plane": 0.5,  # the unit sphere from the nearest camera (distance 1.5) ...
    "far_plane": 3.0,  # ... to its far side from the farthest (distance 2.0)
}


def data_block(batch_size: int = VIEWS_PER_STEP) -> dict[str, Any]:
    """``random-camera-datamodule`` with the lab's ranges (``CameraRanges``: those of configs/sdi.yaml),
    held-out views at their centre, and no camera perturbation (the lab leaves it out; ``sdi-guidance``
    would hand the prior the perturbed ``c2w``)."""
    from threestudio_sdi.experimental.lab3d import CameraRanges

    ranges = CameraRanges()
    elevation, distance, fovy = ranges.centre
    return {
        "batch_size": batch_size,
        "width": IMAGE_SIZE,
        "height": IMAGE_SIZE,
        "eval_width": IMAGE_SIZE,
        "eval_height": IMAGE_SIZE,
        "elevation_range": list(ranges.elevation),
        "azimuth_range": list(ranges.azimuth),
        "camera_distance_range": list(ranges.distance),
        "fovy_range": list(ranges.fovy),
        "camera_perturb": 0.0,
        "center_perturb": 0.0,
        "up_perturb": 0.0,
        "eval_elevation_deg": elevation,
        "eval_camera_distance": distance,
        "eval_fovy_deg": fovy,
        "n_val_views": 1,
        "n_test_views": EVAL_VIEWS,
    }


RESET = {
    "data": None,
    "system": {
        key: None
        for key in ("geometry", "material", "background", "renderer", "loss", "optimizer", "prompt_processor")
    },
}
"""Blocks of configs/sdi.yaml replaced as a whole (an OmegaConf merge keeps old keys)."""


def config_layers(h: Harness, variants: int) -> tuple[dict[str, Any], ...]:
    """The layers over configs/sdi.yaml of one known-answer run (module docstring)."""
    system = {
        "geometry": GEOMETRY,
        "material_type": "no-material",
        "material": MATERIAL,
        "background_type": "solid-color-background",
        "background": BACKGROUND,
        "renderer": RENDERER,
        "prompt_processor": {
            "pretrained_model_name_or_path": "${system.guidance.pretrained_model_name_or_path}",
            "prompt": CLASS_NAME,
            "use_perp_neg": False,
            "spawn": False,
        },
        "guidance": {
            # names the prompt processor's Stable Diffusion (it follows this key); the model is the factory's
            "pretrained_model_name_or_path": str(h.tiny),
            "local_files_only": True,
            "half_precision_weights": False,
            "seed": 0,
            "model_factory": EXACT_PRIOR_FACTORY,
            "model_options": {"variants_per_class": variants},
        },
        "loss": {"lambda_sdi": 1.0, "lambda_convex": 0.0},
        "optimizer": {
            "name": "Adam",
            "args": {"lr": LEARNING_RATE, "betas": [0.9, 0.99], "eps": 1.0e-15},
            "params": {"geometry": {"lr": LEARNING_RATE}},
        },
    }
    trainer = {"log_every_n_steps": 1, "num_sanity_val_steps": 0, "precision": 32}
    return RESET, {"use_timestamp": False, "data": data_block(), "system": system, "trainer": trainer}


# ------------------------------------------------------------------ threestudio's renders of lab cameras
def threestudio_views(cameras: Any, size: int) -> dict[str, Any]:
    """Rays of ``cameras`` (the lab's :class:`Cameras`: ``c2w``, fovy in degrees) made as threestudio's
    data module makes them: ``get_ray_directions`` at focal 1, divided by the focal length, ``get_rays``."""
    import torch
    from threestudio.utils.ops import get_ray_directions, get_rays

    c2w = cameras.c2w.float()
    focal = 0.5 * size / torch.tan(0.5 * torch.deg2rad(cameras.fovy.float()))
    directions = get_ray_directions(H=size, W=size, focal=1.0)[None].repeat(c2w.shape[0], 1, 1, 1)
    directions[..., :2] = directions[..., :2] / focal[:, None, None, None]
    rays_o, rays_d = get_rays(directions, c2w, keepdim=True, normalize=True)
    return {"rays_o": rays_o, "rays_d": rays_d, "light_positions": c2w[:, :3, 3]}


def threestudio_render(renderer: Any, cameras: Any, size: int) -> tuple[Any, Any]:
    """``renderer``'s images of ``cameras`` (eval mode, no grad): rgb [V, 3, H, W] in [−1, 1] and
    opacity [V, H, W]."""
    import torch

    renderer.eval()
    with torch.no_grad():
        out = renderer(**threestudio_views(cameras, size))
    return out["comp_rgb"].permute(0, 3, 1, 2).double() * 2 - 1, out["opacity"][..., 0].double()


def scored(geometry: Any, renderer: Any, prior: Any, class_index: int) -> dict[str, Any]:
    """The lab's outcomes (``metrics.measure``) of the asset on the held-out turntable, and divergence."""
    from threestudio_sdi.experimental.lab3d import CameraRanges, render, turntable_cameras
    from threestudio_sdi.experimental.lab3d.metrics import measure

    finite = all(bool(value.isfinite().all()) for value in geometry.state_dict().values())
    if not finite:
        return {"finite": False, "diverged": True}
    cameras = turntable_cameras(EVAL_VIEWS, CameraRanges())
    members = prior.assets.members(class_index)
    truth = render(prior.assets.grid, cameras, prior.render_settings)
    rgb, opacity = threestudio_render(renderer, cameras, prior.render_settings.image_size)
    row: dict[str, Any] = {"finite": True}
    row.update(measure(rgb, opacity, truth.rgb[members], truth.opacity[members]).as_dict())
    row.pop("psnr_view_target")  # the view-inconsistent prior's; this is the consistent one
    row["diverged"] = row["silhouette_iou"] < DIVERGED_IOU or math.isnan(row["psnr_nearest"])
    return row


# ------------------------------------------------------------------ the runs
def distil(h: Harness, variants: int) -> dict[str, Any]:
    """One known-answer run through launch.py; the outcomes of its final asset and of the initial blob."""
    name = f"known-answer-{variants}"
    started = time.perf_counter()
    run = h.run(h.config(name, *config_layers(h, variants), steps(MAX_STEPS)))
    seconds = time.perf_counter() - started
    system = run.system
    prior = system.guidance.model
    class_index = prior.prompt_condition(CLASS_NAME)
    final = scored(system.geometry, system.renderer, prior, class_index)
    system.load_state_dict(run.initial)
    logged = [step["logged"] for step in run.steps]
    return {
        "setting": {
            "class": CLASS_NAME,
            "variants_per_class": variants,
            "steps": MAX_STEPS,
            "views_per_step": VIEWS_PER_STEP,
            "lr": LEARNING_RATE,
            "image_size": IMAGE_SIZE,
        },
        "final": final,
        "initial": scored(system.geometry, system.renderer, prior, class_index),
        "steps": len(run.steps),
        "model_evaluations": sum(int(entry["train/model_evaluations"]) for entry in logged),
        "fewest_evaluations_in_a_step": min(
            (int(entry["train/model_evaluations"]) for entry in logged), default=0
        ),
        "nonfinite_views": int(logged[-1]["train/nonfinite_steps"]) if logged else 0,
        "losses_finite": bool(run.steps) and all(math.isfinite(step["loss"]) for step in run.steps),
        "timesteps": [int(entry["train/timestep"]) for entry in logged],
        "validation_panels": (h.trial(name) / "save" / f"it{MAX_STEPS}-0.png").is_file(),
        "seconds": round(seconds, 1),
    }


def supervised_fit(h: Harness, prior: Any, class_index: int) -> dict[str, Any]:
    """The same geometry, renderer and Adam fitted for the same steps to the true renders by
    ½ mean((x − μ)²) at the lab's random cameras (``sample_cameras``, the same ranges): what this
    geometry reaches when it is told the answer. Needs one variant (the answer is that asset)."""
    import torch

    from threestudio_sdi.experimental.lab3d import CameraRanges, VoxelGrid, render, sample_cameras

    torch.manual_seed(0)
    geometry = h.threestudio.find("implicit-volume")(GEOMETRY)
    material = h.threestudio.find("no-material")(MATERIAL)
    background = h.threestudio.find("solid-color-background")(BACKGROUND)
    renderer = h.threestudio.find("nerf-volume-renderer")(
        RENDERER, geometry=geometry, material=material, background=background
    )
    optimizer = torch.optim.Adam(geometry.parameters(), lr=LEARNING_RATE, betas=(0.9, 0.99), eps=1e-15)
    generator = torch.Generator().manual_seed(0)
    (member,) = prior.assets.members(class_index).tolist()
    answer = VoxelGrid(prior.assets.grid.density[member], prior.assets.grid.colour[member])
    for _ in range(MAX_STEPS):
        cameras = sample_cameras(VIEWS_PER_STEP, CameraRanges(), generator)
        truth = render(answer, cameras, prior.render_settings).rgb.float()
        renderer.train()
        rgb = renderer(**threestudio_views(cameras, IMAGE_SIZE))["comp_rgb"].permute(0, 3, 1, 2) * 2 - 1
        loss = 0.5 * (rgb - truth).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return scored(geometry, renderer, prior, class_index)


def known_answer(h: Harness) -> dict[str, Any]:
    """The sanity setting (one variant: the asset must be recovered) with the supervised reference, then
    the lab's default (three variants per class)."""
    sanity = distil(h, 1)
    prior = exact_prior(variants_per_class=1).model
    started = time.perf_counter()
    sanity["supervised_fit"] = supervised_fit(h, prior, prior.prompt_condition(CLASS_NAME))
    sanity["supervised_fit"]["seconds"] = round(time.perf_counter() - started, 1)
    return {"sanity": sanity, "variants": distil(h, 3)}
