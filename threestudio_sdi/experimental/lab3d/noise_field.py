"""A noise field fixed on the asset for a whole run, rendered into each view: the κ of ``consistent-noise``.

**Field.** n = independent N(0, 1) values on an R_n³ lattice of voxel centres spanning [−1, 1]³ (one per
colour channel), plus a background map b of N(0, 1) values over ray directions (azimuth × elevation
cells), both drawn once per run from the run's seed (:func:`draw_noise_field`).

**Render.** Along a pixel's ray the current asset's emission–absorption weights w_i = T_i α_i (the
renderer's quadrature, :mod:`threestudio_sdi.experimental.lab3d.renderer`, density only) sample the field at the
nearest lattice voxel v(i) of each sample. A ray crosses each (convex) voxel once, so its samples group
into runs with weights W_v = Σ_{i: v(i) = v} w_i, and with the opacity A = Σ_i w_i

    κ = (Σ_v W_v n_v + (1 − A) b(d)) / sqrt(Σ_v W_v² + (1 − A)²),

a sum of independent N(0, 1) values divided by its standard deviation: κ ~ N(0, 1) per pixel and channel
exactly, whatever the asset (the whitening). Where the asset is opaque, κ is the noise of the first
surface voxel the ray meets, so two views that see the same surface point get the same κ there; the
render follows the asset as it changes (the field stays put). No gradient flows into the asset.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ...classifier_free import Cameras
from ...errors import check_int
from ...strategies import StepContext
from .cameras import camera_rays
from .renderer import BOX_HALF_SIZE, RenderSettings, quadrature_weights, ray_samples

NOISE_STREAM_OFFSET = 2 * 2**32
"""The noise field's generator is seeded with seed + this (distill's streams use seed and seed + 2³²)."""


@dataclass(frozen=True)
class NoiseField:
    """Voxel noise [3, R_n, R_n, R_n] (axes z, y, x as the assets') and background noise [3, H_b, W_b]."""

    voxels: Tensor
    background: Tensor


def draw_noise_field(
    seed: int, resolution: int = 64, background_size: tuple[int, int] = (128, 256)
) -> NoiseField:
    """A fresh N(0, 1) field from ``seed`` (+ :data:`NOISE_STREAM_OFFSET`), float32."""
    resolution = check_int("noise field resolution", resolution, low=2)
    generator = torch.Generator().manual_seed(seed + NOISE_STREAM_OFFSET)
    voxels = torch.randn(3, resolution, resolution, resolution, generator=generator)
    return NoiseField(voxels, torch.randn(3, *background_size, generator=generator))


def _background_noise(field: NoiseField, directions: Tensor) -> Tensor:
    """b(d) [P, 3]: the background cell of each unit direction (azimuth × elevation, nearest)."""
    height, width = field.background.shape[-2:]
    azimuth = torch.atan2(directions[:, 1], directions[:, 0])  # (−π, π]
    elevation = torch.asin(directions[:, 2].clamp(-1, 1))  # [−π/2, π/2]
    column = ((azimuth + math.pi) / (2 * math.pi) * width).long().clamp(0, width - 1)
    row = ((elevation + math.pi / 2) / math.pi * height).long().clamp(0, height - 1)
    return field.background[:, row, column].T


def noise_along_rays(
    field: NoiseField, density: Tensor, origins: Tensor, directions: Tensor, samples: int
) -> Tensor:
    """κ [P, 3] of rays o + s·d ([P, 3] each, unit d) through the asset ``density`` [R, R, R] (module docstring)."""
    points, step = ray_samples(origins, directions, samples)
    sigma = F.grid_sample(
        density[None, None], (points / BOX_HALF_SIZE)[None, :, :, None], mode="bilinear", align_corners=True
    ).reshape(points.shape[:2])  # [P, N]
    weights = quadrature_weights(sigma * step[:, None])  # w_i, the renderer's
    resolution = field.voxels.shape[-1]
    index = ((points / BOX_HALF_SIZE + 1) / 2 * (resolution - 1)).round().long().clamp(0, resolution - 1)
    values = field.voxels[:, index[..., 2], index[..., 1], index[..., 0]]  # [3, P, N] (z, y, x order)
    flat = (index[..., 2] * resolution + index[..., 1]) * resolution + index[..., 0]
    runs = torch.cat([torch.zeros_like(flat[:, :1]), (flat[:, 1:] != flat[:, :-1]).long()], 1).cumsum(1)
    voxel_weights = torch.zeros_like(weights).scatter_add_(1, runs, weights)  # W_v per run
    opacity = weights.sum(dim=-1)
    numerator = (weights * values).sum(dim=-1).T + (1 - opacity)[:, None] * _background_noise(
        field, directions
    )
    variance = voxel_weights.pow(2).sum(dim=-1) + (1 - opacity).pow(2)
    return numerator / variance.sqrt()[:, None]


def render_noise(field: NoiseField, density: Tensor, cameras: Cameras, settings: RenderSettings) -> Tensor:
    """κ [B, 3, H, W] of the field seen through ``density`` [R, R, R] from every camera."""
    origins, directions = camera_rays(cameras, settings.image_size)
    density = density.detach()
    views = []
    for view in range(cameras.batch_size):
        rays = directions[view].reshape(-1, 3).to(density.dtype)
        origin = origins[view].to(density.dtype).expand_as(rays)
        kappa = noise_along_rays(field, density, origin, rays, settings.samples_per_ray)
        views.append(kappa.T.reshape(3, settings.image_size, settings.image_size))
    return torch.stack(views)


@dataclass(frozen=True)
class AssetNoise:
    """The injected ``field(step)`` of ``consistent-noise``: the run's field through its current asset.

    Attributes:
        field: the run's noise field.
        density: returns the asset's current density [R, R, R].
        settings: the renderer's image size and samples per ray.
    """

    field: NoiseField
    density: Callable[[], Tensor]
    settings: RenderSettings

    def __call__(self, step: StepContext) -> Tensor:
        cameras = step.conditioning.cameras
        if cameras is None:
            raise ValueError("consistent noise on an asset needs the step's cameras (Conditioning.cameras)")
        with torch.no_grad():
            return render_noise(self.field, self.density(), cameras, self.settings).to(step.z0)
