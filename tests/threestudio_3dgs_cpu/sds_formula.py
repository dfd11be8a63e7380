"""threestudio's SDS, term for term, on any backbone of sdi-guidance (test harness; registered on demand).

``stable-diffusion-guidance`` cannot load the 3D lab's exact prior (it needs a diffusers pipeline), so the
densification comparison of SDI and SDS on the same prior uses this guidance, ``backbone-sds-guidance``,
which does what threestudio's ``compute_grad_sds`` does (threestudio 28d9d80), with the model of
``model_factory`` (:mod:`threestudio_sdi.threestudio.backbone`) instead of Stable Diffusion:

* t ~ U{min_step … max_step}, one per view, from ``C(min_step_percent)`` and ``C(max_step_percent)``;
* x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε with fresh ε;
* ε̂ = ε_c + γ (ε_c − ε_u) (threestudio's CFG: the conditional branch plus γ times the difference);
* grad = (1 − ᾱ_t)(ε̂ − ε) (``weighting_strategy: sds``), ``nan_to_num``, no clipping;
* ``loss_sds`` = ½ Σ (x0 − stopgrad(x0 − grad))² / B, so that ∂loss/∂x0 = grad / B.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

NAME = "backbone-sds-guidance"


def register(threestudio: Any) -> None:
    """Register :class:`BackboneSDS` under :data:`NAME` (once per process)."""
    if NAME in threestudio.__modules__:
        return
    from threestudio.utils.base import BaseObject
    from threestudio.utils.misc import C

    from threestudio_sdi.classifier_free import guided_epsilon
    from threestudio_sdi.schedule import NoiseSchedule
    from threestudio_sdi.threestudio.backbone import load_backbone
    from threestudio_sdi.threestudio.batch_cameras import cameras_from_batch

    @threestudio.register(NAME)
    class BackboneSDS(BaseObject):
        @dataclass
        class Config(BaseObject.Config):
            model_factory: str = ""
            model_options: dict = field(default_factory=dict)
            guidance_scale: float = 100.0
            weighting_strategy: str = "sds"
            min_step_percent: Any = 0.02
            max_step_percent: Any = 0.98
            seed: int = 0

        cfg: Config

        def configure(self) -> None:
            from omegaconf import OmegaConf

            if self.cfg.weighting_strategy != "sds":
                raise ValueError(f"{NAME} implements weighting_strategy=sds only")
            self.backbone = load_backbone(
                self.cfg.model_factory, OmegaConf.to_container(self.cfg.model_options)
            )
            self.model = self.backbone.model
            self.schedule = NoiseSchedule.of_model(self.model)
            self.alphas = self.schedule.alphas_cumprod.float()
            self.total = self.schedule.num_train_timesteps
            self.generator = torch.Generator().manual_seed(int(self.cfg.seed))
            self.update_step(0, 0)

        def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
            self.min_step = int(self.total * C(self.cfg.min_step_percent, epoch, global_step))
            self.max_step = int(self.total * C(self.cfg.max_step_percent, epoch, global_step))

        def __call__(
            self, rgb, prompt_utils, elevation, azimuth, camera_distances, rgb_as_latents=False, **kwargs
        ):
            batch = rgb.shape[0]
            images = torch.nn.functional.interpolate(
                rgb.permute(0, 3, 1, 2), (self.backbone.image_size,) * 2, mode="bilinear", align_corners=False
            )
            x0 = self.backbone.codec.encode(images)
            t = torch.randint(self.min_step, self.max_step + 1, [batch], generator=self.generator)
            noise = torch.randn(x0.shape, generator=self.generator)
            grads = []
            for view in range(batch):
                alpha_bar = self.alphas[t[view]]
                cameras = cameras_from_batch(
                    elevation[view : view + 1],
                    azimuth[view : view + 1],
                    camera_distances[view : view + 1],
                    kwargs["c2w"][view : view + 1],
                    kwargs["fovy"][view : view + 1],
                )
                conditioning = self.backbone.conditioning(
                    prompt_utils,
                    elevation[view : view + 1],
                    azimuth[view : view + 1],
                    camera_distances[view : view + 1],
                    cameras,
                )
                with torch.no_grad():
                    x_t = (
                        alpha_bar.sqrt() * x0[view : view + 1]
                        + (1 - alpha_bar).sqrt() * noise[view : view + 1]
                    )
                    eps = guided_epsilon(
                        self.model, x_t.detach(), int(t[view]), conditioning, self.cfg.guidance_scale, "quirk"
                    )
                grads.append((1 - alpha_bar) * (eps - noise[view : view + 1]))
            grad = torch.nan_to_num(torch.cat(grads))
            target = (x0 - grad).detach()
            loss = 0.5 * torch.nn.functional.mse_loss(x0, target, reduction="sum") / batch
            return {
                "loss_sds": loss,
                "grad_norm": grad.norm(),
                "min_step": self.min_step,
                "max_step": self.max_step,
            }
