"""Cost of one guidance step, side by side and on equal terms: ours against threestudio's released SDI.

    python benchmarks/cost.py --quick                                   # tiny stack, < 3 min on 2 cores
    python benchmarks/cost.py                                           # tiny stack, the full run
    python benchmarks/cost.py --model sd21-random --steps 2             # SD 2.1-base size, random weights
    /path/to/threestudio-python benchmarks/cost.py --released-from /path/to/threestudio [...]
    python benchmarks/gpu_cost.py --released-from /path/to/threestudio  # the GPU run (one command)

**Models.** ``tiny``: the random-weight tiny SD stack of :mod:`threestudio_sdi.testing.tiny_sd` (UNet on
4×8×8 latents: per-call overhead dominates). ``sd21-random``: Stable Diffusion 2.1-base's UNet and VAE
from their published configs with random weights (:mod:`threestudio_sdi.testing.sd21_random`; 4×64×64 latents,
512×512 renders, cross-attention 1024), written to a folder and loaded like real weights; nothing is
downloaded. ``--model-path`` takes any SD folder (e.g. a hub snapshot of the real weights).
Defaults by size: the tiny stack runs Perp-Neg (4 UNet branches, as configs/sdi.yaml), 5 timesteps along
each preset's annealing, 15 rounds, 1 thread (``--quick``: 3 × 3); at real size on a CPU, where one UNet
call takes seconds, CFG (2 branches; ``--perp-neg`` for 4), the end of the annealing only (t = 250:
5 evaluations for ``official`` SDI), 3 rounds (``--steps``), all cores.

**Fair.** Every variant runs in one process on the same weights (ours and the released guidance share
the very same UNet and VAE modules), in **interleaved rounds**: each round visits every (timestep,
variant) pair in a freshly shuffled order, so that a slow spell of a shared machine hits all alike.
Round 0 is an untimed warm-up. Both sides get the same **treatment**: ``eager``, or with
``--accelerate`` ``accelerated`` — both sides' UNet calls go through one
:class:`~threestudio_sdi.models.accelerated.AcceleratedUNet` (torch.compile, CUDA graphs where a GPU is
present, channels-last, SDPA). Every ratio is computed per round and reported as the **median and
interquartile range over rounds**, of wall time and, on a CPU, of CPU time (all threads of the process),
which other jobs on a shared machine disturb less.

**Equivalence checks.** Every draw of the released guidance is made equal to ours (its
``random.random()`` returns the uniform our generator draws for δ; torch's global RNG is seeded like our
generator and advanced past that uniform, so that the η and SDS noise match). Then, at every timestep:

* **the math, in float64**: ours and the released guidance run one float64 copy of the UNet (the
  released one keeps its float32 scheduler tables); ``official`` SDI and SDS targets ẑ0 must agree to
  1e-5 relative. Float64 removes the reordering noise that float32 amplifies at t = 980 (ẑ0 divides by
  sqrt(ᾱ) ≈ 0.07 after 11 hops at CFG −7.5: equivalent float32 computations differ by up to ~3e-5);
* **the execution, in the timed dtype** (the warm-up round's targets): ours against the released code
  in each treatment and as shipped, the accelerated UNet against the eager one, and our other
  "same math" paths against our plain step: 1e-4 relative in float32, 1e-2 in float16.

A ratio against the released code is reported only where the float64 checks and the timed check of its
pair hold; otherwise its cell says so.

**One step** = noise (inversion) + guided prediction + target + ½·mean((z0 − stopgrad(ẑ0))²) + its
backward to the latents. The VAE (encode of the render with its backward: the same for every method)
is its own row ``vae encode+backward`` on ``sd21-random`` and in the GPU set, so that ratios with and
without it can be formed.

**Device** (``--device auto``: CUDA when present), dtype (float16 on CUDA, float32 on the CPU) and
whether a GPU is present are detected and recorded, never assumed.

**Peak memory** of one step at the first timestep (the one with the most inversion hops; eager variants
in the warm-up round, accelerated ones after the timed rounds), as an allocator figure: on a GPU,
``torch.cuda.max_memory_allocated`` during the step minus what was allocated before it (and the
absolute peak, weights included); on the CPU, the c10 CPU allocator's bytes allocated during the step
and live at its peak, read from the memory events of ``torch.profiler`` (``profile_memory=True``; the
``total_allocated`` of its allocation events). The CPU figure counts torch tensors (activations,
temporaries, gradients), not oneDNN scratch space or Python objects, and not the weights.

Writes <stem>.json, .md (and .png for the tiny stack) into benchmarks/results/ (``--quick``:
benchmarks/results/quick/); stems ``cost`` (tiny), ``cost-sd21-random``, ``gpu-<device>`` (gpu_cost.py).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import pathlib
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Optional
from unittest import mock

import torch
import torch.nn.functional as F
from common import RESULTS, machine, markdown_table, median_iqr, spread
from torch import Tensor

from threestudio_sdi.classifier_free import Conditioning
from threestudio_sdi.experimental.strategies import FixedPointNoise, ResearchInversionNoise
from threestudio_sdi.models.accelerated import AcceleratedUNet, Acceleration
from threestudio_sdi.score_distillation import GuidanceConfig, guidance_step
from threestudio_sdi.strategies import InversionConfig
from threestudio_sdi.testing.variants import InferenceModeModel, PerBranchModel
from threestudio_sdi.timesteps import annealed_timestep

PROMPT = "a DSLR photo of a hamburger"
ELEVATION, AZIMUTH, DISTANCE = 15.0, 60.0, 1.75
"""A side-ish view: both Perp-Neg negatives have non-zero weights (a second view looks from behind)."""
MATH_TOLERANCE = 1e-5
"""Largest ‖ẑ0 − ẑ0(released)‖ / ‖ẑ0(released)‖ of the float64 check of ours against the released code."""
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2}
"""The same in the timed dtype: float32 targets of equivalent computations that batch or fuse differently
differ by up to ~3e-5 at t = 980 (ẑ0 divides by sqrt(ᾱ) ≈ 0.07 after 11 hops at CFG −7.5)."""
ACC = " [acc]"
"""Name suffix of the accelerated treatment."""
SETS = ("tiny", "sd21", "gpu")
StepFn = Callable[[int, int], tuple[int, int, Optional[Tensor]]]
"""(t, seed) -> (guided evaluations, UNet calls, target ẑ0 or None)."""


# ----------------------------------------------------------------------------- measuring primitives
def _walk(nodes: list[Any]) -> Iterator[Any]:
    for node in nodes:
        yield node
        yield from _walk(node.children)


def cpu_peak_mib(run: Callable[[], Any]) -> float | None:
    """Peak of the bytes the c10 CPU allocator allocated during ``run`` and still held (MiB), from the
    profiler's allocation events; None where this torch does not expose them."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        run()
    try:
        events = _walk(profiler.profiler.kineto_results.experimental_event_tree())
        totals = [
            node.typed[1].total_allocated for node in events if hasattr(node.typed[1], "total_allocated")
        ]
    except (AttributeError, IndexError, RuntimeError):
        return None
    return max(totals, default=0) / 2**20


