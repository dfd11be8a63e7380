"""The cost–outcome frontier inside real threestudio, and the known answers of its noise field there.

Each frontier run is the known-answer run of :mod:`known_answer` (threestudio's ``implicit-volume``,
``no-material``, white ``solid-color-background``, ``nerf-volume-renderer``; ``sdi-guidance`` with the
lab's exact prior through ``model_factory``; 32×32 px, 4 views, Adam lr 0.01, 300 steps) with three
things changed: the prior holds 3 variants per class (the frontier's question is mode choice), the
prompt names the run's class (``orb``, the equal-mean class, with a prior of all four classes so that
CFG's unconditional branch mixes four), and ``sdi-guidance`` is set to one of the 3D lab's methods
(:func:`guidance_block`: the method's preset, noise strategy and options, CFG, inversion and timestep
policy, as :mod:`threestudio_sdi.experimental.lab3d.methods` defines them). The seed is threestudio's
``seed``, the guidance's and the noise field's. Scored like :mod:`known_answer` on the lab's 8 held-out
views; a row holds the lab's outcome keys, the guided evaluations per step and the wall time of
launch.py's whole run (training, one validation, the test views).

:func:`noise_field_checks` are the known answers of consistent noise in threestudio: the field the
system binds renders N(0, 1) κ of the guidance's shape at a batch of 4 for both attachments, follows the
geometry (an empty geometry shows the background noise), and a resume continues the same noise (the
losses of a resumed run equal an uninterrupted run's; a resume with another field is refused).
"""

from __future__ import annotations

import dataclasses
import math
import time
from types import SimpleNamespace
from typing import Any

from harness import DETERMINISTIC, Harness, steps
from known_answer import CLASS_NAME, config_layers, scored

from threestudio_sdi.experimental.lab3d.assets import CLASS_NAMES, EQUAL_MEAN_CLASS
from threestudio_sdi.experimental.lab3d.methods import SDS_STEP_RANGE, get_method
from threestudio_sdi.experimental.strategies import ConsistentNoise
from threestudio_sdi.testing.cpu_harness.launcher import LaunchRun

VARIANTS = 3
FRONTIER_STEPS = 300
"""The known-answer run's length (:data:`known_answer.MAX_STEPS`)."""


def classes_of(class_name: str) -> list[str]:
    """The prior's classes for a run of ``class_name``: the lab's three, plus ``orb`` for an orb run."""
    return [*CLASS_NAMES, EQUAL_MEAN_CLASS] if class_name == EQUAL_MEAN_CLASS else list(CLASS_NAMES)


def guidance_block(method_name: str, seed: int) -> dict[str, Any]:
    """``system.guidance`` settings of the 3D lab's method ``method_name`` (its config and timestep
    policy); a consistent-noise strategy gets the run's ``seed``."""
    method = get_method(method_name)
    config = method.config
    strategy = config.strategy
    options = {
        item.name: getattr(strategy, item.name)
        for item in dataclasses.fields(strategy)
        if item.name != "field" and getattr(strategy, item.name) != item.default
    }
    if isinstance(strategy, ConsistentNoise):
        options["seed"] = seed
    block: dict[str, Any] = {
        "preset": config.preset,
        "noise": strategy.name,
        "noise_options": options,
        "guidance_scale": config.guidance_scale,
        "inversion": dataclasses.asdict(config.inversion),
        "seed": seed,
    }
    if config.cfg_mode is not None:
        block["cfg_mode"] = config.cfg_mode
    if method.timesteps == "random":  # SDS: t ~ U{20 … 980}, as the lab's
        block.update(t_anneal=False, min_step_percent=SDS_STEP_RANGE[0], max_step_percent=SDS_STEP_RANGE[1])
    return block


def frontier_layers(
    h: Harness, method_name: str, class_name: str, seed: int, max_steps: int
) -> tuple[dict[str, Any], ...]:
    """The config layers over configs/sdi.yaml of one frontier run (module docstring)."""
    guidance = {
        **guidance_block(method_name, seed),
        "model_options": {"variants_per_class": VARIANTS, "classes": classes_of(class_name)},
    }
    run = {"seed": seed, "system": {"prompt_processor": {"prompt": class_name}, "guidance": guidance}}
    return (*config_layers(h, VARIANTS), run, steps(max_steps))


