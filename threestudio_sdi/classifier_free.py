"""Classifier-free guidance (Ho & Salimans, 2022) and Perp-Neg (Armandpour et al., 2023).

* ``standard`` (paper eq. 3):   ε = ε_u + γ (ε_c − ε_u)
* ``quirk`` (released SDI code and threestudio's SDS without Perp-Neg): ε = ε_c + γ (ε_c − ε_u),
  i.e. ``standard`` at γ + 1
* Perp-Neg (both modes):   ε = ε_u + γ (e_pos + Σ_i w_i · perp(ε_neg_i − ε_u, e_pos)),
  e_pos = ε_pos − ε_u, perp(a, b) = a − (⟨a, b⟩ / ‖b‖²) b per sample; the weights w_i are given
  (threestudio's prompt processor returns them already negative).

A :class:`Conditioning` may carry the camera of each view (:class:`Cameras`). View-conditioned models
(``view_conditioned = True``, :mod:`threestudio_sdi.denoiser`) receive it with every evaluation; text-
or class-conditioned models never see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .errors import check_choice, check_range
from .prediction import epsilon_from_output, predict_branches
from .schedule import NoiseSchedule

CFG_MODES = ("standard", "quirk")
MAX_GUIDANCE_SCALE = 1000.0
"""Largest |γ| accepted: threestudio's SDS uses 100; beyond 1000 a step only overflows."""


def check_cfg_mode(mode: object) -> str:
    """``mode`` if it is one of :data:`CFG_MODES`, else ValueError naming ``cfg_mode``."""
    return check_choice("cfg_mode", mode, CFG_MODES)


def check_guidance_scale(name: str, value: object) -> float:
    """A finite CFG scale with |γ| ≤ :data:`MAX_GUIDANCE_SCALE`, else ValueError naming ``name``."""
    return check_range(name, value, -MAX_GUIDANCE_SCALE, MAX_GUIDANCE_SCALE)


