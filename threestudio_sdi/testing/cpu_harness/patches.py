"""Run-time patches that let real threestudio train on a CPU (test harness only; never in its tree).

* ``get_device``: threestudio returns ``cuda:<rank>`` unconditionally and several modules import it
  by value, so every loaded ``threestudio.*`` module holding it gets a CPU version;
* ``nerfacc.render_weight_from_density`` and ``nerfacc.render_weight_from_alpha`` (NeuS): nerfacc 0.5
  supports packed samples (``ray_indices``) only on CUDA; :func:`render_weight_from_density` and
  :func:`render_weight_from_alpha` below compute the same weights in torch;
* ``threestudio.models.estimators.importance_sampling``: nerfacc's version JIT-compiles a CUDA
  kernel; :func:`importance_sampling` below is an inverse-CDF sampler in torch for dense
  ``[n_rays, n_edges]`` intervals, which is what threestudio's ``ImportanceEstimator`` passes.

Written for this harness from the functions' documented behaviour; no nerfacc or threestudio code.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor


def cpu_device() -> torch.device:
    return torch.device("cpu")


def _exclusive_segment_cumsum(values: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Exclusive cumulative sum of ``values`` within each ray (samples grouped by ray, in order)."""
    counts = torch.bincount(ray_indices, minlength=n_rays)
    if counts.numel() and bool((counts == counts[0]).all()) and counts[0] * n_rays == values.numel():
        per_ray = values.reshape(n_rays, -1)
        return (torch.cumsum(per_ray, dim=-1) - per_ray).reshape(-1)
    inclusive = torch.cumsum(values, dim=0)
    starts = torch.cumsum(counts, dim=0) - counts  # index of each ray's first sample
    before = (inclusive - values)[starts.clamp(max=max(values.numel() - 1, 0))]
    return inclusive - values - before[ray_indices]


def render_weight_from_density(
    t_starts: Tensor,
    t_ends: Tensor,
    sigmas: Tensor,
    packed_info: Tensor | None = None,
    ray_indices: Tensor | None = None,
    n_rays: int | None = None,
    prefix_trans: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Volume-rendering weights, transmittance and alphas of densities (dense or packed samples)."""
    if packed_info is not None or prefix_trans is not None:
        raise NotImplementedError("the CPU harness supports ray_indices or dense samples only")
    sigmas_dt = sigmas * (t_ends - t_starts)
    alphas = 1.0 - torch.exp(-sigmas_dt)
    if ray_indices is None:
        trans = torch.exp(-(torch.cumsum(sigmas_dt, dim=-1) - sigmas_dt))
    else:
        rays = int(n_rays) if n_rays is not None else int(ray_indices.max()) + 1
        trans = torch.exp(-_exclusive_segment_cumsum(sigmas_dt, ray_indices.long(), rays))
    return trans * alphas, trans, alphas


def render_weight_from_alpha(
    alphas: Tensor,
    packed_info: Tensor | None = None,
    ray_indices: Tensor | None = None,
    n_rays: int | None = None,
    prefix_trans: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Volume-rendering weights w_i = α_i Π_{j<i} (1 − α_j) and transmittances (dense or packed samples).

    The transmittance is exp(exclusive cumsum log(1 − α)) within each ray, clamped like nerfacc's
    (1 − α ≥ 1e-10).
    """
    if packed_info is not None or prefix_trans is not None:
        raise NotImplementedError("the CPU harness supports ray_indices or dense samples only")
    log_survival = torch.log((1.0 - alphas).clamp_min(1e-10))
    if ray_indices is None:
        trans = torch.exp(torch.cumsum(log_survival, dim=-1) - log_survival)
    else:
        rays = int(n_rays) if n_rays is not None else int(ray_indices.max()) + 1
        trans = torch.exp(_exclusive_segment_cumsum(log_survival, ray_indices.long(), rays))
    return trans * alphas, trans


def importance_sampling(intervals: Any, cdfs: Tensor, n_intervals_per_ray: int, stratified: bool = False):
    """Resample each ray's interval edges to ``n_intervals_per_ray + 1`` edges by inverting its CDF.

    ``intervals.vals`` and ``cdfs`` are [n_rays, n_edges] (the CDF at each edge, non-decreasing).
    Returns ``(RayIntervals(vals=new_edges), None)``.
    """
    from nerfacc.data_specs import RayIntervals

    edges = intervals.vals
    if edges.ndim != 2 or not isinstance(n_intervals_per_ray, int):
        raise NotImplementedError("the CPU harness supports dense [n_rays, n_edges] intervals only")
    n_rays, count = edges.shape[0], n_intervals_per_ray + 1
    cdf = cdfs / cdfs[:, -1:].clamp_min(1e-10)
    u = torch.linspace(0.0, 1.0, count, device=edges.device, dtype=edges.dtype).expand(n_rays, count)
    if stratified:
        jitter = (torch.rand_like(u) - 0.5) / count
        u = torch.sort((u + jitter).clamp(0.0, 1.0), dim=-1).values
    u = u.contiguous()
    above = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, edges.shape[1] - 1)
    below = above - 1
    cdf_below, cdf_above = cdf.gather(1, below), cdf.gather(1, above)
    edge_below, edge_above = edges.gather(1, below), edges.gather(1, above)
    fraction = ((u - cdf_below) / (cdf_above - cdf_below).clamp_min(1e-10)).clamp(0.0, 1.0)
    return RayIntervals(vals=edge_below + fraction * (edge_above - edge_below)), None


def apply() -> list[str]:
    """Patch the loaded threestudio modules and nerfacc; return what was patched."""
    import nerfacc
    import threestudio.models.estimators as estimators
    import threestudio.utils.misc as misc

    patched = []
    original = misc.get_device
    for name, module in list(sys.modules.items()):
        if (name == "threestudio" or name.startswith("threestudio.")) and getattr(
            module, "get_device", None
        ) is original:
            module.get_device = cpu_device
            patched.append(f"{name}.get_device")
    nerfacc.render_weight_from_density = render_weight_from_density
    patched.append("nerfacc.render_weight_from_density")
    nerfacc.render_weight_from_alpha = render_weight_from_alpha
    patched.append("nerfacc.render_weight_from_alpha")
    estimators.importance_sampling = importance_sampling
    patched.append("threestudio.models.estimators.importance_sampling")
    return patched