def frontier_run(
    h: Harness, method_name: str, class_name: str, seed: int, max_steps: int
) -> tuple[dict[str, Any], LaunchRun]:
    """One run through launch.py, scored on the held-out views: a row of the frontier, and the run."""
    name = f"frontier-{method_name}-{class_name}-{seed}-{max_steps}"
    started = time.perf_counter()
    run = h.run(h.config(name, *frontier_layers(h, method_name, class_name, seed, max_steps)))
    seconds = time.perf_counter() - started
    system = run.system
    prior = system.guidance.model
    logged = [step["logged"] for step in run.steps]
    evaluations = sum(int(entry["train/model_evaluations"]) for entry in logged)
    row = {
        "method": method_name,
        "class": class_name,
        "seed": seed,
        "lab": "equal-mean" if class_name == EQUAL_MEAN_CLASS else "default",
        "steps": len(run.steps),
        "evaluations_per_step": evaluations / max(len(run.steps), 1),
        "nonfinite_views": int(logged[-1]["train/nonfinite_steps"]) if logged else 0,
        "losses_finite": bool(run.steps) and all(math.isfinite(step["loss"]) for step in run.steps),
        "seconds": round(seconds, 1),
    }
    row.update(scored(system.geometry, system.renderer, prior, prior.prompt_condition(class_name)))
    return row, run


# ------------------------------------------------------------------ the noise field's known answers
def _kappa_statistics(kappa: Any) -> dict[str, Any]:
    return {
        "shape": list(kappa.shape),
        "finite": bool(kappa.isfinite().all()),
        "mean": float(kappa.mean()),
        "std": float(kappa.std()),
    }


def noise_field_checks(h: Harness, short: int = 8) -> dict[str, Any]:
    """Consistent noise in real threestudio (module docstring): short runs of the known-answer setting,
    then the bound source on a training batch of the final geometry and of an empty one."""
    import torch

    from threestudio_sdi.experimental.lab3d.noise_field import _background_noise
    from threestudio_sdi.experimental.threestudio.nerf_noise_field import nerf_noise_field

    report: dict[str, Any] = {}
    for method in ("consistent-noise", "consistent-surface", "consistent-lowfreq-10"):
        row, run = frontier_run(h, method, CLASS_NAME, 0, short)
        system = run.system
        source = system.guidance.noise_field
        batch = next(iter(run.trainer.datamodule.train_dataloader()))
        shape = (batch["rays_o"].shape[0], 3, *batch["rays_o"].shape[1:3])
        kappa = source(batch, shape)
        empty_system = SimpleNamespace(
            geometry=SimpleNamespace(forward_density=lambda points: torch.zeros(points.shape[0], 1)),
            renderer=system.renderer,
            guidance=system.guidance,
        )
        empty = nerf_noise_field(empty_system)(batch, shape)
        directions = torch.nn.functional.normalize(batch["rays_d"], dim=-1).reshape(-1, 3)
        background = _background_noise(source.field(3, directions.device), directions)
        background = background.reshape(*shape[:1], *shape[2:], 3).permute(0, 3, 1, 2)
        report[method] = {
            "type": type(source).__name__,
            "attachment": source.strategy.attachment,
            "evaluations_per_step": row["evaluations_per_step"],
            "losses_finite": row["losses_finite"],
            "batch_views": shape[0],
            "kappa": _kappa_statistics(kappa),
            "empty_equals_background": float((empty - background).abs().max()),
            "state": source.state_dict(),
        }
    report["resume"] = resume_check(h)
    return report


def resume_check(h: Harness) -> dict[str, Any]:
    """4 steps straight against 2 steps, ``resume=`` the step-2 checkpoint, 2 more (fixed cameras and
    ray samples); then the same checkpoint resumed with another ``noise_options.seed`` (refused)."""
    import torch

    layers = (
        *frontier_layers(h, "consistent-shared-10", CLASS_NAME, 0, 4),
        DETERMINISTIC,
        steps(4, checkpoint_every=2),
    )
    straight = h.run(h.config("frontier-resume-straight", *layers))
    ckpts = h.trial("frontier-resume-straight") / "ckpts"
    parsed = h.trial("frontier-resume-straight") / "configs" / "parsed.yaml"
    checkpoint = ckpts / "epoch=0-step=2.ckpt"
    resumed = h.run(parsed, "train", f"resume={checkpoint}", "tag=frontier-resume-resumed")
    other = h.run(
        parsed,
        "train",
        f"resume={checkpoint}",
        "tag=frontier-resume-other",
        "system.guidance.noise_options.seed=5",
        keep_error=True,
    )
    state = torch.load(checkpoint, map_location="cpu")["sdi_guidance_state"]
    return {
        "straight_losses": [step["loss"] for step in straight.steps],
        "resumed_losses": [step["loss"] for step in resumed.steps],
        "checkpoint_noise_field": state.get("noise_field"),
        "other_seed_error": None if other.error is None else str(other.error),
    }
