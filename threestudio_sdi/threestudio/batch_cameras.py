"""threestudio's camera batch keys -> the core's :class:`~threestudio_sdi.classifier_free.Cameras`.

threestudio's data modules (``random-camera-datamodule`` and its validation / test datasets) hand every
batch key to the guidance. The camera keys, in their units (``threestudio/data/uncond.py``):

| key | shape | unit |
|---|---|---|
| ``elevation`` | [B] | degrees above the horizon (z up) |
| ``azimuth`` | [B] | degrees, from +x towards +y |
| ``camera_distances`` | [B] | scene units |
| ``c2w`` | [B, 4, 4] | camera-to-world, OpenGL (the camera looks along −z), perturbations included |
| ``fovy`` | [B] | **radians** (``fovy = fovy_deg · π / 180``), vertical field of view |

:class:`Cameras` takes the field of view in degrees, so :func:`cameras_from_batch` converts it; a
field of view outside (0, π) cannot be radians and is refused (a batch that already holds degrees).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..classifier_free import Cameras


def fovy_degrees(fovy: Tensor, batch: int) -> Tensor:
    """threestudio's ``fovy`` (radians, [B] or one value) -> degrees [B]; ValueError outside (0, π)."""
    fovy = torch.as_tensor(fovy).detach().reshape(-1)
    if fovy.numel() not in (1, batch):
        raise ValueError(f"fovy has {fovy.numel()} values for {batch} cameras")
    if not fovy.isfinite().all() or (fovy <= 0).any() or (fovy >= math.pi).any():
        raise ValueError(
            "fovy must be the vertical field of view in radians, in (0, π), as threestudio's data modules "
            f"give it; got values in [{fovy.min().item():.4g}, {fovy.max().item():.4g}]"
        )
    return torch.rad2deg(fovy).expand(batch)


def cameras_from_batch(
    elevation: Tensor,
    azimuth: Tensor,
    camera_distances: Tensor,
    c2w: Tensor | None = None,
    fovy: Tensor | None = None,
) -> Cameras:
    """The :class:`Cameras` of a threestudio batch (module docstring); ``c2w`` and ``fovy`` when given.

    The matrices are passed as they are, so a view-conditioned model sees the camera that rendered
    the view, perturbations included (threestudio's ``camera_perturb``, ``center_perturb`` and
    ``up_perturb`` move ``c2w`` away from the look-at camera of the angles).
    """
    batch = int(elevation.shape[0])
    return Cameras(
        elevation=elevation.detach(),
        azimuth=azimuth.detach(),
        distance=camera_distances.detach(),
        c2w=None if c2w is None else c2w.detach(),
        fovy=None if fovy is None else fovy_degrees(fovy, batch),
    )
