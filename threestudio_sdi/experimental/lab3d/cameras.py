"""Cameras of the 3D lab: threestudio's random-camera sampling, look-at matrices, rays, held-out views.

Conventions are threestudio's (``random-camera-datamodule``, ``get_ray_directions``), z up:

* camera position c = d · (cos e cos a, cos e sin a, sin e) for elevation e, azimuth a, distance d;
* the camera looks at the origin with world up +z: lookat = −c/‖c‖, right = lookat × up,
  up' = right × lookat, and c2w = [right | up' | −lookat | c] (OpenGL: the camera looks along −z);
* pixel (i, j) of an H×W image (row i from the top) has the camera-space direction
  ((j + ½ − W/2)/f, −(i + ½ − H/2)/f, −1) with focal length f = H / (2 tan(fovy/2)), rotated by c2w
  and normalised.

Training views are drawn like threestudio's data module with ``configs/sdi.yaml``'s ranges (docs/method.md §4):
distance U[1.5, 2.0], fovy U[40°, 70°], azimuth stratified over the batch (``batch_uniform_azimuth``:
view b of B draws a ∈ −180° + 360°·(b + U[0, 1))/B), and elevation, with probability ½ each, uniform in
degrees or uniform on the sphere between the limits (threestudio's mix). threestudio's camera, centre and
up perturbations are left out: the exact prior is conditioned on the same (elevation, azimuth, distance)
that places the camera, so a perturbed c2w would disagree with the angles it is conditioned on.

Held-out evaluation views are a turntable at the centre of the training ranges (elevation 17.5°,
distance 1.75, fovy 55°), at azimuths −180° + 360°·(k + ½)/n, which a training draw hits with
probability zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...classifier_free import Cameras
from ...errors import check_int, check_range


@dataclass(frozen=True)
class CameraRanges:
    """Ranges (low, high) of the training cameras; defaults are ``configs/sdi.yaml``'s (docs/method.md §4).

    Angles in degrees; elevation must stay inside (−90°, 90°) (the look-at frame is undefined at the
    poles), distance and fovy positive, fovy below 180°.
    """

    elevation: tuple[float, float] = (-10.0, 45.0)
    azimuth: tuple[float, float] = (-180.0, 180.0)
    distance: tuple[float, float] = (1.5, 2.0)
    fovy: tuple[float, float] = (40.0, 70.0)

    def __post_init__(self) -> None:
        limits = {
            "elevation": (-90.0, 90.0, True),
            "azimuth": (None, None, False),
            "distance": (0.0, None, True),
            "fovy": (0.0, 180.0, True),
        }
        for name, (low, high, open_interval) in limits.items():
            value = getattr(self, name)
            if len(value) != 2:
                raise ValueError(f"camera range {name} must be (low, high), got {value!r}")
            for bound in value:
                check_range(f"camera range {name}", bound, low, high, low_open=open_interval, high_open=True)
            if value[0] > value[1]:
                raise ValueError(f"camera range {name} must have low <= high, got {value!r}")

    @property
    def centre(self) -> tuple[float, float, float]:
        """(elevation, distance, fovy) at the centre of the ranges: the held-out views' setting."""
        return tuple(sum(getattr(self, name)) / 2 for name in ("elevation", "distance", "fovy"))  # type: ignore[return-value]


def look_at_c2w(elevation: Tensor, azimuth: Tensor, distance: Tensor) -> Tensor:
    """Camera-to-world matrices [B, 4, 4] of cameras looking at the origin (module docstring)."""
    e, a = torch.deg2rad(elevation), torch.deg2rad(azimuth)
    position = distance[:, None] * torch.stack([e.cos() * a.cos(), e.cos() * a.sin(), e.sin()], dim=-1)
    world_up = torch.zeros_like(position)
    world_up[:, 2] = 1
    lookat = torch.nn.functional.normalize(-position, dim=-1)
    right = torch.nn.functional.normalize(torch.linalg.cross(lookat, world_up), dim=-1)
    up = torch.nn.functional.normalize(torch.linalg.cross(right, lookat), dim=-1)
    c2w = torch.zeros(position.shape[0], 4, 4, dtype=position.dtype)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, up, -lookat, position
    c2w[:, 3, 3] = 1
    return c2w


