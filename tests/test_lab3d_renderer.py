"""The 3D lab's renderer and cameras: exact gradients, closed-form renders, threestudio's conventions."""

from __future__ import annotations

import math

import pytest
import torch

from threestudio_sdi.experimental.lab3d.cameras import (
    CameraRanges,
    camera_rays,
    make_cameras,
    sample_cameras,
    turntable_cameras,
)
from threestudio_sdi.experimental.lab3d.renderer import RenderSettings, VoxelGrid, ray_box_interval, render


def _cameras(elevation: list[float], azimuth: list[float], distance: float = 1.8, fovy: float = 50.0):
    n = len(elevation)
    return make_cameras(
        torch.tensor(elevation, dtype=torch.float64),
        torch.tensor(azimuth, dtype=torch.float64),
        torch.full((n,), distance, dtype=torch.float64),
        torch.full((n,), fovy, dtype=torch.float64),
    )


def test_render_gradient_passes_gradcheck_on_a_tiny_grid(fresh_seed: int) -> None:
    generator = torch.Generator().manual_seed(fresh_seed)
    density = (3 * torch.rand(4, 4, 4, generator=generator, dtype=torch.float64)).requires_grad_()
    colour = torch.rand(3, 4, 4, 4, generator=generator, dtype=torch.float64).requires_grad_()
    cameras = _cameras([20.0, -5.0], [30.0, 200.0], distance=1.6, fovy=60.0)
    settings = RenderSettings(image_size=3, samples_per_ray=6, background=0.3)

    def rgb_and_opacity(d: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rendering = render(VoxelGrid(d, c), cameras, settings)
        return rendering.rgb, rendering.opacity

    assert torch.autograd.gradcheck(rgb_and_opacity, (density, colour), eps=1e-6, atol=1e-7)


def test_a_constant_medium_renders_in_closed_form() -> None:
    """σ and c constant: opacity = 1 − exp(−σ L) for the chord L, exactly (the quadrature is exact)."""
    sigma, colour, background = 0.7, torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64), 0.25
    grid = VoxelGrid(
        torch.full((5, 5, 5), sigma, dtype=torch.float64),
        colour[:, None, None, None].expand(3, 5, 5, 5).clone(),
    )
    cameras = _cameras([0.0], [0.0], distance=3.0)  # on the +x axis, looking at the origin
    rendering = render(grid, cameras, RenderSettings(image_size=5, samples_per_ray=7, background=background))
    # The centre pixel looks straight down −x: its chord through [−1, 1]³ has length 2.
    opacity = 1 - math.exp(-2 * sigma)
    assert rendering.opacity[0, 2, 2].item() == pytest.approx(opacity, abs=1e-12)
    expected = 2 * (colour * opacity + background * (1 - opacity)) - 1
    torch.testing.assert_close(rendering.rgb[0, :, 2, 2], expected, rtol=0, atol=1e-12)
    # Every ray: opacity from its own slab-test chord.
    origins, directions = camera_rays(cameras, 5)
    near, far = ray_box_interval(origins[:, None, None].expand_as(directions), directions)
    torch.testing.assert_close(rendering.opacity, 1 - torch.exp(-sigma * (far - near)), rtol=0, atol=1e-12)


def test_an_empty_grid_shows_the_background() -> None:
    grid = VoxelGrid(torch.zeros(4, 4, 4, dtype=torch.float64), torch.rand(3, 4, 4, 4, dtype=torch.float64))
    rendering = render(grid, _cameras([10.0, 30.0], [0.0, 90.0]), RenderSettings(8, 8, background=0.6))
    torch.testing.assert_close(rendering.rgb, torch.full_like(rendering.rgb, 0.2), rtol=0, atol=1e-15)
    assert rendering.opacity.abs().max() == 0


def test_a_stack_of_assets_renders_as_each_asset_alone(fresh_seed: int) -> None:
    generator = torch.Generator().manual_seed(fresh_seed)
    density = 5 * torch.rand(3, 6, 6, 6, generator=generator, dtype=torch.float64)
    colour = torch.rand(3, 3, 6, 6, 6, generator=generator, dtype=torch.float64)
    cameras = _cameras([0.0, 40.0], [-120.0, 45.0])
    settings = RenderSettings(image_size=6, samples_per_ray=10)
    stacked = render(VoxelGrid(density, colour), cameras, settings)
    for asset in range(3):
        alone = render(VoxelGrid(density[asset], colour[asset]), cameras, settings)
        torch.testing.assert_close(stacked.rgb[asset], alone.rgb, rtol=0, atol=1e-12)
        torch.testing.assert_close(stacked.opacity[asset], alone.opacity, rtol=0, atol=1e-12)


