"""What the lab measures: sharpness, diversity, distance to DDIM, kept variance per frequency band."""

from __future__ import annotations

import torch
from torch import Tensor


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
