"""The forward pass of the 3DGS CUDA rasterizer in torch; autograd gives the backward (test harness only).

Written for this harness from the published algorithm of *3D Gaussian Splatting* (Kerbl et al. 2023) and
the documented behaviour of its rasterizer (``diff_gaussian_rasterization``, the 2023 API that
threestudio-3dgs calls); no CUDA code is copied. Every constant and rounding rule the CUDA kernel applies
is kept, because threestudio-3dgs's densification reads their results:

**Projection** (per Gaussian; matrices are stored transposed, so points are row vectors):

* p_view = [μ, 1] · V[:, :3], p_hom = [μ, 1] · P, p_ndc = p_hom[:3] / (p_hom[3] + 1e-7);
* near culling: a Gaussian with p_view.z ≤ 0.2 is invisible (radius 0);
* Σ = R S² Rᵀ from the quaternion (r, x, y, z) and the scales times ``scale_modifier`` (or the
  precomputed upper triangle xx, xy, xz, yy, yz, zz);
* Σ' = J W Σ Wᵀ Jᵀ (EWA), W the view rotation, J the Jacobian of (f_x x/z, f_y y/z) at p_view with x/z and
  y/z clamped to ±1.3·tan(fov/2), f = size / (2 tan(fov/2)); then Σ' += 0.3 I (the low-pass dilation);
* conic = Σ'⁻¹ as (c/det, −b/det, a/det) of Σ' = [[a, b], [b, c]]; det = 0 is invisible;
* radius = ⌈3 sqrt(λ_max)⌉ with λ_max = mid + sqrt(max(0.1, mid² − det)), mid = (a + c)/2;
* mean in pixels: ((x_ndc + 1)·W − 1)/2 (pixel centres at integers); the tile rectangle (16×16 tiles)
  [⌊(x − r)/16⌋, ⌊(x + r + 15)/16⌋) clamped to the grid (C's truncating ``(int)``); an empty rectangle
  is invisible.

**Colour**: precomputed, or from spherical harmonics of degree ≤ 3 at the direction μ − campos
(the real SH basis with the signs of the 3DGS code), + 0.5, clamped below at 0 (no gradient where clamped).

**Compositing** (per pixel, Gaussians by increasing view depth, only those whose tile rectangle holds the
pixel's tile): power = −½(c_x d_x² + c_z d_y²) − c_y d_x d_y with d = mean − pixel, skipped if > 0;
α = min(0.99, o·exp(power)), skipped if < 1/255; the pixel stops before the first Gaussian that would
take its transmittance below 1e-4. C = Σ c_i α_i T_i + T·bg; the advanced variant also returns
depth Σ z_i α_i T_i and alpha 1 − T.

**Gradients** are autograd's, with the kernel's two conventions: the clamp of α at 0.99 passes the
gradient through (the CUDA backward differentiates o·G whether or not it was clamped), and ``means2D``
receives the gradient of the loss with respect to the projected mean in **NDC units**: the kernel's
dL/dmean2D is dL/d(pixel position) · (W/2, H/2), which is what threestudio-3dgs accumulates for
densification (``densify_grad_threshold``). The value of ``means2D`` is ignored, as by the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

TILE = 16
NEAR_Z = 0.2
FOV_CLAMP = 1.3
DILATION = 0.3
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
W_EPS = 1e-7

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


@dataclass
class Projected:
    """Per-Gaussian results of the projection ([N, ...]; rows of invisible Gaussians are meaningless)."""

    xy: Tensor
    """Mean in pixels [N, 2] (differentiable; ``means2D`` enters here)."""
    depth: Tensor
    """View-space z [N]."""
    cov2d: Tensor
    """Σ' after the 0.3 dilation, as (a, b, c) [N, 3]."""
    conic: Tensor
    """Σ'⁻¹ as (c/det, −b/det, a/det) [N, 3]."""
    radii: Tensor
    """int32 [N], 0 for invisible Gaussians."""
    rect_min: Tensor
    """First tile (x, y) of the rectangle [N, 2], int64."""
    rect_max: Tensor
    """One past the last tile (x, y) [N, 2], int64."""

    @property
    def visible(self) -> Tensor:
        return self.radii > 0


