"""``sdi-guidance`` mixed as threestudio users mix it: in threestudio's own systems and configs, and
``sdi-ext-system`` with other geometry, material, background and renderer types. 2 training steps,
validation and one test view each, through launch.py; each either trains (finite losses, geometry
weights that moved) or is refused, with the error, where it was raised and when (start-up, first step).

threestudio's configs (configs/dreamfusion-sd.yaml, latentnerf.yaml, latentnerf-refine.yaml) are used
as they are, with :data:`SWITCH_TO_SDI` on the command line — the override the README gives.
"""

from __future__ import annotations

import math
import pathlib
import traceback
from collections.abc import Callable
from typing import Any

from harness import CPU, CPU_RESET, PURE_TORCH_FIELD, Harness, steps

from threestudio_sdi.testing.cpu_harness.launcher import ANSI_ESCAPE

SWITCH_TO_SDI = (
    "system.guidance_type=sdi-guidance",
    "system.guidance.guidance_scale=7.5",
    "system.guidance.weighting_strategy=null",
    "system.guidance.min_step_percent=null",
    "system.guidance.max_step_percent=null",
    "system.guidance.trainer_max_steps=${trainer.max_steps}",
    "system.loss.lambda_sdi=1",
)
"""Puts sdi-guidance into a threestudio SD config: its SDS keys neutralised (an OmegaConf merge cannot
delete them), SDI's CFG 7.5, the anneal over the run, and the weight of ``loss_sdi``."""

PURE_TORCH_BACKGROUND = {
    "dir_encoding_config": {"otype": "ProgressiveBandFrequency", "n_frequencies": 2},
    "mlp_network_config": PURE_TORCH_FIELD["mlp_network_config"],
}
"""neural-environment-map-background without tiny-cuda-nn's SphericalHarmonics encoding."""

CPU_RENDERER = {
    "estimator": "importance",
    "num_samples_per_ray": 16,
    "num_samples_per_ray_importance": 8,
    "near_plane": 0.1,
    "far_plane": 4.0,
}


def raised_in(error: BaseException) -> list[str]:
    """The threestudio and threestudio_sdi frames the error passed through, innermost last."""
    return [
        f"{pathlib.Path(frame.filename).name}:{frame.lineno} {frame.name}"
        for frame in traceback.extract_tb(error.__traceback__)
        if "/threestudio/" in frame.filename or "/threestudio_sdi/" in frame.filename
    ]


def outcome(run) -> dict[str, Any]:
    losses = [step["loss"] for step in run.steps]
    if run.error is not None:
        message = ANSI_ESCAPE.sub("", str(run.error).strip())
        return {
            "outcome": "refused",
            "phase": run.phase,
            "error": f"{type(run.error).__name__}: {message[:2000]}",
            "raised_in": raised_in(run.error)[-3:],
            "losses": losses,
        }
    return {
        "outcome": "trains",
        "losses": losses,
        "finite": bool(losses) and all(math.isfinite(loss) for loss in losses),
        "geometry_params_changed": run.changed_parameters("geometry."),
        "guidance": type(run.system.guidance).__name__,
    }


def builtin(
    h: Harness, name: str, config: str, *extra: str, layers: tuple = (), switch=SWITCH_TO_SDI
) -> dict:
    """One of threestudio's own configs on the CPU with the tiny model, ``switch`` and ``extra``."""
    path = h.config(name, CPU_RESET, CPU, *layers, steps(2), base=h.root / "configs" / config)
    models = [
        f"system.{block}.pretrained_model_name_or_path={h.tiny}" for block in ("guidance", "prompt_processor")
    ]
    return outcome(h.run(path, "train", *models, *switch, *extra, keep_error=True))


def ours(h: Harness, name: str, *layers: dict[str, Any], overrides: tuple = ()) -> dict[str, Any]:
    """configs/sdi.yaml (sdi-ext-system) on the CPU with ``layers`` merged over it."""
    path = h.sdi_config(name, *layers, steps(2))
    return outcome(h.run(path, "train", *overrides, keep_error=True))


def dreamfusion(h: Harness) -> dict[str, Any]:
    return builtin(h, "dreamfusion", "dreamfusion-sd.yaml")


def dreamfusion_without_lambda_sdi(h: Harness) -> dict[str, Any]:
    """The same switch without ``system.loss.lambda_sdi``: dreamfusion-system weights loss_sdi by it."""
    switch = tuple(item for item in SWITCH_TO_SDI if not item.startswith("system.loss.lambda_sdi"))
    return builtin(h, "dreamfusion-no-lambda", "dreamfusion-sd.yaml", switch=switch)


LATENT_BACKGROUND = {"system": {"background": {"n_output_dims": 4, "color": [0.0, 0.0, 0.0, 0.0]}}}
NO_SCHEDULER = {"system": {"scheduler": None}}


def latentnerf(h: Harness) -> dict[str, Any]:
    """latentnerf-system: renders are 4-channel latents (``rgb_as_latents``); validation decodes them."""
    return builtin(h, "latentnerf", "latentnerf.yaml", layers=(LATENT_BACKGROUND,))


def latentnerf_without_scheduler(h: Harness) -> dict[str, Any]:
    """The same without its LR scheduler, whose config (an OmegaConf ListConfig) a checkpoint holds."""
    return builtin(h, "latentnerf-plain", "latentnerf.yaml", layers=(LATENT_BACKGROUND, NO_SCHEDULER))


