"""``sdi-ext-system``: a threestudio ``BaseLift3DSystem`` that trains any geometry with a guidance.

Training loss (docs/method.md §4): every ``loss_<x>`` the guidance returns times ``C(system.loss.lambda_<x>)``,
plus the regularisers of :mod:`threestudio_sdi.regularisers`, each one active when its
``lambda_`` key is in ``system.loss`` and its C()-value is > 0 at the step:

| key | term | needs from the renderer |
|---|---|---|
| ``lambda_orient`` | DreamFusion orientation | ``normal`` (geometry ``normal_type`` set), ``weights``, ``t_dirs`` |
| ``lambda_sparsity`` | mean sqrt(opacity² + 0.01) | ``opacity`` |
| ``lambda_opaque`` | opacity entropy | ``opacity`` |
| ``lambda_z_variance`` | HiFA depth variance | ``z_variance`` (nerf-volume-renderer) |
| ``lambda_convex`` | convexity of the 8×8 normal map | ``comp_normal`` (``renderer.return_comp_normal``) |

No setting is skipped silently: an active regulariser whose renderer output is missing raises a
ValueError naming the key, the output and the renderer (with the outputs it did return); a
``lambda_<x>`` key that weights nothing (no such regulariser, and no ``loss_<x>`` from the guidance)
raises unless it is 0; a ``loss_<x>`` without its ``lambda_<x>`` raises.

Without a ``lambda_convex`` key, ``convexity_schedule`` names the preset whose convexity schedule
applies (:func:`threestudio_sdi.regularisers.convexity_schedule`; the configs set it to
``${system.guidance.preset}``, and null follows the guidance's preset); set ``lambda_convex: 0.`` to
turn it off. It runs on the guidance's schedule clock (``schedule_position``), so t and the
convexity weight agree after a resume with another ``trainer.max_steps`` (:mod:`.anneal_clock`).

Before the guidance loads, both model keys (``system.guidance.pretrained_model_name_or_path`` and
``system.prompt_processor.pretrained_model_name_or_path``) must name the same source, and that source
must resolve (:func:`threestudio_sdi.models.model_source.check_model_source`), so that a missing
model fails with one clear message and not inside the prompt processor's subprocess.

Validation saves ``it<step>-<index>.png``: render, normal, opacity, then the guidance's noisy / κ /
target panels (``validation_guidance_panels``). Test saves the same first three for every test view
and a turntable ``it<step>-test.mp4``. Export (``--export``) is threestudio's own (``mesh-exporter``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import threestudio
import torch
from omegaconf import OmegaConf
from threestudio.systems.base import BaseLift3DSystem
from threestudio.utils.misc import C

from ..models.model_source import check_model_source
from ..regularisers import (
    convexity_loss,
    convexity_schedule,
    opaque_loss,
    orient_loss,
    sparsity_loss,
    z_variance_loss,
)
from .guidance_state import GuidanceStateMixin
from .registry import register

SYSTEM_NAME = "sdi-ext-system"

REGULARISER_INPUTS: dict[str, tuple[str, ...]] = {
    "orient": ("normal", "weights", "t_dirs", "opacity"),
    "sparsity": ("opacity",),
    "opaque": ("opacity",),
    "z_variance": ("z_variance", "opacity"),
    "convex": ("comp_normal",),
}
"""The renderer outputs each regulariser reads."""

OUTPUT_HINTS = {
    "normal": "the geometry returns normals when system.geometry.normal_type is set (e.g. analytic) and the "
    "material asks for them (no-material: system.material.requires_normal=true)",
    "comp_normal": "set system.renderer.return_comp_normal=true (nerf-volume-renderer)",
    "z_variance": "use a renderer that returns it (nerf-volume-renderer)",
}
"""How to get a renderer output a regulariser needs."""

MODEL_KEYS = ("guidance", "prompt_processor")
MODEL_KEY = "pretrained_model_name_or_path"
"""The blocks whose ``pretrained_model_name_or_path`` (or its default) must name the same Stable Diffusion."""


def schedule_value(value: Any, epoch: int, step: int) -> float:
    """threestudio's ``C()`` of a number or a schedule list (a plain list is wrapped for its ``C``)."""
    if isinstance(value, (list, tuple)):
        value = OmegaConf.create(list(value))
    return float(C(value, epoch, step))