def peak_memory(run: Callable[[], Any], device: torch.device) -> tuple[float | None, float | None]:
    """(growth of the allocated bytes at the peak of ``run``, the absolute peak or None), MiB."""
    if device.type != "cuda":
        return cpu_peak_mib(run), None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return (peak - before) / 2**20, peak / 2**20


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Variant:
    """One measured configuration and what was measured of it."""

    name: str
    group: str  # "ours", "released", "fewer evaluations", "more evaluations", "same math", "component"
    step: StepFn
    method: str = "sdi"  # "sds", "sdi" or "vae"
    preset: str = "official"
    batch: int = 1
    note: str = ""
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None
    wall: list[float] = field(default_factory=list)  # per timed round: mean over timesteps (s)
    cpu: list[float] = field(default_factory=list)
    memory: tuple[float | None, float | None] = (None, None)  # (growth, absolute peak), MiB
    evaluations: list[int] = field(default_factory=list)  # per timestep (warm-up round)
    unet_calls: list[int] = field(default_factory=list)
    targets: list[Tensor | None] = field(default_factory=list)  # per timestep (warm-up round)

    @property
    def treatment(self) -> str:
        return "accelerated" if self.name.endswith(ACC) else "eager"


def schedule_timesteps(preset: str, phases: int) -> list[int]:
    """``phases`` timesteps evenly along the preset's annealing over 10 000 steps (one: its end)."""
    low, high = (0.25, 0.98) if preset == "official" else (0.2, 1.0)
    total = 10_000
    fractions = [i / (phases - 1) for i in range(phases)] if phases > 1 else [1.0]
    return [annealed_timestep(round(total * f), total, low, high, 1000) for f in fractions]