def quaternion_rotation(rotations: Tensor) -> Tensor:
    """R [N, 3, 3] of quaternions (r, x, y, z) [N, 4], taken as they are (the caller normalises)."""
    r, x, y, z = rotations.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - r * z), 2 * (x * z + r * y)],
        [2 * (x * y + r * z), 1 - 2 * (x * x + z * z), 2 * (y * z - r * x)],
        [2 * (x * z - r * y), 2 * (y * z + r * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(row, -1) for row in rows], -2)


def covariance_from_scale_rotation(scales: Tensor, rotations: Tensor, modifier: float = 1.0) -> Tensor:
    """Σ = R S² Rᵀ [N, 3, 3], S = diag(modifier · scales)."""
    rotation = quaternion_rotation(rotations)
    scaled = rotation * (modifier * scales)[:, None, :]
    return scaled @ scaled.transpose(1, 2)


def covariance_from_upper(cov6: Tensor) -> Tensor:
    """The symmetric [N, 3, 3] of the upper triangle (xx, xy, xz, yy, yz, zz) [N, 6]."""
    xx, xy, xz, yy, yz, zz = cov6.unbind(-1)
    rows = [[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]]
    return torch.stack([torch.stack(row, -1) for row in rows], -2)


def homogeneous(points: Tensor) -> Tensor:
    return torch.cat([points, torch.ones_like(points[:, :1])], dim=1)


def in_frustum(means3D: Tensor, viewmatrix: Tensor) -> Tensor:
    """The kernel's near culling: p_view.z > 0.2 (bool [N])."""
    return (homogeneous(means3D) @ viewmatrix[:, 2]) > NEAR_Z


