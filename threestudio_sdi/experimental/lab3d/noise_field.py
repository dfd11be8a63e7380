"""A noise field fixed on the asset for a whole run, rendered into each view: the κ of ``consistent-noise``.

The field math is host-free: the 3D lab renders it through its voxel asset (:func:`render_noise`,
:class:`AssetNoise`), and threestudio's NeRF source through its geometry's density
(:mod:`threestudio_sdi.experimental.threestudio.nerf_noise_field`); both hand :func:`noise_from_samples`
the samples of each ray and their emission–absorption weights.

**Field.** n = independent N(0, 1) values on an R_n³ lattice of voxel centres spanning [−1, 1]³ (one per
channel: 3 for a pixel prior, 4 for Stable Diffusion's latents), plus a background map b of N(0, 1) values
over ray directions (azimuth × elevation cells), both drawn once per run from the run's seed
(:func:`draw_noise_field`). Optionally a **coarse part** (the low-frequency shared component, share β):
an L³ grid of N(0, 1) cells n_c partitioning [−1, 1]³, and the field on the asset is
n(p) = sqrt(1 − β) n_f(v(p)) + sqrt(β) n_c(c(p)) (v the nearest lattice voxel, c the cell), still
N(0, 1) at every point; two points in one cell share sqrt(β) n_c, so views that see the same region of
the asset share that part of their κ.

**Render** (``attachment``), along a pixel's ray with weights w_i = T_i α_i, opacity A = Σ_i w_i:

* ``integrated`` (like colour): κ = (Σ_i w_i n(p_i) + (1 − A) b(d)) / s. A ray crosses each (convex)
  voxel and cell once, so its samples group into runs with weights W_v = Σ_{i: v(i) = v} w_i and
  W_c = Σ_{i: c(i) = c} w_i, and s² = (1 − β) Σ_v W_v² + β Σ_c W_c² + (1 − A)²;
* ``surface`` (sampled at the expected termination point p̄ = Σ_i w_i p_i / A, nearest voxel there):
  κ = (A n(p̄) + (1 − A) b(d)) / s, s² = A² + (1 − A)².

Either way κ is a sum of independent N(0, 1) values divided by its standard deviation: κ ~ N(0, 1) per
pixel and channel exactly, whatever the asset (the whitening). An empty ray shows b(d); where the asset
is opaque, κ is the noise at its surface (``integrated``: the first voxels the ray meets), so two views
that see the same surface point get the same κ there. The render follows the asset as it changes (the
field stays put). No gradient flows into the asset. Non-finite weights count as empty space.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ...classifier_free import Cameras
from ...errors import check_choice, check_int, check_range
from ...strategies import StepContext
from ..strategies.consistent_noise import ATTACHMENTS, ConsistentNoise
from .cameras import camera_rays
from .renderer import BOX_HALF_SIZE, RenderSettings, quadrature_weights, ray_samples

NOISE_STREAM_OFFSET = 2 * 2**32
"""The noise field's generator is seeded with seed + this (distill's streams use seed and seed + 2³²)."""
MAX_DENSITY = 1e6
"""Densities are clamped to this before the quadrature (an infinite one would give ∞ − ∞ there)."""


@dataclass(frozen=True)
class NoiseField:
    """Voxel noise [C, R, R, R] (axes z, y, x as the assets'), background noise [C, H_b, W_b], and the
    optional coarse part [C, L, L, L] with its share β (module docstring)."""

    voxels: Tensor
    background: Tensor
    coarse: Tensor | None = None
    coarse_share: float = 0.0

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> NoiseField:
        """The field on ``device`` (and in ``dtype``)."""
        coarse = None if self.coarse is None else self.coarse.to(device, dtype)
        return NoiseField(
            self.voxels.to(device, dtype), self.background.to(device, dtype), coarse, self.coarse_share
        )


def draw_noise_field(
    seed: int,
    resolution: int = 64,
    background_size: tuple[int, int] = (128, 256),
    channels: int = 3,
    coarse_resolution: int = 0,
    coarse_share: float = 0.0,
) -> NoiseField:
    """A fresh N(0, 1) field from ``seed`` (+ :data:`NOISE_STREAM_OFFSET`), float32.

    Voxels, then background, then the coarse part are drawn from one generator, so a field without a
    coarse part is the same as before the coarse part existed.
    """
    resolution = check_int("noise field resolution", resolution, low=2)
    channels = check_int("noise field channels", channels, low=1)
    coarse_resolution = check_int("consistent_noise.shared_scale", coarse_resolution, low=0)
    check_range("consistent_noise.shared", coarse_share, 0.0, 1.0)
    generator = torch.Generator().manual_seed(seed + NOISE_STREAM_OFFSET)
    voxels = torch.randn(channels, resolution, resolution, resolution, generator=generator)
    background = torch.randn(channels, *background_size, generator=generator)
    if coarse_resolution == 0 or coarse_share == 0:
        return NoiseField(voxels, background)
    side = coarse_resolution
    coarse = torch.randn(channels, side, side, side, generator=generator)
    return NoiseField(voxels, background, coarse, coarse_share)


def field_of(strategy: ConsistentNoise, channels: int) -> NoiseField:
    """The run's field as ``strategy`` describes it: its seed, ``field_resolution``, and a coarse part when
    ``shared_scale`` ≥ 1 (the low-frequency shared component; with 0 the strategy adds its own)."""
    scale = strategy.shared_scale
    return draw_noise_field(
        strategy.seed,
        strategy.field_resolution,
        channels=channels,
        coarse_resolution=scale,
        coarse_share=strategy.shared if scale else 0.0,
    )


def _background_noise(field: NoiseField, directions: Tensor) -> Tensor:
    """b(d) [P, C]: the background cell of each unit direction (azimuth × elevation, nearest)."""
    height, width = field.background.shape[-2:]
    azimuth = torch.atan2(directions[:, 1], directions[:, 0])  # (−π, π]
    elevation = torch.asin(directions[:, 2].clamp(-1, 1))  # [−π/2, π/2]
    column = ((azimuth + math.pi) / (2 * math.pi) * width).long().clamp(0, width - 1)
    row = ((elevation + math.pi / 2) / math.pi * height).long().clamp(0, height - 1)
    return field.background[:, row, column].T


def _lattice_index(points: Tensor, resolution: int) -> Tensor:
    """The nearest of R lattice points spanning [−1, 1] on each axis, long [..., 3] (x, y, z)."""
    return ((points + 1) / 2 * (resolution - 1)).round().long().clamp(0, resolution - 1)


def _cell_index(points: Tensor, cells: int) -> Tensor:
    """The cell of L equal cells partitioning [−1, 1] on each axis, long [..., 3] (x, y, z)."""
    return ((points + 1) / 2 * cells).floor().long().clamp(0, cells - 1)


def _values(grid: Tensor, index: Tensor) -> Tensor:
    """grid [C, R, R, R] (z, y, x) at index [..., 3] (x, y, z) -> [C, ...]."""
    return grid[:, index[..., 2], index[..., 1], index[..., 0]]


def _run_weights(index: Tensor, weights: Tensor, resolution: int) -> Tensor:
    """Σ over each ray's runs of equal index of the weights, squared and summed: Σ_v W_v² [P]."""
    flat = (index[..., 2] * resolution + index[..., 1]) * resolution + index[..., 0]
    runs = torch.cat([torch.zeros_like(flat[:, :1]), (flat[:, 1:] != flat[:, :-1]).long()], 1).cumsum(1)
    return torch.zeros_like(weights).scatter_add_(1, runs, weights).pow(2).sum(dim=-1)


def noise_from_samples(
    field: NoiseField, points: Tensor, weights: Tensor, directions: Tensor, attachment: str = "integrated"
) -> Tensor:
    """κ [P, C] of P rays from their samples (module docstring).

    Args:
        field: the run's noise field.
        points: the samples [P, N, 3] in the field's frame [−1, 1]³, in order along each ray.
        weights: their emission–absorption weights w_i [P, N] (Σ_i w_i ≤ 1).
        directions: the rays' unit directions [P, 3] (for the background).
        attachment: ``integrated`` or ``surface``.
    """
    check_choice("consistent_noise.attachment", attachment, ATTACHMENTS)
    weights = torch.nan_to_num(weights, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0)
    opacity = weights.sum(dim=-1)
    background = _background_noise(field, directions)
    share = field.coarse_share if field.coarse is not None else 0.0
    fine_index = _lattice_index(points, field.voxels.shape[-1])
    if attachment == "surface":
        surface = (weights[..., None] * points).sum(dim=1) / opacity.clamp_min(1e-12)[:, None]  # p̄ [P, 3]
        value = _values(field.voxels, _lattice_index(surface, field.voxels.shape[-1])).T  # [P, C]
        if share:
            coarse = _values(field.coarse, _cell_index(surface, field.coarse.shape[-1])).T
            value = math.sqrt(1 - share) * value + math.sqrt(share) * coarse
        numerator = opacity[:, None] * value + (1 - opacity)[:, None] * background
        variance = opacity.pow(2) + (1 - opacity).pow(2)
        return numerator / variance.sqrt()[:, None]
    values = _values(field.voxels, fine_index)  # [C, P, N]
    fine_runs = _run_weights(fine_index, weights, field.voxels.shape[-1])
    if share:
        cell_index = _cell_index(points, field.coarse.shape[-1])
        values = math.sqrt(1 - share) * values + math.sqrt(share) * _values(field.coarse, cell_index)
        variance = (1 - share) * fine_runs + share * _run_weights(cell_index, weights, field.coarse.shape[-1])
    else:
        variance = fine_runs
    numerator = (weights * values).sum(dim=-1).T + (1 - opacity)[:, None] * background
    variance = variance + (1 - opacity).pow(2)
    return numerator / variance.sqrt()[:, None]


def noise_along_rays(
    field: NoiseField,
    density: Tensor,
    origins: Tensor,
    directions: Tensor,
    samples: int,
    attachment: str = "integrated",
) -> Tensor:
    """κ [P, C] of rays o + s·d ([P, 3] each, unit d) through the asset ``density`` [R, R, R] (module
    docstring), with the lab renderer's samples and quadrature."""
    points, step = ray_samples(origins, directions, samples)
    sigma = F.grid_sample(
        density[None, None], (points / BOX_HALF_SIZE)[None, :, :, None], mode="bilinear", align_corners=True
    ).reshape(points.shape[:2])  # [P, N]
    sigma = torch.nan_to_num(sigma, nan=0.0, posinf=MAX_DENSITY).clamp(0, MAX_DENSITY)
    weights = quadrature_weights(sigma * step[:, None])  # w_i, the renderer's
    return noise_from_samples(field, points / BOX_HALF_SIZE, weights, directions, attachment)


def render_noise(
    field: NoiseField,
    density: Tensor,
    cameras: Cameras,
    settings: RenderSettings,
    attachment: str = "integrated",
) -> Tensor:
    """κ [B, C, H, W] of the field seen through ``density`` [R, R, R] from every camera."""
    origins, directions = camera_rays(cameras, settings.image_size)
    density = density.detach()
    channels = field.voxels.shape[0]
    views = []
    for view in range(cameras.batch_size):
        rays = directions[view].reshape(-1, 3).to(density.dtype)
        origin = origins[view].to(density.dtype).expand_as(rays)
        kappa = noise_along_rays(field, density, origin, rays, settings.samples_per_ray, attachment)
        views.append(kappa.T.reshape(channels, settings.image_size, settings.image_size))
    return torch.stack(views)


@dataclass(frozen=True)
class AssetNoise:
    """The injected ``field(step)`` of ``consistent-noise``: the run's field through its current asset.

    Attributes:
        field: the run's noise field.
        density: returns the asset's current density [R, R, R].
        settings: the renderer's image size and samples per ray.
        attachment: ``integrated`` or ``surface`` (module docstring).
    """

    field: NoiseField
    density: Callable[[], Tensor]
    settings: RenderSettings
    attachment: str = "integrated"

    def __call__(self, step: StepContext) -> Tensor:
        cameras = step.conditioning.cameras
        if cameras is None:
            raise ValueError("consistent noise on an asset needs the step's cameras (Conditioning.cameras)")
        with torch.no_grad():
            density = self.density()
            return render_noise(self.field, density, cameras, self.settings, self.attachment).to(step.z0)