def run_step(variant: Variant, t: int, seed: int, device: torch.device, memory: bool = False) -> Any:
    """One step of ``variant`` between its setup and teardown: (wall s, CPU s, its result); with
    ``memory``, its peak memory is recorded (the timing is then not used)."""
    if variant.setup:
        variant.setup()
    result: list[Any] = []
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    if memory:
        variant.memory = peak_memory(lambda: result.append(variant.step(t, seed)), device)
    else:
        result.append(variant.step(t, seed))
    synchronize(device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if variant.teardown:
        variant.teardown()
    return wall, cpu, result[0]


def measure(variants: list[Variant], phases: int, rounds: int, device: torch.device) -> None:
    """Warm-up round 0, then ``rounds`` timed rounds, interleaved.

    Round 0 keeps each variant's evaluation counts and targets (every variant uses seed = timestep
    index there, so targets at one timestep are comparable) and the peak memory of eager variants at
    the first timestep (the most inversion hops); accelerated variants, whose first calls compile and
    capture, get theirs in a pass after the timed rounds. In round r the seed is 1000·r + index.
    """
    order = [(phase, index) for phase in range(phases) for index in range(len(variants))]
    shuffler = random.Random(0)
    for variant in variants:
        variant.targets = [None] * phases
        variant.evaluations, variant.unet_calls = [0] * phases, [0] * phases
    for round_index in range(rounds + 1):
        shuffler.shuffle(order)
        walls = [[0.0] * phases for _ in variants]
        cpus = [[0.0] * phases for _ in variants]
        for phase, index in order:
            variant = variants[index]
            t = schedule_timesteps(variant.preset, phases)[phase]
            if round_index == 0:
                memory = phase == 0 and variant.treatment == "eager"
                _, _, (evaluations, calls, target) = run_step(variant, t, phase, device, memory)
                variant.evaluations[phase], variant.unet_calls[phase] = evaluations, calls
                variant.targets[phase] = None if target is None else target.detach().float().cpu()
            else:
                walls[index][phase], cpus[index][phase], _ = run_step(
                    variant, t, 1000 * round_index + phase, device
                )
        if round_index > 0:
            for index, variant in enumerate(variants):
                variant.wall.append(sum(walls[index]) / phases)
                variant.cpu.append(sum(cpus[index]) / phases)
        print(f"round {round_index}/{rounds} done" + (" (warm-up)" if round_index == 0 else ""), flush=True)
    for variant in variants:
        if variant.treatment == "accelerated":
            run_step(variant, schedule_timesteps(variant.preset, phases)[0], 0, device, memory=True)


# ----------------------------------------------------------------------------- the released guidance
def import_released(root: pathlib.Path, device: torch.device) -> Any:
    """threestudio from the checkout ``root``; on a CPU with the stand-ins of :mod:`threestudio_sdi.testing.cpu_harness`."""
    from threestudio_sdi.testing.cpu_harness import import_threestudio, patches

    threestudio = import_threestudio(root)
    if device.type == "cpu":
        patches.apply()
    return threestudio


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


@dataclass
class Released:
    """threestudio's built-in ``stable-diffusion-sdi-guidance`` (SDI and ``enable_sdi: false``)."""

    guidances: dict[str, Any]
    prompt_utils: Any
    calls: list[int]


def setup_released(
    root: pathlib.Path, model_path: pathlib.Path, perp_neg: bool, workdir: pathlib.Path, parts: Any
) -> Released:
    """Both released guidances on ``model_path``, sharing ``parts``' UNet and VAE modules with ours.

    Each loads its own pipeline as threestudio does; its UNet and VAE are then replaced by ours (the
    same weights, loaded from the same folder), so that both sides run the very same modules and only
    one copy stays in memory. Its UNet evaluations are counted by wrapping ``forward_unet``.
    """
    threestudio = sys.modules["threestudio"]
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
    guidance_class = threestudio.find("stable-diffusion-sdi-guidance")
    settings = {
        "pretrained_model_name_or_path": str(model_path),
        "half_precision_weights": parts.model.dtype == torch.float16,
        "guidance_scale": 7.5,
        "min_step_percent": 0.25,
        "max_step_percent": 0.98,
        "inversion_guidance_scale": -7.5,
        "inversion_n_steps": 10,
        "inversion_eta": 0.3,
    }
    calls = [0]
    guidances = {}
    for name, enable_sdi in (("sds", False), ("sdi", True)):
        guidance = guidance_class({**settings, "enable_sdi": enable_sdi})
        guidance.unet, guidance.vae, guidance.pipe = parts.model.unet, parts.codec.vae, None
        gc.collect()
        forward_unet = guidance.forward_unet

        def counted(*args: Any, forward_unet: Any = forward_unet, **kwargs: Any) -> Tensor:
            calls[0] += 1
            return forward_unet(*args, **kwargs)

        guidance.forward_unet = counted
        guidances[name] = guidance
    return Released(guidances, processor(), calls)


@contextlib.contextmanager
def released_draws(seed: int, device: torch.device, overshoot: bool) -> Iterator[None]:
    """Make the released guidance draw what ours draws from ``torch.Generator(device).manual_seed(seed)``.

    Ours draws, from its generator: u ~ U[0, 1) for δ (SDI with overshoot), then N(0, I) after each
    inversion hop (η) or once (SDS). The released code draws δ from Python's ``random.random()`` and
    the normals from torch's global RNG on the latents' device. So: seed the global RNG with ``seed``,
    draw u from it (advancing it exactly as ours is advanced), and have ``random.random()`` return u.
    """
    torch.manual_seed(seed)
    if not overshoot:
        yield
        return
    u = float(torch.rand((), device=device))
    with mock.patch.object(random, "random", return_value=u):
        yield


def released_step(released: Released, method: str, prompting: Prompting, latents: Tensor) -> StepFn:
    """A step of the released guidance: its ``compute_grad_sdi`` + the loss of its ``__call__`` + backward."""
    guidance = released.guidances[method]

    def step(t: int, seed: int) -> tuple[int, int, Tensor]:
        calls = released.calls[0]
        with released_draws(seed, latents.device, overshoot=method == "sdi"):
            z0 = latents[:1].clone().requires_grad_(True)
            target, _, _, _ = guidance.compute_grad_sdi(
                z0, torch.tensor([t], device=latents.device), released.prompt_utils, *prompting.cameras(1)
            )
            loss = 0.5 * F.mse_loss(z0, target.detach(), reduction="mean") / z0.shape[0]
            loss.backward()
        spent = released.calls[0] - calls
        return spent, spent, target

    return step


# ----------------------------------------------------------------------------- our side
class Prompting:
    """Cameras and the per-step conditioning of a batch of views, built as the plugin builds them.

    With the released guidance present, from threestudio's own prompt processor output (its Perp-Neg
    weights and view-dependent embeddings); otherwise from our prompt encoder, with stand-in Perp-Neg
    weights. Views alternate between the side view (azimuth 60°) and the opposite one (−120°).
    """

    def __init__(self, parts: Any, prompt_utils: Any, perp_neg: bool, device: torch.device) -> None:
        self.prompt_utils, self.perp_neg, self.device = prompt_utils, perp_neg, device
        if prompt_utils is None:
            self.embeddings = parts.prompts.encode(
                [f"{PROMPT}, side view", "", f"{PROMPT}, front view", f"{PROMPT}, back view"]
            )

    def cameras(self, batch: int) -> tuple[Tensor, Tensor, Tensor]:
        azimuth = [AZIMUTH if view % 2 == 0 else AZIMUTH - 180 for view in range(batch)]
        return (
            torch.full((batch,), ELEVATION, device=self.device),
            torch.tensor(azimuth, device=self.device),
            torch.full((batch,), DISTANCE, device=self.device),
        )

    def conditioning(self, batch: int) -> Conditioning:
        if self.prompt_utils is not None:
            from threestudio_sdi.threestudio.guidance import conditioning_from_prompt_utils

            return conditioning_from_prompt_utils(self.prompt_utils, *self.cameras(batch))
        cond, uncond, front, back = (e.unsqueeze(0).expand(batch, -1, -1) for e in self.embeddings)
        if not self.perp_neg:
            return Conditioning(cond=cond, uncond=uncond)
        weights = torch.tensor([[-0.6, -0.3]] * batch)  # stand-ins, close to threestudio's for this view
        return Conditioning(cond=cond, uncond=uncond, negatives=[front, back], negative_weights=weights)


def ours_step(
    denoiser: Any, counter: Any, config: GuidanceConfig, prompting: Prompting, latents: Tensor, batch: int = 1
) -> StepFn:
    """A step of ours: :func:`guidance_step` on ``batch`` views + backward; ``counter.unet_calls`` counts."""

    def step(t: int, seed: int) -> tuple[int, int, Tensor]:
        calls = counter.unet_calls
        z0 = latents[:batch].clone().requires_grad_(True)
        generator = torch.Generator(latents.device).manual_seed(seed)
        out = guidance_step(denoiser, z0, t, prompting.conditioning(batch), config, generator=generator)
        out.loss.backward()
        return out.model_evaluations, counter.unet_calls - calls, out.target

    return step


def vae_step(codec: Any, image: Tensor) -> StepFn:
    """The VAE part of a step: encode the render (posterior sample) and back-propagate to it."""

    def step(t: int, seed: int) -> tuple[int, int, None]:
        rgb = image.clone().requires_grad_(True)
        latents = codec.encode(rgb, mode="sample", generator=torch.Generator(image.device).manual_seed(seed))
        latents.square().mean().backward()
        return 0, 0, None

    return step


# ----------------------------------------------------------------------------- variant sets
@dataclass
class Setup:
    """Everything the variant sets are built from."""

    parts: Any
    prompting: Prompting
    latents: Tensor  # [2, 4, h, w]
    image: Tensor  # [1, 3, H, W]
    released: Released | None
    accelerated: AcceleratedUNet | None


OFFICIAL = GuidanceConfig(preset="official")
PAPER = GuidanceConfig(preset="paper")
FEWER = {
    "official skip-origin": ResearchInversionNoise(skip_origin=True),
    "official adaptive": ResearchInversionNoise(adaptive_steps=True),
    "official skip+adaptive": ResearchInversionNoise(skip_origin=True, adaptive_steps=True),
}
OFFICIAL_N5 = replace(OFFICIAL, inversion=InversionConfig(n_steps=5))


def core_variants(setup: Setup, accelerated: bool) -> list[Variant]:
    """SDS and official SDI of ours and of the released code, under one treatment."""
    model, suffix = setup.parts.model, ACC if accelerated else ""
    denoiser = model
    if accelerated:
        assert setup.accelerated is not None
        denoiser = copy.copy(model)
        denoiser.unet = setup.accelerated
    variants = [
        Variant("sds" + suffix, "ours", ours_step(denoiser, denoiser, replace(OFFICIAL, noise="random"), setup.prompting, setup.latents), "sds"),
        Variant("sdi-official" + suffix, "ours", ours_step(denoiser, denoiser, OFFICIAL, setup.prompting, setup.latents)),
    ]  # fmt: skip
    if setup.released is not None:
        for method in ("sds", "sdi"):
            variant = Variant(
                f"released-{method}" + suffix,
                "released",
                released_step(setup.released, method, setup.prompting, setup.latents),
                method,
                note="threestudio built-in",
            )
            if accelerated:
                guidance = setup.released.guidances[method]

                def use(guidance: Any = guidance) -> None:
                    guidance.unet = setup.accelerated

                def restore(guidance: Any = guidance) -> None:
                    guidance.unet = model.unet

                variant.setup, variant.teardown = use, restore
            variants.append(variant)
    return variants


def research_variants(setup: Setup) -> list[Variant]:
    """Our eager options that change the math (fewer or more evaluations) or only the execution path."""
    model, unet = setup.parts.model, setup.parts.model.unet
    prompting, latents = setup.prompting, setup.latents

    def ours(config: GuidanceConfig, denoiser: Any = model) -> StepFn:
        return ours_step(denoiser, model, config, prompting, latents)

    variants = [Variant("sdi-paper", "ours", ours(PAPER), preset="paper")]
    for name, strategy in FEWER.items():
        variants.append(Variant(name, "fewer evaluations", ours(replace(OFFICIAL, noise=strategy))))
    variants += [
        Variant("official n=5", "fewer evaluations", ours(OFFICIAL_N5)),
        Variant(
            "official n=5 order2",
            "fewer evaluations",
            ours(replace(OFFICIAL_N5, noise=ResearchInversionNoise(order=2))),
        ),
        Variant(
            "fixed-point k=3",
            "more evaluations",
            ours(GuidanceConfig(noise=FixedPointNoise(max_iterations=3))),
            preset="paper",
        ),
        Variant(
            "official per-branch", "same math", ours(OFFICIAL, PerBranchModel(model)), note="unoptimised"
        ),
        Variant("official inference-mode", "same math", ours(OFFICIAL, InferenceModeModel(model))),
    ]
    channels_last = Variant("official channels-last", "same math", ours(OFFICIAL))
    channels_last.setup = lambda: unet.to(memory_format=torch.channels_last)
    channels_last.teardown = lambda: unet.to(memory_format=torch.contiguous_format)
    variants.append(channels_last)
    processors = dict(unet.attn_processors)
    from diffusers.models.attention_processor import AttnProcessor

    classic = Variant("official no-SDPA", "same math", ours(OFFICIAL), note="classic attention")
    classic.setup = lambda: unet.set_attn_processor(AttnProcessor())
    classic.teardown = lambda: unet.set_attn_processor(dict(processors))
    variants.append(classic)
    return variants


def gpu_variants(setup: Setup) -> list[Variant]:
    """Accelerated options of ours: fewer evaluations, the paper preset, two views per step."""
    assert setup.accelerated is not None
    denoiser = copy.copy(setup.parts.model)
    denoiser.unet = setup.accelerated
    prompting, latents = setup.prompting, setup.latents

    def ours(config: GuidanceConfig, batch: int = 1) -> StepFn:
        return ours_step(denoiser, denoiser, config, prompting, latents, batch)

    variants = [
        Variant(name + ACC, "fewer evaluations", ours(replace(OFFICIAL, noise=strategy)))
        for name, strategy in FEWER.items()
    ]
    return variants + [
        Variant("sdi-official 2 views" + ACC, "ours", ours(OFFICIAL, 2), batch=2),
        Variant("sdi-paper" + ACC, "ours", ours(PAPER), preset="paper"),
        Variant("sdi-paper 2 views" + ACC, "ours", ours(PAPER, 2), preset="paper", batch=2, note="sdi-2view"),
    ]


def build_variants(setup: Setup, variant_set: str) -> list[Variant]:
    """The variants of ``variant_set`` (``tiny``, ``sd21``, ``gpu``); accelerated rows when the setup has them."""
    variants = core_variants(setup, accelerated=False)
    if variant_set == "tiny":
        variants += research_variants(setup)
    if setup.accelerated is not None:
        variants += core_variants(setup, accelerated=True)
    if variant_set == "gpu":
        variants += gpu_variants(setup)
    if variant_set in ("sd21", "gpu"):
        variants.append(Variant(VAE, "component", vae_step(setup.parts.codec, setup.image), "vae"))
    return variants


# ----------------------------------------------------------------------------- summary
def per_round_ratios(
    numerator: dict[str, Any], denominator: dict[str, Any], clock: str = "wall"
) -> list[float]:
    """Per-round ratios of two report rows' per-view times on ``clock`` (``wall`` or ``cpu``)."""
    key = f"{clock}_ms_per_round"
    return [
        (a / numerator["batch"]) / (b / denominator["batch"])
        for a, b in zip(numerator[key], denominator[key])
    ]


def relative(a: Tensor, b: Tensor) -> float:
    """‖a − b‖ / ‖b‖."""
    return float((a.double() - b.double()).norm() / b.double().norm())


def relative_difference(a: Variant, b: Variant) -> float | None:
    """max over timesteps of ‖ẑ0(a) − ẑ0(b)‖ / ‖ẑ0(b)‖ (warm-up round, same seeds); None without targets."""
    pairs = [(x, y) for x, y in zip(a.targets, b.targets) if x is not None and y is not None]
    if not pairs or a.batch != b.batch:
        return None
    return max(relative(x, y) for x, y in pairs)


def check(
    ours: str, reference: str, dtype: str, difference: float | None, tolerance: float
) -> dict[str, Any]:
    holds = difference is not None and difference <= tolerance
    return {
        "variant": ours, "reference": reference, "dtype": dtype, "relative_difference": difference,
        "tolerance": tolerance, "holds": holds,
    }  # fmt: skip


def float64_checks(setup: Setup, folder: pathlib.Path, phases: int) -> list[dict[str, Any]]:
    """Ours against the released guidance in float64, at every timestep: the same math, free of the
    reordering noise of float32 / float16 (module docstring). Both sides run one float64 UNet loaded
    from ``folder``; the released guidance keeps its own float32 scheduler tables."""
    from diffusers import UNet2DConditionModel

    from threestudio_sdi.models.diffusers_model import DiffusersModel

    released, device = setup.released, setup.latents.device
    assert released is not None
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float64)
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    model = DiffusersModel(
        unet, scheduler, setup.parts.model.uncond_embeddings, device=device, dtype=torch.float64
    )
    latents = setup.latents.double()
    checks = []
    for method, config in (("sdi", OFFICIAL), ("sds", replace(OFFICIAL, noise="random"))):
        ours = ours_step(model, model, config, setup.prompting, latents)
        theirs = released_step(released, method, setup.prompting, latents)
        guidance = released.guidances[method]
        saved = guidance.unet, guidance.weights_dtype
        guidance.unet, guidance.weights_dtype = model.unet, torch.float64
        try:
            differences = [
                relative(ours(t, seed)[2], theirs(t, seed)[2])
                for seed, t in enumerate(schedule_timesteps("official", phases))
            ]
        finally:
            guidance.unet, guidance.weights_dtype = saved
        name = "sdi-official" if method == "sdi" else "sds"
        checks.append(check(name, f"released-{method}", "float64", max(differences), MATH_TOLERANCE))
    del model, unet
    gc.collect()
    return checks


