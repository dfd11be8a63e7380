"""The GPU cost of SDI on 3D Gaussians, one command: steps/s and peak VRAM of sdi-gs against sds-gs.

    python benchmarks/gaussians_gpu.py --threestudio-root /path/to/threestudio \
        --threestudio-3dgs-root /path/to/threestudio-3dgs --workdir /tmp/gs-gpu [--model sd21-random]

Runs configs/sdi-gs.yaml and configs/sds-gs.yaml as they are — 512×512, 4 views per step,
threestudio-3dgs's system and densification, float16 weights — through threestudio's own ``launch.py
--train``, each in a fresh process (so that the peak memory of one is not the other's), for ``--steps``
steps. Measured per method: steps/s over the steps after ``--warmup`` (CUDA synchronised at each step's
ends), ``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` over the run, the Gaussians at the
end and the points densification added. ``--model`` is ``sd21-random`` (the SD 2.1-base-size stack with
random weights, built offline: the same shapes and so the same cost as the real weights, which are a
5 GB download a device machine cannot make), or a folder holding a Stable Diffusion 2.1-base snapshot
(then the densification counts mean something too). Writes ``--out`` (default
``benchmarks/results/gaussians-gpu-<device>.json``) with the command, the machine and a row per method.

**What a machine without a package registry must carry** (the device machines here have CUDA's nvcc,
PyTorch, Lightning, NumPy, OpenCV, imageio, jaxtyping and transformers, and can reach nothing):

1. a threestudio checkout (with ``load/prompt_library.json``) and a threestudio-3dgs checkout;
2. the sources of threestudio-3dgs's CUDA extensions, built THERE against its torch with
   ``python3 -m pip install --no-build-isolation --no-deps ./diff-gaussian-rasterization ./simple-knn``:
   ashawkey/diff-gaussian-rasterization with its ``third_party/glm`` submodule (threestudio-3dgs's
   recommended install), and DSaurus/simple-knn;
3. wheels (``--no-deps``, cp312 manylinux) of what threestudio imports and the image lacks:
   diffusers, omegaconf, antlr4-python3-runtime, nerfacc, typeguard, trimesh, PyMCubes, plyfile,
   pymeshlab (export only), xatlas, libigl, envlight, ``controlnet_aux`` not needed (our stand-in covers
   it, as it covers tinycudann and nvdiffrast when missing: ``threestudio_sdi/testing/cpu_harness/stubs``);
4. this repository (it travels as the working tree).

Nothing here has run on a GPU yet (no device was lent to the task that wrote it): on a machine without
CUDA, ``--cpu-harness tests/threestudio_3dgs_cpu`` runs the same flow through the CPU harness's
stand-ins (pure-torch rasterizer, the ``cuda`` shim) with ``--model tiny --size 32``. That exercises the
script; its numbers measure a CPU, not a GPU, and say so in the file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = {"sdi-gs": REPO / "configs" / "sdi-gs.yaml", "sds-gs": REPO / "configs" / "sds-gs.yaml"}
PROMPT = "a delicious hamburger"
MODELS = ("sd21-random", "tiny")


def device_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def machine() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0)
        if cuda
        else f"CPU ({platform.processor() or platform.machine()})",
        "cuda": cuda,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


# ------------------------------------------------------------------ one method, in its own process
def model_folder(model: str, workdir: pathlib.Path) -> pathlib.Path:
    if model == "sd21-random":
        from threestudio_sdi.testing.sd21_random import sd21_random_stable_diffusion

        return sd21_random_stable_diffusion(workdir / "sd21-random")
    if model == "tiny":
        from threestudio_sdi.testing.tiny_sd import tiny_stable_diffusion

        return tiny_stable_diffusion(workdir / "tiny-sd")
    folder = pathlib.Path(model).expanduser().resolve()
    if not (folder / "model_index.json").is_file():
        raise SystemExit(
            f"--model {model!r}: expected {MODELS} or a Stable Diffusion folder with model_index.json"
        )
    return folder


def overrides(method: str, model: pathlib.Path, steps: int, size: int) -> list[str]:
    """launch.py overrides: the model (local), the length, the size; no validation or checkpoint inside."""
    common = [
        f"system.prompt_processor.prompt={PROMPT}",
        f"system.guidance.pretrained_model_name_or_path={model}",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        f"checkpoint.every_n_train_steps={steps}",
        f"data.width={size}",
        f"data.height={size}",
        f"data.eval_width={size}",
        f"data.eval_height={size}",
        "data.n_test_views=1",
        "use_timestamp=false",
        "system.prompt_processor.spawn=false",
    ]
    if method == "sdi-gs":
        common.append("system.guidance.local_files_only=true")
    return common


def cpu_overrides() -> list[str]:
    """On a CPU (the harness): float32 weights (threestudio's SD guidance would use float16 there)."""
    return ["system.guidance.half_precision_weights=false", "trainer.precision=32"]


def timing_callback(warmup: int) -> Any:
    import pytorch_lightning as pl
    import torch

    class Timing(pl.Callback):
        def __init__(self) -> None:
            self.durations: list[float] = []
            self.gauss_num: int | None = None

        def _sync(self) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()

        def on_train_start(self, trainer, module) -> None:
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            self._sync()
            self.started = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self._sync()
            self.durations.append(time.perf_counter() - self.started)
            self.gauss_num = int(module.geometry.get_xyz.shape[0])

        def summary(self) -> dict[str, Any]:
            timed = self.durations[warmup:]
            cuda = torch.cuda.is_available()
            return {
                "steps": len(self.durations),
                "timed_steps": len(timed),
                "steps_per_second": len(timed) / sum(timed) if timed else None,
                "seconds_per_step": sum(timed) / len(timed) if timed else None,
                "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
                "gaussians_at_end": self.gauss_num,
            }

    return Timing()


@contextmanager
def trainer_with(callback: Any, cpu: bool):
    """``pytorch_lightning.Trainer`` with ``callback`` added (and on the CPU, when ``cpu``)."""
    import pytorch_lightning as pl

    original = pl.Trainer

    class MeasuredTrainer(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if cpu:
                kwargs.update(accelerator="cpu", devices=1)
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), callback]
            super().__init__(*args, **kwargs)

    pl.Trainer = MeasuredTrainer
    try:
        yield
    finally:
        pl.Trainer = original


