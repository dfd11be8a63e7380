"""Image-space distillation: the image (or latent) itself is the parameter, g = identity (paper §6.5).

Every method starts where DDIM does, from x_T ~ N(0, I) (the first draw of the seeded generator) at
the first timestep of the grid, with x0 = x̂0(x_T) and κ = ε̂(x_T), and then visits the grid's
remaining timesteps once each, from high to low, with one guidance step per timestep:

* ``ddim``: DDIM sampling itself (the reference);
* ``ddim-cache``: κ = the previous step's ε̂ — exactly DDIM in x0-space (SPEC §1);
* ``sds``: κ ~ N(0, I) each step;  ``sdi``: κ from prompt-conditioned DDIM inversion (γ_inv);
* ``ism``: κ from unconditional DDIM inversion;
* ``fixed-point`` (research): the inverted κ refined toward the fixed point of SPEC §1.

``update="exact"`` applies the reparametrised step x0 ← ẑ0 = x0 − σ_t (ε̂ − κ) (with δ = 0);
``update="adam"`` instead takes ``inner_steps`` Adam steps on the guidance loss
½ mean((x0 − stopgrad(ẑ0))²), as a 3D run does through its renderer.
The grid is diffusers' "leading" spacing with offset 1 (981, 961, …, 1 for 50 steps at T = 1000).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..cfg import Conditioning, guided_epsilon
from ..ddim import ddim_timesteps, sample_ddim
from ..errors import check_choice, check_int, check_range
from ..prediction import predict_x0
from ..schedule import NoiseSchedule
from ..score_distillation import GuidanceConfig, guidance_step

METHODS = ("ddim", "ddim-cache", "sds", "sdi", "ism", "fixed-point")
UPDATES = ("exact", "adam")
NOISE_OF_METHOD = {
    "ddim-cache": "cached",
    "sds": "random",
    "sdi": "inversion",
    "ism": "uncond-inversion",
    "fixed-point": "fixed-point",  # research: the inverted κ refined toward its fixed point
}


def lab_timesteps(steps: int, num_train_timesteps: int) -> list[int]:
    """The lab's grid: ``steps`` timesteps, leading spacing, offset 1 (Stable Diffusion's DDIM grid)."""
    return ddim_timesteps(steps, num_train_timesteps, "leading", steps_offset=1)


def distill_2d(
    model: Any,
    method: str,
    steps: int = 50,
    seed: int = 0,
    batch: int = 1,
    cond: Any = None,
    guidance_scale: float = 7.5,
    inversion_guidance_scale: float = -7.5,
    preset: str = "paper",
    update: str = "exact",
    *,
    shape: Sequence[int] | None = None,
    uncond: Any = None,
    inversion_n_steps: int = 10,
    inversion_eta: float | None = None,
    overshoot: bool = True,
    lr: float = 0.1,
    inner_steps: int = 25,
    callback: Callable[[dict[str, Any]], None] | None = None,
    disable: bool | None = None,
) -> Tensor:
    """Distil ``batch`` images from ``model`` with ``method``; returns x0 [batch, *shape].

    Args:
        model: any denoiser of :mod:`threestudio_sdi.denoiser`.
        method: one of ``ddim``, ``ddim-cache``, ``sds``, ``sdi``, ``ism``.
        steps: number of timesteps (= model evaluations of DDIM and of the first 2 methods).
        seed: seeds x_T and every random draw.
        cond: the condition (class index, LongTensor[batch], text embedding); None = unconditional.
        guidance_scale, inversion_guidance_scale: γ_fwd and γ_inv.
        preset: ``paper`` or ``official`` (CFG combination, overshoot, eta placement, grid).
        update: ``exact`` (x0 ← ẑ0) or ``adam`` (``inner_steps`` Adam steps of learning rate ``lr``).
        shape: image shape; defaults to ``model.shape``.
        uncond: the unconditional condition (None = the model's default).
        inversion_eta: η; None keeps the preset default of :class:`GuidanceConfig` (0.3).
        callback: receives ``{"i", "t", "x0", "output"}`` after every guidance step.
    """
    check_choice("method", method, METHODS)
    check_choice("update", update, UPDATES)
    steps = check_int("steps", steps, low=2)
    batch = check_int("batch", batch, low=1)
    shape = tuple(shape if shape is not None else getattr(model, "shape", ()))
    if not shape:
        raise ValueError(f"shape is required: model {type(model).__name__} has no shape attribute")
    schedule = NoiseSchedule.of_model(model)
    timesteps = lab_timesteps(steps, schedule.num_train_timesteps)
    config = GuidanceConfig(
        preset=preset,
        noise=NOISE_OF_METHOD.get(method, "cached"),
        guidance_scale=guidance_scale,
        inversion_guidance_scale=inversion_guidance_scale,
        inversion_n_steps=inversion_n_steps,
        overshoot=overshoot,
        **({} if inversion_eta is None else {"inversion_eta": inversion_eta}),
    )
    conditioning = Conditioning(cond=cond, uncond=uncond)
    generator = torch.Generator().manual_seed(seed)
    dtype = getattr(model, "dtype", torch.float32)
    dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    device = getattr(model, "device", torch.device("cpu"))
    x_T = torch.randn((batch, *shape), generator=generator, dtype=dtype).to(device)
    cfg_mode = config.resolved_cfg_mode
    if method == "ddim":
        return sample_ddim(
            model, x_T, timesteps, conditioning, guidance_scale, cfg_mode, callback=callback, disable=disable
        )

    with torch.no_grad():
        kappa = guided_epsilon(model, x_T, timesteps[0], conditioning, guidance_scale, cfg_mode, schedule)
        x0 = predict_x0(x_T, kappa, schedule.alpha_bar(timesteps[0]))
    for i, t in enumerate(tqdm(timesteps[1:], disable=disable, desc=method, leave=False), start=1):
        if update == "exact":
            output = guidance_step(
                model,
                x0,
                t,
                conditioning,
                config,
                noise=kappa if method == "ddim-cache" else None,
                generator=generator,
                schedule=schedule,
            )
            x0 = output.target
        else:
            x0, output = _adam_update(
                model, x0, t, conditioning, config, kappa, method, generator, schedule, lr, inner_steps
            )
        kappa = output.noise_pred
        if callback is not None:
            callback({"i": i, "t": t, "x0": x0, "output": output})
    return x0


def _adam_update(
    model: Any,
    x0: Tensor,
    t: int,
    conditioning: Conditioning,
    config: GuidanceConfig,
    kappa: Tensor,
    method: str,
    generator: torch.Generator,
    schedule: NoiseSchedule,
    lr: float,
    inner_steps: int,
) -> tuple[Tensor, Any]:
    """One guidance call, then ``inner_steps`` Adam steps on ½ mean((x0 − stopgrad(ẑ0))²)."""
    check_range("lr", lr, 0.0, low_open=True)
    inner_steps = check_int("inner_steps", inner_steps, low=1)
    parameter = x0.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([parameter], lr=lr)
    output = guidance_step(
        model,
        parameter,
        t,
        conditioning,
        config,
        noise=kappa if method == "ddim-cache" else None,
        generator=generator,
        schedule=schedule,
    )
    for _ in range(inner_steps):
        optimizer.zero_grad()
        loss = 0.5 * (parameter - output.target).pow(2).mean()
        loss.backward()
        optimizer.step()
    return parameter.detach(), output
