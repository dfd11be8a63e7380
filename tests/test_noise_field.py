"""Known answers of consistent noise's field on an asset: the host-free math, and threestudio's NeRF source.

* Whitening: κ is linear in the field's values (fine voxels, coarse cells, background), and its
  coefficients have unit norm at every pixel and channel, for both attachments and any asset (by
  autograd, float64) — so κ ~ N(0, 1) exactly.
* Empty, non-finite and opaque volumes: an empty (or NaN) volume shows the background cell of each
  ray's direction; an opaque one the voxel of the first sample (both attachments).
* The NeRF source (``nerf-volume-renderer``) against the 3D lab: with the lab's asset as its density
  and the lab's cameras as the batch, it renders the lab's κ; at another resolution it makes its rays
  from ``c2w`` and ``fovy``; its checkpoint state refuses a resume that would draw another field;
  a renderer without a source is refused by name. The plugin runs against the threestudio stand-in.
"""

from __future__ import annotations

import importlib
import math
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from threestudio_standin.activate import standin_threestudio
from torch import Tensor

from threestudio_sdi.classifier_free import Conditioning
from threestudio_sdi.experimental.lab3d import CameraRanges, RenderSettings, sample_cameras
from threestudio_sdi.experimental.lab3d.cameras import camera_rays
from threestudio_sdi.experimental.lab3d.noise_field import (
    NoiseField,
    draw_noise_field,
    field_of,
    noise_from_samples,
    render_noise,
)
from threestudio_sdi.experimental.lab3d.renderer import ray_box_interval
from threestudio_sdi.experimental.strategies import ConsistentNoise
from threestudio_sdi.score_distillation import GuidanceConfig, step_context
from threestudio_sdi.testing.gaussian import GaussianModel

SOURCES = "threestudio_sdi.experimental.threestudio"