@dataclass(frozen=True)
class Cameras:
    """The camera of each of B views, in threestudio's conventions.

    Attributes:
        elevation: Tensor[B], degrees above the horizon.
        azimuth: Tensor[B], degrees (0 = front, ±180 = back).
        distance: Tensor[B], camera distance to the origin.
        c2w: optional Tensor[B, 4, 4] (or [B, 3, 4]) camera-to-world matrices (OpenGL: the camera looks
            along −z).
        fovy: optional Tensor[B], vertical field of view in degrees.
    """

    elevation: Tensor
    azimuth: Tensor
    distance: Tensor
    c2w: Tensor | None = None
    fovy: Tensor | None = None

    def __post_init__(self) -> None:
        batch = self.elevation.shape[0] if self.elevation.ndim == 1 else -1
        for name in ("elevation", "azimuth", "distance", "fovy"):
            value = getattr(self, name)
            if value is not None and (value.ndim != 1 or value.shape[0] != batch):
                raise ValueError(
                    f"cameras.{name} must have shape [B] like cameras.elevation "
                    f"{tuple(self.elevation.shape)}, got {tuple(value.shape)}"
                )
        if self.c2w is not None and (self.c2w.ndim != 3 or self.c2w.shape[0] != batch):
            raise ValueError(
                f"cameras.c2w must have shape [B, 4, 4] or [B, 3, 4], got {tuple(self.c2w.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return int(self.elevation.shape[0])


@dataclass(frozen=True)
class Conditioning:
    """What the model is conditioned on for one guidance step.

    Attributes:
        cond: the positive condition (a class index, a text embedding, ...); None = unconditional.
        uncond: the unconditional / negative-prompt condition; None = the model's own default.
        negatives: Perp-Neg negative conditions (each with the batch of ``cond``).
        negative_weights: Tensor[B, len(negatives)] of Perp-Neg weights w_i (sign included).
        cameras: the camera of each view, for view-conditioned models; None = no camera.
    """

    cond: Any = None
    uncond: Any = None
    negatives: Sequence[Any] = field(default_factory=tuple)
    negative_weights: Tensor | None = None
    cameras: Cameras | None = None

    def __post_init__(self) -> None:
        if len(self.negatives) and self.negative_weights is None:
            raise ValueError("negative_weights is required when negatives are given (Perp-Neg)")
        if self.negative_weights is not None:
            if self.negative_weights.ndim != 2 or self.negative_weights.shape[1] != len(self.negatives):
                raise ValueError(
                    f"negative_weights must have shape [B, {len(self.negatives)}], "
                    f"got {tuple(self.negative_weights.shape)}"
                )
        if len(self.negatives) and self.cond is None:
            raise ValueError("Perp-Neg negatives need a positive cond, got cond=None")

    @property
    def uses_perp_neg(self) -> bool:
        return len(self.negatives) > 0

    def unconditional(self) -> Conditioning:
        """The same conditioning with the positive prompt dropped (for unconditional inversion)."""
        return Conditioning(cond=None, uncond=self.uncond, cameras=self.cameras)


def perpendicular_component(a: Tensor, b: Tensor) -> Tensor:
    """a − (⟨a, b⟩/‖b‖²) b per sample (flattened); b = 0 leaves a unchanged."""
    dims = tuple(range(1, a.ndim))
    norm_sq = (b * b).sum(dim=dims, keepdim=True)
    coefficient = (a * b).sum(dim=dims, keepdim=True) / norm_sq.clamp_min(torch.finfo(b.dtype).tiny)
    return a - coefficient * b


def combine_cfg(eps_uncond: Tensor, eps_cond: Tensor, scale: float, mode: str = "standard") -> Tensor:
    """CFG combination of the unconditional and conditional ε (see the module docstring); ``mode`` is
    checked where it is set (:func:`check_cfg_mode`), not at every evaluation."""
    base = eps_uncond if mode == "standard" else eps_cond
    return base + scale * (eps_cond - eps_uncond)


def combine_perp_neg(
    eps_uncond: Tensor, eps_pos: Tensor, eps_negatives: Sequence[Tensor], weights: Tensor, scale: float
) -> Tensor:
    """Perp-Neg: ε_u + γ (e_pos + Σ_i w_i perp(ε_neg_i − ε_u, e_pos)), weights [B, K]."""
    e_pos = eps_pos - eps_uncond
    accumulated = torch.zeros_like(e_pos)
    shape = (-1,) + (1,) * (e_pos.ndim - 1)
    for index, eps_negative in enumerate(eps_negatives):
        weight = weights[:, index].to(e_pos).view(shape)
        accumulated = accumulated + weight * perpendicular_component(eps_negative - eps_uncond, e_pos)
    return eps_uncond + scale * (e_pos + accumulated)


def guided_epsilon(
    model: Any,
    x_t: Tensor,
    t: int,
    conditioning: Conditioning,
    scale: float,
    mode: str = "standard",
    schedule: NoiseSchedule | None = None,
) -> Tensor:
    """ε_θ(x_t, t, y) combined with CFG (or Perp-Neg) from one batched model evaluation.

    With ``conditioning.cond is None`` the unconditional prediction is returned and ``scale`` is
    unused (ISM-style unconditional inversion).
    """
    schedule = schedule or NoiseSchedule.of_model(model)
    alpha_bar = schedule.alpha_bar(t, like=x_t)
    if conditioning.cond is None:
        branches = [conditioning.uncond]
    else:
        branches = [conditioning.uncond, conditioning.cond, *conditioning.negatives]
    outputs = predict_branches(model, x_t, t, branches, conditioning.cameras)
    eps = [epsilon_from_output(output, x_t, alpha_bar, model.prediction_type) for output in outputs]
    if conditioning.cond is None:
        return eps[0]
    if conditioning.uses_perp_neg:
        assert conditioning.negative_weights is not None
        return combine_perp_neg(eps[0], eps[1], eps[2:], conditioning.negative_weights, scale)
    return combine_cfg(eps[0], eps[1], scale, mode)


@dataclass(frozen=True)
class Guide:
    """The guided denoiser ε̂(x_t, t) of one model, conditioning and CFG scale (k-diffusion's CFGDenoiser).

    Attributes:
        model: the denoiser (:mod:`threestudio_sdi.denoiser`).
        conditioning: what it is conditioned on (prompt, unconditional branch, Perp-Neg, cameras).
        scale: γ of CFG / Perp-Neg.
        mode: ``"standard"`` or ``"quirk"`` CFG.
        schedule: the model's schedule; None reads it from the model.
    """

    model: Any
    conditioning: Conditioning
    scale: float
    mode: str = "standard"
    schedule: NoiseSchedule | None = None

    def __post_init__(self) -> None:
        if self.schedule is None:
            object.__setattr__(self, "schedule", NoiseSchedule.of_model(self.model))

    def __call__(self, x_t: Tensor, t: int) -> Tensor:
        """ε̂ = CFG(x_t, t, γ) (:func:`guided_epsilon`)."""
        return guided_epsilon(self.model, x_t, t, self.conditioning, self.scale, self.mode, self.schedule)
