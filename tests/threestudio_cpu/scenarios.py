"""Runs of configs/sdi.yaml through threestudio's own launch.py on a CPU; each returns a JSON-able report.

* :func:`smoke` — 3 steps, validation, test video;
* :func:`resume` — 4 steps straight == 2 steps, ``resume=`` the step-2 checkpoint, 2 more steps;
* :func:`longer` — resumed with a larger ``trainer.max_steps``: ``keep`` and ``stretch``;
* :func:`bf16` — Lightning ``bf16-mixed`` autocast on the CPU;
* :func:`half_weights` — ``half_precision_weights`` forced on the CPU (float16 UNet and VAE);
* :func:`test_again` — ``--test`` from the last checkpoint;
* :func:`export` — ``--export`` with marching cubes on the CPU (no ``load/tets`` file);
* :func:`validation` — N steps with validation after every step == N steps without.
"""

from __future__ import annotations

import math
from typing import Any

from harness import DETERMINISTIC, Harness, steps


def finite(values: list[float]) -> bool:
    return bool(values) and all(math.isfinite(value) for value in values)


def files_of(trial) -> dict[str, int]:
    save = trial / "save"
    return {str(path.relative_to(save)): path.stat().st_size for path in save.rglob("*") if path.is_file()}


def smoke(h: Harness) -> dict[str, Any]:
    """3 steps of sdi.yaml, validation at step 3, one test view and the turntable video."""
    import cv2

    run = h.run(h.sdi_config("smoke", steps(3)))
    trial = h.trial("smoke")
    image = cv2.imread(str(trial / "save" / "it3-0.png"))
    return {
        "global_step": int(run.system.true_global_step),
        "losses": [step["loss"] for step in run.steps],
        "logged": run.steps[-1]["logged"],
        "geometry_params_changed": run.changed_parameters("geometry."),
        "files": files_of(trial),
        "validation_image_shape": None if image is None else list(image.shape),
        "parsed_prompt_processor_model": _parsed(trial)["system"]["prompt_processor"][
            "pretrained_model_name_or_path"
        ],
        "tiny": str(h.tiny),
    }


def _parsed(trial) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((trial / "configs" / "parsed.yaml").read_text())


def _weights_equal(first: dict, second: dict) -> bool:
    import torch

    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def _checkpoint_weights(path) -> dict:
    import torch

    return torch.load(path, map_location="cpu")["state_dict"]


def resume(h: Harness) -> dict[str, Any]:
    """4 steps straight (checkpoints at 2 and 4) against launch.py ``resume=`` the step-2 checkpoint."""
    config = h.sdi_config("resume-straight", DETERMINISTIC, steps(4, checkpoint_every=2))
    straight = h.run(config)
    ckpts = h.trial("resume-straight") / "ckpts"
    parsed = h.trial("resume-straight") / "configs" / "parsed.yaml"
    resumed = h.run(parsed, "train", f"resume={ckpts / 'epoch=0-step=2.ckpt'}", "tag=resume-resumed")
    resumed_ckpt = h.trial("resume-resumed") / "ckpts" / "epoch=0-step=4.ckpt"
    return {
        "straight_losses": [step["loss"] for step in straight.steps],
        "resumed_losses": [step["loss"] for step in resumed.steps],
        "straight_steps": [step["global_step"] for step in straight.steps],
        "resumed_steps": [step["global_step"] for step in resumed.steps],
        "straight_timesteps": [step["logged"]["train/timestep"] for step in straight.steps],
        "resumed_timesteps": [step["logged"]["train/timestep"] for step in resumed.steps],
        "final_weights_equal": _weights_equal(
            _checkpoint_weights(ckpts / "epoch=0-step=4.ckpt"), _checkpoint_weights(resumed_ckpt)
        ),
        "checkpoint_has_guidance_state": "sdi_guidance_state" in _checkpoint(ckpts / "epoch=0-step=2.ckpt"),
        "distinct_losses": len(set(step["loss"] for step in straight.steps)),
    }


def _checkpoint(path) -> dict:
    import torch

    return torch.load(path, map_location="cpu")


def longer(h: Harness) -> dict[str, Any]:
    """The step-2 checkpoint of :func:`resume` resumed with trainer.max_steps=8: from the ORIGINAL config
    (whose ``trainer_max_steps: ${trainer.max_steps}`` follows it) with ``keep`` and ``stretch``, and
    from the trial's ``parsed.yaml`` (resolved: its ``trainer_max_steps`` stays 4) with ``keep``."""
    original = h.workdir / "configs" / "resume-straight.yaml"
    parsed = h.trial("resume-straight") / "configs" / "parsed.yaml"
    checkpoint = h.trial("resume-straight") / "ckpts" / "epoch=0-step=2.ckpt"
    report: dict[str, Any] = {}
    for name, config, mode in (
        ("keep", original, "keep"),
        ("stretch", original, "stretch"),
        ("parsed", parsed, "keep"),
    ):
        run = h.run(
            config,
            "train",
            f"resume={checkpoint}",
            f"tag=longer-{name}",
            "trainer.max_steps=8",
            "checkpoint.every_n_train_steps=8",
            f"system.guidance.resume_schedule={mode}",
        )
        report[name] = {
            "steps": [step["global_step"] for step in run.steps],
            "timesteps": [step["logged"]["train/timestep"] for step in run.steps],
            "convexity": [step["logged"]["train_params/lambda_convex"] for step in run.steps],
            "warnings": [message for message in run.warnings if "trainer.max_steps=8" in message],
            "losses": [step["loss"] for step in run.steps],
        }
    return report