def is_zero(value: Any) -> bool:
    """True for the number 0 (a weight that is off); schedules and other numbers are not."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


@register(SYSTEM_NAME)
class SDIExtSystem(GuidanceStateMixin, BaseLift3DSystem):
    """Score distillation of a 3D scene with SDI's regularisers (module docstring)."""

    @dataclass
    class Config(BaseLift3DSystem.Config):
        convexity_res: int = 8
        """Side of the downsampled normal map of the convexity loss."""
        validation_guidance_panels: bool = True
        """Add the guidance's noisy / κ / target images to each validation grid."""
        convexity_schedule: Optional[str] = None  # noqa: UP045
        """``paper`` or ``official``: whose convexity schedule applies without a ``lambda_convex`` key;
        None = the preset of ``system.guidance``."""

    cfg: Config

    def configure(self) -> None:
        super().configure()
        # Parse the guidance's config now (a misspelt key or a bad value fails at start-up, not after
        # the weights have loaded at the start of fit).
        check = getattr(threestudio.find(self.cfg.guidance_type), "check_config", None)
        if check is not None:
            check(self.cfg.guidance)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.renderer(**batch)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.ensure_guidance()

    def ensure_guidance(self) -> None:
        """Build the prompt processor and the guidance once (fit, or a validation run on its own), then
        attach it (:class:`GuidanceStateMixin`: run length, noise field, a checkpoint's state)."""
        if getattr(self, "guidance", None) is None:
            self.check_model_sources()
            self.prompt_processor = threestudio.find(self.cfg.prompt_processor_type)(
                self.cfg.prompt_processor
            )
            self.guidance = threestudio.find(self.cfg.guidance_type)(self.cfg.guidance)
            self.attach_guidance()
        self.restore_guidance_state()

    def model_source(self, block: str) -> Optional[str]:  # noqa: UP045
        """``system.<block>.pretrained_model_name_or_path``, or its component's default (None if it has none)."""
        value = self.cfg[block].get(MODEL_KEY)
        if value is None:
            config_class = getattr(threestudio.find(self.cfg[f"{block}_type"]), "Config", None)
            if dataclasses.is_dataclass(config_class):
                value = {item.name: item.default for item in dataclasses.fields(config_class)}.get(MODEL_KEY)
        return value if isinstance(value, str) else None

    def check_model_sources(self) -> None:
        """Both model keys name one Stable Diffusion, and it resolves (ModelSourceError otherwise)."""
        sources = {f"system.{block}.{MODEL_KEY}": self.model_source(block) for block in MODEL_KEYS}
        sources = {key: value for key, value in sources.items() if value is not None}
        if len(set(sources.values())) > 1:
            listed = ", ".join(f"{key}={value!r}" for key, value in sources.items())
            raise ValueError(
                f"the guidance and the prompt processor must use the same Stable Diffusion, got {listed}; "
                "set system.guidance.pretrained_model_name_or_path only (the configs make "
                "system.prompt_processor.pretrained_model_name_or_path follow it)"
            )
        if sources:
            check_model_source(
                next(iter(sources.values())),
                " and ".join(sources),
                local_files_only=bool(self.cfg.guidance.get("local_files_only", False)),
            )

    # ---------------------------------------------------------------- losses
    def schedule_position(self) -> tuple[int, int]:
        """(position, length) of SDI's schedules now: the guidance's clock, or (step, trainer_max_steps)."""
        step = self.true_global_step
        position = getattr(getattr(self, "guidance", None), "schedule_position", None)
        if position is not None:
            return position(step)
        return step, int((self.cfg.guidance or {}).get("trainer_max_steps", 10000))

    def loss_weight(self, name: str) -> float:
        """C() of ``system.loss.lambda_<name>`` at this step; 0 when the key is absent.

        ``convex`` without a key: the preset's convexity schedule at the guidance's schedule position.
        """
        key = f"lambda_{name}"
        if key in self.cfg.loss:
            return float(self.C(self.cfg.loss[key]))
        if name == "convex":
            preset = self.cfg.convexity_schedule or (self.cfg.guidance or {}).get("preset", "paper")
            position, length = self.schedule_position()
            return schedule_value(convexity_schedule(preset, length), self.true_current_epoch, position)
        return 0.0

    def check_loss_keys(self, guidance_losses: list[str]) -> None:
        """ValueError for a non-zero ``lambda_<x>`` that weights nothing (no regulariser, no ``loss_<x>``)."""
        regularisers = [f"lambda_{name}" for name in REGULARISER_INPUTS]
        known = {*regularisers, *(name.replace("loss_", "lambda_", 1) for name in guidance_losses)}
        unused = [key for key, value in self.cfg.loss.items() if key not in known and not is_zero(value)]
        if unused:
            raise ValueError(
                f"system.loss.{unused[0]} weights nothing in {SYSTEM_NAME}: the guidance returns "
                f"{', '.join(guidance_losses) or 'no loss'} and the regularisers are {', '.join(regularisers)}; "
                "remove it or set it to 0"
            )

    def require_outputs(self, name: str, weight: float, out: dict[str, Any]) -> None:
        """ValueError naming the regulariser, the missing renderer output and how to get it."""
        missing = [key for key in REGULARISER_INPUTS[name] if key not in out]
        if not missing:
            return
        hint = OUTPUT_HINTS.get(missing[0], "use a renderer that returns it")
        raise ValueError(
            f"system.loss.lambda_{name} is {weight:g} at step {self.true_global_step} and needs the renderer "
            f"output {missing[0]!r}, which {self.cfg.renderer_type} did not return (it returned: "
            f"{', '.join(sorted(out))}): {hint}, or set system.loss.lambda_{name}=0"
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        out = self(batch)
        prompt_utils = self.prompt_processor()
        guidance_out = self.guidance(out["comp_rgb"], prompt_utils, **batch, rgb_as_latents=False)

        loss = 0.0
        guidance_losses = [name for name in guidance_out if name.startswith("loss_")]
        self.check_loss_keys(guidance_losses)
        for name, value in guidance_out.items():
            if not (isinstance(value, torch.Tensor) and value.numel() > 1):
                self.log(f"train/{name}", value)
            if name in guidance_losses:
                key = name.replace("loss_", "lambda_", 1)
                if key not in self.cfg.loss:
                    raise ValueError(f"the guidance returned {name} but system.loss has no {key}")
                loss = loss + value * self.C(self.cfg.loss[key])

        regularisers: dict[str, Callable[[], torch.Tensor]] = {
            "orient": lambda: orient_loss(out["weights"], out["normal"], out["t_dirs"], out["opacity"]),
            "sparsity": lambda: sparsity_loss(out["opacity"]),
            "opaque": lambda: opaque_loss(out["opacity"]),
            "z_variance": lambda: z_variance_loss(out["z_variance"], out["opacity"]),
            "convex": lambda: convexity_loss(out["comp_normal"], self.cfg.convexity_res),
        }
        for name, term in regularisers.items():
            weight = self.loss_weight(name)
            if weight <= 0:
                continue
            self.require_outputs(name, weight, out)
            value = term()
            self.log(f"train/loss_{name}", value)
            loss = loss + value * weight

        for name, value in self.cfg.loss.items():
            self.log(f"train_params/{name}", self.C(value))
        if "lambda_convex" not in self.cfg.loss:
            self.log("train_params/lambda_convex", self.loss_weight("convex"))
        return {"loss": loss}

    # ---------------------------------------------------------------- images
    @staticmethod
    def render_panels(out: dict[str, Any]) -> list[dict[str, Any]]:
        """Render, normal (when present) and opacity of the first view, for save_image_grid."""
        panels = [{"type": "rgb", "img": out["comp_rgb"][0], "kwargs": {"data_format": "HWC"}}]
        if "comp_normal" in out:
            panels.append(
                {
                    "type": "rgb",
                    "img": out["comp_normal"][0],
                    "kwargs": {"data_format": "HWC", "data_range": (0, 1)},
                }
            )
        panels.append(
            {
                "type": "grayscale",
                "img": out["opacity"][0, :, :, 0],
                "kwargs": {"cmap": None, "data_range": (0, 1)},
            }
        )
        return panels

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self(batch)
        panels = self.render_panels(out)
        if self.cfg.validation_guidance_panels:
            self.ensure_guidance()
            with torch.no_grad():
                images = self.guidance(
                    out["comp_rgb"],
                    self.prompt_processor(),
                    **batch,
                    rgb_as_latents=False,
                    return_images=True,
                    evaluation=True,
                )
            for key in ("noisy_img", "noise_img", "target_img"):
                panels.append({"type": "rgb", "img": images[key][0], "kwargs": {"data_format": "HWC"}})
        self.save_image_grid(
            f"it{self.true_global_step}-{batch['index'][0]}.png",
            panels,
            name="validation_step",
            step=self.true_global_step,
        )

    def on_validation_epoch_end(self) -> None:
        pass

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self(batch)
        self.save_image_grid(
            f"it{self.true_global_step}-test/{batch['index'][0]}.png",
            self.render_panels(out),
            name="test_step",
            step=self.true_global_step,
        )

    def on_test_epoch_end(self) -> None:
        self.save_img_sequence(
            f"it{self.true_global_step}-test",
            f"it{self.true_global_step}-test",
            r"(\d+)\.png",
            save_format="mp4",
            fps=30,
            name="test",
            step=self.true_global_step,
        )