TIMED_PAIRS = (
    ("sdi-official", "released-sdi"),
    ("sds", "released-sds"),
    ("sdi-official" + ACC, "released-sdi" + ACC),
    ("sds" + ACC, "released-sds" + ACC),
    ("sdi-official" + ACC, "released-sdi"),
    ("sdi-official" + ACC, "sdi-official"),
    ("sds" + ACC, "sds"),
)
"""Comparisons in the timed dtype (ours, reference): ours against the released code in each treatment
and against the code as shipped, and the accelerated UNet against the eager one."""


def timed_checks(variants: dict[str, Variant], dtype: torch.dtype) -> list[dict[str, Any]]:
    """The comparisons of :data:`TIMED_PAIRS` whose variants ran, and our same-math paths against our
    plain step, from the warm-up round's targets."""
    pairs = [pair for pair in TIMED_PAIRS if pair[0] in variants and pair[1] in variants]
    pairs += [(name, "sdi-official") for name, v in variants.items() if v.group == "same math"]
    name = str(dtype).replace("torch.", "")
    return [
        check(a, b, name, relative_difference(variants[a], variants[b]), TOLERANCE[dtype]) for a, b in pairs
    ]


def allowed(checks: list[dict[str, Any]], ours: str, reference: str) -> bool:
    """A ratio of ``ours`` to the released ``reference`` may be reported: the float64 checks ran and
    hold, and so does the comparison of the pair in the timed dtype."""
    math = [c for c in checks if c["dtype"] == "float64"]
    pair = [
        c for c in checks if c["variant"] == ours and c["reference"] == reference and c["dtype"] != "float64"
    ]
    return bool(math) and all(c["holds"] for c in math + pair) and bool(pair)