def bf16(h: Harness) -> dict[str, Any]:
    """2 steps with Lightning's bf16-mixed autocast on the CPU (the guidance runs its own math in float32)."""
    run = h.run(h.sdi_config("bf16", steps(2), {"trainer": {"precision": "bf16-mixed"}}))
    return {
        "precision": str(run.trainer.precision),
        "losses": [step["loss"] for step in run.steps],
        "finite": finite([step["loss"] for step in run.steps]),
        "geometry_params_changed": run.changed_parameters("geometry."),
    }


def half_support() -> str | None:
    """None if this torch runs float16 convolutions, group norms and attention on the CPU, else why not."""
    import torch

    try:
        x = torch.randn(1, 8, 4, 4, dtype=torch.float16)
        torch.nn.functional.conv2d(x, torch.randn(8, 8, 3, 3, dtype=torch.float16), padding=1)
        torch.nn.functional.group_norm(x, 4)
        q = torch.randn(1, 2, 4, 8, dtype=torch.float16)
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    except (RuntimeError, NotImplementedError) as error:
        return f"torch {torch.__version__} has no float16 CPU kernel: {error}"
    return None


def half_weights(h: Harness) -> dict[str, Any]:
    """2 steps with the UNet and VAE in float16 on the CPU (sdi-guidance uses float16 on CUDA only, so
    the harness forces ``half_precision=True`` into the loader)."""
    reason = half_support()
    if reason is not None:
        return {"skipped": reason}
    import threestudio_sdi.models.stable_diffusion as stable_diffusion

    original = stable_diffusion.load_stable_diffusion

    def forced_half(*args, **kwargs):
        return original(*args, **{**kwargs, "half_precision": True})

    stable_diffusion.load_stable_diffusion = forced_half
    try:
        run = h.run(
            h.sdi_config("half", steps(2), {"system": {"guidance": {"half_precision_weights": True}}})
        )
    finally:
        stable_diffusion.load_stable_diffusion = original
    guidance = run.system.guidance
    return {
        "unet_dtype": str(guidance.model.unet.dtype),
        "vae_dtype": str(guidance.codec.vae.dtype),
        "losses": [step["loss"] for step in run.steps],
        "finite": finite([step["loss"] for step in run.steps]),
        "geometry_params_changed": run.changed_parameters("geometry."),
    }


def export(h: Harness) -> dict[str, Any]:
    """``--export`` of the 4-step run of :func:`resume` with marching cubes on the CPU (``mc-cpu``: no
    ``load/tets`` file), without texture baking (nvdiffrast is CUDA-only)."""
    trial = h.trial("resume-straight")
    h.run(
        trial / "configs" / "parsed.yaml",
        "export",
        f"resume={trial / 'ckpts' / 'last.ckpt'}",
        "tag=export",
        "system.exporter_type=mesh-exporter",
        "system.exporter.save_texture=false",
        "system.geometry.isosurface_method=mc-cpu",
        "system.geometry.isosurface_resolution=32",
        "system.geometry.isosurface_threshold=5.0",
    )
    files = files_of(h.trial("export"))
    obj = next((name for name in files if name.endswith(".obj")), None)
    text = (h.trial("export") / "save" / obj).read_text() if obj else ""
    return {
        "files": files,
        "vertices": sum(line.startswith("v ") for line in text.splitlines()),
        "faces": sum(line.startswith("f ") for line in text.splitlines()),
    }


def test_again(h: Harness) -> dict[str, Any]:
    """``--test`` of the 4-step run of :func:`resume` from its last checkpoint: the turntable again."""
    trial = h.trial("resume-straight")
    h.run(
        trial / "configs" / "parsed.yaml", "test", f"resume={trial / 'ckpts' / 'last.ckpt'}", "tag=test-again"
    )
    return {"files": files_of(h.trial("test-again"))}


def validation(h: Harness) -> dict[str, Any]:
    """3 steps with validation (guidance panels) after every step, and 3 steps without validation."""
    every = h.run(h.sdi_config("validation-every", DETERMINISTIC, steps(3, val_every=1)))
    none = h.run(
        h.sdi_config("validation-none", DETERMINISTIC, steps(3), {"trainer": {"limit_val_batches": 0}})
    )
    return {
        "losses_every": [step["loss"] for step in every.steps],
        "losses_none": [step["loss"] for step in none.steps],
        "validation_images": sorted(
            name for name in files_of(h.trial("validation-every")) if "-0.png" in name
        ),
        "weights_equal": _weights_equal(every.system.state_dict(), none.system.state_dict()),
    }


SCENARIOS = {
    "smoke": smoke,
    "resume": resume,
    "longer": longer,
    "bf16": bf16,
    "half_weights": half_weights,
    "test_again": test_again,
    "export": export,
    "validation": validation,
}
"""In order: ``longer``, ``test_again`` and ``export`` use the checkpoints of ``resume``."""
