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
        images = raster.composite(projected, opacities, colors, s.bg, s.image_width, s.image_height)
        if VARIANT == "native":
            return images.color, projected.radii
        return images.color, projected.radii, images.depth, images.alpha
