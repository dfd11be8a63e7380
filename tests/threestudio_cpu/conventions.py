"""Known answers on the conventions of threestudio and of the 3D lab: the same camera, the same image.

The known-answer run (:mod:`known_answer`) trains threestudio's geometry on the lab's prior, whose
images the lab renders; it measures anything only if both renderers agree on what a camera sees.
:func:`conventions` checks that at a batch of threestudio's own cameras: z up and OpenGL cameras
(``c2w``), the units of the batch (degrees, fovy in radians), image orientation (rows top to bottom),
the box of the assets ([−1, 1]³ with ``radius`` 1 in threestudio), the white background and the value
range of the renders.
"""

from __future__ import annotations

from typing import Any

from harness import Harness
from known_answer import RENDERER, data_block

FINE_RENDERER = {**RENDERER, "num_samples_per_ray": 256, "num_samples_per_ray_importance": 128}
"""The convention check's renderer: quadrature error far below what a convention error does."""
LAB_SAMPLES_PER_RAY = 256


def lab_asset_geometry(threestudio: Any, grid: Any) -> Any:
    """threestudio's ``volume-grid`` holding a lab asset (a single :class:`VoxelGrid`): the same σ and c.

    The lab's R voxel centres span [−1, 1] (``grid_sample`` with ``align_corners=True``); ``volume-grid``
    samples its box [−r, r] with ``align_corners=False``, so r = R/(R − 1) puts its voxel centres on the
    lab's: ((p/r + 1)·R − 1)/2 = (p + 1)(R − 1)/2. Both grids index (z, y, x). Density without bias or
    activation (σ itself), colour through ``no-material`` without activation.
    """
    import torch

    resolution = grid.resolution
    geometry = threestudio.find("volume-grid")(
        {
            "radius": resolution / (resolution - 1),
            "grid_size": [resolution] * 3,
            "n_feature_dims": 3,
            "density_bias": 0.0,
            "density_activation": None,
        }
    )
    with torch.no_grad():
        geometry.grid.copy_(torch.cat([grid.density[None], grid.colour])[None].float())
    return geometry


def lab_asset_renderer(threestudio: Any, grid: Any, settings: dict[str, Any]) -> Any:
    """``nerf-volume-renderer`` (``settings``) over :func:`lab_asset_geometry`: unshaded, on white, in
    eval mode."""
    geometry = lab_asset_geometry(threestudio, grid)
    material = threestudio.find("no-material")({"n_output_dims": 3, "color_activation": "none"})
    background = threestudio.find("solid-color-background")({"color": [1.0, 1.0, 1.0], "learned": False})
    renderer = threestudio.find("nerf-volume-renderer")(
        settings, geometry=geometry, material=material, background=background
    )
    return renderer.eval()


def conventions(h: Harness) -> dict[str, Any]:
    """A batch of ``random-camera-datamodule`` (the lab's ranges), through ``sdi-guidance``'s
    :func:`~threestudio_sdi.threestudio.batch_cameras.cameras_from_batch`; then

    * ``c2w_max_error``: the lab's look-at matrix of the batch's angles against the batch's ``c2w``;
    * ``rays_max_error``: the lab's ray directions (from those cameras: ``c2w``, fovy converted to
      degrees) against the batch's ``rays_d``: focal length, fovy units, rows top to bottom;
    * ``renders``: the first variant of each class rendered by threestudio (``volume-grid`` holding the
      asset, ``nerf-volume-renderer`` with the training and a fine quadrature, white background) and by
      the lab at the same cameras, PSNR (dB, images in [0, 1]); and, for contrast, the fine render against
      the lab's flipped upside down, mirrored, and seen from the opposite azimuth: what a convention
      error gives.
    """
    import torch

    from threestudio_sdi.experimental.lab3d import RenderSettings, VoxelGrid, make_assets, render
    from threestudio_sdi.experimental.lab3d.cameras import camera_rays, look_at_c2w, make_cameras
    from threestudio_sdi.experimental.lab3d.metrics import psnr
    from threestudio_sdi.threestudio.batch_cameras import cameras_from_batch

    torch.manual_seed(0)  # threestudio draws its cameras from the global RNG
    datamodule = h.threestudio.find("random-camera-datamodule")(data_block())
    datamodule.setup("fit")
    batch = datamodule.train_dataset.collate(None)
    cameras = cameras_from_batch(
        batch["elevation"], batch["azimuth"], batch["camera_distances"], batch["c2w"], batch["fovy"]
    )
    size = int(batch["height"])
    _, lab_directions = camera_rays(cameras, size)
    look_at = look_at_c2w(cameras.elevation, cameras.azimuth, cameras.distance)
    report: dict[str, Any] = {
        "cameras": {
            "elevation": cameras.elevation.tolist(),
            "azimuth": cameras.azimuth.tolist(),
            "distance": cameras.distance.tolist(),
            "fovy_degrees": cameras.fovy.tolist(),
        },
        "c2w_max_error": float((look_at - batch["c2w"]).abs().max()),
        "rays_max_error": float((lab_directions - batch["rays_d"]).abs().max()),
    }
    assets = make_assets(variants_per_class=1)
    opposite = make_cameras(cameras.elevation, cameras.azimuth + 180, cameras.distance, cameras.fovy)
    lab_settings = RenderSettings(size, samples_per_ray=LAB_SAMPLES_PER_RAY)
    rays = {key: batch[key] for key in ("rays_o", "rays_d", "light_positions")}
    renders: dict[str, Any] = {}
    for index, name in enumerate(assets.class_names):
        grid = VoxelGrid(assets.grid.density[index], assets.grid.colour[index])
        lab = render(grid, cameras, lab_settings).rgb
        images = {}
        for label, settings in (("training", RENDERER), ("fine", FINE_RENDERER)):
            with torch.no_grad():
                out = lab_asset_renderer(h.threestudio, grid, settings)(**rays)
            images[label] = out["comp_rgb"].permute(0, 3, 1, 2).double() * 2 - 1
        renders[name] = {
            "psnr_training_renderer": psnr(images["training"], lab),
            "psnr_fine_renderer": psnr(images["fine"], lab),
            "psnr_upside_down": psnr(images["fine"], lab.flip(-2)),
            "psnr_mirrored": psnr(images["fine"], lab.flip(-1)),
            "psnr_opposite_azimuth": psnr(images["fine"], render(grid, opposite, lab_settings).rgb),
        }
    report["renders"] = renders
    return report
