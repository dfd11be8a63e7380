"""Write a tiny CLIP model with random weights, loadable like a real one (``from_pretrained(folder)``).

    python tests/bench_standin/make_tiny_clip.py /tmp/tiny-clip
    sdi-bench score --out /tmp/bench --clip-model /tmp/tiny-clip --clip-iqa-model /tmp/tiny-clip

A ``transformers`` ``CLIPModel`` (2-layer text and vision towers, 32×32 images in 8×8 patches) and a
``CLIPProcessor`` (the tiny byte-level BPE tokenizer of :mod:`threestudio_sdi.testing.tiny_sd` and a CLIP
image processor at 32×32), built from configs and saved with ``save_pretrained``: the torchmetrics
and transformers code paths of the scorers run on it offline. Its scores mean nothing.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

import torch

IMAGE_SIZE = 32


def tiny_clip(path: str | pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Build the tiny CLIP model and processor, ``save_pretrained`` both to ``path``; return it."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from threestudio_sdi.testing.tiny_sd import MAX_PROMPT_TOKENS, write_tiny_clip_vocab

    path = pathlib.Path(path)
    with tempfile.TemporaryDirectory(prefix="tiny-clip-vocab-") as vocab_folder:
        vocab_size = write_tiny_clip_vocab(vocab_folder)
        tokenizer = CLIPTokenizer.from_pretrained(vocab_folder, model_max_length=MAX_PROMPT_TOKENS)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    config = CLIPConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": MAX_PROMPT_TOKENS,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.save_pretrained(path)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/bench_standin/make_tiny_clip.py FOLDER")
    print(tiny_clip(sys.argv[1]))
