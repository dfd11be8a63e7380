"""A diffusers ``UNet2DConditionModel`` as a denoiser of :mod:`threestudio_sdi.denoiser`.

Conditions are text-embedding tensors (from :class:`threestudio_sdi.models.stable_diffusion.PromptEncoder`
or any other encoder); ``None`` is the unconditional branch, whose embedding is fixed at construction.
:meth:`DiffusersModel.predict_noise_batched` evaluates every branch of classifier-free guidance and
Perp-Neg in a single UNet call.

This module is pure torch: it never imports diffusers, it only calls the UNet it is given.

The UNet runs under ``torch.no_grad()`` rather than ``torch.inference_mode()``: its outputs are
used as constants inside the callers' autograd graphs (e.g. ``(eps_hat * latents).sum()`` with
``latents`` requiring grad), and inference tensors cannot be saved for backward nor updated in place
outside inference mode, so a later ``loss.backward()`` would fail with "Inference tensors cannot be
saved for backward". ``no_grad`` costs the same here (no graph is recorded either way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..denoiser import PREDICTION_TYPES
from ..errors import check_choice, check_int
from ..schedule import NoiseSchedule
from .protocol import ScheduledModel


def default_dtype(device: torch.device) -> torch.dtype:
    """float16 on CUDA, float32 elsewhere (the dtypes Stable Diffusion is run in)."""
    return torch.float16 if device.type == "cuda" else torch.float32


def place_module(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` moved to ``device`` and cast to ``dtype`` — only where it is not there already —,
    in eval mode and frozen. (Recent diffusers log a warning on every ``ModelMixin.to(dtype)``, even
    a no-op one.)"""
    parameter = next(module.parameters(), None)
    if parameter is not None and parameter.device != device:
        module = module.to(device)
    if parameter is not None and parameter.dtype != dtype:
        module = module.to(dtype)
    return module.eval().requires_grad_(False)


class DiffusersModel(ScheduledModel):
    """Denoiser around a diffusers UNet conditioned on text embeddings.

    Args:
        unet: a ``UNet2DConditionModel`` (or any module called as ``unet(sample, timestep,
            encoder_hidden_states=...)`` that returns an object with ``.sample`` or a tuple).
        scheduler_config: the scheduler config it was trained with (``pipeline.scheduler.config``, a
            dict or ``FrozenDict``): gives ``prediction_type`` and the noise schedule.
        uncond_embeddings: the unconditional (negative-prompt) embedding [1 or B, L, D] used for
            ``cond=None``.
        device: where the UNet runs; default the device of its parameters.
        dtype: weight dtype; default float16 on CUDA and float32 on CPU.

    Attributes:
        schedule, alphas_cumprod, initial_alpha_cumprod, steps_offset, prediction_type: see
            :mod:`threestudio_sdi.denoiser`.
        unet_calls: number of UNet forward calls so far (for tests and benchmarks).
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        scheduler_config: Mapping[str, Any],
        uncond_embeddings: Tensor,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if device is None:
            first = next(unet.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.dtype = default_dtype(self.device) if dtype is None else dtype
        if not self.dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {self.dtype}")
        self.prediction_type = check_choice(
            "scheduler_config['prediction_type']",
            scheduler_config.get("prediction_type", "epsilon"),
            PREDICTION_TYPES,
        )
        self.schedule = NoiseSchedule.from_config(scheduler_config)
        self.unet = place_module(unet, self.device, self.dtype)
        if not isinstance(uncond_embeddings, Tensor) or uncond_embeddings.ndim != 3:
            shape = tuple(uncond_embeddings.shape) if isinstance(uncond_embeddings, Tensor) else None
            raise ValueError(f"uncond_embeddings must be a tensor [1 or B, L, D], got shape {shape}")
        self.uncond_embeddings = uncond_embeddings.detach().to(self.device, self.dtype)
        self.unet_calls = 0

    def predict_noise(self, x_t: Tensor, t: int | Tensor, cond: Tensor | None) -> Tensor:
        """UNet output at (x_t, t) for the text embedding ``cond`` [1 or B, L, D] (None = unconditional)."""
        return self.predict_noise_batched(x_t, t, [cond])[0]

    def predict_noise_batched(
        self, x_t: Tensor, t: int | Tensor, conds: Sequence[Tensor | None]
    ) -> list[Tensor]:
        """UNet outputs for every condition in ``conds`` from **one** UNet call.

        The branches are concatenated along the batch (x_t repeated, embeddings broadcast to B) and
        split back; each output has the shape, dtype and device of ``x_t``.

        Args:
            x_t: noisy latents [B, C, H, W].
            t: an int (negative allowed: the UNet receives that value, like the released SDI code
                at timestep −99) or a LongTensor [B].
            conds: text embeddings [1 or B, L, D] or None (the unconditional embedding).
        """
        if x_t.ndim != 4:
            raise ValueError(f"x_t must have shape [B, C, H, W], got {tuple(x_t.shape)}")
        if len(conds) == 0:
            raise ValueError("conds must hold at least one condition (None = unconditional)")
        batch = x_t.shape[0]
        timesteps = self._timesteps(t, batch)
        embeddings = torch.cat([self._embedding(cond, batch, index) for index, cond in enumerate(conds)])
        with torch.no_grad():
            sample = x_t.detach().to(self.device, self.dtype).repeat(len(conds), 1, 1, 1)
            output = self.unet(sample, timesteps.repeat(len(conds)), encoder_hidden_states=embeddings)
            output = output.sample if hasattr(output, "sample") else output[0]
        self.unet_calls += 1
        return [chunk.to(x_t.device, x_t.dtype) for chunk in output.split(batch)]

    def _timesteps(self, t: int | Tensor, batch: int) -> Tensor:
        """``t`` as a LongTensor [B] on the UNet's device."""
        if isinstance(t, Tensor):
            if t.ndim == 0:
                t = int(t.item())
            elif t.shape != (batch,):
                raise ValueError(
                    f"t must be an int or a tensor of shape [{batch}], got shape {tuple(t.shape)}"
                )
            else:
                return t.detach().to(self.device, torch.long)
        step = check_int("t", t)
        return torch.full((batch,), step, device=self.device, dtype=torch.long)

    def _embedding(self, cond: Tensor | None, batch: int, index: int) -> Tensor:
        """Condition ``index`` as embeddings [B, L, D] in the UNet's device and dtype."""
        embedding = self.uncond_embeddings if cond is None else cond
        name = "uncond_embeddings" if cond is None else f"conds[{index}]"
        if not isinstance(embedding, Tensor) or embedding.ndim != 3:
            raise ValueError(
                f"{name} must be a text-embedding tensor [1 or B, L, D] or None, got {embedding!r:.80}"
            )
        if embedding.shape[0] not in (1, batch):
            raise ValueError(
                f"{name} has batch size {embedding.shape[0]}, expected 1 or {batch} (the batch of x_t)"
            )
        reference = self.uncond_embeddings
        if embedding.shape[1:] != reference.shape[1:]:
            raise ValueError(
                f"{name} has shape {tuple(embedding.shape)}, but the embeddings must be [*, "
                f"{reference.shape[1]}, {reference.shape[2]}] like uncond_embeddings"
            )
        return embedding.detach().to(self.device, self.dtype).expand(batch, -1, -1)
