"""Regularisers of a 3D score-distillation run as pure torch functions (docs/method.md §4), and SDI's convexity schedule.

Shapes follow threestudio's renderer outputs: images are [B, H, W, C], per-sample quantities of the
volume renderer are [N, C]. Nothing here imports threestudio; ``sdi-ext-system`` weights them with
``system.loss.lambda_<name>``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import check_choice, check_int

CONVEXITY_WEIGHTS: dict[str, tuple[float, float, float]] = {
    # paper App. A.2: 0.1 for the first 40 % of the steps, then off
    "paper": (0.1, 0.1, 0.0),
    # released code: a linear ramp 1.0 -> 0.1 over the first 40 % (4000 of 10 000 steps), then 0.1 forever
    "official": (1.0, 0.1, 0.1),
}
"""Convexity weight of each preset: (at step 0, at 40 % of the run, after 40 % of the run)."""
CONVEXITY_FRACTION = 0.4


def convexity_schedule(preset: str, max_steps: int = 10000) -> list[float]:
    """The preset's convexity weight over a run of ``max_steps`` steps, as a threestudio ``C()`` list.

    Linear from the first weight to the second over the first 40 % of the steps, then the third
    (:data:`CONVEXITY_WEIGHTS`); 10 000 steps give the released configs' 4000-step knee.
    """
    start, knee_value, after = CONVEXITY_WEIGHTS[check_choice("preset", preset, tuple(CONVEXITY_WEIGHTS))]
    knee = max(int(CONVEXITY_FRACTION * check_int("max_steps", max_steps, low=1)), 1)
    if after == knee_value:
        return [0, start, knee_value, knee]
    return [0, start, knee_value, knee - 1, after, knee]


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
