"""The CPU stand-ins of the threestudio-3dgs harness (tests/threestudio_3dgs_cpu), checked independently.

* the projection (2D means, depths, 2D covariances, conics) against gsplat's pure-torch projection
  (``gsplat.cuda._torch_impl``, an independent implementation), and the 3D covariance and the spherical
  harmonics against gsplat's too;
* the radii and tile rectangles against eigenvalues computed in float64;
* the image, depth and alpha against a brute-force per-pixel loop that follows the kernel literally
  (Gaussians one at a time, front to back, the skip and stop rules), fed by gsplat's projection;
* the gradients by ``torch.autograd.gradcheck`` in float64, and the 2D-means gradient against the
  brute force's own gradient with respect to the pixel-space mean times (W/2, H/2) — the CUDA kernel's
  NDC units — and against a closed form for one Gaussian;
* ``simple_knn._C.distCUDA2`` against a float64 brute force, and the ``cuda`` shim.
"""

from __future__ import annotations

import math
import pathlib
import sys
import types

import pytest
import torch

HARNESS = pathlib.Path(__file__).resolve().parent / "threestudio_3dgs_cpu"
sys.path.insert(0, str(HARNESS))
if str(HARNESS / "stubs") not in sys.path:
    sys.path.append(str(HARNESS / "stubs"))

import cuda_shim  # noqa: E402
import diff_gaussian_rasterization as dgr  # noqa: E402
from diff_gaussian_rasterization import _torch_raster as raster  # noqa: E402
from gaussian_cameras import gaussian_camera, intrinsics, look_at  # noqa: E402
from simple_knn._C import distCUDA2  # noqa: E402

BLEND = raster.blend

gsplat_impl = pytest.importorskip(
    "gsplat.cuda._torch_impl", reason="gsplat==1.5.3 (the test extra) is the reference"
)

WIDTH, HEIGHT = 24, 20  # neither a multiple of the 16-pixel tile
FLIP = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))
"""OpenCV ↔ OpenGL camera axes (threestudio's ``convert_pose``)."""
IMAGE_ATOL = 2e-6
"""Images vs the brute force fed by gsplat's means: the kernel divides by w + 1e-7, gsplat by z, so the
means differ by up to ~1e-5 px and the images by ~1e-7; any real disagreement is ≥ 1e-3."""


def test_the_standins_are_the_harness_ones():
    assert dgr.__standin__ and sys.modules["simple_knn"].__standin__


