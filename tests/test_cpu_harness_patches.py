"""The pure-torch volume-rendering weights the CPU harness patches into nerfacc, against float64 loops.

Samples are packed ray after ray with different counts per ray (what threestudio passes as
``ray_indices``); the references compute w_i = α_i Π_{j<i}(1 − α_j) ray by ray.
"""

from __future__ import annotations

import torch

from threestudio_sdi.testing.cpu_harness.patches import render_weight_from_alpha, render_weight_from_density


def packed_rays() -> tuple[torch.Tensor, list[int]]:
    """Ray indices of packed samples (an empty ray among them) and the samples per ray."""
    counts = [3, 0, 5, 1, 4]
    indices = torch.cat([torch.full((count,), ray) for ray, count in enumerate(counts)])
    return indices, counts


def reference_weights(alphas: torch.Tensor, counts: list[int]) -> torch.Tensor:
    weights, start = [], 0
    for count in counts:
        survive = 1.0
        for alpha in alphas[start : start + count].double().tolist():
            weights.append(alpha * survive)
            survive *= 1.0 - alpha
        start += count
    return torch.tensor(weights, dtype=torch.float64)


def test_weights_from_alpha_match_a_ray_by_ray_loop(fresh_seed):
    indices, counts = packed_rays()
    alphas = torch.rand(len(indices), generator=torch.Generator().manual_seed(fresh_seed)) * 0.9
    weights, trans = render_weight_from_alpha(alphas, ray_indices=indices, n_rays=len(counts))
    torch.testing.assert_close(weights.double(), reference_weights(alphas, counts), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(weights, alphas * trans)
    dense = torch.rand(4, 6, generator=torch.Generator().manual_seed(fresh_seed + 1)) * 0.9
    dense_weights, _ = render_weight_from_alpha(dense)
    torch.testing.assert_close(dense_weights.double().flatten(), reference_weights(dense.flatten(), [6] * 4))


def test_weights_from_density_are_the_alpha_weights_of_1_minus_exp(fresh_seed):
    indices, counts = packed_rays()
    generator = torch.Generator().manual_seed(fresh_seed)
    starts = torch.rand(len(indices), generator=generator)
    ends = starts + torch.rand(len(indices), generator=generator) * 0.2
    sigmas = torch.rand(len(indices), generator=generator) * 5
    weights, _, alphas = render_weight_from_density(
        starts, ends, sigmas, ray_indices=indices, n_rays=len(counts)
    )
    torch.testing.assert_close(alphas, 1 - torch.exp(-sigmas * (ends - starts)))
    torch.testing.assert_close(weights.double(), reference_weights(alphas, counts), rtol=1e-5, atol=1e-7)
