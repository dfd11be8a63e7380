"""A tiny Stable-Diffusion stack with random weights, built offline from configs.

:func:`tiny_stable_diffusion` writes a folder that ``StableDiffusionPipeline.from_pretrained(path,
local_files_only=True)`` — and :func:`threestudio_sdi.models.stable_diffusion.load_stable_diffusion`
— load exactly like real weights: a UNet on 4×8×8 latents, a VAE mapping 32×32 RGB to those
latents, a 2-layer CLIP text encoder with a small but valid byte-level BPE tokenizer, and the DDIM
scheduler config of Stable Diffusion 2.1-base. It is for tests and benchmarks of the plumbing; its
outputs mean nothing.

diffusers and transformers are imported when the function runs, not when this module is imported.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import tempfile
from typing import Any

import torch

from ..errors import check_int
from ..schedule import STABLE_DIFFUSION_SCHEDULER_CONFIG

TEXT_HIDDEN_SIZE = 32
"""Hidden size of the tiny CLIP text encoder (= the UNet's ``cross_attention_dim``)."""

MAX_PROMPT_TOKENS = 77
"""Token length of a prompt, as in Stable Diffusion."""

LATENT_CHANNELS = 4
LATENT_SIZE = 8
IMAGE_SIZE = 32

UNET_CONFIG: dict[str, Any] = {
    "sample_size": LATENT_SIZE,
    "in_channels": LATENT_CHANNELS,
    "out_channels": LATENT_CHANNELS,
    "layers_per_block": 1,
    "block_out_channels": (32, 32),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": TEXT_HIDDEN_SIZE,
    # diffusers reads ``attention_head_dim`` as the number of heads in these blocks (a long-standing
    # naming quirk), the same in 0.19 and today: 4 heads of 8 channels.
    "attention_head_dim": 4,
    "norm_num_groups": 8,
}
"""Config of the tiny ``UNet2DConditionModel``: two cross-attention blocks each way, one downsampling."""

VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (8, 16, 16),
    "layers_per_block": 1,
    "latent_channels": LATENT_CHANNELS,
    "norm_num_groups": 4,
    "sample_size": IMAGE_SIZE,
    "scaling_factor": 0.18215,
}
"""Config of the tiny ``AutoencoderKL``: two downsamplings, 32×32×3 RGB <-> 4×8×8 latents."""

TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "hidden_size": TEXT_HIDDEN_SIZE,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": MAX_PROMPT_TOKENS,
    "projection_dim": TEXT_HIDDEN_SIZE,
    "hidden_act": "gelu",
}
"""Config of the tiny ``CLIPTextModel``; vocabulary size and special token ids come from the tokenizer."""

SCHEDULER_CONFIG: dict[str, Any] = {**STABLE_DIFFUSION_SCHEDULER_CONFIG, "clip_sample": False}
"""The ``DDIMScheduler`` config of stabilityai/stable-diffusion-2-1-base."""

