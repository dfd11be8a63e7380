"""What the lab measures: sharpness, diversity, distance to DDIM, kept variance per frequency band.

A sample **blew up** when it holds NaN or ±Inf, or when max |x| > :data:`BLOWN_UP` (10× the data's
range: the models' samples lie in [−1, 1], a few units at most for the Gaussian's and the latents').
Such samples are counted and left out of the other measures, which would otherwise report their size
(a "sharpness" of 1e8 is an update that diverged, not a sharp image).
"""

from __future__ import annotations

import torch
from torch import Tensor

BLOWN_UP = 10.0
"""A sample with max |x| above this blew up (module docstring)."""


def blown_up(samples: Tensor) -> Tensor:
    """Per sample of [B, ...]: True when it holds NaN or ±Inf or its max |x| exceeds :data:`BLOWN_UP`."""
    flat = samples.detach().flatten(1)
    return ~flat.isfinite().all(1) | (flat.abs().amax(1) > BLOWN_UP)


def total_variation(images: Tensor) -> Tensor:
    """Mean absolute difference of horizontal and vertical neighbours, per image [B, C, H, W] -> [B].

    Over-smoothed (blurry) images have low TV; noisy or blown-up ones high TV.
    """
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
    return (dx + dy) / 2


def mean_pairwise_distance(samples: Tensor) -> Tensor:
    """Mean Euclidean distance between distinct samples of [N, ...] (N ≥ 2): within-group diversity."""
    flat = samples.flatten(1).double()
    count = flat.shape[0]
    if count < 2:
        raise ValueError(f"diversity needs at least 2 samples, got {count}")
    distances = torch.cdist(flat, flat)
    return distances.sum() / (count * (count - 1))


def rms_distance(a: Tensor, b: Tensor) -> Tensor:
    """Root-mean-square difference per sample of two batches [B, ...] -> [B]."""
    return (a - b).double().flatten(1).pow(2).mean(1).sqrt()


def grouped_diversity(samples: Tensor, labels: Tensor) -> Tensor:
    """Mean over groups (e.g. classes) of the within-group mean pairwise distance."""
    groups = [samples[labels == label] for label in labels.unique()]
    return torch.stack([mean_pairwise_distance(group) for group in groups if group.shape[0] > 1]).mean()


def grouped_total_variation(samples: Tensor, labels: Tensor) -> Tensor:
    """Mean over groups of the mean total variation of the group (so each class weighs the same)."""
    return torch.stack([total_variation(samples[labels == label]).mean() for label in labels.unique()]).mean()
