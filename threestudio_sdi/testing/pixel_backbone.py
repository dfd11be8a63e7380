"""A pixel-space denoiser as a backbone of ``sdi-guidance`` (:mod:`threestudio_sdi.threestudio.backbone`).

A model that follows :mod:`threestudio_sdi.denoiser` in **pixel space**:

* ``shape = (3, S, S)``: the model's image, three channels of a square S × S image, values in [−1, 1];
* ``predict_noise`` (and optionally ``predict_noise_batched``), ``prediction_type``, and a ``schedule``
  or ``alphas_cumprod``, as every model of this package;
* ``prompt_condition(prompt: str)``: the ``cond`` of threestudio's prompt (``prompt_utils.prompt``),
  valid for any batch of views — a class index for a class-conditional model (e.g. ``"ball"`` -> 0);
  the unconditional branch is the model's own (``cond=None``);
* optionally ``view_conditioned = True``: the model then receives each view's camera.

:class:`PixelBackbone` wraps it: renders are mapped to the model's space by :class:`PixelCodec`,
x0 = 2·rgb − 1 (after the guidance's bilinear resize to S × S), which keeps the gradient of the loss
flowing to the render; target, noisy image and κ are shown by the inverse, rgb = (x + 1)/2 clipped to
[0, 1]. A factory named by ``system.guidance.model_factory`` returns one (the known-answer runs:
:mod:`threestudio_sdi.experimental.lab3d.threestudio_prior`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..classifier_free import Cameras, Conditioning
from ..denoiser import PREDICTION_TYPES
from ..schedule import NoiseSchedule


def check_pixel_model(model: Any) -> int:
    """The side S of a pixel model's (3, S, S) images; ValueError saying what the model lacks."""
    where = f"the pixel model {type(model).__name__}"
    for name in ("predict_noise", "prompt_condition"):
        if not callable(getattr(model, name, None)):
            raise ValueError(f"{where} has no method {name}() (threestudio_sdi.testing.pixel_backbone)")
    if getattr(model, "prediction_type", None) not in PREDICTION_TYPES:
        raise ValueError(f"{where} must have prediction_type in {PREDICTION_TYPES}")
    NoiseSchedule.of_model(model)  # ValueError without a schedule or alphas_cumprod
    shape = tuple(getattr(model, "shape", ()))
    if len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2] or shape[1] < 1:
        raise ValueError(
            f"{where} must have shape (3, S, S) (square RGB images), got {getattr(model, 'shape', None)!r}"
        )
    return int(shape[1])


class PixelCodec:
    """The 'codec' of a pixel model: images in [0, 1] <-> the model's space, x = 2·rgb − 1 (no VAE).

    It has :class:`~threestudio_sdi.models.stable_diffusion.LatentCodec`'s interface, so the guidance
    encodes and decodes through the same calls for both kinds of model; ``mode`` and ``generator`` (the
    VAE's posterior sample) have nothing to draw here.
    """

    def encode(
        self, rgb: Tensor, *, mode: str = "sample", generator: torch.Generator | None = None
    ) -> Tensor:
        """x0 = 2·rgb − 1, differentiable w.r.t. ``rgb`` [B, 3, S, S]."""
        return rgb * 2 - 1

    def decode(self, x: Tensor) -> Tensor:
        """rgb = (x + 1)/2 clipped to [0, 1], without grad (validation panels)."""
        with torch.no_grad():
            return ((x.detach() + 1) / 2).clamp(0, 1)


class PixelBackbone:
    """A pixel model as a backbone: no VAE, conditioned through ``prompt_condition`` (module docstring)."""

    has_latents = False

    def __init__(self, model: Any) -> None:
        self.model = model
        self.codec = PixelCodec()
        self.image_size = self.latent_size = check_pixel_model(model)

    def conditioning(
        self,
        prompt_utils: Any,
        elevation: Tensor,
        azimuth: Tensor,
        camera_distances: Tensor,
        cameras: Cameras | None = None,
    ) -> Conditioning:
        """``model.prompt_condition(prompt_utils.prompt)``, the model's own unconditional branch, and
        the cameras for a view-conditioned model.

        Perp-Neg combines text embeddings of neighbouring views; a pixel model is conditioned through its
        ``prompt_condition`` instead, so Perp-Neg is refused.
        """
        if getattr(prompt_utils, "use_perp_neg", False):
            raise ValueError(
                "Perp-Neg (system.prompt_processor.use_perp_neg=true) needs text embeddings, but "
                "system.guidance.model_factory names a pixel model conditioned through prompt_condition(); "
                "set system.prompt_processor.use_perp_neg=false"
            )
        return Conditioning(cond=self.model.prompt_condition(prompt_utils.prompt), cameras=cameras)
