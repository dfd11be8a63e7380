"""A pixel-space denoiser in ``sdi-guidance``: loaded from a factory, no VAE, conditioned through its prompt.

``system.guidance.model_factory: "package.module:function"`` names a function that
``system.guidance.model_options`` (a dict) are passed to as keyword arguments, imported with
:mod:`importlib` when the guidance is configured (the plugin never imports the model's package
itself). It returns a model that follows :mod:`threestudio_sdi.denoiser` in **pixel space**:

* ``shape = (3, S, S)``: the model's image, three channels of a square S × S image, values in [−1, 1];
* ``predict_noise`` (and optionally ``predict_noise_batched``), ``prediction_type``, and a ``schedule``
  or ``alphas_cumprod``, as every model of this package;
* ``prompt_condition(prompt: str)``: the ``cond`` of threestudio's prompt (``prompt_utils.prompt``),
  valid for any batch of views — a class index for a class-conditional model (e.g. ``"ball"`` -> 0);
  the unconditional branch is the model's own (``cond=None``);
* optionally ``view_conditioned = True``: the model then receives each view's camera
  (:func:`~.batch_cameras.cameras_from_batch`).

Its inputs are on the guidance's device (threestudio's ``get_device()``); the factory places the
model's own tensors (the known-answer run uses the CPU).

Renders are mapped to the model's space by :class:`PixelCodec`, x0 = 2·rgb − 1 (after the guidance's
bilinear resize to S × S), which keeps the gradient of the loss flowing to the render; target, noisy
image and κ are shown by the inverse, rgb = (x + 1)/2 clipped to [0, 1]. Everything else of the guidance
step — timesteps, presets, noise strategies, the per-view guard, the generators, the loss — is the same
code as with Stable Diffusion.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ..cfg import Cameras, Conditioning
from ..denoiser import PREDICTION_TYPES
from ..schedule import NoiseSchedule

FACTORY_SETTING = "system.guidance.model_factory"
OPTIONS_SETTING = "system.guidance.model_options"


def import_factory(spec: str) -> Callable[..., Any]:
    """The function named by ``"package.module:function"``; ValueError naming the setting otherwise."""
    if not isinstance(spec, str) or spec.count(":") != 1 or spec.startswith(":") or spec.endswith(":"):
        raise ValueError(f"{FACTORY_SETTING} must be 'package.module:function', got {spec!r}")
    module_name, function_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"{FACTORY_SETTING}={spec!r}: cannot import module {module_name!r} ({error}); it must be "
            "importable by this Python (installed, or on PYTHONPATH)"
        ) from error
    factory = getattr(module, function_name, None)
    if factory is None:
        raise ValueError(f"{FACTORY_SETTING}={spec!r}: module {module_name!r} has no {function_name!r}")
    if not callable(factory):
        raise ValueError(f"{FACTORY_SETTING}={spec!r}: {function_name!r} is not callable: {factory!r}")
    return factory


def check_pixel_model(model: Any, spec: str) -> int:
    """The side S of a pixel model's (3, S, S) images; ValueError saying what the model lacks."""
    where = f"the model of {FACTORY_SETTING}={spec!r} ({type(model).__name__})"
    for name in ("predict_noise", "prompt_condition"):
        if not callable(getattr(model, name, None)):
            raise ValueError(f"{where} has no method {name}() (threestudio_sdi.threestudio.pixel_model)")
    if getattr(model, "prediction_type", None) not in PREDICTION_TYPES:
        raise ValueError(f"{where} must have prediction_type in {PREDICTION_TYPES}")
    NoiseSchedule.of_model(model)  # ValueError without a schedule or alphas_cumprod
    shape = tuple(getattr(model, "shape", ()))
    if len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2] or shape[1] < 1:
        raise ValueError(
            f"{where} must have shape (3, S, S) (square RGB images), got {getattr(model, 'shape', None)!r}"
        )
    return int(shape[1])


def load_pixel_model(spec: str, options: Mapping[str, Any] | None = None) -> tuple[Any, int]:
    """(model, S): the factory ``spec`` called with ``options`` as keyword arguments, then checked."""
    factory = import_factory(spec)
    options = dict(options or {})
    try:
        model = factory(**options)
    except TypeError as error:
        raise ValueError(
            f"{OPTIONS_SETTING}={options!r} do not fit {FACTORY_SETTING}={spec!r}: {error}"
        ) from error
    return model, check_pixel_model(model, spec)


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


def pixel_conditioning(model: Any, prompt_utils: Any, cameras: Cameras | None) -> Conditioning:
    """The step's :class:`Conditioning`: ``model.prompt_condition(prompt_utils.prompt)``, the model's
    own unconditional branch, and the cameras for a view-conditioned model.

    Perp-Neg combines text embeddings of neighbouring views; a pixel model is conditioned through its
    ``prompt_condition`` instead, so Perp-Neg is refused.
    """
    if getattr(prompt_utils, "use_perp_neg", False):
        raise ValueError(
            "Perp-Neg (system.prompt_processor.use_perp_neg=true) needs text embeddings, but "
            f"{FACTORY_SETTING} names a pixel model conditioned through prompt_condition(); "
            "set system.prompt_processor.use_perp_neg=false"
        )
    return Conditioning(cond=model.prompt_condition(prompt_utils.prompt), cameras=cameras)
