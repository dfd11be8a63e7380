"""Regularisers of ``sdi-ext-system`` as pure torch functions (SPEC §4), and the convexity schedules.

Shapes follow threestudio's renderer outputs: images are [B, H, W, C], per-sample quantities of the
volume renderer are [N, C]. Nothing here imports threestudio, so the functions are tested on CI.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CONVEXITY_SCHEDULES: dict[str, list[float]] = {
    # paper App. A.2: weight 0.1 for the first 40 % of the 10 000 steps, then off
    # (threestudio's piecewise C() list: 0.1 until step 3999, 0 from step 4000 on)
    "paper": [0, 0.1, 0.1, 3999, 0.0, 4000],
    # released code: linear ramp 1.0 -> 0.1 over 4000 steps, then 0.1 forever
    "official": [0, 1.0, 0.1, 4000],
}
"""``system.loss.lambda_convex`` of each preset, as a threestudio ``C()`` schedule (10 000 steps)."""


def convexity_schedule(preset: str, max_steps: int = 10000) -> list[float]:
    """The preset's convexity weight schedule for a run of ``max_steps`` steps (``C()`` list)."""
    if preset == "paper":
        end = max(int(0.4 * max_steps), 1)
        return [0, 0.1, 0.1, end - 1, 0.0, end]
    if preset == "official":
        return list(CONVEXITY_SCHEDULES["official"])
    raise ValueError(f"preset must be one of {', '.join(map(repr, CONVEXITY_SCHEDULES))}; got {preset!r}")


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(dim=-1, keepdim=True)


def orient_loss(weights: Tensor, normal: Tensor, t_dirs: Tensor, opacity: Tensor) -> Tensor:
    """DreamFusion's orientation loss: Σ stopgrad(w)·max(0, n·d)² / #(pixels with opacity > 0)."""
    penalty = weights.detach() * _dot(normal, t_dirs).clamp_min(0.0) ** 2
    return penalty.sum() / (opacity > 0).sum().clamp_min(1)


def sparsity_loss(opacity: Tensor) -> Tensor:
    """mean(sqrt(opacity² + 0.01)): pushes empty pixels to zero opacity."""
    return (opacity**2 + 0.01).sqrt().mean()


def opaque_loss(opacity: Tensor, eps: float = 1e-3) -> Tensor:
    """Entropy of the (clamped) opacity, BCE(o, o): pushes opacity to 0 or 1."""
    o = opacity.clamp(eps, 1.0 - eps)
    return -(o * o.log() + (1 - o) * (1 - o).log()).mean()


def z_variance_loss(z_variance: Tensor, opacity: Tensor) -> Tensor:
    """HiFA's depth-variance loss: mean z-variance over pixels with opacity > 0.5 (0 when there are none).

    The released code takes the plain mean, which is NaN when no pixel is that opaque.
    """
    mask = opacity > 0.5
    if not bool(mask.any()):
        return z_variance.sum() * 0.0
    return z_variance[mask].mean()


def convexity_loss(comp_normal: Tensor, resolution: int = 8) -> Tensor:
    """SDI's convexity loss (paper App. A.2) of a normal map [B, H, W, 3].

    The normal map is resized to ``resolution``² (bilinear); for horizontal neighbours (left × right)
    and vertical neighbours (down × up) the z component of the cross product is the signed sine of
    the turn between them; the loss is −(mean horizontal + mean vertical), lowest for a convex surface.
    """
    if comp_normal.ndim != 4 or comp_normal.shape[-1] != 3:
        raise ValueError(f"comp_normal must have shape [B, H, W, 3], got {tuple(comp_normal.shape)}")
    if resolution < 2:
        raise ValueError(f"convexity_res must be >= 2, got {resolution}")
    normals = F.interpolate(
        comp_normal.permute(0, 3, 1, 2), (resolution, resolution), mode="bilinear", align_corners=False
    ).permute(0, 2, 3, 1)
    left, right = normals[:, :, :-1], normals[:, :, 1:]
    up, down = normals[:, :-1], normals[:, 1:]
    horizontal = torch.cross(left, right, dim=-1)[..., 2]
    vertical = torch.cross(down, up, dim=-1)[..., 2]
    return -(horizontal.mean() + vertical.mean())