_MERGES = (
    ("t", "h"),
    ("th", "e</w>"),
    ("a", "n"),
    ("an", "d</w>"),
    ("o", "f</w>"),
    ("i", "n"),
    ("in", "g</w>"),
    ("e", "r</w>"),
    ("o", "n</w>"),
)
"""A few BPE merges so that the tokenizer really merges (``the``, ``and``, ``of``, ...)."""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def write_tiny_clip_vocab(folder: str | pathlib.Path) -> int:
    """Write ``vocab.json`` and ``merges.txt`` of a tiny CLIP BPE tokenizer; return the vocabulary size.

    The layout follows CLIP's: the 256 byte characters, the same with ``</w>``, the merged tokens,
    then ``<|startoftext|>`` and ``<|endoftext|>`` with the two highest ids (CLIP's text model finds
    the end of a prompt as the arg-max token id).
    """
    characters = list(_bytes_to_unicode().values())
    tokens = characters + [character + "</w>" for character in characters]
    tokens += ["".join(pair) for pair in _MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    folder = pathlib.Path(folder)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = "#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in _MERGES)
    (folder / "merges.txt").write_text(merges, encoding="utf-8")
    return len(vocab)


def tiny_stable_diffusion(path: str | pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Build a tiny Stable-Diffusion pipeline with random weights and ``save_pretrained`` it to ``path``.

    Args:
        path: output folder (created if missing); it ends up in the layout of a hub snapshot
            (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``).
        seed: seed of the random weights; the global torch RNG is left untouched.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    return write_random_pipeline(path, UNET_CONFIG, VAE_CONFIG, TEXT_ENCODER_CONFIG, seed=seed)


def write_random_pipeline(
    path: str | pathlib.Path,
    unet_config: dict[str, Any],
    vae_config: dict[str, Any],
    text_encoder_config: dict[str, Any],
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> pathlib.Path:
    """A Stable-Diffusion pipeline of the given configs with random weights, saved to ``path``.

    The text side is the tiny byte-level CLIP tokenizer (:func:`write_tiny_clip_vocab`) and a
    ``CLIPTextModel`` of ``text_encoder_config``; the scheduler is SD 2.1-base's DDIM config. Weights are
    drawn from ``seed`` (the global torch RNG is left untouched) and stored in ``dtype``. The tokenizer
    is kept as ``vocab.json`` + ``merges.txt`` only (transformers 5 also writes a ``tokenizer.json``
    that older ``tokenizers`` cannot parse), so a folder written by either major version of
    transformers loads in the other.
    """
    from transformers import CLIPTokenizer

    seed = check_int("seed", seed)
    path = pathlib.Path(path)
    with tempfile.TemporaryDirectory(prefix="tiny-clip-tokenizer-") as vocab_folder:
        vocab_size = write_tiny_clip_vocab(vocab_folder)
        tokenizer = CLIPTokenizer.from_pretrained(vocab_folder, model_max_length=MAX_PROMPT_TOKENS)
        if len(tokenizer) != vocab_size:
            raise RuntimeError(f"tiny CLIP tokenizer has {len(tokenizer)} tokens, expected {vocab_size}")
        _build_and_save(
            tokenizer, vocab_size, (unet_config, vae_config, text_encoder_config), seed, dtype, path
        )
        for name in ("vocab.json", "merges.txt"):
            target = path / "tokenizer" / name
            if not target.exists():
                shutil.copyfile(pathlib.Path(vocab_folder) / name, target)
        (path / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)
    return path


def _build_and_save(
    tokenizer: Any,
    vocab_size: int,
    configs: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
    seed: int,
    dtype: torch.dtype,
    path: pathlib.Path,
) -> None:
    """Random-weight UNet, VAE and text encoder around ``tokenizer``, saved as a pipeline to ``path``."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet_config, vae_config, text_encoder_config = configs
    text_config = CLIPTextConfig(
        vocab_size=vocab_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **text_encoder_config,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_config).to(dtype)
        vae = AutoencoderKL(**vae_config).to(dtype)
        text_encoder = CLIPTextModel(text_config).to(dtype)
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    path.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(path, safe_serialization=True)
    _use_hub_text_encoder_keys(path / "text_encoder")


def _use_hub_text_encoder_keys(folder: pathlib.Path) -> None:
    """Rename the text encoder's weights to the hub layout (``text_model.…``) where they are not.

    transformers 5 saves ``CLIPTextModel`` without the ``text_model.`` prefix, which transformers 4
    cannot read (it would silently re-initialise the encoder); hub snapshots of Stable Diffusion
    use the prefix, and every version loads that.
    """
    from safetensors.torch import load_file, save_file

    for file in folder.glob("*.safetensors"):
        weights = load_file(file)
        if all(name.startswith("text_model.") for name in weights):
            continue
        renamed = {
            name if name.startswith("text_model.") else f"text_model.{name}": tensor
            for name, tensor in weights.items()
        }
        save_file(renamed, file, metadata={"format": "pt"})
