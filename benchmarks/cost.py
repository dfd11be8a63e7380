"""Cost of one guidance step — model evaluations, wall/CPU time, peak memory — SDS vs SDI, side by side.

    python benchmarks/cost.py --quick                              # < 3 min, CPU, tiny stack
    python benchmarks/cost.py                                      # the documented full run
    /path/to/threestudio-python benchmarks/cost.py --released-from /path/to/threestudio

Every variant runs on the same tiny random-weight Stable Diffusion stack (``threestudio_sdi.models.tiny``:
the code paths of SD 2.1, outputs meaningless) at the same timesteps, in one process, **interleaved**:
each round visits every (timestep, variant) pair in a freshly shuffled order, so that a slow spell of a
shared machine hits all variants alike. One step = noise (inversion) + guided prediction + target +
½·mean((z0 − stopgrad(ẑ0))²) + its backward to the latents (the VAE, identical for all, is left out).
Timesteps follow each preset's annealing (5 phases of training; 3 with --quick); SDS uses the
``official`` ones (its cost does not depend on t).

Variants (ours): ``sds``; ``sdi-paper`` / ``sdi-official``; fewer-evaluation options of the official
preset (``skip-origin``, ``adaptive``, both, ``n=5`` and ``n=5 order2``) and ``fixed-point k=3``; and
"same math" paths of ``sdi-official`` — ``per-branch`` (one UNet call per CFG/Perp-Neg branch, the
unoptimised path), ``inference-mode`` (UNet under torch.inference_mode instead of no_grad),
``channels-last``, ``no-SDPA`` (diffusers' classic attention processor) and, with ``--compile``,
``compiled`` (torch.compile of the fixed-shape UNet; also with skip-origin + adaptive). Each same-math
variant's target ẑ0 is compared with sdi-official's (same seed and t) and the difference reported. With ``--released-from
PATH`` (a threestudio checkout, imported at run time with the CPU stand-ins of threestudio_sdi.cpu_harness;
needs threestudio's requirements in this Python) the built-in ``stable-diffusion-sdi-guidance`` runs
beside them as ``released-sdi`` and ``released-sds`` (its ``enable_sdi: false``), on the same tiny
weights and the same Perp-Neg prompt embeddings from threestudio's own prompt processor.

Peak memory: the growth of the process's peak resident set (VmHWM − VmRSS before the step, after
resetting VmHWM through /proc/self/clear_refs) with glibc's mmap threshold pinned to 64 KiB
(MALLOC_MMAP_THRESHOLD_, set by re-executing the script), so that freed tensors leave the RSS, in a
separate pass on larger latents (4×32×32 by default: the 8×8 ones allocate below RSS resolution). It
is an RSS delta, not tracemalloc (which does not see torch's allocator). Writes cost[.quick].json, .md
and .png into benchmarks/results/ (quick: benchmarks/results/quick/).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

if __name__ == "__main__" and "MALLOC_MMAP_THRESHOLD_" not in os.environ and sys.platform.startswith("linux"):
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # freed tensors return to the OS: RSS tracks them
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch
import torch.nn.functional as F
from common import RESULTS, machine, markdown_table
from torch import Tensor

from threestudio_sdi.cfg import Conditioning
from threestudio_sdi.fixed_point import FixedPointConfig
from threestudio_sdi.models.variants import InferenceModeModel, PerBranchModel
from threestudio_sdi.score_distillation import GuidanceConfig, guidance_step
from threestudio_sdi.strategies import FixedPointNoise, InversionConfig, InversionNoise
from threestudio_sdi.timesteps import annealed_timestep

LATENTS = {"current": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))}
"""The latents every variant's step starts from: 4×8×8 (the tiny UNet's size) for timing; larger
latents for the memory pass (``--memory-latent-size``)."""
PROMPT = "a DSLR photo of a hamburger"
ELEVATION, AZIMUTH, DISTANCE = 15.0, 60.0, 1.75
"""A side-ish view: both Perp-Neg negatives have non-zero weights."""
SKIP_AND_ADAPTIVE = InversionConfig(skip_origin=True, adaptive_steps=True)


# ----------------------------------------------------------------------------- memory
def _status_kib(key: str) -> int:
    match = re.search(rf"{key}:\s+(\d+)", pathlib.Path("/proc/self/status").read_text())
    return int(match.group(1)) if match else -1


def peak_rss_growth_mib(step: Callable[[], Any]) -> float | None:
    """VmHWM − VmRSS around ``step`` (MiB), VmHWM reset first; None where /proc does not allow it."""
    try:
        gc.collect()
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
        step()
        return (_status_kib("VmHWM") - before) / 1024
    except OSError:
        return None


@dataclass
class Variant:
    name: str
    group: str  # "ours", "fewer evaluations", "same math", "released"
    step: Callable[[int, int], tuple[int, int, Tensor]]  # (t, seed) -> (evaluations, UNet calls, ẑ0)
    preset: str = "official"
    note: str = ""
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None
    wall: list[list[float]] = field(default_factory=list)  # [round][timestep]
    cpu: list[list[float]] = field(default_factory=list)
    evaluations: list[int] = field(default_factory=list)
    unet_calls: list[int] = field(default_factory=list)
    memory: list[float] = field(default_factory=list)
    difference: float | None = None  # ‖ẑ0 − ẑ0(sdi-official)‖/‖ẑ0(sdi-official)‖, same-math variants


def import_released(root: pathlib.Path) -> Any:
    """threestudio from ``root`` with the CPU stand-ins of :mod:`threestudio_sdi.cpu_harness`."""
    from threestudio_sdi.cpu_harness import import_threestudio, patches

    threestudio = import_threestudio(root)
    patches.apply()
    return threestudio


def ours_conditioning(parts: Any, prompt_utils: Any, perp_neg: bool) -> Callable[[], Conditioning]:
    """Per-step conditioning: from threestudio's prompt utils when available (as the plugin does)."""
    elevation, azimuth, distance = (torch.tensor([v]) for v in (ELEVATION, AZIMUTH, DISTANCE))
    if prompt_utils is not None:
        from threestudio_sdi.threestudio.guidance import conditioning_from_prompt_utils

        return lambda: conditioning_from_prompt_utils(prompt_utils, elevation, azimuth, distance)
    embeddings = parts.prompts.encode(
        [f"{PROMPT}, side view", "", f"{PROMPT}, front view", f"{PROMPT}, back view"]
    )
    if not perp_neg:
        conditioning = Conditioning(cond=embeddings[0:1], uncond=embeddings[1:2])
    else:
        weights = torch.tensor([[-0.6, -0.3]])  # stand-in Perp-Neg weights (threestudio's are similar here)
        conditioning = Conditioning(
            cond=embeddings[0:1], uncond=embeddings[1:2], negatives=[embeddings[2:3], embeddings[3:4]],
            negative_weights=weights,
        )  # fmt: skip
    return lambda: conditioning


