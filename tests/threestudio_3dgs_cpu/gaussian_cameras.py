"""The camera matrices threestudio-3dgs hands the rasterizer, written from threestudio's convention.

threestudio-3dgs renders each view with ``get_cam_info_gaussian(c2w, fovx, fovy, znear=0.1, zfar=100)``
of ``threestudio.utils.ops``: the OpenGL camera-to-world ``c2w`` (the camera looks along −z, y up) is
turned into an OpenCV-style one by negating its y and z axes; the view matrix is its inverse and the
full projection is view · P with the perspective P of ``get_projection_matrix_gaussian`` (depth mapped
to [0, 1] between znear and zfar, w = z), both stored **transposed** (points are row vectors), as the
CUDA rasterizer reads them. :func:`gaussian_camera` builds the same matrices here, so that the stand-in's
tests need no threestudio; the integration run checks them against threestudio's own function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

ZNEAR = 0.1
ZFAR = 100.0


@dataclass(frozen=True)
class GaussianCamera:
    viewmatrix: Tensor
    """[4, 4], the world-to-view matrix transposed."""
    projmatrix: Tensor
    """[4, 4], (P · world-to-view) transposed."""
    campos: Tensor
    """[3], the camera centre."""
    tanfovx: float
    tanfovy: float
    width: int
    height: int


def look_at(eye: Tensor, target: Tensor | None = None, up: Tensor | None = None) -> Tensor:
    """OpenGL camera-to-world [4, 4] at ``eye`` looking at ``target`` (default the origin), z up."""
    dtype = eye.dtype
    target = torch.zeros(3, dtype=dtype) if target is None else target
    up = torch.tensor([0.0, 0.0, 1.0], dtype=dtype) if up is None else up
    forward = torch.nn.functional.normalize(target - eye, dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up), dim=0)
    true_up = torch.linalg.cross(right, forward)
    c2w = torch.eye(4, dtype=dtype)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, -forward, eye
    return c2w


def gaussian_camera(
    c2w: Tensor, fovy: float, width: int, height: int, fovx: float | None = None
) -> GaussianCamera:
    """The rasterizer's matrices of an OpenGL ``c2w`` (fov in radians; fovx defaults to fovy, as
    threestudio-3dgs passes it)."""
    fovx = fovy if fovx is None else fovx
    dtype = c2w.dtype
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=dtype))
    w2c = torch.linalg.inv(c2w @ flip)
    tan_x, tan_y = math.tan(fovx / 2), math.tan(fovy / 2)
    projection = torch.zeros(4, 4, dtype=dtype)
    projection[0, 0] = 1 / tan_x
    projection[1, 1] = 1 / tan_y
    projection[3, 2] = 1.0
    projection[2, 2] = ZFAR / (ZFAR - ZNEAR)
    projection[2, 3] = -(ZFAR * ZNEAR) / (ZFAR - ZNEAR)
    viewmatrix = w2c.T.contiguous()
    projmatrix = (viewmatrix @ projection.T).contiguous()
    return GaussianCamera(viewmatrix, projmatrix, c2w[:3, 3].clone(), tan_x, tan_y, width, height)


def intrinsics(camera: GaussianCamera, centre_offset: float = -0.5) -> Tensor:
    """K [3, 3] of the same camera for a pinhole model: f = size / (2 tan(fov/2)) and principal point
    size/2 + ``centre_offset`` (−0.5: the rasterizer's pixel centres at integer coordinates)."""
    fx = camera.width / (2 * camera.tanfovx)
    fy = camera.height / (2 * camera.tanfovy)
    return torch.tensor(
        [
            [fx, 0.0, camera.width / 2 + centre_offset],
            [0.0, fy, camera.height / 2 + centre_offset],
            [0.0, 0.0, 1.0],
        ],
        dtype=camera.viewmatrix.dtype,
    )