def _field(generator: torch.Generator, channels: int, coarse: int, share: float) -> NoiseField:
    def normal(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    return NoiseField(
        normal(channels, 6, 6, 6), normal(channels, 8, 16), normal(channels, coarse, coarse, coarse), share
    )


@pytest.mark.parametrize("attachment", ["integrated", "surface"])
@pytest.mark.parametrize(("coarse", "share"), [(1, 0.0), (1, 0.3), (3, 0.5)])
def test_the_field_is_whitened_to_unit_variance_per_pixel(
    fresh_seed: int, attachment: str, coarse: int, share: float
) -> None:
    """κ_p = Σ_j c_pj n_j over every value of the field; Σ_j c_pj² = 1 for every pixel and channel."""
    generator = torch.Generator().manual_seed(fresh_seed)
    field = _field(generator, 4, coarse, share)
    density = 3 * torch.rand(8, 8, 8, generator=generator, dtype=torch.float64)  # partly transparent
    density[:, :, :2] = 0  # some rays see empty space too
    settings = RenderSettings(image_size=5, samples_per_ray=24)
    cameras = sample_cameras(2, CameraRanges(), generator)

    def kappa(voxels: Tensor, background: Tensor, cells: Tensor) -> Tensor:
        noise = NoiseField(voxels, background, cells, share)
        return render_noise(noise, density, cameras, settings, attachment).flatten()

    jacobians = torch.autograd.functional.jacobian(
        kappa, (field.voxels, field.background, field.coarse), vectorize=True
    )
    squared = sum(j.flatten(1).pow(2).sum(1) for j in jacobians)
    torch.testing.assert_close(squared, torch.ones_like(squared), rtol=1e-12, atol=1e-12)
    values = kappa(field.voxels, field.background, field.coarse)
    assert values.isfinite().all() and values.numel() == 2 * 4 * 25


def _background_cell(field: NoiseField, direction: Tensor) -> Tensor:
    """Independent: the (elevation row, azimuth column) cell of a unit direction, in degrees."""
    height, width = field.background.shape[-2:]
    x, y, z = (float(v) for v in direction)
    azimuth = math.degrees(math.atan2(y, x)) + 180.0
    elevation = math.degrees(math.asin(max(-1.0, min(1.0, z)))) + 90.0
    column = min(int(azimuth / 360.0 * width), width - 1)
    row = min(int(elevation / 180.0 * height), height - 1)
    return field.background[:, row, column]


@pytest.mark.parametrize("attachment", ["integrated", "surface"])
def test_an_empty_or_nan_volume_shows_the_background_and_an_opaque_one_its_first_voxel(
    attachment: str,
) -> None:
    field = draw_noise_field(
        seed=3, resolution=16, background_size=(16, 32), coarse_resolution=2, coarse_share=0.2
    )
    settings = RenderSettings(image_size=6, samples_per_ray=32)
    cameras = sample_cameras(1, CameraRanges(), torch.Generator().manual_seed(1))
    origins, directions = camera_rays(cameras, settings.image_size)
    rays = directions[0].reshape(-1, 3).float()
    for empty_density in (torch.zeros(8, 8, 8), torch.full((8, 8, 8), math.nan)):
        empty = render_noise(field, empty_density, cameras, settings, attachment)[0].reshape(3, -1)
        expected = torch.stack([_background_cell(field, ray) for ray in rays], dim=1)
        torch.testing.assert_close(empty, expected, rtol=0, atol=1e-6)
    for opaque_density in (torch.full((8, 8, 8), 1e4), torch.full((8, 8, 8), math.inf)):
        opaque = render_noise(field, opaque_density, cameras, settings, attachment)[0].reshape(3, -1)
        origin = origins[0].float().expand_as(rays)
        near, far = ray_box_interval(origin, rays)
        first = origin + (near + 0.5 * (far - near) / settings.samples_per_ray)[:, None] * rays
        index = ((first + 1) / 2 * 15).round().long()  # the lattice spans the box [−1, 1]³, 16 points a side
        cell = ((first + 1) / 2 * 2).floor().long().clamp(0, 1)
        fine = field.voxels[:, index[:, 2], index[:, 1], index[:, 0]]
        coarse = field.coarse[:, cell[:, 2], cell[:, 1], cell[:, 0]]
        torch.testing.assert_close(opaque, math.sqrt(0.8) * fine + math.sqrt(0.2) * coarse, rtol=0, atol=1e-5)


def test_the_surface_attachment_samples_the_expected_termination_point() -> None:
    """Weights split between two samples: the surface κ is the voxel at their weighted mean, mixed with
    the background by the opacity; the integrated κ sums both voxels (independent arithmetic)."""
    field = draw_noise_field(seed=5, resolution=5, background_size=(4, 8))
    points = torch.tensor([[[-0.5, 0.0, 0.0], [0.5, 0.0, 0.0], [0.9, 0.0, 0.0]]])
    weights = torch.tensor([[0.1, 0.7, 0.0]])
    direction = torch.tensor([[1.0, 0.0, 0.0]])
    background = _background_cell(field, direction[0])
    surface = noise_from_samples(field, points, weights, direction, "surface")[0]
    termination = (0.1 * -0.5 + 0.7 * 0.5) / 0.8  # 0.375: lattice x index round(2.75) = 3 (of 0..4)
    assert round((termination + 1) / 2 * 4) == 3
    value = field.voxels[:, 2, 2, 3]
    expected = (0.8 * value + 0.2 * background) / math.sqrt(0.8**2 + 0.2**2)
    torch.testing.assert_close(surface, expected, rtol=1e-6, atol=1e-6)
    integrated = noise_from_samples(field, points, weights, direction, "integrated")[0]
    first, second = field.voxels[:, 2, 2, 1], field.voxels[:, 2, 2, 3]
    expected = (0.1 * first + 0.7 * second + 0.2 * background) / math.sqrt(0.1**2 + 0.7**2 + 0.2**2)
    torch.testing.assert_close(integrated, expected, rtol=1e-6, atol=1e-6)


def test_the_field_of_a_strategy_follows_its_options() -> None:
    plain = field_of(ConsistentNoise(seed=4), 4)
    assert plain.voxels.shape == (4, 64, 64, 64) and plain.coarse is None
    assert torch.equal(plain.voxels, draw_noise_field(4, channels=4).voxels)
    coarse = field_of(ConsistentNoise(seed=4, shared=0.1, shared_scale=2, field_resolution=8), 3)
    assert coarse.coarse.shape == (3, 2, 2, 2) and coarse.coarse_share == 0.1 and coarse.voxels.shape[-1] == 8
    # the colour form keeps the field free of a coarse part: the strategy adds g itself
    assert field_of(ConsistentNoise(seed=4, shared=0.1), 3).coarse is None


def test_the_low_frequency_form_needs_a_field_on_an_asset_and_is_not_added_twice() -> None:
    model = GaussianModel(shape=(3, 4, 4))
    z0 = torch.zeros(2, 3, 4, 4)
    kappa = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    low = ConsistentNoise(shared=0.1, shared_scale=2)
    step = step_context(model, z0, 500, Conditioning(), GuidanceConfig(noise=low))
    with pytest.raises(ValueError, match="shared_scale=2 puts the shared component on the asset"):
        low(step)
    with_field = step_context(model, z0, 500, Conditioning(), GuidanceConfig(noise=low), noise_field=kappa)
    assert torch.equal(low(with_field).noise, kappa)  # the host's field already holds the coarse part
    colour = ConsistentNoise(shared=0.1)
    mixed = colour(
        step_context(model, z0, 500, Conditioning(), GuidanceConfig(noise=colour), noise_field=kappa)
    )
    g = colour.shared_component(step)
    torch.testing.assert_close(mixed.noise, math.sqrt(0.9) * kappa + math.sqrt(0.1) * g.float())
    with pytest.raises(ValueError, match="consistent_noise.attachment"):
        ConsistentNoise(attachment="volume")


# ------------------------------------------------------------------ the NeRF source (threestudio)
@pytest.fixture
def nerf():
    """The NeRF source module, imported against the threestudio stand-in (and forgotten afterwards)."""

    def forget() -> None:
        for name in [name for name in sys.modules if name.startswith(SOURCES)]:
            del sys.modules[name]

    forget()
    with standin_threestudio():
        yield importlib.import_module(f"{SOURCES}.nerf_noise_field")
    forget()


def _grid_density(density: Tensor):
    """threestudio's ``forward_density`` of the lab's voxel asset: trilinear σ at points [P, 3] -> [P, 1]."""

    def forward_density(points: Tensor) -> Tensor:
        grid = F.grid_sample(
            density[None, None], points[None, :, None, None], mode="bilinear", align_corners=True
        )
        return grid.reshape(-1, 1)

    return forward_density


def _batch(cameras, size: int) -> dict:
    origins, directions = camera_rays(cameras, size)
    views = cameras.batch_size
    return {
        "rays_o": origins[:, None, None, :].expand_as(directions).float(),
        "rays_d": directions.float(),
        "c2w": cameras.c2w.float(),
        "fovy": torch.deg2rad(cameras.fovy).float(),
        "elevation": cameras.elevation.float(),
        "azimuth": cameras.azimuth.float(),
        "camera_distances": cameras.distance.float(),
        "index": torch.arange(views),
    }


@pytest.mark.parametrize("attachment", ["integrated", "surface"])
def test_the_nerf_source_renders_the_labs_field_of_the_same_asset(
    nerf, fresh_seed: int, attachment: str
) -> None:
    generator = torch.Generator().manual_seed(fresh_seed)
    density = 20 * torch.rand(12, 12, 12, generator=generator)
    strategy = ConsistentNoise(seed=fresh_seed % 1000, attachment=attachment, field_resolution=16)
    source = nerf.NerfNoiseField(_grid_density(density), 1.0, 0.0, 1e10, strategy)
    cameras = sample_cameras(3, CameraRanges(), generator)
    expected = render_noise(field_of(strategy, 3), density, cameras, RenderSettings(8, 64), attachment)
    same_size = source(_batch(cameras, 8), (3, 3, 8, 8))
    torch.testing.assert_close(same_size, expected, rtol=1e-4, atol=1e-4)
    from_c2w = source(_batch(cameras, 16), (3, 3, 8, 8))  # rays made from c2w and fovy at 8x8
    torch.testing.assert_close(from_c2w, expected, rtol=1e-4, atol=1e-4)
    one_view = {key: value[:1] for key, value in _batch(cameras, 8).items()}
    torch.testing.assert_close(source(one_view, (1, 3, 8, 8)), expected[:1], rtol=1e-4, atol=1e-4)  # batch 1
    latents = source(_batch(cameras, 8), (3, 4, 8, 8))  # a four-channel latent field: its own draw
    assert latents.shape == (3, 4, 8, 8) and latents.isfinite().all()
    empty = nerf.NerfNoiseField(lambda p: torch.full((p.shape[0], 1), math.nan), 1.0, 0.0, 1e10, strategy)
    background = render_noise(field_of(strategy, 3), torch.zeros(2, 2, 2), cameras, RenderSettings(8, 64))
    torch.testing.assert_close(empty(_batch(cameras, 8), (3, 3, 8, 8)), background, rtol=1e-5, atol=1e-5)


def test_the_nerf_source_scales_to_its_box_and_cuts_at_the_planes(nerf) -> None:
    """A geometry of radius 2 that is the lab's asset scaled by 2, seen by cameras twice as far, renders
    the lab's κ; a far plane before the box leaves only the background."""
    density = 20 * torch.rand(10, 10, 10, generator=torch.Generator().manual_seed(3))
    strategy = ConsistentNoise(seed=2, field_resolution=12)
    lab_density = _grid_density(density)
    scaled = nerf.NerfNoiseField(lambda p: lab_density(p / 2) / 2, 2.0, 0.0, 1e10, strategy)
    cameras = sample_cameras(2, CameraRanges(), torch.Generator().manual_seed(4))
    batch = _batch(cameras, 8)
    batch["rays_o"] = 2 * batch["rays_o"]
    expected = render_noise(field_of(strategy, 3), density, cameras, RenderSettings(8, 64))
    torch.testing.assert_close(scaled(batch, (2, 3, 8, 8)), expected, rtol=1e-4, atol=1e-4)
    cut = nerf.NerfNoiseField(lab_density, 1.0, 0.0, 0.1, strategy)
    background = render_noise(field_of(strategy, 3), torch.zeros(2, 2, 2), cameras, RenderSettings(8, 64))
    torch.testing.assert_close(cut(_batch(cameras, 8), (2, 3, 8, 8)), background, rtol=1e-5, atol=1e-5)


def test_the_nerf_source_state_continues_the_same_field_or_refuses(nerf) -> None:
    density = _grid_density(torch.ones(4, 4, 4))
    source = nerf.NerfNoiseField(density, 1.0, 0.0, 1e10, ConsistentNoise(seed=7, shared=0.1))
    state = source.state_dict()
    assert state == {"seed": 7, "field_resolution": 64, "shared": 0.1, "shared_scale": 0}
    resumed = nerf.NerfNoiseField(density, 1.0, 0.0, 1e10, ConsistentNoise(seed=7, shared=0.1))
    resumed.load_state_dict(state)  # the same field: accepted
    other = nerf.NerfNoiseField(density, 1.0, 0.0, 1e10, ConsistentNoise(seed=8, shared=0.1))
    with pytest.raises(ValueError, match=r"seed=7 \(config: 8\).*set system.guidance.noise_options"):
        other.load_state_dict(state)


def test_the_nerf_source_is_bound_by_renderer_type_and_refuses_what_it_cannot_render(nerf) -> None:
    from threestudio_sdi.threestudio.noise_fields import bind_noise_field, noise_field_renderers

    assert "nerf-volume-renderer" in noise_field_renderers()

    def system(renderer_type: str, strategy) -> SimpleNamespace:
        guidance = SimpleNamespace(
            uses_noise_field=True,
            noise_field=None,
            cfg=SimpleNamespace(noise="consistent-noise"),
            guidance_config=SimpleNamespace(strategy=strategy),
        )
        return SimpleNamespace(
            guidance=guidance,
            cfg=SimpleNamespace(renderer_type=renderer_type),
            renderer=SimpleNamespace(cfg=SimpleNamespace(radius=1.5, near_plane=0.1, far_plane=4.0)),
            geometry=SimpleNamespace(forward_density=_grid_density(torch.ones(4, 4, 4))),
        )

    bound = system("nerf-volume-renderer", ConsistentNoise(seed=3, attachment="surface"))
    bind_noise_field(bound)
    source = bound.guidance.noise_field
    assert isinstance(source, nerf.NerfNoiseField)
    assert (source.radius, source.near, source.far, source.strategy.attachment) == (1.5, 0.1, 4.0, "surface")
    with pytest.raises(ValueError, match="system.renderer_type='nvdiff-rasterizer' has none"):
        bind_noise_field(system("nvdiff-rasterizer", ConsistentNoise()))
    with pytest.raises(
        ValueError, match="renders consistent-noise's field, but system.guidance.noise is 'random'"
    ):
        bind_noise_field(system("nerf-volume-renderer", SimpleNamespace(name="random")))
    with pytest.raises(ValueError, match="batch needs rays_o / rays_d at that size"):
        source({"rays_o": torch.zeros(1, 4, 4, 3), "rays_d": torch.ones(1, 4, 4, 3)}, (1, 3, 8, 8))