# ------------------------------------------------------------------ scenes
def random_scene(seed: int, count: int = 24, spread: float = 0.6, dtype=torch.float64) -> dict:
    """Gaussians around the origin seen by a camera at distance 2.5 (threestudio-3dgs's convention)."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(*shape, low=0.0, high=1.0):
        return low + (high - low) * torch.rand(*shape, generator=generator, dtype=dtype)

    eye = torch.tensor([2.5 * math.cos(0.3), 2.5 * math.sin(0.3), 0.6], dtype=dtype)
    camera = gaussian_camera(look_at(eye), math.radians(55), WIDTH, HEIGHT)
    return {
        "camera": camera,
        "means": uniform(count, 3, low=-spread, high=spread),
        "scales": uniform(count, 3, low=0.03, high=0.25),
        "rotations": torch.nn.functional.normalize(
            torch.randn(count, 4, generator=generator, dtype=dtype), dim=1
        ),
        "opacities": uniform(count, 1, low=0.2, high=0.95),
        "colors": uniform(count, 3),
        "shs": 0.5 * torch.randn(count, 16, 3, generator=generator, dtype=dtype),
        "bg": uniform(3),
    }


def settings(scene: dict, sh_degree: int = 0) -> dgr.GaussianRasterizationSettings:
    camera = scene["camera"]
    return dgr.GaussianRasterizationSettings(
        image_height=camera.height,
        image_width=camera.width,
        tanfovx=camera.tanfovx,
        tanfovy=camera.tanfovy,
        bg=scene["bg"],
        scale_modifier=1.0,
        viewmatrix=camera.viewmatrix,
        projmatrix=camera.projmatrix,
        sh_degree=sh_degree,
        campos=camera.campos,
        prefiltered=False,
        debug=False,
    )


def render(scene: dict, variant: str = "advanced", **overrides) -> tuple:
    sh_degree = overrides.pop("sh_degree", 0)
    inputs = {
        "means3D": scene["means"],
        "means2D": torch.zeros_like(scene["means"], requires_grad=True),
        "opacities": scene["opacities"],
        "colors_precomp": scene["colors"],
        "scales": scene["scales"],
        "rotations": scene["rotations"],
        **overrides,
    }
    previous, dgr.VARIANT = dgr.VARIANT, variant
    try:
        return dgr.GaussianRasterizer(settings(scene, sh_degree))(**inputs), inputs
    finally:
        dgr.VARIANT = previous


def gsplat_projection(scene: dict, centre_offset: float = -0.5) -> tuple:
    """gsplat's means2d, depths, conics and 2D covariances (+0.3 I) of the scene."""
    camera = scene["camera"]
    covars, _ = gsplat_impl._quat_scale_to_covar_preci(
        scene["rotations"], scene["scales"], compute_preci=False
    )
    viewmats = camera.viewmatrix.T[None]  # the world-to-view matrix, untransposed
    ks = intrinsics(camera, centre_offset)[None]
    _, means2d, depths, conics, _ = gsplat_impl._fully_fused_projection(
        scene["means"], covars, viewmats, ks, camera.width, camera.height, eps2d=0.3, near_plane=0.2
    )
    means_c, covars_c = gsplat_impl._world_to_cam(scene["means"], covars, viewmats)
    _, cov2d = gsplat_impl._persp_proj(means_c, covars_c, ks, camera.width, camera.height)
    return means2d[0], depths[0], conics[0], cov2d[0] + 0.3 * torch.eye(2, dtype=cov2d.dtype), covars


def project(scene: dict) -> raster.Projected:
    camera = scene["camera"]
    cov3d = raster.covariance_from_scale_rotation(scene["scales"], scene["rotations"])
    return raster.project(
        scene["means"],
        torch.zeros_like(scene["means"]),
        cov3d,
        camera.viewmatrix,
        camera.projmatrix,
        camera.tanfovx,
        camera.tanfovy,
        camera.width,
        camera.height,
    )


