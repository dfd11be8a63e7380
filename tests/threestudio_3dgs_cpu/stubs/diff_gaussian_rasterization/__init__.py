"""CPU stand-in for ``diff_gaussian_rasterization`` (test harness only; NOT the CUDA package).

The interface threestudio-3dgs imports, with the same inputs and outputs, computed in torch by
:mod:`._torch_raster` (its docstring gives the algorithm and the kernel's conventions it keeps):

* :class:`GaussianRasterizationSettings`: the settings tuple (image size, tan(fov/2), background, scale
  modifier, view and full projection matrices stored transposed, SH degree, camera centre, ``prefiltered``,
  ``debug``);
* :class:`GaussianRasterizer`: ``forward(means3D, means2D, opacities, shs=None, colors_precomp=None,
  scales=None, rotations=None, cov3D_precomp=None)`` and ``markVisible(positions)``.

Two variants return what the two installs threestudio-3dgs documents return:

* ``native`` (graphdeco-inria's 2023 rasterizer): ``(color [3, H, W], radii [N] int32)``;
* ``advanced`` (ashawkey's fork, threestudio-3dgs's recommended install, which both of its renderers
  accept): ``(color, radii, depth [1, H, W], alpha [1, H, W])``.

The variant is :data:`VARIANT`, from the environment variable ``DIFF_GAUSSIAN_STANDIN_VARIANT``
(default ``advanced``); a test may set the attribute.

Renders without autograd reuse their blending weights: the consistent-noise field draws the same
Gaussians from the same camera 8 times a step with other colours (``gaussian_noise_field``), and the
weights depend on neither colour nor background, so a repeat costs one product per tile and returns the
same image bit for bit (:data:`BLEND_CACHE_SIZE`). A GPU needs no such thing; the CPU stand-in spent
6× a plain run on those renders.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch import Tensor, nn

from . import _torch_raster as raster

__standin__ = True
VARIANTS = ("native", "advanced")
VARIANT = os.environ.get("DIFF_GAUSSIAN_STANDIN_VARIANT", "advanced")
CHANNELS = 3
"""The CUDA kernel is compiled for 3 colour channels (NUM_CHANNELS); so is this stand-in."""
BLEND_CACHE_SIZE = 8
"""Views whose blending weights are kept for renders without autograd (a batch of 4, twice over)."""
_blends: list[tuple[tuple, raster.Blend]] = []
"""(key, weights) of the latest views rendered without autograd, the most recent last."""


def _blend_key(projected: raster.Projected, opacities: Tensor, width: int, height: int) -> tuple:
    """Everything :func:`raster.blend` reads, so that equal keys give equal weights (the projection's
    tensors are this call's own; the caller's opacities are copied, since it may change them in place)."""
    tensors = (projected.xy, projected.conic, projected.depth, projected.radii, projected.rect_min)
    return (width, height, opacities.detach().clone(), projected.rect_max, *tensors)


def _same_key(a: tuple, b: tuple) -> bool:
    return all(
        torch.equal(x, y) if isinstance(x, Tensor) and isinstance(y, Tensor) else x == y
        for x, y in zip(a, b, strict=True)
    )


def _blend(projected: raster.Projected, opacities: Tensor, width: int, height: int) -> raster.Blend:
    """:func:`raster.blend`, reused for a view rendered before without autograd (module docstring)."""
    if torch.is_grad_enabled():
        return raster.blend(projected, opacities, width, height)
    key = _blend_key(projected, opacities, width, height)
    for position, (cached, blended) in enumerate(_blends):
        if _same_key(cached, key):
            _blends.append(_blends.pop(position))
            return blended
    blended = raster.blend(projected, opacities, width, height)
    _blends.append((key, blended))
    del _blends[:-BLEND_CACHE_SIZE]
    return blended


class GaussianRasterizationSettings(NamedTuple):
    image_height: int
    image_width: int
    tanfovx: float
    tanfovy: float
    bg: Tensor
    scale_modifier: float
    viewmatrix: Tensor
    projmatrix: Tensor
    sh_degree: int
    campos: Tensor
    prefiltered: bool
    debug: bool


def _check_exactly_one(shs: Tensor | None, colors_precomp: Tensor | None, scales, rotations, cov3D) -> None:
    # The CUDA package's own messages (spelling included), so a caller sees what it would see on a GPU.
    if (shs is None) == (colors_precomp is None):
        raise Exception("Please provide excatly one of either SHs or precomputed colors!")
    if ((scales is None or rotations is None) and cov3D is None) or (
        (scales is not None or rotations is not None) and cov3D is not None
    ):
        raise Exception(
            "Please provide exactly one of either scale/rotation pair or precomputed 3D covariance!"
        )


class GaussianRasterizer(nn.Module):
    """Renders one view of N Gaussians (module docstring)."""

    def __init__(self, raster_settings: GaussianRasterizationSettings) -> None:
        super().__init__()
        self.raster_settings = raster_settings

    def markVisible(self, positions: Tensor) -> Tensor:  # noqa: N802  (the package's name)
        """bool [N]: the Gaussians in front of the near plane (the kernel's frustum test)."""
        with torch.no_grad():
            return raster.in_frustum(positions, self.raster_settings.viewmatrix)

    def forward(
        self,
        means3D: Tensor,  # noqa: N803  (the package's argument names)
        means2D: Tensor,  # noqa: N803
        opacities: Tensor,
        shs: Tensor | None = None,
        colors_precomp: Tensor | None = None,
        scales: Tensor | None = None,
        rotations: Tensor | None = None,
        cov3D_precomp: Tensor | None = None,  # noqa: N803
    ) -> tuple[Tensor, ...]:
        if VARIANT not in VARIANTS:
            raise ValueError(f"DIFF_GAUSSIAN_STANDIN_VARIANT must be one of {VARIANTS}, got {VARIANT!r}")
        _check_exactly_one(shs, colors_precomp, scales, rotations, cov3D_precomp)
        s = self.raster_settings
        if cov3D_precomp is not None:
            cov3d = raster.covariance_from_upper(cov3D_precomp)
        else:
            cov3d = raster.covariance_from_scale_rotation(scales, rotations, s.scale_modifier)
        projected = raster.project(
            means3D,
            means2D,
            cov3d,
            s.viewmatrix,
            s.projmatrix,
            s.tanfovx,
            s.tanfovy,
            s.image_width,
            s.image_height,
        )
        if colors_precomp is None:
            colors = raster.sh_to_rgb(shs, s.sh_degree, means3D, s.campos)
        else:
            colors = colors_precomp
        if colors.ndim != 2 or colors.shape[1] != CHANNELS:
            raise ValueError(
                f"colors must be [N, {CHANNELS}] (the kernel's channels), got {tuple(colors.shape)}"
            )
        blended = _blend(projected, opacities, s.image_width, s.image_height)
        images = raster.shade(blended, colors, s.bg, s.image_width, s.image_height)
        if VARIANT == "native":
            return images.color, projected.radii
        return images.color, projected.radii, images.depth, images.alpha
