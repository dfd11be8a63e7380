"""The GPU cost run, one command: SD 2.1-base size, 512×512, float16, ours against the released guidance.

    /path/to/threestudio-python benchmarks/gpu_cost.py --released-from /path/to/threestudio

Runs ``benchmarks/cost.py`` with its ``gpu`` variant set on the first CUDA device: the SD 2.1-base-size
random-weight stack (or ``--model-path``, e.g. a local snapshot of stabilityai/stable-diffusion-2-1-base),
float16 weights, Perp-Neg (4 UNet branches, as configs/sdi.yaml), 5 timesteps along the ``official``
annealing (980 → 250), ``--rounds`` interleaved rounds. Variants: SDS and ``official`` SDI of ours and of
the released guidance, eager and accelerated (both sides' UNet through one
:class:`~threestudio_sdi.models.accelerated.AcceleratedUNet`: channels-last, SDPA, torch.compile and a
CUDA graph per input shape); our accelerated fewer-evaluation options (``skip_origin``,
``adaptive_inversion_steps``, both), the ``paper`` preset, two views per step (``official`` and the
``sdi-2view`` setting, reported per view); and the VAE encode + backward at 512×512. The float64
equivalence check and the float16 comparisons of cost.py gate every ratio against the released code;
the headline ratio "ours accelerated ÷ released as shipped" is the issue's ≤ 0.5× target.

Writes ``benchmarks/results/gpu-<device>.json`` and ``.md`` (the device named in the file and its name).
Without a CUDA device it exits with status 2 and writes nothing: no GPU number comes from a CPU.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

import torch
from common import RESULTS


def device_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--released-from", type=pathlib.Path, default=None, help="a threestudio checkout")
    parser.add_argument(
        "--model-path", type=pathlib.Path, default=None, help="an SD folder (default: sd21-random)"
    )
    parser.add_argument(
        "--model-dir", type=pathlib.Path, default=None, help="where to write the sd21-random folder"
    )
    parser.add_argument("--rounds", type=int, default=10, help="timed interleaved rounds (default 10)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_cost.py: torch sees no CUDA device; nothing was measured or written", file=sys.stderr)
        return 2
    import cost

    forwarded = [
        "--set",
        "gpu",
        "--device",
        "cuda",
        "--perp-neg",
        "--phases",
        "5",
        "--rounds",
        str(args.rounds),
    ]
    forwarded += ["--model", "sd21-random", "--compile-backend", args.compile_backend]
    forwarded += ["--out", str(RESULTS), "--stem", f"gpu-{device_slug(torch.cuda.get_device_name(0))}"]
    for flag, value in (
        ("--released-from", args.released_from),
        ("--model-path", args.model_path),
        ("--model-dir", args.model_dir),
    ):
        if value is not None:
            forwarded += [flag, str(value)]
    command = " ".join(["python", "benchmarks/gpu_cost.py", *(argv if argv is not None else sys.argv[1:])])
    return cost.main(forwarded, command=command)


if __name__ == "__main__":
    raise SystemExit(main())
