"""Score distillation of a voxel asset, as a 3D run optimises: Adam, random views, one guidance step each.

Each training step draws ``views_per_step`` cameras (:func:`threestudio_sdi.experimental.lab3d.cameras.sample_cameras`),
renders the asset ψ from them, z0 = g(ψ, θ) [B, 3, H, W] in [−1, 1], picks t by the method's policy
(:mod:`threestudio_sdi.experimental.lab3d.methods`), takes one :func:`~threestudio_sdi.score_distillation.guidance_step`
of the exact prior conditioned on the class and the cameras, and one Adam step on its loss
½ mean((z0 − stopgrad(ẑ0))²) — the gradient σ_t(ε̂ − κ)/N flows into ψ through the renderer.
A method may bind its config to the run (:meth:`~threestudio_sdi.experimental.lab3d.methods.Method.run_config`:
e.g. ``consistent-noise`` renders a noise field through the run's current asset).

**Parameterisation** (:class:`AssetParameters`): σ = exp(ρ) and c = sigmoid(χ) per voxel, on the grid of
the ground truth, so every true asset is representable (up to σ ≈ 0 in empty space). The initial density
is threestudio's ``density_blob`` (magic3d, scale 10, std 0.5 — ``configs/sdi.yaml``):
σ0(p) = softplus(10 (1 − ‖p‖/0.5)); colours start grey (χ = 0); both get N(0, 0.1²) seeded noise on ρ and
χ, so that seeds differ in their start as well as in their draws.

**Optimiser**: Adam with ``configs/sdi.yaml``'s betas (0.9, 0.99) and eps 1e-15 (the loss is a mean over
pixels, so its gradients are tiny), learning rate ``lr``.

**Seeds**: the initial noise and the cameras come from one generator seeded with ``seed``; the
guidance's draws (SDS noise, overshoot δ, η noise) from a second one seeded with ``seed + 2**32``, so every
method sees the same views for the same seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ...classifier_free import Conditioning
from ...errors import check_int, check_range
from ...score_distillation import GuidanceOutput, guidance_step
from .cameras import CameraRanges, sample_cameras
from .methods import Method
from .prior import ExactViewPrior
from .renderer import BOX_HALF_SIZE, VoxelGrid, render
from .run_context import RunContext

INIT_NOISE_STD = 0.1
BLOB_SCALE, BLOB_STD = 10.0, 0.5
GUIDANCE_STREAM_OFFSET = 2**32


@dataclass(frozen=True)
class DistillSettings:
    """How long and how a 3D run optimises (the module docstring; defaults are the lab's CPU default).

    Attributes:
        steps: training steps (one guidance step each); annealed methods anneal over them.
        views_per_step: views rendered and guided per step (threestudio's batch size).
        lr: Adam learning rate on ρ and χ.
        cameras: ranges of the training cameras.
    """

    steps: int = 400
    views_per_step: int = 4
    lr: float = 0.05
    cameras: CameraRanges = field(default_factory=CameraRanges)

    def __post_init__(self) -> None:
        check_int("steps", self.steps, low=1)
        check_int("views_per_step", self.views_per_step, low=1)
        check_range("lr", self.lr, 0.0, low_open=True)


class AssetParameters(torch.nn.Module):
    """ρ [R, R, R] and χ [3, R, R, R]; :meth:`grid` is the asset σ = exp(ρ), c = sigmoid(χ)."""

    def __init__(
        self, resolution: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        resolution = check_int("resolution", resolution, low=2)
        line = torch.linspace(-BOX_HALF_SIZE, BOX_HALF_SIZE, resolution, dtype=torch.float64)
        z, y, x = torch.meshgrid(line, line, line, indexing="ij")
        blob = F.softplus(BLOB_SCALE * (1 - (x * x + y * y + z * z).sqrt() / BLOB_STD))
        noise = torch.randn(4, resolution, resolution, resolution, generator=generator, dtype=torch.float64)
        self.log_density = torch.nn.Parameter((blob.log() + INIT_NOISE_STD * noise[0]).to(dtype))
        self.colour_logits = torch.nn.Parameter((INIT_NOISE_STD * noise[1:]).to(dtype))

    def grid(self) -> VoxelGrid:
        return VoxelGrid(self.log_density.exp(), torch.sigmoid(self.colour_logits))


@dataclass
class DistillResult:
    """The distilled asset and what the run spent and met.

    Attributes:
        grid: the final asset (detached).
        model_evaluations: guided model evaluations over the run (the sum of every step's).
        nonfinite_views: views whose guidance step went non-finite (their loss was zeroed).
        finite: the final asset holds no NaN or Inf.
        timesteps, grad_norms: per step, the t used and ‖z0 − ẑ0‖.
        seconds: wall time of the run.
    """

    grid: VoxelGrid
    model_evaluations: int
    nonfinite_views: int
    finite: bool
    timesteps: list[int]
    grad_norms: list[float]
    seconds: float


def _nonfinite_views(output: GuidanceOutput, views: int) -> int:
    """Views of a step whose guidance went non-finite: ``nonfinite`` is None, a name (the whole step),
    or one entry per bad view."""
    flag = output.nonfinite
    if not flag:
        return 0
    return views if isinstance(flag, str) else len(flag)


def distill_3d(
    prior: ExactViewPrior,
    method: Method,
    class_index: int,
    seed: int,
    settings: DistillSettings,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> DistillResult:
    """Distil an asset of class ``class_index`` from ``prior`` with ``method`` (module docstring).

    ``callback`` receives ``{"step", "cameras", "render", "output"}`` after every step.
    """
    if not 0 <= class_index < prior.num_classes:
        raise ValueError(f"class_index must be in 0..{prior.num_classes - 1}, got {class_index}")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    guidance_generator = torch.Generator().manual_seed(seed + GUIDANCE_STREAM_OFFSET)
    asset = AssetParameters(prior.assets.grid.resolution, generator)
    optimizer = torch.optim.Adam(asset.parameters(), lr=settings.lr, betas=(0.9, 0.99), eps=1e-15)
    config = method.run_config(
        RunContext(seed, lambda: asset.log_density.detach().exp(), prior.render_settings)
    )
    num_train = prior.schedule.num_train_timesteps
    evaluations = nonfinite = 0
    timesteps: list[int] = []
    grad_norms: list[float] = []
    for step in range(settings.steps):
        cameras = sample_cameras(settings.views_per_step, settings.cameras, generator)
        z0 = render(asset.grid(), cameras, prior.render_settings).rgb
        t = method.timestep(step, settings.steps, num_train, guidance_generator)
        cond = torch.full((cameras.batch_size,), class_index, dtype=torch.long)
        output = guidance_step(
            prior,
            z0,
            t,
            Conditioning(cond=cond, cameras=cameras),
            config,
            generator=guidance_generator,
            schedule=prior.schedule,
        )
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        optimizer.step()
        evaluations += output.model_evaluations
        nonfinite += _nonfinite_views(output, cameras.batch_size)
        timesteps.append(t)
        grad_norms.append(float(output.grad_norm))
        if callback is not None:
            callback({"step": step, "cameras": cameras, "render": z0.detach(), "output": output})
    with torch.no_grad():
        grid = asset.grid()
        grid = VoxelGrid(grid.density.detach(), grid.colour.detach())
    finite = bool(grid.density.isfinite().all() and grid.colour.isfinite().all())
    return DistillResult(
        grid,
        evaluations,
        nonfinite,
        finite,
        timesteps,
        grad_norms,
        time.perf_counter() - start,
    )


def mean_evaluations_per_step(result: DistillResult) -> float:
    """Guided model evaluations per training step."""
    return result.model_evaluations / max(len(result.timesteps), 1)