# ------------------------------------------------------------------ projection vs gsplat
def test_covariance_3d_matches_gsplat(fresh_seed):
    scene = random_scene(fresh_seed)
    ours = raster.covariance_from_scale_rotation(scene["scales"], scene["rotations"])
    theirs, _ = gsplat_impl._quat_scale_to_covar_preci(
        scene["rotations"], scene["scales"], compute_preci=False
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


def test_means_depths_and_conics_match_gsplat(fresh_seed):
    scene = random_scene(fresh_seed)
    projected = project(scene)
    means2d, depths, conics, cov2d, _ = gsplat_projection(scene)
    assert projected.visible.all()
    # the kernel divides by w + 1e-7, gsplat by z: relative differences of 1e-7 / z
    torch.testing.assert_close(projected.xy, means2d, rtol=0, atol=1e-5)
    torch.testing.assert_close(projected.depth, depths, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(projected.conic, conics, rtol=1e-9, atol=1e-12)
    a, b, c = projected.cov2d.unbind(-1)
    torch.testing.assert_close(torch.stack([a, b, b, c], -1).reshape(-1, 2, 2), cov2d, rtol=1e-9, atol=1e-12)


def test_covariance_is_clamped_at_1_3_tan_fov_like_gsplats(fresh_seed):
    """Off-axis Gaussians (beyond 1.3·tan(fov/2)) get the Jacobian of the clamped direction; with the
    principal point at the image centre gsplat's limits are the same 1.3·tan(fov/2)."""
    scene = random_scene(fresh_seed, spread=0.2)
    camera = scene["camera"]
    c2w = torch.linalg.inv(camera.viewmatrix.T)  # view-to-world of the flipped (OpenCV) camera
    depth = torch.linspace(1.0, 2.0, scene["means"].shape[0], dtype=torch.float64)
    sideways = torch.stack([2.0 * camera.tanfovx * depth, -1.8 * camera.tanfovy * depth, depth], -1)
    scene["means"] = (torch.cat([sideways, torch.ones_like(depth)[:, None]], 1) @ c2w.T)[:, :3]
    a, b, c = project(scene).cov2d.unbind(-1)
    _, _, _, cov2d, _ = gsplat_projection(scene, centre_offset=0.0)
    torch.testing.assert_close(torch.stack([a, b, b, c], -1).reshape(-1, 2, 2), cov2d, rtol=1e-9, atol=1e-12)


def test_radii_and_tiles_follow_the_largest_eigenvalue(fresh_seed):
    scene = random_scene(fresh_seed)
    projected = project(scene)
    cov = projected.cov2d.detach()
    matrices = torch.stack([cov[:, 0], cov[:, 1], cov[:, 1], cov[:, 2]], -1).reshape(-1, 2, 2)
    eigen = torch.linalg.eigvalsh(matrices)
    gap = (eigen[:, 1] - eigen[:, 0]) / 2
    # above the kernel's floor (gap² ≥ 0.1) its λ is the true largest eigenvalue
    sharp = gap.pow(2) >= 0.1 + 1e-9
    expected = torch.ceil(3 * torch.sqrt(eigen[:, 1]))
    assert sharp.any()
    assert torch.equal(projected.radii[sharp].double(), expected[sharp])
    # below it the kernel uses mid + sqrt(0.1)
    mid = eigen.mean(1)
    floored = torch.ceil(3 * torch.sqrt(mid + math.sqrt(0.1)))
    assert torch.equal(projected.radii[~sharp].double(), floored[~sharp])
    xy = projected.xy.detach()
    for index in range(len(xy)):
        r = float(projected.radii[index])
        low = [max(0, math.floor((xy[index, k] - r) / 16)) for k in range(2)]
        high = [max(0, math.floor((xy[index, k] + r + 15) / 16)) for k in range(2)]
        grid = [math.ceil(WIDTH / 16), math.ceil(HEIGHT / 16)]
        assert projected.rect_min[index].tolist() == [min(g, v) for g, v in zip(grid, low)]
        assert projected.rect_max[index].tolist() == [min(g, v) for g, v in zip(grid, high)]


def test_isotropic_radius_uses_the_kernels_floor():
    """A nearly isotropic footprint ((a − c)²/4 + b² < 0.1): λ = (a + c)/2 + sqrt(0.1) in the radius (the
    kernel's floor; a ≠ c only because threestudio-3dgs passes fovx = fovy for a non-square image)."""
    scene = random_scene(0, count=1)
    camera = scene["camera"]
    scene["means"] = camera.campos[None] * 0.0  # the origin, on the optical axis
    scene["rotations"] = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64)
    scene["scales"] = torch.full((1, 3), 0.05, dtype=torch.float64)
    projected = project(scene)
    a, b, c = projected.cov2d[0].tolist()
    assert (a - c) ** 2 / 4 + b * b < 0.1
    assert int(projected.radii[0]) == math.ceil(3 * math.sqrt((a + c) / 2 + math.sqrt(0.1)))


def test_near_culling_and_empty_rectangles_make_radius_zero():
    scene = random_scene(1, count=3)
    camera = scene["camera"]
    c2w = torch.linalg.inv(camera.viewmatrix.T)
    in_view = [[0.0, 0.0, 0.1], [0.0, 0.0, 0.3], [50.0, 0.0, 1.0]]  # too near, visible, far off-screen
    points = torch.tensor(in_view, dtype=torch.float64)
    scene["means"] = (torch.cat([points, torch.ones(3, 1, dtype=torch.float64)], 1) @ c2w.T)[:, :3]
    scene["scales"] = torch.full((3, 3), 0.01, dtype=torch.float64)
    radii = project(scene).radii
    assert radii[0] == 0 and radii[1] > 0 and radii[2] == 0
    rasterizer = dgr.GaussianRasterizer(settings(scene))
    assert rasterizer.markVisible(scene["means"]).tolist() == [False, True, True]


def test_spherical_harmonics_match_gsplat(fresh_seed):
    scene = random_scene(fresh_seed)
    campos = scene["camera"].campos
    for degree in range(4):
        ours = raster.sh_to_rgb(scene["shs"], degree, scene["means"], campos)
        theirs = gsplat_impl._spherical_harmonics(degree, scene["means"] - campos, scene["shs"])
        torch.testing.assert_close(ours, torch.clamp(theirs + 0.5, min=0), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ the image vs a brute-force loop
def brute_force(
    xy: torch.Tensor,
    conic: torch.Tensor,
    depth: torch.Tensor,
    radii: torch.Tensor,
    opacity: torch.Tensor,
    colors: torch.Tensor,
    bg: torch.Tensor,
    width: int,
    height: int,
    events: dict[str, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel's per-pixel loop (pixels vectorised, Gaussians one at a time, front to back);
    ``events`` counts the pixels where each rule fired (clamp, skip, stop)."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    px, py = xs.reshape(-1).to(xy.dtype), ys.reshape(-1).to(xy.dtype)
    tile_x, tile_y = xs.reshape(-1) // 16, ys.reshape(-1) // 16
    grid_x, grid_y = math.ceil(width / 16), math.ceil(height / 16)
    pixels = px.numel()
    transmittance = torch.ones(pixels, dtype=xy.dtype)
    done = torch.zeros(pixels, dtype=torch.bool)
    color = torch.zeros(colors.shape[1], pixels, dtype=xy.dtype)
    depth_image = torch.zeros(pixels, dtype=xy.dtype)
    order = sorted((i for i in range(len(xy)) if radii[i] > 0), key=lambda i: float(depth[i]))
    for i in order:
        r = float(radii[i])
        x, y = float(xy[i, 0].detach()), float(xy[i, 1].detach())
        low_x, high_x = (
            min(grid_x, max(0, math.floor((x - r) / 16))),
            min(grid_x, max(0, math.floor((x + r + 15) / 16))),
        )
        low_y, high_y = (
            min(grid_y, max(0, math.floor((y - r) / 16))),
            min(grid_y, max(0, math.floor((y + r + 15) / 16))),
        )
        in_rect = (tile_x >= low_x) & (tile_x < high_x) & (tile_y >= low_y) & (tile_y < high_y)
        dx, dy = xy[i, 0] - px, xy[i, 1] - py
        power = -0.5 * (conic[i, 0] * dx * dx + conic[i, 2] * dy * dy) - conic[i, 1] * dx * dy
        raw = opacity[i] * torch.exp(power)
        alpha = torch.minimum(raw, torch.tensor(0.99, dtype=xy.dtype))
        active = in_rect & ~done & (power <= 0) & (alpha >= 1 / 255)
        test_t = transmittance * (1 - alpha)
        stop = active & (test_t < 1e-4)
        if events is not None:
            events["clamp"] = events.get("clamp", 0) + int((active & (raw > 0.99)).sum())
            events["skip"] = events.get("skip", 0) + int((in_rect & ~done & (alpha < 1 / 255)).sum())
            events["stop"] = events.get("stop", 0) + int(stop.sum())
        blend = active & ~stop
        weight = torch.where(blend, alpha * transmittance, torch.zeros_like(alpha))
        color = color + weight[None] * colors[i][:, None]
        depth_image = depth_image + weight * depth[i]
        transmittance = torch.where(blend, test_t, transmittance)
        done = done | stop
    color = color + transmittance[None] * bg[:, None]
    return (
        color.reshape(-1, height, width),
        depth_image.reshape(1, height, width),
        (1 - transmittance).reshape(1, height, width),
    )


def reference_images(
    scene: dict,
    colors: torch.Tensor | None = None,
    xy: torch.Tensor | None = None,
    events: dict | None = None,
) -> tuple:
    """The brute force fed by gsplat's projection (and the stand-in's radii, checked above)."""
    means2d, depths, conics, _, _ = gsplat_projection(scene)
    radii = project(scene).radii
    return brute_force(
        means2d if xy is None else xy,
        conics,
        depths,
        radii,
        scene["opacities"].reshape(-1),
        scene["colors"] if colors is None else colors,
        scene["bg"],
        WIDTH,
        HEIGHT,
        events,
    )


@pytest.mark.parametrize("count", [6, 40])
def test_image_depth_and_alpha_match_the_brute_force(fresh_seed, count):
    scene = random_scene(fresh_seed, count=count)
    (color, radii, depth, alpha), _ = render(scene)
    expected = reference_images(scene)
    assert color.shape == (3, HEIGHT, WIDTH) and radii.dtype == torch.int32
    torch.testing.assert_close(color, expected[0], rtol=0, atol=IMAGE_ATOL)
    torch.testing.assert_close(depth, expected[1], rtol=0, atol=IMAGE_ATOL)
    torch.testing.assert_close(alpha, expected[2], rtol=0, atol=IMAGE_ATOL)


def test_the_skip_clamp_and_stop_rules_all_fire():
    """A dense stack of opaque Gaussians: α is clamped at 0.99, faint tails are skipped and pixels stop
    before T < 1e-4 (two clamped layers leave 1e-4; a third would stop); the stand-in equals the brute force."""
    scene = random_scene(3, count=30, spread=0.15)
    scene["opacities"] = torch.full_like(scene["opacities"], 0.999)
    scene["scales"] = scene["scales"] * 2
    (color, _, _, alpha), _ = render(scene)
    events: dict[str, int] = {}
    expected = reference_images(scene, events=events)
    torch.testing.assert_close(color, expected[0], rtol=0, atol=IMAGE_ATOL)
    torch.testing.assert_close(alpha, expected[2], rtol=0, atol=IMAGE_ATOL)
    assert min(events.values()) > 0, events
    assert 0.99 < float(alpha.detach().max()) <= 1 - 1e-4 + 1e-9


def test_spherical_harmonics_colours_render_like_precomputed_ones(fresh_seed):
    scene = random_scene(fresh_seed)
    (from_sh, *_), _ = render(scene, colors_precomp=None, shs=scene["shs"], sh_degree=3)
    colors = torch.clamp(
        gsplat_impl._spherical_harmonics(3, scene["means"] - scene["camera"].campos, scene["shs"]) + 0.5,
        min=0,
    )
    torch.testing.assert_close(from_sh, reference_images(scene, colors=colors)[0], rtol=0, atol=IMAGE_ATOL)


def test_renders_without_autograd_reuse_the_weights_and_match_bit_for_bit(fresh_seed, monkeypatch):
    """The noise field's repeated renders: a second colour of the same view blends nothing again and
    equals the autograd render exactly; opacity changed in place, or another camera, blends afresh."""
    scene = random_scene(fresh_seed, count=40)
    other = torch.rand(40, 3, generator=torch.Generator().manual_seed(fresh_seed + 1), dtype=torch.float64)
    blends = []
    monkeypatch.setattr(dgr, "_blends", [])
    monkeypatch.setattr(raster, "blend", lambda *args: blends.append(1) or BLEND(*args))

    def exact(scene: dict, **overrides) -> torch.Tensor:
        return render(scene, **overrides)[0][0].detach()

    expected = [exact(scene), exact(scene, colors_precomp=other)]
    assert len(blends) == 2  # autograd renders never reuse
    with torch.no_grad():
        got = [exact(scene), exact(scene, colors_precomp=other)]
        assert len(blends) == 3
        scene["opacities"][0] *= 0.5
        changed = exact(scene)
        assert len(blends) == 4
        eye = torch.tensor([2.5 * math.cos(1.1), 2.5 * math.sin(1.1), 0.6], dtype=torch.float64)
        moved = dict(scene, camera=gaussian_camera(look_at(eye), math.radians(55), WIDTH, HEIGHT))
        exact(moved)
        assert len(blends) == 5
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert torch.equal(changed, exact(scene)) and not torch.equal(changed, expected[0])


def test_native_returns_colour_and_radii_advanced_adds_depth_and_alpha():
    scene = random_scene(4)
    native, _ = render(scene, variant="native")
    advanced, _ = render(scene, variant="advanced")
    assert len(native) == 2 and len(advanced) == 4
    assert torch.equal(native[0], advanced[0]) and torch.equal(native[1], advanced[1])
    assert advanced[2].shape == advanced[3].shape == (1, HEIGHT, WIDTH)


def test_the_package_refuses_what_the_cuda_package_refuses():
    scene = random_scene(5, count=3)
    with pytest.raises(Exception, match="exactly one of either SHs or precomputed colors|excatly one"):
        render(scene, shs=scene["shs"])
    with pytest.raises(Exception, match="scale/rotation pair or precomputed 3D covariance"):
        render(scene, cov3D_precomp=torch.zeros(3, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"colors must be \[N, 3\]"):
        render(scene, colors_precomp=torch.zeros(3, 4, dtype=torch.float64))


def test_precomputed_covariance_renders_like_scales_and_rotations(fresh_seed):
    scene = random_scene(fresh_seed)
    cov = raster.covariance_from_scale_rotation(scene["scales"], scene["rotations"])
    upper = torch.stack(
        [cov[:, 0, 0], cov[:, 0, 1], cov[:, 0, 2], cov[:, 1, 1], cov[:, 1, 2], cov[:, 2, 2]], -1
    )
    (from_scales, *_), _ = render(scene)
    (from_cov, *_), _ = render(scene, scales=None, rotations=None, cov3D_precomp=upper)
    torch.testing.assert_close(from_cov, from_scales, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ gradients
def test_gradcheck_of_every_differentiable_input():
    """float64 gradcheck of colour, depth and alpha with respect to means, scales, rotations, opacities,
    colours (a scene whose α stay below the 0.99 clamp) and SH coefficients."""
    scene = random_scene(6, count=5, spread=0.4)
    scene["opacities"] = scene["opacities"] * 0.8
    camera = scene["camera"]
    scene["camera"] = gaussian_camera(torch.linalg.inv(camera.viewmatrix.T) @ FLIP, math.radians(55), 12, 10)

    def images(means, scales, rotations, opacities, colors):
        out, _ = render(
            {**scene},
            means3D=means,
            means2D=torch.zeros_like(means),
            scales=scales,
            rotations=rotations,
            opacities=opacities,
            colors_precomp=colors,
        )
        color, _, depth, alpha = out
        return color, depth, alpha

    assert int((render(scene)[0][1] > 0).sum()) >= 3  # most of the scene is in the 12×10 view
    keys = ("means", "scales", "rotations", "opacities", "colors")
    inputs = [scene[key].clone().requires_grad_(True) for key in keys]
    assert torch.autograd.gradcheck(images, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)

    def from_sh(shs):
        return render(scene, colors_precomp=None, shs=shs, sh_degree=2)[0][0]

    shs = scene["shs"][:, :9].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(from_sh, [shs], eps=1e-6, atol=1e-5, fast_mode=True)


def test_means2d_gradient_is_in_ndc_units_like_the_kernels(fresh_seed):
    """dL/dmeans2D = dL/d(pixel-space mean) · (W/2, H/2), the brute force differentiated by autograd."""
    scene = random_scene(fresh_seed, count=12)
    scene["opacities"] = scene["opacities"] * 0.9
    weights = torch.randn(
        3, HEIGHT, WIDTH, dtype=torch.float64, generator=torch.Generator().manual_seed(fresh_seed)
    )
    (color, *_), inputs = render(scene)
    (color * weights).sum().backward()
    # the stand-in's own pixel positions (compared with gsplat's in the projection tests)
    means2d = project(scene).xy.detach().requires_grad_(True)
    reference = reference_images(scene, xy=means2d)[0]
    (pixel_grad,) = torch.autograd.grad((reference * weights).sum(), means2d)
    expected = pixel_grad * torch.tensor([WIDTH / 2, HEIGHT / 2], dtype=torch.float64)
    torch.testing.assert_close(inputs["means2D"].grad[:, :2], expected, rtol=1e-6, atol=1e-9)
    assert torch.equal(inputs["means2D"].grad[:, 2], torch.zeros(12, dtype=torch.float64))
    assert float(expected.abs().max()) > 1e-3  # the check is not vacuous


def test_means2d_gradient_of_one_gaussian_has_the_closed_form():
    """One Gaussian of colour 1 at the image centre on black, L = Σ_p x_p C(p) (x_p the pixel's column).

    Continuum limit: ∂L/∂x_mean = o ∫ u_x [Σ'⁻¹u]_x G(u) du over the ellipse where o·G ≥ 1/255 (the
    kernel skips the rest), = o · 2π sqrt(det Σ') · (1 − (1 + R²/2) e^{−R²/2}), R² = 2 ln(255 o): the
    second moment of a Gaussian truncated at Mahalanobis radius R. So dL/dmeans2D.x is W/2 times it.
    """
    size = 64
    eye = torch.tensor([0.0, -2.5, 0.0], dtype=torch.float64)
    camera = gaussian_camera(look_at(eye), math.radians(50), size, size)
    opacity = 0.5
    scene = {
        "camera": camera,
        "means": torch.zeros(1, 3, dtype=torch.float64),
        "scales": torch.tensor([[0.2, 0.1, 0.15]], dtype=torch.float64),
        "rotations": torch.nn.functional.normalize(
            torch.tensor([[1.0, 0.2, -0.3, 0.1]], dtype=torch.float64)
        ),
        "opacities": torch.full((1, 1), opacity, dtype=torch.float64),
        "colors": torch.ones(1, 3, dtype=torch.float64),
        "bg": torch.zeros(3, dtype=torch.float64),
    }
    (color, *_), inputs = render(scene)
    x = torch.arange(size, dtype=torch.float64)[None, None, :]
    (color[0:1] * x).sum().backward()
    a, b, c = project(scene).cov2d[0].tolist()
    r2 = 2 * math.log(255 * opacity)
    kept = 1 - (1 + r2 / 2) * math.exp(-r2 / 2)
    expected = size / 2 * opacity * 2 * math.pi * math.sqrt(a * c - b * b) * kept
    assert inputs["means2D"].grad[0, 0].item() == pytest.approx(expected, rel=5e-3)


# ------------------------------------------------------------------ simple_knn and the cuda shim
def test_dist_cuda2_is_the_mean_squared_distance_to_the_three_nearest(fresh_seed):
    points = torch.randn(700, 3, generator=torch.Generator().manual_seed(fresh_seed))
    got = distCUDA2(points)
    squared = (points.double()[:, None] - points.double()[None]).pow(2).sum(-1)
    squared.fill_diagonal_(float("inf"))
    expected = squared.sort(1).values[:, :3].mean(1)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-7)
    assert distCUDA2(torch.zeros(1, 3)).tolist() == [0.0]
    assert distCUDA2(torch.tensor([[0.0, 0, 0], [3.0, 4, 0]])).tolist() == [25.0, 25.0]


def test_the_cuda_shim_maps_cuda_to_the_cpu_and_undoes_itself():
    module = types.ModuleType("fake_threestudio_3dgs_module")
    module.torch = torch
    sys.modules[module.__name__] = module
    original_cuda = torch.Tensor.cuda
    try:
        shim = cuda_shim.install([module.__name__])
        made = module.torch.zeros(2, 3, device="cuda")
        like = module.torch.zeros_like(made, device=torch.device("cuda:0"))
        assert made.device.type == like.device.type == "cpu"
        assert torch.ones(2).cuda().device.type == "cpu"
        assert module.torch.nn is torch.nn and module.torch.Tensor is torch.Tensor
        assert shim.torch_proxy.rewrites == {"zeros": 1, "zeros_like": 1}
        shim.uninstall()
        assert module.torch is torch and torch.Tensor.cuda is original_cuda
        with pytest.raises(ValueError, match="not loaded"):
            cuda_shim.install(["no_such_module_here"])
        assert torch.Tensor.cuda is original_cuda
    finally:
        torch.Tensor.cuda = original_cuda
        del sys.modules[module.__name__]