def build_variants(
    parts: Any, conditioning: Callable[[], Conditioning], released: dict[str, Any] | None, compile_unet: bool
) -> list[Variant]:
    model, unet = parts.model, parts.model.unet
    latents = LATENTS

    def ours(config: GuidanceConfig, denoiser: Any = model) -> Callable[[int, int], tuple[int, int, Tensor]]:
        def step(t: int, seed: int) -> tuple[int, int, Tensor]:
            calls = model.unet_calls
            z0 = latents["current"].clone().requires_grad_(True)
            out = guidance_step(
                denoiser, z0, t, conditioning(), config, generator=torch.Generator().manual_seed(seed)
            )
            out.loss.backward()
            return out.model_evaluations, model.unet_calls - calls, out.target

        return step

    official = GuidanceConfig(preset="official")
    variants = [
        Variant("sds", "ours", ours(replace(official, noise="random"))),
        Variant("sdi-paper", "ours", ours(GuidanceConfig(preset="paper")), preset="paper"),
        Variant("sdi-official", "ours", ours(official)),
        Variant(
            "official skip-origin",
            "fewer evaluations",
            ours(replace(official, noise=InversionNoise(InversionConfig(skip_origin=True)))),
        ),
        Variant(
            "official adaptive",
            "fewer evaluations",
            ours(replace(official, noise=InversionNoise(InversionConfig(adaptive_steps=True)))),
        ),
        Variant(
            "official skip+adaptive",
            "fewer evaluations",
            ours(replace(official, noise=InversionNoise(SKIP_AND_ADAPTIVE))),
        ),
        Variant("official n=5", "fewer evaluations", ours(replace(official, inversion_n_steps=5))),
        Variant(
            "official n=5 order2",
            "fewer evaluations",
            ours(replace(official, inversion_n_steps=5, noise=InversionNoise(InversionConfig(order=2)))),
        ),
        Variant(
            "fixed-point k=3",
            "more evaluations",
            ours(GuidanceConfig(noise=FixedPointNoise(FixedPointConfig(max_iterations=3)))),
            preset="paper",
        ),
        Variant(
            "official per-branch", "same math", ours(official, PerBranchModel(model)), note="unoptimised path"
        ),
        Variant("official inference-mode", "same math", ours(official, InferenceModeModel(model))),
    ]
    channels_last = Variant("official channels-last", "same math", ours(official))
    channels_last.setup = lambda: unet.to(memory_format=torch.channels_last)
    channels_last.teardown = lambda: unet.to(memory_format=torch.contiguous_format)
    variants.append(channels_last)
    processors = unet.attn_processors
    try:
        from diffusers.models.attention_processor import AttnProcessor

        classic = Variant("official no-SDPA", "same math", ours(official), note="classic attention")
        classic.setup = lambda: unet.set_attn_processor(AttnProcessor())
        classic.teardown = lambda: unet.set_attn_processor(dict(processors))
        variants.append(classic)
    except ImportError:
        pass
    if compile_unet:  # torch.compile of the fixed-shape UNet (compiled in the untimed warm-up round)
        compiled = torch.compile(unet, dynamic=False)

        def use_compiled() -> None:
            model.unet = compiled

        def use_eager() -> None:
            model.unet = unet

        for name, config, group in (
            ("official compiled", official, "same math"),
            (
                "official skip+adaptive compiled",
                replace(official, noise=InversionNoise(SKIP_AND_ADAPTIVE)),
                "fewer evaluations",
            ),
        ):
            variant = Variant(name, group, ours(config), note="torch.compile(unet)")
            variant.setup, variant.teardown = use_compiled, use_eager
            variants.append(variant)
    if released is not None:
        variants += released_variants(released, latents)
    return variants


