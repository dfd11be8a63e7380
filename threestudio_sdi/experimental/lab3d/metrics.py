"""What the 3D lab measures: a distilled asset's renders against the known assets, on held-out views.

Images are compared in [0, 1] (the renders' [−1, 1] mapped by (x + 1)/2), pooled over the held-out views:

* **PSNR** = −10 log10(MSE) and **SSIM** (Wang et al. 2004: 11×11 Gaussian window, σ = 1.5,
  C1 = 0.01², C2 = 0.03², per channel, over the valid window positions, averaged);
* to the **nearest true variant** of the class (largest PSNR over all held-out views) and to the
  **class-mean render** (the per-view average of the variants' renders: what mode averaging gives);
* **sharpness** = high-frequency energy relative to the nearest variant: mean squared 4-neighbour
  Laplacian of the asset's renders ÷ the same of the variant's (1 = as sharp as the truth; < 1 blurry,
  > 1 noisy or over-saturated);
* **silhouette IoU** with the nearest variant (opacity > ½), and **view consistency**: the fraction of
  held-out views whose own nearest variant is the overall nearest (content drift lowers it);
* with a view-dependent target (the view-inconsistent prior), **PSNR to each view's preferred variant**.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2
LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)


def to_unit(images: Tensor) -> Tensor:
    """[−1, 1] → [0, 1], float64."""
    return (images.double() + 1) / 2


def psnr(images: Tensor, reference: Tensor) -> float:
    """PSNR (dB) of [−1, 1] images against a reference of the same shape, pooled over all pixels."""
    mse = (to_unit(images) - to_unit(reference)).pow(2).mean()
    return float(-10 * torch.log10(mse))


def _gaussian_window(dtype: torch.dtype) -> Tensor:
    offsets = torch.arange(SSIM_WINDOW, dtype=dtype) - (SSIM_WINDOW - 1) / 2
    profile = torch.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    profile = profile / profile.sum()
    return (profile[:, None] * profile[None, :])[None, None]


def ssim(images: Tensor, reference: Tensor) -> float:
    """Mean SSIM of [−1, 1] images [N, C, H, W] (H, W ≥ 11) against a reference of the same shape."""
    x, y = to_unit(images), to_unit(reference)
    channels = x.shape[1]
    window = _gaussian_window(x.dtype).expand(channels, 1, -1, -1)

    def blur(image: Tensor) -> Tensor:
        return F.conv2d(image, window, groups=channels)

    mean_x, mean_y = blur(x), blur(y)
    var_x = blur(x * x) - mean_x**2
    var_y = blur(y * y) - mean_y**2
    covariance = blur(x * y) - mean_x * mean_y
    numerator = (2 * mean_x * mean_y + SSIM_C1) * (2 * covariance + SSIM_C2)
    denominator = (mean_x**2 + mean_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return float((numerator / denominator).mean())


def high_frequency_energy(images: Tensor) -> float:
    """Mean squared 4-neighbour Laplacian of [0, 1]-mapped images [N, C, H, W] (valid positions)."""
    x = to_unit(images)
    kernel = LAPLACIAN.to(x)[None, None].expand(x.shape[1], 1, -1, -1)
    return float(F.conv2d(x, kernel, groups=x.shape[1]).pow(2).mean())


def silhouette_iou(opacity: Tensor, reference_opacity: Tensor) -> float:
    """IoU of the silhouettes (opacity > ½) of two opacity stacks [N, H, W]."""
    a, b = opacity > 0.5, reference_opacity > 0.5
    union = (a | b).sum()
    return float((a & b).sum() / union) if union > 0 else 1.0


@dataclass(frozen=True)
class Outcome:
    """A distilled asset measured against its class's variants (module docstring)."""

    nearest_variant: int
    psnr_nearest: float
    ssim_nearest: float
    psnr_class_mean: float
    ssim_class_mean: float
    sharpness: float
    silhouette_iou: float
    view_consistency: float
    per_view_nearest: list[int]
    psnr_view_target: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(
    rgb: Tensor,
    opacity: Tensor,
    truth_rgb: Tensor,
    truth_opacity: Tensor,
    view_targets: Tensor | None = None,
) -> Outcome:
    """Outcomes of an asset's held-out renders against the class's variants.

    Args:
        rgb: [V, 3, H, W] renders of the asset in [−1, 1]; opacity: [V, H, W].
        truth_rgb: [n_c, V, 3, H, W] renders of the class's variants; truth_opacity: [n_c, V, H, W].
        view_targets: optional LongTensor[V], each view's preferred variant (view-inconsistent prior).
    """
    rgb = rgb.double()
    per_variant = torch.tensor([psnr(rgb, variant) for variant in truth_rgb])
    nearest = int(per_variant.argmax())
    per_view_mse = (to_unit(rgb)[None] - to_unit(truth_rgb)).pow(2).flatten(2).mean(-1)  # [n_c, V]
    per_view_nearest = per_view_mse.argmin(dim=0)
    class_mean = truth_rgb.double().mean(dim=0)
    target_psnr = None
    if view_targets is not None:
        target = truth_rgb[view_targets, torch.arange(rgb.shape[0])]
        target_psnr = psnr(rgb, target)
    return Outcome(
        nearest_variant=nearest,
        psnr_nearest=float(per_variant[nearest]),
        ssim_nearest=ssim(rgb, truth_rgb[nearest]),
        psnr_class_mean=psnr(rgb, class_mean),
        ssim_class_mean=ssim(rgb, class_mean),
        sharpness=high_frequency_energy(rgb) / high_frequency_energy(truth_rgb[nearest]),
        silhouette_iou=silhouette_iou(opacity, truth_opacity[nearest]),
        view_consistency=float((per_view_nearest == nearest).double().mean()),
        per_view_nearest=[int(v) for v in per_view_nearest],
        psnr_view_target=target_psnr,
    )