def project(
    means3D: Tensor,
    means2D: Tensor,
    cov3d: Tensor,
    viewmatrix: Tensor,
    projmatrix: Tensor,
    tanfovx: float,
    tanfovy: float,
    width: int,
    height: int,
) -> Projected:
    """The kernel's preprocessing of every Gaussian (module docstring)."""
    points = homogeneous(means3D)
    p_view = points @ viewmatrix[:, :3]
    p_hom = points @ projmatrix
    p_ndc = p_hom[:, :2] / (p_hom[:, 3:4] + W_EPS)
    # The kernel ignores means2D's value and writes dL/dmean2D in NDC units: (value − value) · ∂pixel/∂ndc.
    offset = means2D[:, :2] - means2D[:, :2].detach()
    scale = torch.tensor([0.5 * width, 0.5 * height], dtype=means3D.dtype, device=means3D.device)
    xy = ((p_ndc + 1) * scale * 2 - 1) * 0.5 + offset * scale

    focal_x = width / (2 * tanfovx)
    focal_y = height / (2 * tanfovy)
    tz = p_view[:, 2]
    tx = (p_view[:, 0] / tz).clamp(-FOV_CLAMP * tanfovx, FOV_CLAMP * tanfovx) * tz
    ty = (p_view[:, 1] / tz).clamp(-FOV_CLAMP * tanfovy, FOV_CLAMP * tanfovy) * tz
    zero = torch.zeros_like(tz)
    jacobian = torch.stack(
        [
            torch.stack([focal_x / tz, zero, -focal_x * tx / (tz * tz)], -1),
            torch.stack([zero, focal_y / tz, -focal_y * ty / (tz * tz)], -1),
        ],
        -2,
    )  # [N, 2, 3]
    rotation = viewmatrix[:3, :3].T  # the world-to-view rotation (the matrix is stored transposed)
    transform = jacobian @ rotation
    cov = transform @ cov3d @ transform.transpose(1, 2)
    a = cov[:, 0, 0] + DILATION
    b = cov[:, 0, 1]
    c = cov[:, 1, 1] + DILATION
    det = a * c - b * b
    safe_det = torch.where(det == 0, torch.ones_like(det), det)
    conic = torch.stack([c / safe_det, -b / safe_det, a / safe_det], -1)

    with torch.no_grad():
        mid = 0.5 * (a + c)
        spread = torch.sqrt(torch.clamp(mid * mid - det, min=0.1))
        radius = torch.ceil(3.0 * torch.sqrt(torch.maximum(mid + spread, mid - spread)))
        grid = torch.tensor([(width + TILE - 1) // TILE, (height + TILE - 1) // TILE], device=means3D.device)
        low = torch.trunc((xy.detach() - radius[:, None]) / TILE).long()
        high = torch.trunc((xy.detach() + radius[:, None] + TILE - 1) / TILE).long()
        rect_min = torch.minimum(grid, low.clamp(min=0))
        rect_max = torch.minimum(grid, high.clamp(min=0))
        area = (rect_max - rect_min).prod(-1)
        visible = (tz > NEAR_Z) & (det != 0) & (area > 0) & radius.isfinite()
        radii = torch.where(visible, radius, torch.zeros_like(radius)).int()
    return Projected(xy, tz, torch.stack([a, b, c], -1), conic, radii, rect_min, rect_max)


def sh_to_rgb(shs: Tensor, degree: int, means3D: Tensor, campos: Tensor) -> Tensor:
    """RGB [N, 3] of SH coefficients [N, M, 3] (degree ≤ 3, M ≥ (degree + 1)²) seen from ``campos``."""
    if not 0 <= degree <= 3:
        raise ValueError(f"sh_degree must be in 0..3, got {degree}")
    if shs.shape[1] < (degree + 1) ** 2:
        raise ValueError(f"sh_degree {degree} needs {(degree + 1) ** 2} coefficients, shs has {shs.shape[1]}")
    direction = F.normalize(means3D - campos[None, :], dim=-1, eps=0.0)
    x, y, z = (direction[:, i : i + 1] for i in range(3))
    sh = shs
    result = SH_C0 * sh[:, 0]
    if degree > 0:
        result = result - SH_C1 * y * sh[:, 1] + SH_C1 * z * sh[:, 2] - SH_C1 * x * sh[:, 3]
    if degree > 1:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        result = (
            result
            + SH_C2[0] * xy * sh[:, 4]
            + SH_C2[1] * yz * sh[:, 5]
            + SH_C2[2] * (2 * zz - xx - yy) * sh[:, 6]
            + SH_C2[3] * xz * sh[:, 7]
            + SH_C2[4] * (xx - yy) * sh[:, 8]
        )
    if degree > 2:
        result = (
            result
            + SH_C3[0] * y * (3 * xx - yy) * sh[:, 9]
            + SH_C3[1] * xy * z * sh[:, 10]
            + SH_C3[2] * y * (4 * zz - xx - yy) * sh[:, 11]
            + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[:, 12]
            + SH_C3[4] * x * (4 * zz - xx - yy) * sh[:, 13]
            + SH_C3[5] * z * (xx - yy) * sh[:, 14]
            + SH_C3[6] * x * (xx - 3 * yy) * sh[:, 15]
        )
    return torch.clamp(result + 0.5, min=0.0)


@dataclass
class Composited:
    """Images of one view: colour [C, H, W], depth [1, H, W], alpha [1, H, W]."""

    color: Tensor
    depth: Tensor
    alpha: Tensor


def tile_weights(xy: Tensor, conic: Tensor, opacity: Tensor, pixels: Tensor, covered: Tensor) -> Tensor:
    """The blending weights w = α T [P_pix, G] of depth-sorted Gaussians at ``pixels`` [P_pix, 2]
    (``covered`` [G]: the Gaussians whose tile rectangle holds this tile)."""
    d = xy[None, :, :] - pixels[:, None, :]
    dx, dy = d[..., 0], d[..., 1]
    power = -0.5 * (conic[None, :, 0] * dx * dx + conic[None, :, 2] * dy * dy) - conic[None, :, 1] * dx * dy
    raw = opacity[None, :] * torch.exp(torch.clamp(power, max=0.0))
    alpha = raw - torch.relu(raw - ALPHA_MAX).detach()  # min(0.99, ·), gradient passed through
    active = covered[None, :] & (power <= 0) & (alpha.detach() >= ALPHA_MIN)
    alpha = torch.where(active, alpha, torch.zeros_like(alpha))
    with torch.no_grad():
        survives = torch.cumprod(1 - alpha, dim=1) >= T_MIN  # a prefix: stop before T < 1e-4
    alpha = alpha * survives
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], 1), 1)
    return alpha * transmittance


