"""Image-space distillation: the image (or latent) itself is the parameter, g = identity (paper §6.5).

Every run starts where DDIM does, from x_T ~ N(0, I) (the first draw of the seeded generator) at the
first timestep of the grid, with x0 = x̂0(x_T) and κ = ε̂(x_T), and then visits the grid's remaining
timesteps once each, from high to low, with one guidance step (:func:`guidance_step` with the given
:class:`GuidanceConfig`) per timestep. :func:`sample_reference_2d` is DDIM sampling itself from the
same x_T, the reference. The lab's methods (:data:`METHODS`) name the noise strategies:

* ``ddim``: DDIM sampling (the reference);  ``ddim-cache``: κ = the previous step's ε̂ — exactly DDIM
  in x0-space (docs/method.md §1);  ``sds``: κ ~ N(0, I) each step;  ``sdi``: prompt-conditioned DDIM inversion
  (γ_inv);  ``ism``: unconditional DDIM inversion;  ``fixed-point`` (research).

``update="exact"`` applies the reparametrised step x0 ← ẑ0 = x0 − σ_t (ε̂ − κ) (with δ = 0);
``update="adam"`` instead takes ``inner_steps`` Adam steps on the guidance loss
½ mean((x0 − stopgrad(ẑ0))²), as a 3D run does through its renderer.
The grid is diffusers' "leading" spacing with offset 1 (981, 961, …, 1 for 50 steps at T = 1000).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...classifier_free import Conditioning, guided_epsilon
from ...ddim import ddim_timesteps, sample_ddim
from ...errors import check_choice, check_int, check_range
from ...prediction import predict_x0
from ...schedule import NoiseSchedule
from ...score_distillation import GuidanceConfig, GuidanceOutput, guidance_step

METHODS: dict[str, str | None] = {
    "ddim": None,
    "ddim-cache": "cached",
    "sds": "random",
    "sdi": "inversion",
    "ism": "uncond-inversion",
    "fixed-point": "fixed-point",
}
"""Lab method → the noise strategy of its guidance steps (``ddim`` is the sampler itself)."""
UPDATES = ("exact", "adam")
Callback = Callable[[dict[str, Any]], None]


def lab_timesteps(steps: int, num_train_timesteps: int) -> list[int]:
    """The lab's grid: ``steps`` timesteps, leading spacing, offset 1 (Stable Diffusion's DDIM grid)."""
    return ddim_timesteps(steps, num_train_timesteps, "leading", steps_offset=1)


@dataclass(frozen=True)
class LabRun:
    """What a lab run distils: its timesteps, seed, and how many images of which condition.

    Attributes:
        steps: number of timesteps (= model evaluations of DDIM and of ``ddim-cache``), ≥ 2.
        seed: seeds x_T and every random draw.
        batch: number of images.
        cond, uncond: the condition (class index, LongTensor[batch], text embedding; None =
            unconditional) and the unconditional one (None = the model's default).
        shape: image shape; None = ``model.shape``.
    """

    steps: int = 50
    seed: int = 0
    batch: int = 1
    cond: Any = None
    uncond: Any = None
    shape: Sequence[int] | None = None

    def start(self, model: Any) -> tuple[NoiseSchedule, list[int], torch.Generator, Tensor]:
        """(schedule, the lab's timesteps, the seeded generator, x_T) of this run on ``model``."""
        steps = check_int("steps", self.steps, low=2)
        batch = check_int("batch", self.batch, low=1)
        shape = tuple(self.shape if self.shape is not None else getattr(model, "shape", ()))
        if not shape:
            raise ValueError(f"shape is required: model {type(model).__name__} has no shape attribute")
        schedule = NoiseSchedule.of_model(model)
        generator = torch.Generator().manual_seed(self.seed)
        dtype = getattr(model, "dtype", torch.float32)
        dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        device = getattr(model, "device", torch.device("cpu"))
        x_T = torch.randn((batch, *shape), generator=generator, dtype=dtype).to(device)
        return schedule, lab_timesteps(steps, schedule.num_train_timesteps), generator, x_T

    @property
    def conditioning(self) -> Conditioning:
        return Conditioning(cond=self.cond, uncond=self.uncond)


def sample_reference_2d(
    model: Any,
    config: GuidanceConfig,
    run: LabRun = LabRun(),
    *,
    callback: Callback | None = None,
    disable: bool | None = None,
) -> Tensor:
    """DDIM sampling from the run's x_T at CFG ``config.guidance_scale`` (and its CFG mode): the reference."""
    _, timesteps, _, x_T = run.start(model)
    return sample_ddim(
        model,
        x_T,
        timesteps,
        run.conditioning,
        config.guidance_scale,
        config.resolved_cfg_mode,
        callback=callback,
        disable=disable,
    )


def distill_2d(
    model: Any,
    config: GuidanceConfig,
    run: LabRun = LabRun(),
    *,
    update: str = "exact",
    lr: float = 0.1,
    inner_steps: int = 25,
    callback: Callback | None = None,
    disable: bool | None = None,
) -> Tensor:
    """Distil the run's images from ``model`` with guidance steps of ``config``; returns x0 [batch, *shape].

    Args:
        model: any denoiser of :mod:`threestudio_sdi.denoiser`.
        config: the guidance step's settings (preset, noise strategy, γ_fwd, γ_inv, n, η, δ).
        run: steps, seed, batch, condition and shape (:class:`LabRun`).
        update: ``exact`` (x0 ← ẑ0) or ``adam`` (``inner_steps`` Adam steps of learning rate ``lr``).
        callback: receives ``{"i", "t", "z0", "x0", "output"}`` after every guidance step (``z0`` the
            image the step started from, ``x0`` the updated one).
        disable: hide the progress bar.
    """
    check_choice("update", update, UPDATES)
    if update == "adam":
        check_range("lr", lr, 0.0, low_open=True)
        inner_steps = check_int("inner_steps", inner_steps, low=1)
    schedule, timesteps, generator, x_T = run.start(model)
    conditioning = run.conditioning
    cached = config.strategy.takes_cached_noise
    with torch.no_grad():
        kappa = guided_epsilon(
            model, x_T, timesteps[0], conditioning, config.guidance_scale, config.resolved_cfg_mode, schedule
        )
        x0 = predict_x0(x_T, kappa, schedule.alpha_bar(timesteps[0]))
    for i, t in enumerate(tqdm(timesteps[1:], disable=disable, desc=config.strategy.name, leave=False), 1):
        parameter = x0.detach().clone().requires_grad_(update == "adam")
        output = guidance_step(
            model,
            parameter,
            t,
            conditioning,
            config,
            noise=kappa if cached else None,
            generator=generator,
            schedule=schedule,
        )
        start, x0 = x0, output.target if update == "exact" else _adam(parameter, output, lr, inner_steps)
        kappa = output.noise_pred
        if callback is not None:
            callback({"i": i, "t": t, "z0": start, "x0": x0, "output": output})
    return x0


def _adam(parameter: Tensor, output: GuidanceOutput, lr: float, inner_steps: int) -> Tensor:
    """``inner_steps`` Adam steps on ½ mean((x0 − stopgrad(ẑ0))²) from ``parameter``; the result, detached."""
    optimizer = torch.optim.Adam([parameter], lr=lr)
    for _ in range(inner_steps):
        optimizer.zero_grad()
        loss = 0.5 * (parameter - output.target).pow(2).mean()
        loss.backward()
        optimizer.step()
    return parameter.detach()