def released_variants(released: dict[str, Any], latents: dict[str, Tensor]) -> list[Variant]:
    """threestudio's built-in SDI guidance, its per-step core ``compute_grad_sdi`` + the same loss."""
    variants = []
    for name, guidance in (("released-sds", released["sds"]), ("released-sdi", released["sdi"])):
        counter = released["counters"][name]

        def step(
            t: int, seed: int, guidance: Any = guidance, counter: list[int] = counter
        ) -> tuple[int, int, Tensor]:
            random.seed(seed)  # its overshoot δ
            torch.manual_seed(seed)  # its η and SDS noise
            calls = counter[0]
            z0 = latents["current"].clone().requires_grad_(True)
            target, _, _, _ = guidance.compute_grad_sdi(
                z0, torch.tensor([t]), released["prompt_utils"], *released["cameras"]
            )
            loss = 0.5 * F.mse_loss(z0, target.detach(), reduction="mean") / z0.shape[0]
            loss.backward()
            return counter[0] - calls, counter[0] - calls, target

        variants.append(Variant(name, "released", step, note="threestudio built-in"))
    return variants


def setup_released(
    root: pathlib.Path, model_path: pathlib.Path, perp_neg: bool, workdir: pathlib.Path
) -> dict[str, Any]:
    threestudio = import_released(root)
    os.chdir(workdir)  # the prompt processor caches embeddings under ./.threestudio_cache
    if not (workdir / "load").exists():
        (workdir / "load").symlink_to(root / "load", target_is_directory=True)
    processor = threestudio.find("stable-diffusion-prompt-processor")(
        {
            "pretrained_model_name_or_path": str(model_path),
            "prompt": PROMPT,
            "use_perp_neg": perp_neg,
            "spawn": False,
        }
    )
    prompt_utils = processor()
    guidance_class = threestudio.find("stable-diffusion-sdi-guidance")
    common = {
        "pretrained_model_name_or_path": str(model_path),
        "half_precision_weights": False,
        "guidance_scale": 7.5,
        "min_step_percent": 0.25,
        "max_step_percent": 0.98,
        "inversion_guidance_scale": -7.5,
        "inversion_n_steps": 10,
        "inversion_eta": 0.3,
    }
    guidances = {"sds": guidance_class({**common, "enable_sdi": False}), "sdi": guidance_class(common)}
    counters: dict[str, list[int]] = {}
    for name, guidance in guidances.items():
        counter = counters[f"released-{name}"] = [0]

        def hook(module: Any, args: Any, counter: list[int] = counter) -> None:
            counter[0] += 1

        guidance.unet.register_forward_pre_hook(hook)
    cameras = tuple(torch.tensor([v]) for v in (ELEVATION, AZIMUTH, DISTANCE))
    return {**guidances, "prompt_utils": prompt_utils, "counters": counters, "cameras": cameras}


