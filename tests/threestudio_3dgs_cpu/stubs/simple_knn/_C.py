"""CPU stand-in for ``simple_knn._C`` (test harness only): ``distCUDA2`` in torch.

``distCUDA2(points)`` [N, 3] → [N]: the mean squared distance from each point to its 3 nearest other
points, which threestudio-3dgs turns into each new Gaussian's initial scale (log sqrt of it). The CUDA
version searches neighbouring boxes of Morton-sorted points and can miss a true neighbour; this one is
exact (brute force in blocks of rows), so the two may differ where the CUDA search is approximate. With
fewer than 4 points the mean is over the N − 1 others (0 for a single point).
"""

from __future__ import annotations

import torch
from torch import Tensor

NEIGHBOURS = 3
BLOCK_ROWS = 512


def distCUDA2(points: Tensor) -> Tensor:  # noqa: N802  (the package's name)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"distCUDA2 expects points [N, 3], got {tuple(points.shape)}")
    count = points.shape[0]
    k = min(NEIGHBOURS, count - 1)
    if k <= 0:
        return torch.zeros(count, dtype=points.dtype, device=points.device)
    rows = []
    for start in range(0, count, BLOCK_ROWS):
        block = points[start : start + BLOCK_ROWS]
        squared = (block[:, None, :] - points[None, :, :]).pow(2).sum(-1)
        index = torch.arange(start, start + block.shape[0], device=points.device)
        squared[torch.arange(block.shape[0], device=points.device), index] = float("inf")  # not itself
        rows.append(squared.topk(k, dim=1, largest=False).values.mean(1))
    return torch.cat(rows)