def set_up(args: argparse.Namespace) -> Any:
    """threestudio with both extensions loaded (and, with --cpu-harness, the CPU stand-ins and shim)."""
    if args.cpu_harness is not None:
        path = pathlib.Path(args.cpu_harness).resolve() / "harness3dgs.py"
        spec = importlib.util.spec_from_file_location("harness3dgs", path)
        if spec is None or spec.loader is None or not path.is_file():
            raise SystemExit(f"--cpu-harness {args.cpu_harness}: no harness3dgs.py there")
        sys.path.insert(0, str(path.parent))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.start(args.threestudio_root, args.threestudio_3dgs_root, args.workdir).h.launch
    from threestudio_sdi.testing.cpu_harness import import_threestudio, load_launch, prepare_workdir

    sys.dont_write_bytecode = True
    root = pathlib.Path(args.threestudio_root).resolve()
    workdir = pathlib.Path(args.workdir).resolve()
    prepare_workdir(workdir, root)
    link = workdir / "custom" / "threestudio-3dgs"
    if not link.exists():
        link.symlink_to(pathlib.Path(args.threestudio_3dgs_root).resolve(), target_is_directory=True)
    os.chdir(workdir)
    import_threestudio(root)  # stand-ins only for what is missing (tinycudann, nvdiffrast on a GPU box)
    launch = load_launch(root)
    launch.load_custom_modules()
    return launch


def measure_one(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cpu = not torch.cuda.is_available()
    if cpu and args.cpu_harness is None:
        raise SystemExit(
            "gaussians_gpu.py: torch sees no CUDA device; pass --cpu-harness to exercise the script"
        )
    launch = set_up(args)
    model = model_folder(args.model, pathlib.Path(args.workdir).resolve())
    callback = timing_callback(args.warmup)
    launch_args = argparse.Namespace(
        config=str(CONFIGS[args.method_only]),
        gpu="0",
        gradio=False,
        verbose=False,
        typecheck=False,
        train=True,
        validate=False,
        test=False,
        export=False,
    )
    extras = [*overrides(args.method_only, model, args.steps, args.size), f"tag={args.method_only}"]
    if cpu:
        extras += cpu_overrides()
    started = time.perf_counter()
    with trainer_with(callback, cpu):
        launch.main(launch_args, extras)
    row = {"method": args.method_only, "config": CONFIGS[args.method_only].name, "overrides": extras}
    row.update(callback.summary())
    row["wall_seconds"] = round(time.perf_counter() - started, 1)
    return row


# ------------------------------------------------------------------ the command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threestudio-root", required=True, type=pathlib.Path)
    parser.add_argument("--threestudio-3dgs-root", required=True, type=pathlib.Path)
    parser.add_argument("--workdir", required=True, type=pathlib.Path)
    parser.add_argument("--model", default="sd21-random", help=f"{' or '.join(MODELS)} or an SD folder")
    parser.add_argument("--methods", default="sdi-gs,sds-gs")
    parser.add_argument("--steps", type=int, default=40, help="training steps per method (default 40)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed first steps (default 10)")
    parser.add_argument("--size", type=int, default=512, help="render size (the configs' 512)")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("--cpu-harness", type=pathlib.Path, default=None, help="tests/threestudio_3dgs_cpu")
    parser.add_argument("--method-only", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--row-out", type=pathlib.Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")
    if args.method_only is not None:
        row = measure_one(args)
        args.row_out.write_text(json.dumps(row, indent=1))
        return 0
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = [name for name in methods if name not in CONFIGS]
    if unknown:
        parser.error(f"--methods: {unknown} not in {sorted(CONFIGS)}")
    info = machine()
    if not info["cuda"] and args.cpu_harness is None:
        print("gaussians_gpu.py: torch sees no CUDA device; nothing was measured or written", file=sys.stderr)
        print("(--cpu-harness tests/threestudio_3dgs_cpu exercises the script on a CPU)", file=sys.stderr)
        return 2
    report: dict[str, Any] = {
        "command": " ".join(["python", *(argv if argv is not None else sys.argv)]),
        "machine": info,
        "note": None
        if info["cuda"]
        else "CPU run through the CPU harness: exercises the script, measures no GPU",
        "rows": [],
    }
    out = args.out or REPO / "benchmarks" / "results" / f"gaussians-gpu-{device_slug(info['device'])}.json"
    forwarded = [arg for arg in (argv if argv is not None else sys.argv[1:]) if arg]
    for method in methods:
        row_file = pathlib.Path(args.workdir).resolve() / f"row-{method}.json"
        row_file.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(pathlib.Path(__file__).resolve()), *forwarded]
        command += ["--method-only", method, "--row-out", str(row_file)]
        print(f"[{method}] {' '.join(command)}", flush=True)
        result = subprocess.run(command, cwd=REPO)
        if result.returncode != 0:
            report["rows"].append({"method": method, "error": f"exit status {result.returncode}"})
        else:
            report["rows"].append(json.loads(row_file.read_text()))
        out.write_text(json.dumps(report, indent=1))
    for row in report["rows"]:
        print(json.dumps(row))
    print(f"wrote {out}")
    return 0 if all("error" not in row for row in report["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