@dataclass
class Blend:
    """What compositing one view takes from the geometry and the camera alone: the depth order, each
    covered tile's pixels, Gaussians and weights w = α T, and the images that do not depend on colour."""

    order: Tensor
    """Indices of the visible Gaussians by increasing view depth [G]."""
    tiles: list[tuple[Tensor, Tensor, Tensor]]
    """(pixel index [P_pix], Gaussians of ``order`` covering the tile [G_t], weights [P_pix, G_t])."""
    depth: Tensor
    """Σ z_i w_i [1, H·W]."""
    transmittance: Tensor
    """T = 1 − Σ w_i [1, H·W]."""


def blend(projected: Projected, opacity: Tensor, width: int, height: int) -> Blend:
    """The blending weights of the visible Gaussians, tile by tile (module docstring)."""
    dtype, device = projected.xy.dtype, projected.xy.device
    visible = projected.visible.nonzero().squeeze(1)
    order = visible[torch.argsort(projected.depth.detach()[visible], stable=True)]
    xy, conic, depth = projected.xy[order], projected.conic[order], projected.depth[order]
    opacity = opacity.reshape(-1)[order]
    rect_min, rect_max = projected.rect_min[order], projected.rect_max[order]
    tiles = []
    depth_image = torch.zeros(1, height * width, dtype=dtype, device=device)
    transmittance = torch.ones(1, height * width, dtype=dtype, device=device)
    for tile_y in range(0, (height + TILE - 1) // TILE):
        for tile_x in range(0, (width + TILE - 1) // TILE):
            covered = (
                (rect_min[:, 0] <= tile_x)
                & (tile_x < rect_max[:, 0])
                & (rect_min[:, 1] <= tile_y)
                & (tile_y < rect_max[:, 1])
            )
            columns = torch.arange(tile_x * TILE, min((tile_x + 1) * TILE, width), device=device)
            rows = torch.arange(tile_y * TILE, min((tile_y + 1) * TILE, height), device=device)
            if not bool(covered.any()):
                continue
            grid_y, grid_x = torch.meshgrid(rows, columns, indexing="ij")
            index = (grid_y * width + grid_x).reshape(-1)
            chosen = covered.nonzero().squeeze(1)
            pixels = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], -1).to(dtype)
            weights = tile_weights(xy[chosen], conic[chosen], opacity[chosen], pixels, covered[chosen])
            tiles.append((index, chosen, weights))
            depth_image = depth_image.index_copy(1, index, (weights @ depth[chosen])[None])
            remaining = 1 - weights.sum(1)  # Σ α_i T_i = 1 − Π(1 − α_i)
            transmittance = transmittance.index_copy(1, index, remaining[None])
    return Blend(order, tiles, depth_image, transmittance)


def shade(blended: Blend, colors: Tensor, bg: Tensor, width: int, height: int) -> Composited:
    """C = Σ c_i w_i + T·bg per pixel, with depth and alpha (module docstring)."""
    channels = colors.shape[1]
    transmittance = blended.transmittance
    colors = colors[blended.order]
    color = torch.zeros(channels, height * width, dtype=transmittance.dtype, device=transmittance.device)
    for index, chosen, weights in blended.tiles:
        color = color.index_copy(1, index, (weights @ colors[chosen]).T)
    color = color + transmittance * bg.to(transmittance.dtype).reshape(-1, 1)
    return Composited(
        color.reshape(channels, height, width),
        blended.depth.reshape(1, height, width),
        (1 - transmittance).reshape(1, height, width),
    )