def baselines(name: str, rows: dict[str, dict[str, Any]], checks: list[dict[str, Any]]) -> dict[str, str]:
    """Denominators of a row's ratios: {column: row name}, against the released code only where
    :func:`allowed`."""
    row = rows[name]
    suffix = ACC if row["treatment"] == "accelerated" else ""
    found: dict[str, str] = {}
    if row["method"] == "vae":
        return found
    side_released = row["group"] == "released"
    sds = ("released-sds" if side_released else "sds") + suffix
    if sds in rows:
        found["÷ SDS"] = sds
    released = "released-sdi" + suffix
    if released in rows and (side_released or allowed(checks, "sdi-official" + suffix, released)):
        found["÷ released SDI"] = released
    if suffix and not side_released and allowed(checks, "sdi-official" + ACC, "released-sdi"):
        found["÷ released SDI as shipped"] = "released-sdi"
    return found


HEADLINES = (
    ("ours ÷ released, SDI official", "sdi-official", "released-sdi", True),
    ("ours ÷ released, SDS", "sds", "released-sds", True),
    ("SDI ÷ SDS, ours", "sdi-official", "sds", False),
    ("SDI ÷ SDS, released", "released-sdi", "released-sds", False),
    ("ours ÷ released, SDI official, accelerated", "sdi-official" + ACC, "released-sdi" + ACC, True),
    ("ours ÷ released, SDS, accelerated", "sds" + ACC, "released-sds" + ACC, True),
    ("SDI ÷ SDS, ours, accelerated", "sdi-official" + ACC, "sds" + ACC, False),
    ("SDI ÷ SDS, released, accelerated", "released-sdi" + ACC, "released-sds" + ACC, False),
    ("ours accelerated ÷ released as shipped, SDI official (the ≤ 0.5 target)", "sdi-official" + ACC, "released-sdi", True),
    ("ours accelerated ÷ ours eager, SDI official", "sdi-official" + ACC, "sdi-official", False),
    ("2 views ÷ 1 view per view, official, accelerated", "sdi-official 2 views" + ACC, "sdi-official" + ACC, False),
    ("2 views ÷ 1 view per view, paper, accelerated", "sdi-paper 2 views" + ACC, "sdi-paper" + ACC, False),
)  # fmt: skip
"""(what, numerator, denominator, whether it compares against the released code: then :func:`allowed` gates it)."""
VAE = "vae encode+backward"