def test_look_at_matrices_follow_threestudio() -> None:
    cameras = _cameras([0.0, 30.0, -10.0], [0.0, 90.0, -135.0], distance=2.0)
    c2w = cameras.c2w
    assert c2w is not None
    rotation = c2w[:, :3, :3]
    torch.testing.assert_close(
        rotation.transpose(1, 2) @ rotation, torch.eye(3, dtype=torch.float64).expand(3, 3, 3)
    )
    e, a = torch.deg2rad(cameras.elevation), torch.deg2rad(cameras.azimuth)
    position = 2.0 * torch.stack([e.cos() * a.cos(), e.cos() * a.sin(), e.sin()], dim=-1)
    torch.testing.assert_close(c2w[:, :3, 3], position)
    # The camera looks along its −z axis, at the origin; its up axis has a positive world z.
    torch.testing.assert_close(-rotation[:, :, 2], -position / 2.0)
    assert (rotation[:, 2, 1] > 0).all()
    # At azimuth 0 (camera on +x) world +y is on the image's right, world +z at its top.
    assert torch.allclose(rotation[0, :, 0], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))


def test_a_point_on_the_right_and_top_shows_on_the_right_and_top() -> None:
    """A blob at world (0, +0.6, +0.6) seen from the +x axis lands in the image's top-right quadrant."""
    line = torch.linspace(-1, 1, 16, dtype=torch.float64)
    z, y, x = torch.meshgrid(line, line, line, indexing="ij")
    blob = 50.0 * ((x**2 + (y - 0.6) ** 2 + (z - 0.6) ** 2) < 0.1).double()
    grid = VoxelGrid(blob, torch.ones(3, 16, 16, 16, dtype=torch.float64))
    opacity = render(grid, _cameras([0.0], [0.0], fovy=70.0), RenderSettings(16, 32)).opacity[0]
    top_right = opacity[:8, 8:].sum()
    assert top_right > 0.9 * opacity.sum() > 0


def test_training_cameras_are_seeded_inside_their_ranges_with_stratified_azimuths(fresh_seed: int) -> None:
    ranges = CameraRanges()
    batch = 8
    cameras = sample_cameras(batch, ranges, torch.Generator().manual_seed(fresh_seed))
    again = sample_cameras(batch, ranges, torch.Generator().manual_seed(fresh_seed))
    torch.testing.assert_close(cameras.c2w, again.c2w, rtol=0, atol=0)
    for name in ("elevation", "distance", "fovy"):
        low, high = getattr(ranges, name)
        values = getattr(cameras, name)
        assert ((values >= low) & (values <= high)).all(), (name, values)
    strata = torch.floor((cameras.azimuth + 180) / 360 * batch)
    torch.testing.assert_close(strata, torch.arange(batch, dtype=torch.float64))


def test_held_out_views_are_a_turntable_at_the_centre_of_the_ranges() -> None:
    cameras = turntable_cameras(4, CameraRanges())
    torch.testing.assert_close(
        cameras.azimuth, torch.tensor([-135.0, -45.0, 45.0, 135.0], dtype=torch.float64)
    )
    assert cameras.elevation.unique().tolist() == [17.5]
    assert cameras.distance.unique().tolist() == [1.75]
    assert cameras.fovy is not None and cameras.fovy.unique().tolist() == [55.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"elevation": (-10.0, 90.0)}, "camera range elevation"),
        ({"distance": (2.0, 1.5)}, "low <= high"),
        ({"fovy": (0.0, 70.0)}, "camera range fovy"),
    ],
)
def test_bad_camera_ranges_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CameraRanges(**kwargs)


def test_bad_grids_and_settings_are_named() -> None:
    with pytest.raises(ValueError, match="colour must have shape"):
        VoxelGrid(torch.zeros(4, 4, 4), torch.zeros(3, 4, 4, 5))
    with pytest.raises(ValueError, match="samples_per_ray"):
        RenderSettings(samples_per_ray=0)