def released_commit(root: pathlib.Path | None) -> str | None:
    """The commit of the threestudio checkout the released guidance came from (None without one)."""
    if root is None:
        return None
    import subprocess

    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return result.stdout.strip()


# ----------------------------------------------------------------------------- measuring
def schedule_timesteps(preset: str, phases: int) -> list[int]:
    low, high = (0.25, 0.98) if preset == "official" else (0.2, 1.0)
    total = 10_000
    return [annealed_timestep(round(total * i / (phases - 1)), total, low, high, 1000) for i in range(phases)]


def measure(variants: list[Variant], phases: int, rounds: int, memory_size: int, memory_repeats: int) -> None:
    """Warm-up round, then ``rounds`` rounds of every (phase, variant) pair in shuffled order."""
    order = [(p, v) for p in range(phases) for v in range(len(variants))]
    shuffler = random.Random(0)
    for round_index in range(rounds + 1):
        shuffler.shuffle(order)
        walls = [[0.0] * phases for _ in variants]
        cpus = [[0.0] * phases for _ in variants]
        for phase, index in order:
            variant = variants[index]
            t = schedule_timesteps(variant.preset, phases)[phase]
            seed = 1000 * round_index + phase
            if variant.setup:
                variant.setup()
            wall, cpu = time.perf_counter(), time.process_time()
            evaluations, calls, _ = variant.step(t, seed)
            walls[index][phase] = time.perf_counter() - wall
            cpus[index][phase] = time.process_time() - cpu
            if variant.teardown:
                variant.teardown()
            if round_index == 0:
                variant.evaluations.append(evaluations)
                variant.unet_calls.append(calls)
        if round_index > 0:
            for index, variant in enumerate(variants):
                variant.wall.append(walls[index])
                variant.cpu.append(cpus[index])
        print(f"round {round_index}/{rounds} done", flush=True)
    reference = next(v for v in variants if v.name == "sdi-official")
    t = schedule_timesteps("official", phases)[phases // 2]
    expected = reference.step(t, 7)[2]
    for variant in variants:
        if variant.group == "same math":
            if variant.setup:
                variant.setup()
            target = variant.step(t, 7)[2]
            if variant.teardown:
                variant.teardown()
            variant.difference = float((target - expected).norm() / expected.norm())
    if memory_size > 0:
        LATENTS["current"] = torch.randn(
            1, 4, memory_size, memory_size, generator=torch.Generator().manual_seed(0)
        )
        for variant in variants:
            if "compiled" in variant.name:  # would recompile for the new shape
                continue
            t = schedule_timesteps(variant.preset, phases)[0]  # the most inversion hops
            for repeat in range(memory_repeats):
                if variant.setup:
                    variant.setup()
                value = peak_rss_growth_mib(lambda v=variant, r=repeat, t=t: v.step(t, r))
                if variant.teardown:
                    variant.teardown()
                if value is not None:
                    variant.memory.append(value)


def summarise(variants: list[Variant]) -> dict[str, Any]:
    def per_round(values: list[list[float]]) -> list[float]:
        return [sum(row) / len(row) for row in values]

    rows = {}
    for variant in variants:
        wall, cpu = per_round(variant.wall), per_round(variant.cpu)
        rows[variant.name] = {
            "group": variant.group,
            "note": variant.note,
            "preset": variant.preset,
            "evaluations_per_step": sum(variant.evaluations) / len(variant.evaluations),
            "evaluations_per_phase": variant.evaluations,
            "unet_calls_per_step": sum(variant.unet_calls) / len(variant.unet_calls),
            "wall_ms_median": 1000 * statistics.median(wall),
            "wall_ms_min": 1000 * min(wall),
            "cpu_ms_median": 1000 * statistics.median(cpu),
            "peak_rss_growth_mib": statistics.median(variant.memory) if variant.memory else None,
            "relative_difference_to_sdi_official": variant.difference,
            "wall_ms_per_round": [1000 * w for w in wall],
        }
    for baseline in ("sds", "released-sds", "released-sdi", "sdi-official"):
        if baseline not in rows:
            continue
        base = rows[baseline]
        for row in rows.values():
            row[f"wall_ratio_to_{baseline}"] = row["wall_ms_median"] / base["wall_ms_median"]
            row[f"cpu_ratio_to_{baseline}"] = row["cpu_ms_median"] / base["cpu_ms_median"]
            row[f"evaluation_ratio_to_{baseline}"] = (
                row["evaluations_per_step"] / base["evaluations_per_step"]
            )
            if row["peak_rss_growth_mib"] is not None and base["peak_rss_growth_mib"]:
                row[f"memory_ratio_to_{baseline}"] = row["peak_rss_growth_mib"] / base["peak_rss_growth_mib"]
    return rows


def markdown(report: dict[str, Any]) -> str:
    info = report["machine"]
    rows = report["variants"]
    released = "released-sdi" in rows
    header = [
        "variant",
        "group",
        "evals/step",
        "UNet calls/step",
        "wall ms (median)",
        "CPU ms",
        "wall ÷ SDS",
        "CPU ÷ SDS",
        "evals ÷ SDS",
    ]
    if released:
        header += ["wall ÷ released SDI"]
    header += ["peak RSS growth MiB", "‖Δẑ0‖ rel. (same math)"]
    table = []
    for name, row in rows.items():
        line = [
            name,
            row["group"],
            f"{row['evaluations_per_step']:.2f}",
            f"{row['unet_calls_per_step']:.2f}",
            f"{row['wall_ms_median']:.1f}",
            f"{row['cpu_ms_median']:.1f}",
            f"{row['wall_ratio_to_sds']:.2f}",
            f"{row['cpu_ratio_to_sds']:.2f}",
            f"{row['evaluation_ratio_to_sds']:.2f}",
        ]
        if released:
            line.append(f"{row['wall_ratio_to_released-sdi']:.2f}")
        memory = row["peak_rss_growth_mib"]
        line.append("–" if memory is None else f"{memory:.2f}")
        difference = row["relative_difference_to_sdi_official"]
        line.append("–" if difference is None else f"{difference:.1e}")
        table.append(line)
    parts = [
        "# Cost of one guidance step",
        "",
        f"Command: `{report['command']}` ({report['elapsed_seconds']:.0f} s)"
        + (
            f", released guidance from threestudio {report['released_checkout']}"
            if report.get("released_checkout")
            else ""
        )
        + f". Machine: {info['cpu']}, "
        f"{info['cpu_count']} cores (shared; load average {info['load_average_at_start']} at start), "
        f"torch {info['torch']} with {info['torch_threads']} thread(s), diffusers {info['diffusers']}. "
        "**No GPU was lent to this task**: the SD 2.1-base 512×512 measurement and the GPU target "
        "(≤ ½ the released wall time) were not run; the numbers are CPU ratios on the tiny stack.",
        "",
        f"Tiny random-weight SD stack (UNet on 4×8×8 latents), batch 1, "
        f"{'Perp-Neg (4 UNet branches)' if report['perp_neg'] else 'CFG (2 branches)'}, "
        f"{report['rounds']} interleaved rounds × {report['phases']} timesteps of each preset's annealing "
        f"(official {report['timesteps']['official']}, paper {report['timesteps']['paper']}); medians "
        "over rounds of the mean step time. evals = guided evaluations (one batched UNet call each, "
        "except per-branch). ‖Δẑ0‖ rel.: a same-math variant's target against sdi-official's, same seed "
        "and t (fp32). Peak memory: RSS growth during one step at the first timestep (VmHWM − "
        f"VmRSS, glibc mmap threshold 64 KiB) on 4×{report['memory_latent_size']}×"
        f"{report['memory_latent_size']} latents (8×8 ones are below RSS resolution), median of "
        f"{report['memory_repeats']}; not measured for compiled variants (the new shape would recompile).",
        "",
        markdown_table(header, table),
    ]
    if not released:
        parts += [
            "",
            "The released guidance was not measured in this run (pass `--released-from` a threestudio "
            "checkout, with a Python that has threestudio's requirements).",
        ]
    return "\n".join(parts) + "\n"


def plot(report: dict[str, Any], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["variants"]
    names = list(rows)
    figure, axes = plt.subplots(1, 2, figsize=(12, 0.38 * len(names) + 1.5))
    colours = {
        "ours": "C0",
        "fewer evaluations": "C2",
        "more evaluations": "C4",
        "same math": "C1",
        "released": "C3",
    }
    for axis, key, title in (
        (axes[0], "wall_ratio_to_sds", "wall time per step ÷ our SDS"),
        (axes[1], "evaluation_ratio_to_sds", "guided evaluations per step ÷ SDS"),
    ):
        values = [rows[name][key] for name in names]
        axis.barh(names, values, color=[colours.get(rows[name]["group"], "C7") for name in names])
        for y, value in enumerate(values):
            axis.text(value, y, f" {value:.2f}", va="center", fontsize=8)
        axis.invert_yaxis()
        axis.set_title(title, fontsize=10)
        axis.grid(axis="x", alpha=0.3)
    axes[1].set_yticklabels([])
    figure.suptitle(f"guidance step cost, tiny SD stack on CPU ({report['machine']['cpu']})", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds × 3 timesteps (< 3 min)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 7, quick 3)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared CPU)"
    )
    parser.add_argument(
        "--no-perp-neg", action="store_true", help="plain CFG (2 branches) instead of Perp-Neg"
    )
    parser.add_argument("--released-from", type=pathlib.Path, default=None, help="a threestudio checkout")
    parser.add_argument(
        "--model-path", type=pathlib.Path, default=None, help="SD folder (default: build tiny)"
    )
    parser.add_argument(
        "--memory-latent-size",
        type=int,
        default=None,
        help="latent side of the memory pass (default 32, quick 16; 8×8 activations are below RSS "
        "resolution); 0 = skip",
    )
    parser.add_argument(
        "--compile", action="store_true", help="add torch.compile'd UNet variants (~1 min compile)"
    )
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument(
        "--replot", action="store_true", help="rewrite the .md and .png from the existing JSON"
    )
    args = parser.parse_args(argv)
    if args.replot:
        out = (args.out or (RESULTS / "quick" if args.quick else RESULTS)).resolve()
        report = json.loads((out / "cost.json").read_text())
        (out / "cost.md").write_text(markdown(report))
        plot(report, out / "cost.png")
        print(f"rewrote {out / 'cost.md'} and cost.png")
        return 0
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    machine_info = machine()
    out = (args.out or (RESULTS / "quick" if args.quick else RESULTS)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rounds = args.rounds or (3 if args.quick else 7)
    phases = 3 if args.quick else 5
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="sdi-cost-"))
    released = None
    if args.released_from is not None:
        import_released(args.released_from.resolve())  # before diffusers is used (torchvision probing)
    from threestudio_sdi.models.stable_diffusion import load_stable_diffusion
    from threestudio_sdi.models.tiny import tiny_stable_diffusion

    model_path = args.model_path or tiny_stable_diffusion(workdir / "tiny-sd", seed=0)
    parts = load_stable_diffusion(model_path, device="cpu", half_precision=False, local_files_only=True)
    perp_neg = not args.no_perp_neg
    if args.released_from is not None:
        released = setup_released(
            args.released_from.resolve(), pathlib.Path(model_path).resolve(), perp_neg, workdir
        )
    conditioning = ours_conditioning(parts, released["prompt_utils"] if released else None, perp_neg)
    variants = build_variants(parts, conditioning, released, args.compile)
    memory_size = (
        args.memory_latent_size if args.memory_latent_size is not None else (16 if args.quick else 32)
    )
    memory_repeats = 1 if args.quick else 3
    measure(variants, phases, rounds, memory_size, memory_repeats)
    report = {
        "command": "python benchmarks/cost.py"
        + (" --quick" if args.quick else "")
        + (f" --released-from {args.released_from}" if args.released_from else "")
        + (" --no-perp-neg" if args.no_perp_neg else "")
        + (" --compile" if args.compile else "")
        + (f" --rounds {args.rounds}" if args.rounds else ""),
        "released_checkout": released_commit(args.released_from),
        "machine": machine_info,
        "gpu_lent": False,
        "perp_neg": perp_neg,
        "rounds": rounds,
        "phases": phases,
        "timesteps": {preset: schedule_timesteps(preset, phases) for preset in ("official", "paper")},
        "memory_latent_size": memory_size,
        "memory_repeats": memory_repeats,
        "variants": summarise(variants),
    }
    report["elapsed_seconds"] = time.perf_counter() - started
    stem = "cost"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    (out / f"{stem}.md").write_text(markdown(report))
    plot(report, out / f"{stem}.png")
    print(markdown(report))
    print(f"wrote {out / stem}.json, .md, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