def latentnerf_refine(h: Harness, stage_one: str = "latentnerf-plain") -> dict[str, Any]:
    """latentnerf-system's refinement with the sd-latent-adapter-material (RGB renders), from the weights
    of a latent run (threestudio's ``system.weights=``)."""
    weights = h.trial(stage_one) / "ckpts" / "last.ckpt"
    return builtin(h, f"refine-{stage_one}", "latentnerf-refine.yaml", f"system.weights={weights}")


def latentnerf_refine_from_scheduled_run(h: Harness) -> dict[str, Any]:
    """The refinement from the run with the scheduler: threestudio's ``torch.load`` (weights_only by
    default since torch 2.6) refuses the checkpoint's ListConfig."""
    return latentnerf_refine(h, "latentnerf")


SDF_NEUS = {
    "system": {
        "geometry_type": "implicit-sdf",
        "geometry": {
            "radius": 2.0,
            "normal_type": "finite_difference",
            "sdf_bias": "sphere",
            "sdf_bias_params": 0.5,
            **PURE_TORCH_FIELD,
        },
        "renderer_type": "neus-volume-renderer",
        "renderer": {"radius": 2.0, "use_volsdf": True, **CPU_RENDERER},
    }
}
RESET_GEOMETRY_RENDERER = {"system": {"geometry": None, "renderer": None}}


def neus_with_sdi_losses(h: Harness) -> dict[str, Any]:
    """implicit-sdf + neus-volume-renderer under sdi.yaml's losses: NeuS returns no z_variance."""
    return ours(h, "neus-sdi-losses", RESET_GEOMETRY_RENDERER, SDF_NEUS)


def neus(h: Harness) -> dict[str, Any]:
    """implicit-sdf + neus-volume-renderer without the two regularisers NeuS has no output for."""
    overrides = ("system.loss.lambda_z_variance=0", "system.loss.lambda_convex=0")
    return ours(h, "neus", RESET_GEOMETRY_RENDERER, SDF_NEUS, overrides=overrides)


def no_material(h: Harness, requires_normal: bool = True) -> dict[str, Any]:
    """no-material; it asks the geometry for no normals unless ``requires_normal`` (lambda_orient needs them)."""
    material = {"n_output_dims": 3, "color_activation": "sigmoid", "requires_normal": requires_normal}
    layer = {"system": {"material_type": "no-material", "material": material}}
    return ours(h, f"no-material-{requires_normal}", {"system": {"material": None}}, layer)


def no_material_without_normals(h: Harness) -> dict[str, Any]:
    return no_material(h, requires_normal=False)


def patch_renderer(h: Harness) -> dict[str, Any]:
    renderer = {
        "patch_size": 16,
        "global_downsample": 2,
        "base_renderer_type": "nerf-volume-renderer",
        "base_renderer": {"radius": 2.0, "return_comp_normal": True, **CPU_RENDERER},
    }
    layer = {"system": {"renderer_type": "patch-renderer", "renderer": renderer}}
    return ours(h, "patch-renderer", {"system": {"renderer": None}}, layer)


ENVIRONMENT_MAP = "neural-environment-map-background"


def environment_map(h: Harness, pure_torch: bool = True) -> dict[str, Any]:
    """neural-environment-map-background, with a pure-torch encoding and MLP or (sdi.yaml's own)
    tiny-cuda-nn's SphericalHarmonics encoding, which needs CUDA."""
    background = {"color_activation": "sigmoid", **(PURE_TORCH_BACKGROUND if pure_torch else {})}
    layer = {"system": {"background_type": ENVIRONMENT_MAP, "background": background}}
    return ours(h, f"env-map-{pure_torch}", {"system": {"background": None}}, layer)


def environment_map_tcnn(h: Harness) -> dict[str, Any]:
    return environment_map(h, pure_torch=False)


COMBINATIONS: dict[str, Callable[[Harness], dict[str, Any]]] = {
    "dreamfusion-system + sdi-guidance": dreamfusion,
    "dreamfusion-system + sdi-guidance, no lambda_sdi": dreamfusion_without_lambda_sdi,
    "latentnerf-system + sdi-guidance (latent renders)": latentnerf,
    "latentnerf-system + sdi-guidance (latent renders), no LR scheduler": latentnerf_without_scheduler,
    "latentnerf-system refine + sd-latent-adapter-material": latentnerf_refine,
    "latentnerf-system refine, from the run with an LR scheduler": latentnerf_refine_from_scheduled_run,
    "sdi-ext-system + implicit-sdf + neus-volume-renderer, sdi.yaml losses": neus_with_sdi_losses,
    "sdi-ext-system + implicit-sdf + neus-volume-renderer": neus,
    "sdi-ext-system + no-material (requires_normal)": no_material,
    "sdi-ext-system + no-material, no normals": no_material_without_normals,
    "sdi-ext-system + patch-renderer": patch_renderer,
    "sdi-ext-system + neural-environment-map-background (pure torch)": environment_map,
    "sdi-ext-system + neural-environment-map-background (tcnn)": environment_map_tcnn,
}
"""In order: the refinements load the weights of the latent runs."""


def matrix(h: Harness) -> dict[str, Any]:
    return {name: run(h) for name, run in COMBINATIONS.items()}
