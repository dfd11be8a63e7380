"""``sdi-ext-system``: a threestudio ``BaseLift3DSystem`` that trains any geometry with a guidance.

Training loss (SPEC §4): every ``loss_<x>`` the guidance returns times ``C(system.loss.lambda_<x>)``,
plus the regularisers of :mod:`threestudio_sdi.regularisers`, each one active when its
``lambda_`` key is in ``system.loss`` and its C()-value is > 0 at the step:

| key | term | needs from the renderer |
|---|---|---|
| ``lambda_orient`` | DreamFusion orientation | ``normal`` (geometry ``normal_type`` set), ``weights``, ``t_dirs`` |
| ``lambda_sparsity`` | mean sqrt(opacity² + 0.01) | ``opacity`` |
| ``lambda_opaque`` | opacity entropy | ``opacity`` |
| ``lambda_z_variance`` | HiFA depth variance | ``z_variance`` (skipped if absent) |
| ``lambda_convex`` | convexity of the 8×8 normal map | ``comp_normal`` (``renderer.return_comp_normal``) |

Without a ``lambda_convex`` key, ``convexity_schedule`` names the preset whose convexity schedule
applies (:func:`threestudio_sdi.regularisers.convexity_schedule`, scaled to the run's length; the
configs set it to ``${system.guidance.preset}``, and null follows the guidance's preset); set
``lambda_convex: 0.`` to turn it off.

Validation saves ``it<step>-<index>.png``: render, normal, opacity, then the guidance's noisy / κ /
target panels (``validation_guidance_panels``). Test saves the same first three for every test view
and a turntable ``it<step>-test.mp4``. Export (``--export``) is threestudio's own (``mesh-exporter``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import threestudio
import torch
from threestudio.systems.base import BaseLift3DSystem

from ..regularisers import (
    convexity_loss,
    convexity_schedule,
    opaque_loss,
    orient_loss,
    sparsity_loss,
    z_variance_loss,
)
from .registry import register

SYSTEM_NAME = "sdi-ext-system"
GUIDANCE_STATE_KEY = "sdi_guidance_state"
"""Checkpoint key of the guidance's generator state and fault counter (exact resume)."""


def has_own_state(guidance: Any) -> bool:
    """A guidance that is no ``nn.Module`` (whose weights Lightning saves anyway) but has a state_dict.

    ``sdi-guidance`` is one (its generator); duck-typed so that a re-imported class still counts.
    """
    return not isinstance(guidance, torch.nn.Module) and callable(getattr(guidance, "state_dict", None))


@register(SYSTEM_NAME)
class SDIExtSystem(BaseLift3DSystem):
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
        """Build the prompt processor and the guidance once (fit, or a validation run on its own)."""
        if getattr(self, "guidance", None) is None:
            self.prompt_processor = threestudio.find(self.cfg.prompt_processor_type)(
                self.cfg.prompt_processor
            )
            self.guidance = threestudio.find(self.cfg.guidance_type)(self.cfg.guidance)
        pending = getattr(self, "_pending_guidance_state", None)
        if pending is not None and has_own_state(self.guidance):
            self.guidance.load_state_dict(pending)
            self._pending_guidance_state = None

    # ---------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the guidance's random state so that a resumed run continues the same draws."""
        super().on_save_checkpoint(checkpoint)
        guidance = getattr(self, "guidance", None)
        if has_own_state(guidance):
            checkpoint[GUIDANCE_STATE_KEY] = guidance.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore it (now, or when the guidance is built in ``on_fit_start``)."""
        super().on_load_checkpoint(checkpoint)
        self._pending_guidance_state = checkpoint.get(GUIDANCE_STATE_KEY)
        if getattr(self, "guidance", None) is not None:
            self.ensure_guidance()

    # ---------------------------------------------------------------- losses
    def loss_weight(self, name: str) -> float:
        """C() of ``system.loss.lambda_<name>`` at this step; 0 when the key is absent."""
        key = f"lambda_{name}"
        if key in self.cfg.loss:
            return float(self.C(self.cfg.loss[key]))
        if name == "convex":
            guidance_cfg = self.cfg.guidance or {}
            preset = self.cfg.convexity_schedule or guidance_cfg.get("preset", "paper")
            max_steps = guidance_cfg.get("trainer_max_steps", 10000)
            return float(self.C(convexity_schedule(preset, int(max_steps))))
        return 0.0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        out = self(batch)
        prompt_utils = self.prompt_processor()
        guidance_out = self.guidance(out["comp_rgb"], prompt_utils, **batch, rgb_as_latents=False)

        loss = 0.0
        for name, value in guidance_out.items():
            if not (isinstance(value, torch.Tensor) and value.numel() > 1):
                self.log(f"train/{name}", value)
            if name.startswith("loss_"):
                key = name.replace("loss_", "lambda_", 1)
                if key not in self.cfg.loss:
                    raise ValueError(f"the guidance returned {name} but system.loss has no {key}")
                loss = loss + value * self.C(self.cfg.loss[key])

        regularisers = {
            "orient": lambda: orient_loss(out["weights"], out["normal"], out["t_dirs"], out["opacity"]),
            "sparsity": lambda: sparsity_loss(out["opacity"]),
            "opaque": lambda: opaque_loss(out["opacity"]),
            "z_variance": lambda: z_variance_loss(out["z_variance"], out["opacity"]),
            "convex": lambda: convexity_loss(out["comp_normal"], self.cfg.convexity_res),
        }
        needs = {"orient": "normal", "convex": "comp_normal", "z_variance": "z_variance"}
        for name, term in regularisers.items():
            weight = self.loss_weight(name)
            if weight <= 0:
                continue
            required = needs.get(name)
            if required is not None and required not in out:
                if name == "z_variance":
                    continue
                hint = "geometry.normal_type" if name == "orient" else "renderer.return_comp_normal=true"
                raise ValueError(
                    f"lambda_{name} > 0 needs the renderer output {required!r}: set system.{hint}, "
                    f"or system.loss.lambda_{name}=0"
                )
            value = term()
            self.log(f"train/loss_{name}", value)
            loss = loss + value * weight

        for name, value in self.cfg.loss.items():
            self.log(f"train_params/{name}", self.C(value))
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