def headlines(rows: dict[str, dict[str, Any]], checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The headline ratios whose rows exist, per round on the wall and the CPU clock; with the VAE row
    added where it ran (batch 1 only)."""
    found = []
    for what, numerator, denominator, against_released in HEADLINES:
        if numerator not in rows or denominator not in rows:
            continue
        entry: dict[str, Any] = {
            "what": what,
            "numerator": numerator,
            "denominator": denominator,
            "ratios": None,
        }
        if against_released and not allowed(checks, numerator, denominator):
            entry["withheld"] = "an equivalence check failed or did not run"
            found.append(entry)
            continue
        top, bottom = rows[numerator], rows[denominator]
        entry["ratios"] = per_round_ratios(top, bottom)
        entry["cpu_ratios"] = per_round_ratios(top, bottom, "cpu")
        if VAE in rows and top["batch"] == bottom["batch"] == 1:
            vae = rows[VAE]["wall_ms_per_round"]
            entry["ratios_with_vae"] = [
                (a + v) / (b + v)
                for a, b, v in zip(top["wall_ms_per_round"], bottom["wall_ms_per_round"], vae)
            ]
        found.append(entry)
    return found


def summarise(
    variants: list[Variant], dtype: torch.dtype, math_checks: list[dict[str, Any]]
) -> dict[str, Any]:
    """The measurements as report rows, and the checks (ratios: :func:`derive`)."""
    by_name = {v.name: v for v in variants}
    rows = {
        variant.name: {
            "group": variant.group,
            "treatment": variant.treatment,
            "method": variant.method,
            "preset": variant.preset,
            "batch": variant.batch,
            "note": variant.note,
            "evaluations_per_step": statistics.mean(variant.evaluations),
            "evaluations_per_timestep": variant.evaluations,
            "unet_calls_per_step": statistics.mean(variant.unet_calls),
            "wall_ms_per_round": [1000 * w for w in variant.wall],
            "cpu_ms_per_round": [1000 * c for c in variant.cpu],
            "peak_growth_mib": variant.memory[0],
            "peak_absolute_mib": variant.memory[1],
        }
        for variant in variants
    }
    return {"variants": rows, "equivalence": math_checks + timed_checks(by_name, dtype)}


def derive(report: dict[str, Any]) -> dict[str, Any]:
    """Add every row's ratios and the headline ratios to ``report`` (from its rows and checks)."""
    rows, checks = report["variants"], report["equivalence"]
    for name, row in rows.items():
        row["ratios"] = {
            column: {"to": base, "per_round": per_round_ratios(row, rows[base])}
            for column, base in baselines(name, rows, checks).items()
        }
    report["headlines"] = headlines(rows, checks)
    return report


# ----------------------------------------------------------------------------- report
def markdown(report: dict[str, Any]) -> str:
    info, rows = report["machine"], report["variants"]
    gpu = f"GPU {info['gpu']} (CUDA {info['cuda']})" if info["gpu_present"] else "no GPU present"
    columns = ["÷ SDS", "÷ released SDI", "÷ released SDI as shipped"]
    used = [c for c in columns if any(c in row["ratios"] for row in rows.values())]
    on_cpu = report["device"] == "cpu"
    clocks = ["wall", "cpu"] if on_cpu else ["wall"]
    memory_header = "peak growth MiB" if on_cpu else "peak growth (absolute) MiB"
    header = [
        "variant",
        "group",
        "evals/step",
        "UNet calls/step",
        *(f"{'CPU' if c == 'cpu' else c} ms/step" for c in clocks),
        *used,
        memory_header,
    ]
    table = []
    for name, row in rows.items():
        line = [name, row["group"], f"{row['evaluations_per_step']:.2f}", f"{row['unet_calls_per_step']:.2f}"]
        for clock in clocks:
            times = [value / row["batch"] for value in row[f"{clock}_ms_per_round"]]
            line.append(spread(times, 1) + (" per view" if row["batch"] > 1 else ""))
        line += [spread(row["ratios"][c]["per_round"]) if c in row["ratios"] else "–" for c in used]
        growth, absolute = row["peak_growth_mib"], row["peak_absolute_mib"]
        line.append(
            "–" if growth is None else f"{growth:.1f}" + ("" if absolute is None else f" ({absolute:.0f})")
        )
        table.append(line)
    heads = []
    for h in report["headlines"]:
        line = [h["what"], f"{h['numerator']} ÷ {h['denominator']}"]
        line.append(spread(h["ratios"]) if h["ratios"] else f"not reported: {h['withheld']}")
        line += [spread(h.get("cpu_ratios"))] if on_cpu else []
        heads.append([*line, spread(h.get("ratios_with_vae"))])
    head_header = ["ratio", "variants", "wall: median (IQR)"]
    head_header += ["CPU time: median (IQR)"] if on_cpu else []
    head_header += ["wall, with the VAE row added"]
    checks = [
        [
            c["variant"],
            c["reference"],
            c["dtype"],
            "–" if c["relative_difference"] is None else f"{c['relative_difference']:.1e}",
            f"{c['tolerance']:.0e}",
            "holds" if c["holds"] else "**fails**",
        ]
        for c in report["equivalence"]
    ]
    timesteps = ", ".join(f"{k} {v}" for k, v in report["timesteps"].items())
    parts = [
        f"# Cost of one guidance step: {report['model']} on {report['device']}",
        "",
        f"Command: `{report['command']}` ({report['elapsed_seconds']:.0f} s)"
        + (
            f"; released guidance from threestudio {report['released_checkout']}"
            if report.get("released_checkout")
            else ""
        )
        + f". Machine: {info['cpu']}, {info['cpu_count']} cores (load average {info['load_average_at_start']} at "
        f"start), {gpu}; torch {info['torch']} with {info['torch_threads']} thread(s), diffusers "
        f"{info['diffusers']}. Device {report['device']}, weights {report['dtype']}.",
        "",
        f"Model {report['model']} ({report['model_note']}), batch 1 unless named, "
        f"{'Perp-Neg (4 UNet branches)' if report['perp_neg'] else 'CFG (2 UNet branches)'}, "
        f"{report['rounds']} timed interleaved rounds after a warm-up round, {report['phases']} timestep(s) "
        f"per round along each preset's annealing ({timesteps}). Every cell: median (Q1–Q3) over rounds; "
        "ratios are per round, on per-view times"
        + (
            "; CPU time (all threads of the process) is steadier than wall time on a shared CPU"
            if on_cpu
            else ""
        )
        + ". Treatments: eager, and `[acc]` = both sides' UNet "
        f"through one AcceleratedUNet ({report['acceleration']}).",
        "",
        "## Headline ratios",
        "",
        markdown_table(head_header, heads),
        "",
        "## Equivalence checks (same inputs and draws, every timestep; max over timesteps)",
        "",
        "float64: ours and the released guidance on one float64 UNet (the math). Timed dtype: the "
        "warm-up round's targets (execution: batching, fusion, the accelerated UNet). A ratio against "
        "the released code is reported only where the float64 checks and its pair's timed check hold.",
        "",
        markdown_table(["ours", "reference", "dtype", "max ‖Δẑ0‖/‖ẑ0‖", "tolerance", ""], checks)
        if checks
        else "No check ran (no released guidance and no same-math path in this run): no ratio against the released code is reported.",
        "",
        "## Every variant",
        "",
        markdown_table(header, table),
        "",
        "evals = guided evaluations (one batched UNet call each, except per-branch). Peak growth (one untimed "
        "step at the first timestep): "
        + (
            "`torch.cuda.max_memory_allocated` during the step minus what was allocated before it."
            if report["device"].startswith("cuda")
            else "the CPU allocator's bytes allocated during the step and live at its peak, from "
            "torch.profiler's memory events (tensors only; not the weights)."
        ),
    ]
    if "released-sdi" not in rows:
        parts += [
            "",
            "The released guidance was not measured in this run (pass `--released-from` a threestudio "
            "checkout, with a Python that has threestudio's requirements).",
        ]
    return "\n".join(parts) + "\n"


def plot(report: dict[str, Any], path: pathlib.Path) -> None:
    """Bars: each variant's wall time per step ÷ SDS of its side and treatment, with the IQR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {n: r for n, r in report["variants"].items() if "÷ SDS" in r["ratios"]}
    colours = {
        "ours": "C0",
        "fewer evaluations": "C2",
        "more evaluations": "C4",
        "same math": "C1",
        "released": "C3",
    }
    figure, axis = plt.subplots(figsize=(8, 0.36 * len(rows) + 1.5))
    for y, row in enumerate(rows.values()):
        median, first, third = median_iqr(row["ratios"]["÷ SDS"]["per_round"])
        axis.barh(y, median, color=colours.get(row["group"], "C7"))
        axis.errorbar(median, y, xerr=[[median - first], [third - median]], color="k", capsize=3, lw=1)
        axis.text(third, y, f"  {median:.2f}", va="center", fontsize=8)
    axis.set_yticks(range(len(rows)), list(rows))
    axis.invert_yaxis()
    axis.set_xlabel("wall time per step ÷ SDS of the same side and treatment (median, IQR over rounds)")
    axis.grid(axis="x", alpha=0.3)
    figure.suptitle(f"{report['model']} on {report['device']} ({report['machine']['cpu']})", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ----------------------------------------------------------------------------- main
MODELS = {
    "tiny": "random-weight tiny SD stack, UNet on 4×8×8 latents",
    "sd21-random": "SD 2.1-base UNet and VAE from the published configs, random weights, 4×64×64 latents, 512×512 renders",
}


def model_folder(args: argparse.Namespace, workdir: pathlib.Path) -> pathlib.Path:
    """The SD folder to load: ``--model-path``, or the random stack of ``--model`` built under ``workdir``."""
    if args.model_path is not None:
        return args.model_path.resolve()
    if args.model == "tiny":
        from threestudio_sdi.testing.tiny_sd import tiny_stable_diffusion

        return tiny_stable_diffusion(workdir / "tiny-sd", seed=0)
    from threestudio_sdi.testing.sd21_random import sd21_random_stable_diffusion

    return sd21_random_stable_diffusion((args.model_dir or workdir / "sd21-random").resolve(), seed=0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 rounds × 3 timesteps, results in results/quick/"
    )
    parser.add_argument("--model", choices=tuple(MODELS), default="tiny")
    parser.add_argument(
        "--model-path", type=pathlib.Path, default=None, help="an SD folder instead of --model"
    )
    parser.add_argument(
        "--model-dir",
        type=pathlib.Path,
        default=None,
        help="where to write (or reuse) the sd21-random folder",
    )
    parser.add_argument("--set", choices=SETS, default=None, help="variant set (default: by --model)")
    parser.add_argument(
        "--rounds", "--steps", dest="rounds", type=int, default=None,
        help="timed interleaved rounds = timed steps of each variant at each timestep (tiny 15, quick 3, sd21 3)",
    )  # fmt: skip
    parser.add_argument(
        "--phases",
        type=int,
        default=None,
        help="timesteps per round along the annealing (tiny 5, quick 3, else 1)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (tiny 1, else all cores)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:i]")
    parser.add_argument(
        "--perp-neg", action=argparse.BooleanOptionalAction, default=None,
        help="Perp-Neg (4 branches, as configs/sdi.yaml) or CFG (2); default Perp-Neg except sd21-random on a CPU",
    )  # fmt: skip
    parser.add_argument("--released-from", type=pathlib.Path, default=None, help="a threestudio checkout")
    parser.add_argument(
        "--accelerate",
        action="store_true",
        help="add the accelerated treatment (both sides; compiles the UNet)",
    )
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of --accelerate")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("--stem", default=None, help="result file name (default cost, cost-sd21-random)")
    parser.add_argument(
        "--replot", action="store_true", help="rewrite the .md (and .png) from the existing JSON"
    )
    return parser.parse_args(argv)


def pick_device(name: str) -> torch.device:
    """``auto``: the first CUDA device when torch sees one, else the CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_setup(
    args: argparse.Namespace, device: torch.device, perp_neg: bool, accelerate: bool, workdir: pathlib.Path
) -> tuple[Setup, pathlib.Path]:
    """Load the model (and the released guidance on the same modules); the inputs of every step."""
    from threestudio_sdi.models.stable_diffusion import load_stable_diffusion

    path = model_folder(args, workdir)
    parts = load_stable_diffusion(path, device=device, local_files_only=True)
    released = None
    if args.released_from is not None:
        released = setup_released(args.released_from.resolve(), path, perp_neg, workdir, parts)
    accelerated = None
    if accelerate:
        acceleration = Acceleration(compile_backend=args.compile_backend)
        accelerated = AcceleratedUNet(copy.deepcopy(parts.model.unet), acceleration)
    size = int(parts.model.unet.config.sample_size)
    image_size = size * 2 ** (len(parts.codec.vae.config.block_out_channels) - 1)
    generator = torch.Generator().manual_seed(0)
    setup = Setup(
        parts=parts,
        prompting=Prompting(parts, released.prompt_utils if released else None, perp_neg, device),
        latents=torch.randn(2, 4, size, size, generator=generator).to(device),
        image=torch.rand(1, 3, image_size, image_size, generator=generator).to(device),
        released=released,
        accelerated=accelerated,
    )
    return setup, path


def main(argv: list[str] | None = None, command: str | None = None) -> int:
    """Run the benchmark of ``argv``; ``command`` is what the report says was run (default: this script)."""
    args = parse_args(argv)
    model = "custom" if args.model_path else args.model
    out = (args.out or (RESULTS / "quick" if args.quick else RESULTS)).resolve()
    stem = args.stem or ("cost" if model == "tiny" else f"cost-{model}")
    if args.replot:
        report = derive(json.loads((out / f"{stem}.json").read_text()))
        (out / f"{stem}.json").write_text(json.dumps(report, indent=1))
        write(report, out, stem)
        return 0
    started = time.perf_counter()
    device = pick_device(args.device)
    tiny = model == "tiny"
    torch.set_num_threads(args.threads or (1 if tiny else os.cpu_count() or 1))
    variant_set = args.set or ("tiny" if tiny else "sd21")
    rounds = args.rounds or (3 if args.quick else 15 if tiny else 10 if variant_set == "gpu" else 3)
    phases = args.phases or (3 if args.quick else 5 if tiny or variant_set == "gpu" else 1)
    perp_neg = args.perp_neg if args.perp_neg is not None else (tiny or device.type == "cuda")
    machine_info = machine()
    if args.released_from is not None:  # before diffusers is used (torchvision probing)
        import_released(args.released_from.resolve(), device)
    with tempfile.TemporaryDirectory(prefix="sdi-cost-") as folder:
        accelerate = args.accelerate or variant_set == "gpu"
        setup, path = build_setup(args, device, perp_neg, accelerate, pathlib.Path(folder))
        variants = build_variants(setup, variant_set)
        math_checks = float64_checks(setup, path, phases) if setup.released is not None else []
        measure(variants, phases, rounds, device)
    accelerated = setup.accelerated
    report = {
        "command": command
        or " ".join(["python", "benchmarks/cost.py", *(argv if argv is not None else sys.argv[1:])]),
        "released_checkout": released_commit(args.released_from),
        "machine": machine_info,
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "dtype": str(setup.parts.model.dtype).replace("torch.", ""),
        "model": model,
        "model_note": str(args.model_path) if args.model_path else MODELS[args.model],
        "variant_set": variant_set,
        "perp_neg": perp_neg,
        "rounds": rounds,
        "phases": phases,
        "timesteps": {p: schedule_timesteps(p, phases) for p in ("official", "paper")},
        "acceleration": (
            f"applied {sorted(accelerated.applied)}, skipped {accelerated.skipped}, backend {args.compile_backend}"
            if accelerated
            else "not run"
        ),
        **summarise(variants, setup.parts.model.dtype, math_checks),
    }
    derive(report)
    report["elapsed_seconds"] = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    write(report, out, stem)
    return 0


def write(report: dict[str, Any], out: pathlib.Path, stem: str) -> None:
    """The .md (printed too) and, for the tiny stack, the .png of a report."""
    text = markdown(report)
    (out / f"{stem}.md").write_text(text)
    if report["model"] == "tiny":
        plot(report, out / f"{stem}.png")
    print(text)
    print(f"wrote {out / stem}.json, .md" + (", .png" if report["model"] == "tiny" else ""))


if __name__ == "__main__":
    raise SystemExit(main())
