"""Where a guidance step of threestudio's VSD and SDS went on the CPU with the tiny stack, and where it goes
with the A/B stack of ab_configs.py.

    python tests/threestudio_cpu/profile_ab_stack.py [--threads 1] [--json out.json]

threestudio's SD guidances resize each render to 512×512 and encode it with the VAE (the gradient goes
back through the encoder). VSD then runs the UNet three times a step: the frozen model on the noisy
latent (batch 2: prompt and unconditional), the LoRA model on the same (batch 2, camera and none), and
the LoRA model again with gradients for its own loss (batch 1, forward + backward). SDS runs the UNet
once (batch 4 with Perp-Neg) and decodes its one-step estimate from a 64×64 latent every step. This
script times those pieces, each alone, for three stacks of random weights:

* ``tiny+1280``: the first attempt: ``tiny_sd``'s UNet with a 1280-wide time embedding (what VSD's
  camera embedding needs) and ``tiny_sd``'s VAE, which halves the size twice: 512×512 → 128×128 latents;
* ``ab-latent8``: the same UNet with a VAE that halves six times (512×512 → 8×8 latents): cheap UNet
  calls, but SDS's decode of a 64×64 latent then makes a 4096×4096 image;
* ``ab``: the A/B stack: SD's shapes (÷8 VAE, 64×64 latents), attention at 16×16 only.

For each: the latent size, the tokens of the UNet's first self-attention, the seconds of each piece,
the VSD and SDS steps they add up to, and the top operators of one frozen-UNet call (torch.profiler).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from ab_configs import AB_UNET, AB_VAE  # noqa: E402

from threestudio_sdi.testing.tiny_sd import TEXT_HIDDEN_SIZE, UNET_CONFIG, VAE_CONFIG  # noqa: E402

TINY_1280 = {**UNET_CONFIG, "time_embedding_dim": 1280}
STACKS = {
    "tiny+1280": (TINY_1280, VAE_CONFIG),
    "ab-latent8": (
        TINY_1280,
        {
            **VAE_CONFIG,
            "down_block_types": ("DownEncoderBlock2D",) * 7,
            "up_block_types": ("UpDecoderBlock2D",) * 7,
            "block_out_channels": (8,) * 7,
        },
    ),
    "ab": (AB_UNET, AB_VAE),
}


def seconds(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def profile(name: str, unet_config: dict[str, Any], vae_config: dict[str, Any]) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.manual_seed(0)
    unet, vae = UNet2DConditionModel(**unet_config), AutoencoderKL(**vae_config)
    image = torch.rand(1, 3, 512, 512, requires_grad=True)
    text = torch.randn(2, 77, TEXT_HIDDEN_SIZE)
    t = torch.tensor([500, 500])

    latent = vae.encode(image * 2 - 1).latent_dist.sample()
    encode = seconds(lambda: vae.encode(image * 2 - 1).latent_dist.sample())
    encode_backward = seconds(lambda: vae.encode(image * 2 - 1).latent_dist.sample().sum().backward())
    x = torch.randn(2, *latent.shape[1:])

    def frozen(batch: int = 2) -> None:
        with torch.no_grad():
            repeat = batch // 2
            unet(x.repeat(repeat, 1, 1, 1), t.repeat(repeat), encoder_hidden_states=text.repeat(repeat, 1, 1))

    def decode() -> None:
        with torch.no_grad():
            vae.decode(torch.randn(1, 4, 64, 64))

    def lora_loss() -> None:
        unet(x[:1], t[:1], encoder_hidden_states=text[:1]).sample.square().mean().backward()

    pieces = {
        "vae_encode": encode,
        "vae_encode_and_backward": encode_backward,
        "unet_frozen_batch2": seconds(frozen),
        "unet_lora_batch2": seconds(frozen),  # the LoRA call has the frozen call's shapes
        "unet_lora_loss_batch1_forward_backward": seconds(lora_loss),
        "unet_perp_neg_batch4": seconds(lambda: frozen(4)),
        "vae_decode_64x64_latent": seconds(decode),
    }
    vsd = (
        "vae_encode_and_backward",
        "unet_frozen_batch2",
        "unet_lora_batch2",
        "unet_lora_loss_batch1_forward_backward",
    )
    sds = ("vae_encode_and_backward", "unet_perp_neg_batch4", "vae_decode_64x64_latent")
    with torch_profile(activities=[ProfilerActivity.CPU]) as profiler:
        frozen()
    table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=6)
    first = next(i for i, kind in enumerate(unet_config["down_block_types"]) if "CrossAttn" in kind)
    height = latent.shape[-1] // 2**first
    return {
        "stack": name,
        "latent": list(latent.shape[1:]),
        "first_attention_tokens": height * height,
        "seconds": {key: round(value, 3) for key, value in pieces.items()},
        "vsd_step_seconds": round(sum(pieces[key] for key in vsd), 2),
        "sds_step_seconds": round(sum(pieces[key] for key in sds), 2),
        "top_operators": table,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for name, (unet_config, vae_config) in STACKS.items():
        result = profile(name, unet_config, vae_config)
        results.append(result)
        print(
            f"{name}: latent {result['latent']}, first attention over {result['first_attention_tokens']} tokens"
        )
        for key, value in result["seconds"].items():
            print(f"  {key}: {value:.3f} s")
        print(
            f"  VSD guidance step: {result['vsd_step_seconds']:.2f} s, SDS: {result['sds_step_seconds']:.2f} s"
        )
        print(result["top_operators"], flush=True)
    if args.json:
        import diffusers

        machine = {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "threads": args.threads,
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
        }
        stacks = [{key: value for key, value in r.items() if key != "top_operators"} for r in results]
        with open(args.json, "w") as handle:
            json.dump({"machine": machine, "stacks": stacks}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
