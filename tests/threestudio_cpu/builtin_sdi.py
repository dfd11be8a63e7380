"""threestudio's built-in ``stable-diffusion-sdi-guidance`` (the released SDI code) against our ``sdi-guidance``
with ``preset=official``, on the same inputs: the tiny Stable Diffusion, threestudio's own prompt processor
(plain CFG and Perp-Neg), the same latents (``rgb_as_latents``), the same t, η = 0 and the same overshoot δ
(read from our step and injected into the built-in's ``random.random``).

* batch 1: the targets ẑ0 and the losses, with the built-in's own ᾱ (diffusers' float32 ``cumprod``) and
  with both given the same ᾱ table (ours: float64, rounded once), as relative errors;
* batch 2 with Perp-Neg: the built-in's SDI step (it calls ``int(t)`` on a [2] tensor), its
  ``predict_noise`` row by row against its own single-view result (the negatives' pairing), and our
  step's rows against our single-view steps.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

from harness import PROMPT, Harness

GLOBAL_STEP = 4000  # t = 688: t > 100 k + 1 for k ≤ 5, so the inversion has the origin and 6 grid points
CAMERAS = {"elevation": [10.0, 20.0], "azimuth": [0.0, 100.0], "camera_distances": [1.7, 1.7]}


def cameras(views: list[int]) -> dict[str, Any]:
    import torch

    return {key: torch.tensor([values[view] for view in views]) for key, values in CAMERAS.items()}


def relative(value, reference) -> float:
    return float((value - reference).norm() / reference.norm())


def build(h: Harness) -> SimpleNamespace:
    threestudio = h.threestudio
    processors = {
        perp_neg: threestudio.find("stable-diffusion-prompt-processor")(
            {
                "pretrained_model_name_or_path": str(h.tiny),
                "prompt": PROMPT,
                "spawn": False,
                "use_perp_neg": perp_neg,
            }
        )()
        for perp_neg in (False, True)
    }
    ours = threestudio.find("sdi-guidance")(
        {
            "pretrained_model_name_or_path": str(h.tiny),
            "local_files_only": True,
            "half_precision_weights": False,
            "preset": "official",
            "inversion": {"eta": 0.0},
            "seed": 0,
        }
    )
    builtin_class = threestudio.find("stable-diffusion-sdi-guidance")
    builtin = builtin_class(
        {
            "pretrained_model_name_or_path": str(h.tiny),
            "half_precision_weights": False,
            "guidance_scale": 7.5,
            "min_step_percent": 0.25,
            "max_step_percent": 0.98,
            "inversion_eta": 0.0,
            "trainer_max_steps": 10000,
        }
    )
    return SimpleNamespace(
        processors=processors, ours=ours, builtin=builtin, module=sys.modules[builtin_class.__module__]
    )


def our_step(ours, z0, prompt_utils, views: list[int], seed: int) -> dict:
    ours.generator.manual_seed(seed)
    ours.update_step(0, GLOBAL_STEP)
    return ours(
        z0.permute(0, 2, 3, 1), prompt_utils, **cameras(views), rgb_as_latents=True, return_images=True
    )


def builtin_step(parts, z0, prompt_utils, views: list[int], delta: int) -> dict:
    """The built-in's full call with its overshoot draw ``random.random()`` fixed to give ``delta``."""
    parts.builtin.update_step(0, GLOBAL_STEP)
    drawn = (delta + 0.5) / 100  # the built-in takes δ = int(u · 1000 // n_inv), n_inv = 10
    original = parts.module.random
    parts.module.random = SimpleNamespace(random=lambda: drawn)
    try:
        return parts.builtin(z0, prompt_utils, **cameras(views), rgb_as_latents=True, test_info=True)
    finally:
        parts.module.random = original


def share_alphas(parts) -> None:
    """Give the built-in's schedulers our ᾱ table (float64, rounded to float32 once)."""
    import torch

    alphas = torch.as_tensor(parts.ours.model.schedule.alphas_cumprod, dtype=torch.float32)
    builtin = parts.builtin
    builtin.scheduler.alphas_cumprod = alphas
    builtin.scheduler.final_alpha_cumprod = alphas[0]
    builtin.inverse_scheduler.alphas_cumprod = alphas
    builtin.inverse_scheduler.initial_alpha_cumprod = alphas[0]
    builtin.alphas = alphas


def batch_one(parts, alphas: str) -> list[dict[str, Any]]:
    import torch

    rows = []
    for perp_neg, prompt_utils in parts.processors.items():
        for view in (0, 1):
            z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(10 * view + perp_neg))
            ours = our_step(parts.ours, z0, prompt_utils, [view], seed=view)
            t, t_prime = ours["timestep"], ours["timestep_noisy"]
            builtin = builtin_step(parts, z0, prompt_utils, [view], t_prime - t)
            rows.append(
                {
                    "alphas": alphas,
                    "perp_neg": perp_neg,
                    "view": view,
                    "t": t,
                    "t_prime": t_prime,
                    "builtin_t": int(parts.builtin.min_step),
                    "rel_target": relative(ours["target_latent"], builtin["target_latent"]),
                    "rel_loss": abs(float(ours["loss_sdi"]) / float(builtin["loss_sdi"]) - 1),
                }
            )
    return rows


def batch_two(parts) -> dict[str, Any]:
    import torch

    prompt_utils = parts.processors[True]
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    report: dict[str, Any] = {}
    try:
        builtin_step(parts, z0, prompt_utils, [0, 1], 10)
        report["builtin_step_error"] = None
    except Exception as error:  # the released inversion needs batch 1
        report["builtin_step_error"] = f"{type(error).__name__}: {error}"
    x, t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4)), torch.tensor([500, 500])
    both, _, _ = parts.builtin.predict_noise(x, t, prompt_utils, **cameras([0, 1]), guidance_scale=7.5)
    report["builtin_row_vs_single"] = []
    for view in (0, 1):
        single, _, _ = parts.builtin.predict_noise(
            x[view : view + 1], t[view : view + 1], prompt_utils, **cameras([view]), guidance_scale=7.5
        )
        report["builtin_row_vs_single"].append(relative(both[view : view + 1], single))
    ours_both = our_step(parts.ours, z0, prompt_utils, [0, 1], seed=5)
    report["ours_rows_equal"] = []
    for view in (0, 1):
        single = our_step(parts.ours, z0[view : view + 1], prompt_utils, [view], seed=5)
        report["ours_rows_equal"].append(
            all(
                torch.equal(ours_both[key][view : view + 1], single[key])
                for key in ("target_latent", "noise_pred")
            )
        )
    return report


def compare(h: Harness) -> dict[str, Any]:
    parts = build(h)
    report = {"batch1": batch_one(parts, "builtin")}
    report["batch2"] = batch_two(parts)
    share_alphas(parts)
    report["batch1"] += batch_one(parts, "shared")
    return report