def make_cameras(
    elevation: Tensor, azimuth: Tensor, distance: Tensor, fovy: Tensor, dtype: torch.dtype = torch.float64
) -> Cameras:
    """:class:`~threestudio_sdi.classifier_free.Cameras` with their look-at ``c2w`` filled in (all in ``dtype``)."""
    elevation, azimuth, distance, fovy = (v.to(dtype) for v in (elevation, azimuth, distance, fovy))
    if (elevation.abs() >= 90).any():
        raise ValueError(f"elevation must lie in (-90, 90) degrees, got {elevation.abs().max().item()}")
    return Cameras(elevation, azimuth, distance, c2w=look_at_c2w(elevation, azimuth, distance), fovy=fovy)


def _uniform(low: float, high: float, batch: int, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(batch, generator=generator, dtype=torch.float64)


def sample_cameras(batch: int, ranges: CameraRanges, generator: torch.Generator) -> Cameras:
    """``batch`` training cameras drawn as threestudio's random-camera data module does (module docstring)."""
    batch = check_int("views_per_step", batch, low=1)
    low, high = ranges.elevation
    if float(torch.rand((), generator=generator)) < 0.5:
        elevation = _uniform(low, high, batch, generator)
    else:  # uniform on the sphere between the two latitudes
        u = _uniform((low + 90) / 180, (high + 90) / 180, batch, generator)
        elevation = torch.rad2deg(torch.asin(2 * u - 1))
    a_low, a_high = ranges.azimuth
    strata = (torch.rand(batch, generator=generator, dtype=torch.float64) + torch.arange(batch)) / batch
    azimuth = a_low + (a_high - a_low) * strata
    distance = _uniform(*ranges.distance, batch, generator)
    fovy = _uniform(*ranges.fovy, batch, generator)
    return make_cameras(elevation, azimuth, distance, fovy)


def turntable_cameras(n_views: int, ranges: CameraRanges) -> Cameras:
    """The held-out views: ``n_views`` azimuths −180° + 360°(k + ½)/n at the centre of ``ranges``."""
    n_views = check_int("n_views", n_views, low=1)
    elevation, distance, fovy = ranges.centre
    azimuth = -180.0 + 360.0 * (torch.arange(n_views, dtype=torch.float64) + 0.5) / n_views
    full = torch.ones(n_views, dtype=torch.float64)
    return make_cameras(elevation * full, azimuth, distance * full, fovy * full)


def camera_rays(cameras: Cameras, image_size: int) -> tuple[Tensor, Tensor]:
    """Ray origins [B, 3] and unit directions [B, H, W, 3] (H = W = ``image_size``) of each camera.

    Uses ``cameras.c2w`` and ``cameras.fovy`` when present, else the look-at matrix of the angles and
    the centre of the default fovy range.
    """
    image_size = check_int("image_size", image_size, low=1)
    c2w = cameras.c2w
    if c2w is None:
        c2w = look_at_c2w(cameras.elevation, cameras.azimuth, cameras.distance)
    dtype = c2w.dtype
    fovy = cameras.fovy if cameras.fovy is not None else torch.full_like(cameras.elevation, 55.0)
    focal = 0.5 * image_size / torch.tan(0.5 * torch.deg2rad(fovy.to(dtype)))  # [B]
    centres = torch.arange(image_size, dtype=dtype, device=c2w.device) + 0.5 - image_size / 2
    rows, columns = torch.meshgrid(centres, centres, indexing="ij")
    camera_directions = torch.stack(
        [
            columns[None] / focal[:, None, None],
            -rows[None] / focal[:, None, None],
            -torch.ones(1, image_size, image_size, dtype=dtype, device=c2w.device).expand(
                focal.shape[0], -1, -1
            ),
        ],
        dim=-1,
    )  # [B, H, W, 3]
    directions = torch.einsum("bij,bhwj->bhwi", c2w[:, :3, :3], camera_directions)
    return c2w[:, :3, 3], torch.nn.functional.normalize(directions, dim=-1)
