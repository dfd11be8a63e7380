"""What ``sdi-guidance`` distils from: a denoiser, its codec, its input size and its conditioning.

A **backbone** is what turns a render into the model's input and threestudio's prompt into its
condition. ``sdi-guidance`` runs every step through one, whatever the model:

* ``model``: the denoiser (:mod:`threestudio_sdi.denoiser`);
* ``codec``: ``encode(images [B, 3, S, S] in [0, 1], *, mode, generator) -> z0`` (differentiable) and
  ``decode(z) -> images [B, 3, h, w] in [0, 1]`` (panels);
* ``image_size``: S, the side renders are resized to before ``encode``; ``latent_size``: the side of z0
  (renders that are latents, ``rgb_as_latents``, are resized to it);
* ``has_latents``: True when renders may be latents (``rgb_as_latents``, e.g. ``latentnerf-system``);
* ``conditioning(prompt_utils, elevation, azimuth, camera_distances, cameras) -> Conditioning``, where
  ``cameras`` (:func:`~.batch_cameras.cameras_from_batch`) is given to a view-conditioned model only.

:class:`StableDiffusionBackbone` is the default. ``system.guidance.model_factory: "module:function"``
names a function that returns another one (called with ``system.guidance.model_options``): the
known-answer runs use a pixel-space prior this way (``threestudio_sdi.testing.pixel_backbone``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from ..classifier_free import Cameras, Conditioning

FACTORY_SETTING = "system.guidance.model_factory"
OPTIONS_SETTING = "system.guidance.model_options"
BACKBONE_ATTRIBUTES = ("model", "codec", "image_size", "latent_size", "has_latents", "conditioning")


def conditioning_from_prompt_utils(
    prompt_utils: Any,
    elevation: Tensor,
    azimuth: Tensor,
    camera_distances: Tensor,
    view_dependent_prompting: bool = True,
) -> Conditioning:
    """threestudio's ``PromptProcessorOutput`` for a batch of cameras -> a core ``Conditioning``.

    Without Perp-Neg, ``get_text_embeddings`` returns [2B, L, D]: the B positive embeddings, then the
    B unconditional ones. With ``prompt_utils.use_perp_neg``, ``get_text_embeddings_perp_neg``
    returns [4B, L, D] — positives (B), unconditional (B), then the two negatives of each sample
    interleaved (sample b's at rows 2b and 2b + 1 of the last 2B) — and the weights [B, 2] (already
    negative), which become ``negatives=[first negatives, second negatives]``.
    """
    batch = elevation.shape[0]
    if getattr(prompt_utils, "use_perp_neg", False):
        if not view_dependent_prompting:
            raise ValueError(
                "Perp-Neg (prompt_processor.use_perp_neg=true) needs view-dependent prompting; "
                "set guidance.view_dependent_prompting=true or use_perp_neg=false"
            )
        embeddings, weights = prompt_utils.get_text_embeddings_perp_neg(
            elevation, azimuth, camera_distances, view_dependent_prompting
        )
        if embeddings.shape[0] != 4 * batch or tuple(weights.shape) != (batch, 2):
            raise ValueError(
                f"get_text_embeddings_perp_neg returned embeddings {tuple(embeddings.shape)} and weights "
                f"{tuple(weights.shape)} for {batch} cameras; expected [{4 * batch}, L, D] and [{batch}, 2]"
            )
        negatives = embeddings[2 * batch :]
        return Conditioning(
            cond=embeddings[:batch],
            uncond=embeddings[batch : 2 * batch],
            negatives=[negatives[0::2], negatives[1::2]],
            negative_weights=weights,
        )
    embeddings = prompt_utils.get_text_embeddings(
        elevation, azimuth, camera_distances, view_dependent_prompting
    )
    if embeddings.shape[0] != 2 * batch:
        raise ValueError(
            f"get_text_embeddings returned {embeddings.shape[0]} embeddings for {batch} cameras; "
            f"expected {2 * batch} (conditional, then unconditional)"
        )
    return Conditioning(cond=embeddings[:batch], uncond=embeddings[batch:])


class StableDiffusionBackbone:
    """Stable Diffusion: the UNet as the denoiser, the VAE as the codec, text embeddings as conditions.

    Args:
        model: the :class:`~threestudio_sdi.models.diffusers_model.DiffusersModel` of the UNet.
        codec: the :class:`~threestudio_sdi.models.stable_diffusion.LatentCodec` of the VAE.
        image_size: renders are resized to image_size² (None = the model's native size, 512 for SD 2.1);
            a multiple of the VAE's factor.
        view_dependent_prompting: threestudio's view-dependent prompts ("…, side view").
    """

    has_latents = True

    def __init__(
        self, model: Any, codec: Any, image_size: int | None = None, view_dependent_prompting: bool = True
    ) -> None:
        self.model, self.codec = model, codec
        self.view_dependent_prompting = view_dependent_prompting
        vae_scale = 2 ** (len(codec.vae.config.block_out_channels) - 1)
        self.image_size = int(image_size or int(model.unet.config.sample_size) * vae_scale)
        if self.image_size % vae_scale:
            raise ValueError(
                f"image_size must be a multiple of the VAE's factor {vae_scale}, got {self.image_size}"
            )
        self.latent_size = self.image_size // vae_scale

    def conditioning(
        self,
        prompt_utils: Any,
        elevation: Tensor,
        azimuth: Tensor,
        camera_distances: Tensor,
        cameras: Cameras | None = None,
    ) -> Conditioning:
        """Text embeddings of the views' prompts (Perp-Neg when the prompt processor uses it)."""
        return conditioning_from_prompt_utils(
            prompt_utils, elevation, azimuth, camera_distances, self.view_dependent_prompting
        )


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
    if not callable(factory):
        raise ValueError(
            f"{FACTORY_SETTING}={spec!r}: module {module_name!r} has no function {function_name!r}"
        )
    return factory


def load_backbone(spec: str, options: Mapping[str, Any] | None = None) -> Any:
    """The backbone the factory ``spec`` returns for ``options``; ValueError saying what it lacks."""
    options = dict(options or {})
    try:
        backbone = import_factory(spec)(**options)
    except TypeError as error:
        raise ValueError(
            f"{OPTIONS_SETTING}={options!r} do not fit {FACTORY_SETTING}={spec!r}: {error}"
        ) from error
    missing = [name for name in BACKBONE_ATTRIBUTES if not hasattr(backbone, name)]
    if missing:
        raise ValueError(
            f"{FACTORY_SETTING}={spec!r} returned a {type(backbone).__name__} without {', '.join(missing)}: "
            "it must return a backbone (threestudio_sdi.threestudio.backbone)"
        )
    return backbone
