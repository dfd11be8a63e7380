"""``sdi-guidance``: the threestudio face of :func:`threestudio_sdi.score_distillation.guidance_step`.

A thin adapter: it loads a backbone (:mod:`.backbone`: Stable Diffusion, or ``model_factory``'s), turns
the prompt processor's output into a core ``Conditioning``, picks t with :mod:`threestudio_sdi.timesteps`,
encodes the render and hands all to the core, where every line of DDIM, CFG and inversion math lives.

Settings: ``noise`` chooses the noise strategy (``inversion`` SDI, ``uncond-inversion`` ISM, ``random``
SDS noise, or a research one, which loads :mod:`threestudio_sdi.experimental`), ``noise_options`` are
that strategy's options, and ``inversion`` is the one typed block of the inversion's settings (γ_inv,
n, η, overshoot). A misspelt key of either fails when the config is parsed, before any weights load.

Returned by a call (every ``loss_<x>`` is weighted by ``system.loss.lambda_<x>``, the scalars are
logged by the system as ``train/<key>``):

* ``loss_sdi``: ½ mean((z0 − stopgrad(ẑ0))²) (``loss_reduction: mean``, docs/method.md §2), or
  ½ Σ(z0 − ẑ0)² / B (``sum``, the scale of threestudio's SDS);
* ``grad_norm`` ‖z0 − ẑ0‖; ``min_step`` / ``max_step`` the step's timestep range; ``timestep`` the t
  the UNet was told; ``timestep_noisy`` the noise level t' = t + δ of its input;
  ``model_evaluations`` the guided UNet evaluations of the step (inversion hops + 1);
* with ``return_images=True``: ``noisy_img``, ``noise_img`` (κ decoded as if it were a latent, for
  display only, as the released code does) and ``target_img`` — [B, H, W, 3] in [0, 1] at the
  render's resolution — and the latents ``latents``, ``target_latent``, ``noise``, ``noise_pred``.

Random draws (VAE posterior sample, overshoot δ, η noise, SDS noise, t without annealing) come from the
guidance's own ``torch.Generator``, whose state a checkpoint of ``sdi-ext-system`` keeps. A call with
``evaluation=True`` (validation and test panels) draws from a generator seeded from (seed, step, view
index) instead and leaves the training state alone, so panels never change what training draws.

The annealed t and the convexity weight follow an :class:`~.anneal_clock.AnnealClock` the checkpoint
keeps: a resume with another ``trainer.max_steps`` does not restart the anneal (``resume_schedule``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import threestudio
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from threestudio.utils.base import BaseObject
from threestudio.utils.config import parse_structured
from threestudio.utils.misc import C
from torch import Tensor

from ..classifier_free import Conditioning
from ..errors import check_choice
from ..models.accelerated import Acceleration, accelerate
from ..models.model_source import DEFAULT_MODEL_ID
from ..presets import get_preset
from ..schedule import NoiseSchedule
from ..score_distillation import GuidanceConfig, guidance_step
from ..strategies import InversionConfig, make_strategy, strategy_class
from ..timesteps import annealed_timestep, check_step_range, clamp_timestep, random_timestep
from .anneal_clock import RESUME_SCHEDULES, AnnealClock, resumed_clock
from .backbone import FACTORY_SETTING, StableDiffusionBackbone, load_backbone
from .batch_cameras import cameras_from_batch
from .noise_fields import NoiseFieldSource
from .registry import register

GUIDANCE_NAME = "sdi-guidance"
MODEL_SETTING = "system.guidance.pretrained_model_name_or_path"
LOSS_REDUCTIONS = ("mean", "sum")


def noise_strategy(noise: str, options: Any) -> Any:
    """The strategy ``noise`` with ``noise_options``; ValueError naming ``system.guidance.<key>``.

    ``cached`` (the caller's κ, 2D only) has no meaning in a threestudio step and is refused.
    """
    setting = "system.guidance.noise_options"
    options = (
        OmegaConf.to_container(options, resolve=True) if OmegaConf.is_config(options) else dict(options or {})
    )
    try:
        if strategy_class(noise).takes_cached_noise:
            raise ValueError(f"noise={noise!r} takes the caller's κ (2D only); a threestudio step has none")
        return make_strategy(noise, options, setting=setting)
    except ValueError as error:
        raise ValueError(f"system.guidance.noise={noise!r}: {error}") from error


TYPED_BLOCKS: dict[str, type] = {"inversion": InversionConfig, "acceleration": Acceleration}
"""The typed config blocks of ``sdi-guidance``: the inversion's settings and the GPU path's."""


def option_block(name: str, value: Any) -> Any:
    """The block ``name`` of :data:`TYPED_BLOCKS` as its dataclass, from an instance, a dict or a node.

    ValueError naming ``system.guidance.<name>.<key>`` for an unknown key (threestudio passes nested
    blocks to the Config unchecked) or a bad value.
    """
    cls = TYPED_BLOCKS[name]
    if isinstance(value, cls):
        return value
    options = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else dict(value or {})
    known = [item.name for item in dataclasses.fields(cls)]
    for key in options:
        if key not in known:
            raise ValueError(
                f"system.guidance.{name}.{key} is not an option of {cls.__name__}; known: {', '.join(known)}"
            )
    return cls(**options)


def core_guidance_config(cfg: Any) -> GuidanceConfig:
    """The core :class:`GuidanceConfig` of an ``sdi-guidance`` config (ValueError naming a bad key)."""
    return GuidanceConfig(
        preset=cfg.preset,
        noise=noise_strategy(cfg.noise, cfg.noise_options),
        guidance_scale=cfg.guidance_scale,
        cfg_mode=cfg.cfg_mode,
        inversion=option_block("inversion", cfg.inversion),
    )


def check_adapter_settings(cfg: Any) -> None:
    """ValueError naming a bad setting of the adapter itself (the core checks its own)."""
    check_choice("loss_reduction", cfg.loss_reduction, LOSS_REDUCTIONS)
    check_choice("resume_schedule", cfg.resume_schedule, RESUME_SCHEDULES)
    if cfg.image_size is not None and cfg.image_size < 8:
        raise ValueError(f"image_size must be >= 8 or null, got {cfg.image_size}")
    if cfg.model_factory is not None:
        for key, value in (("image_size", cfg.image_size), ("accelerate", cfg.accelerate)):
            if value:
                raise ValueError(
                    f"system.guidance.{key}={value!r} applies to Stable Diffusion, but "
                    f"{FACTORY_SETTING}={cfg.model_factory!r} names another backbone (it sets its own "
                    "input size); unset it"
                )
    if cfg.weighting_strategy is not None:
        raise ValueError(
            f"system.guidance.weighting_strategy={cfg.weighting_strategy!r} has no effect in {GUIDANCE_NAME}: "
            "SDI's weight is σ_t, implied by its x0-space loss (docs/method.md §2); set "
            "system.guidance.weighting_strategy=null (a threestudio SD config switched to sdi-guidance keeps it)"
        )


@register(GUIDANCE_NAME)
class SDIGuidance(BaseObject):
    """Score Distillation via Reparametrized DDIM as a threestudio guidance (module docstring)."""

    @dataclass
    class Config(BaseObject.Config):
        # typing.Optional, not ``X | None``: OmegaConf evaluates these annotations, on Python 3.9 too.
        pretrained_model_name_or_path: str = DEFAULT_MODEL_ID
        """Hub id or local folder of a Stable Diffusion pipeline (loaded like real weights); the
        default is a community mirror of SD 2.1-base (:mod:`threestudio_sdi.models.model_source`)."""
        local_files_only: bool = False
        half_precision_weights: bool = True
        """float16 UNet/VAE on CUDA; always float32 on CPU."""
        model_factory: Optional[str] = None  # noqa: UP045
        """``package.module:function`` returning a backbone (:mod:`.backbone`) used instead of Stable
        Diffusion, e.g. a pixel-space prior with its own codec and conditioning. The keys above then name
        only the Stable Diffusion of the prompt processor (sdi.yaml makes it follow
        ``pretrained_model_name_or_path``)."""
        model_options: dict = field(default_factory=dict)
        """Keyword arguments of ``model_factory``."""
        image_size: Optional[int] = None  # noqa: UP045
        """Renders are resized to image_size² before the VAE; None = the model's native size (512)."""

        preset: str = "paper"
        """``paper`` or ``official`` (docs/method.md §3): t range, overshoot, inversion grid, eta, CFG mode."""
        noise: str = "inversion"
        """The noise strategy: ``inversion`` (SDI), ``uncond-inversion`` (ISM-style), ``random`` (SDS noise
        with SDI's weighting: the ablation); research (loads threestudio_sdi.experimental):
        ``research-inversion``, ``fixed-point``, ``newton-krylov``, ``safeguarded-anderson``,
        ``ode-target``, ``consistent-noise``."""
        noise_options: dict = field(default_factory=dict)
        """The strategy's options (its dataclass fields), e.g. ``{max_iterations: 5}`` for fixed-point."""
        guidance_scale: float = 7.5
        inversion: InversionConfig = field(default_factory=InversionConfig)
        """The inversion's settings: ``guidance_scale`` (γ_inv, −7.5), ``n_steps`` (10), ``eta`` (0.3),
        ``overshoot`` (invert to t + δ and tell the UNet t, the "denoise slightly lower" trick)."""
        cfg_mode: Optional[str] = None  # noqa: UP045
        """``standard`` or ``quirk`` CFG without Perp-Neg; None = the preset's."""

        t_anneal: bool = True
        """t decays linearly from max to min over trainer_max_steps; false: t ~ U{min..max} (SDS)."""
        min_step_percent: Optional[Any] = None  # noqa: UP045
        """None = the preset's; a number or a threestudio C() schedule."""
        max_step_percent: Optional[Any] = None  # noqa: UP045
        trainer_max_steps: int = 10000
        """Length of the anneal (the configs set ``${trainer.max_steps}``); a checkpoint keeps it."""
        resume_schedule: str = "keep"
        """A run resumed with another trainer.max_steps: ``keep`` the schedule's length (t then stays
        at its minimum), or ``stretch`` the rest of it over the new run (:mod:`.anneal_clock`)."""

        loss_reduction: str = "mean"
        weighting_strategy: Optional[str] = None  # noqa: UP045
        """Must stay null: SDI's weight is σ_t. The key exists because threestudio's SD configs set it and
        an OmegaConf merge cannot delete it when ``guidance_type`` switches to sdi-guidance."""
        view_dependent_prompting: bool = True
        seed: Optional[int] = None  # noqa: UP045
        """Seed of the guidance's own torch.Generator (VAE sample, δ, η and SDS noise); None = the
        global seed in force when the guidance is built (threestudio's ``seed``). Its state is saved in
        and restored from checkpoints by ``sdi-ext-system``, so a resumed run draws what an
        uninterrupted one would."""
        accelerate: bool = False
        """The GPU path, same math (:mod:`threestudio_sdi.models.accelerated`): the UNet with the
        ``acceleration`` options; options the device cannot run are skipped and logged."""
        acceleration: Acceleration = field(default_factory=Acceleration)
        """``channels_last``, ``sdpa``, ``compile`` (``compile_backend``, ``compile_mode``), ``cuda_graphs``."""

        def __post_init__(self) -> None:
            # threestudio hands nested blocks to the dataclass as plain nodes: make them typed here, and
            # build the strategy once, so that a misspelt key fails when the config is parsed, before
            # any weights load.
            for name in TYPED_BLOCKS:
                setattr(self, name, option_block(name, getattr(self, name)))
            noise_strategy(self.noise, self.noise_options)

    cfg: Config

    @classmethod
    def check_config(cls, cfg: Any) -> GuidanceConfig:
        """Parse an ``sdi-guidance`` config as threestudio does and build its core config (no weights)."""
        parsed = parse_structured(cls.Config, cfg)
        check_adapter_settings(parsed)
        return core_guidance_config(parsed)

    def configure(self) -> None:
        cfg = self.cfg
        check_adapter_settings(cfg)
        self.preset = get_preset(cfg.preset)
        self.guidance_config = core_guidance_config(cfg)
        self.device = torch.device(self.device)
        self.backbone = self.load_backbone()
        self.model, self.codec = self.backbone.model, self.backbone.codec
        self.image_size, self.latent_size = self.backbone.image_size, self.backbone.latent_size
        self.schedule = NoiseSchedule.of_model(self.model)
        self.num_train_timesteps = self.schedule.num_train_timesteps
        self.seed = torch.initial_seed() if cfg.seed is None else int(cfg.seed)
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed)
        self.nonfinite_steps = 0
        self.noise_field: Optional[NoiseFieldSource] = None  # noqa: UP045  (bound by the system)
        self._warned_range = False
        self.clock = AnnealClock(int(cfg.trainer_max_steps))
        # Steps of the run: sdi-ext-system sets the trainer's max_steps; a resume compares it with the
        # checkpoint's (``_resumed_from``) at the next update_step.
        self.run_steps = int(cfg.trainer_max_steps)
        self._resumed_from: Optional[int] = None  # noqa: UP045
        self.global_step = 0
        self.update_step(0, 0)
        threestudio.info(f"Loaded {cfg.model_factory or 'Stable Diffusion'}!")

    def load_backbone(self) -> Any:
        """Stable Diffusion from ``pretrained_model_name_or_path`` (the UNet accelerated on request), or
        the backbone ``model_factory`` returns (:mod:`.backbone`)."""
        cfg = self.cfg
        if cfg.model_factory is not None:
            options = OmegaConf.to_container(cfg.model_options, resolve=True)  # a node after parse_structured
            threestudio.info(f"Building the backbone {cfg.model_factory}({options}) ...")
            return load_backbone(cfg.model_factory, options)
        from ..models.stable_diffusion import load_stable_diffusion

        half = bool(cfg.half_precision_weights) and self.device.type == "cuda"
        threestudio.info(f"Loading Stable Diffusion from {cfg.pretrained_model_name_or_path} ...")
        parts = load_stable_diffusion(
            cfg.pretrained_model_name_or_path,
            device=self.device,
            half_precision=half,
            local_files_only=cfg.local_files_only,
            setting=MODEL_SETTING,
        )
        # The prompt processor owns the text side; keeping only the UNet and the VAE frees the text encoder.
        if cfg.accelerate:
            unet = accelerate(parts.model, option_block("acceleration", cfg.acceleration))
            for option, reason in unet.skipped.items():
                threestudio.info(f"sdi-guidance: acceleration.{option} skipped: {reason}")
        return StableDiffusionBackbone(parts.model, parts.codec, cfg.image_size, cfg.view_dependent_prompting)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume exactly: the generator, the fault counter, the clock."""
        state = {
            "generator": self.generator.get_state(),
            "nonfinite_steps": self.nonfinite_steps,
            "schedule": self.clock.state(),
            "run_steps": self.run_steps,
        }
        if callable(getattr(self.noise_field, "state_dict", None)):
            state["noise_field"] = self.noise_field.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's state; the clock is reconciled with this run's length at the next step."""
        self.generator.set_state(state["generator"])
        self.nonfinite_steps = int(state.get("nonfinite_steps", 0))
        if "schedule" in state:
            self.clock = AnnealClock.from_state(state["schedule"])
            self._resumed_from = int(state["run_steps"])
        if "noise_field" in state and callable(getattr(self.noise_field, "load_state_dict", None)):
            self.noise_field.load_state_dict(state["noise_field"])

    # ---------------------------------------------------------------- schedule
    def step_range(self, epoch: int, global_step: int) -> tuple[float, float]:
        """(min, max) step percents at this step: the C()-evaluated settings or the preset's."""
        low = self.cfg.min_step_percent
        high = self.cfg.max_step_percent
        low = self.preset.min_step_percent if low is None else C(low, epoch, global_step)
        high = self.preset.max_step_percent if high is None else C(high, epoch, global_step)
        return check_step_range(low, high)

    def schedule_position(self, global_step: int) -> tuple[int, int]:
        """(position, length) of SDI's schedules at ``global_step`` (:class:`AnnealClock`)."""
        return self.clock.position(global_step), self.clock.length

    def reconcile_resumed_clock(self, global_step: int) -> None:
        """After a resume: keep or stretch the checkpoint's schedule for this run's length (warn once)."""
        if self._resumed_from is None:
            return
        self.clock, message = resumed_clock(
            self.clock, global_step, self._resumed_from, self.run_steps, self.cfg.resume_schedule
        )
        self._resumed_from = None
        if message is not None:
            threestudio.warn(message)

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        self.reconcile_resumed_clock(global_step)
        self.global_step = int(global_step)
        low, high = self.step_range(epoch, global_step)
        self.min_step_percent, self.max_step_percent = low, high
        total = self.num_train_timesteps
        if self.cfg.t_anneal:
            position, length = self.schedule_position(global_step)
            t = annealed_timestep(position, length, low, high, total)
            self.min_step = self.max_step = t
        else:
            self.min_step = clamp_timestep(int(total * low), total)
            self.max_step = clamp_timestep(int(total * high), total)

    def draw_timestep(self, generator: Optional[torch.Generator] = None) -> int:  # noqa: UP045
        """The step's t, shared by every view of the batch (drawn from ``generator``, default the training one)."""
        if self.cfg.t_anneal:
            return self.min_step
        return random_timestep(
            self.min_step_percent,
            self.max_step_percent,
            self.num_train_timesteps,
            self.generator if generator is None else generator,
        )

    def evaluation_generator(self, index: Any = None) -> torch.Generator:
        """A generator for validation / test panels, seeded from (seed, step, first view index).

        The same panel for the same run, step and view however often validation runs; the training
        generator is never touched.
        """
        view = int(torch.as_tensor(index).flatten()[0]) if index is not None else 0
        seed = ((self.seed * 1_000_003 + self.global_step) * 1_000_003 + view) % (2**63 - 1)
        return torch.Generator(device="cpu").manual_seed(seed)

    # ---------------------------------------------------------------- images
    def check_render(self, rgb: Tensor, rgb_as_latents: bool) -> Tensor:
        """The render on the model's device in float32, or ValueError saying what is wrong with it.

        Renders must be [B, H, W, 3] in [0, 1] (latents [B, H, W, 4] with ``rgb_as_latents``), B ≥ 1,
        finite. Values slightly outside [0, 1] (compositing overshoot) are clamped, with one warning.
        Any floating dtype and device are accepted: the render is moved and cast, gradients included.
        """
        if rgb_as_latents and not self.backbone.has_latents:
            raise ValueError(
                f"rgb_as_latents=true hands the guidance Stable-Diffusion latents, but {FACTORY_SETTING}="
                f"{self.cfg.model_factory!r} names a backbone without latents: render RGB (a system "
                "such as latentnerf-system, whose renders are latents, needs Stable Diffusion)"
            )
        channels = 4 if rgb_as_latents else 3
        if rgb.ndim != 4 or rgb.shape[-1] != channels or rgb.shape[0] == 0:
            what = "latents [B, H, W, 4] (rgb_as_latents=true)" if rgb_as_latents else "renders [B, H, W, 3]"
            raise ValueError(f"sdi-guidance expects {what} with B >= 1, got shape {tuple(rgb.shape)}")
        if not rgb.is_floating_point():
            raise ValueError(f"the render must be a floating-point tensor, got {rgb.dtype}")
        if not rgb.isfinite().all():
            raise ValueError(
                "the render holds NaN or Inf: the 3D model diverged before the guidance ran "
                "(lower the learning rate, or resume from an earlier checkpoint)"
            )
        rgb = rgb.to(self.device, torch.float32)
        if not rgb_as_latents and (rgb.min() < 0 or rgb.max() > 1):
            if not self._warned_range:
                threestudio.warn(
                    f"render values in [{rgb.min().item():.3g}, {rgb.max().item():.3g}] are clamped to [0, 1]"
                )
                self._warned_range = True
            rgb = rgb.clamp(0, 1)
        return rgb

    def encode_images(self, rgb: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:  # noqa: UP045
        """Renders [B, H, W, 3] in [0, 1] -> latents [B, 4, h, w], differentiable (resize + VAE)."""
        images = rgb.permute(0, 3, 1, 2).float()
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(
                images, (self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        generator = self.generator if generator is None else generator
        return self.codec.encode(images, mode="sample", generator=generator)

    def decode_panel(self, latents: Tensor, height: int, width: int) -> Tensor:
        """Latents -> images [B, height, width, 3] in [0, 1] (no grad), for validation panels."""
        images = self.decode_latents(latents)
        if images.shape[-2:] != (height, width):
            images = F.interpolate(images, (height, width), mode="bilinear", align_corners=False)
        return images.permute(0, 2, 3, 1)

    def decode_latents(
        self,
        latents: Tensor,
        latent_height: Optional[int] = None,  # noqa: UP045
        latent_width: Optional[int] = None,  # noqa: UP045
    ) -> Tensor:
        """Latents [B, 4, h, w] -> images [B, 3, H, W] in [0, 1] (no grad), as threestudio's SD guidances do.

        The latents are first resized to ``latent_height`` × ``latent_width`` (default the model's
        latent size); ``latentnerf-system`` calls this to show renders that are latents.
        """
        size = (latent_height or self.latent_size, latent_width or self.latent_size)
        latents = latents.float()
        if latents.shape[-2:] != size:
            latents = F.interpolate(latents, size, mode="bilinear", align_corners=False)
        return self.codec.decode(latents)

    def conditioning(
        self,
        prompt_utils: Any,
        elevation: Tensor,
        azimuth: Tensor,
        camera_distances: Tensor,
        batch: dict[str, Any],
    ) -> Conditioning:
        """The step's conditioning from the backbone; a view-conditioned model also gets the batch's
        cameras (``c2w``, ``fovy``)."""
        cameras = None
        if getattr(self.model, "view_conditioned", False):
            cameras = cameras_from_batch(
                elevation, azimuth, camera_distances, batch.get("c2w"), batch.get("fovy")
            )
        return self.backbone.conditioning(prompt_utils, elevation, azimuth, camera_distances, cameras)

    @property
    def uses_noise_field(self) -> bool:
        """True when the noise strategy reads a noise field fixed on the asset (:mod:`.noise_fields`)."""
        return bool(getattr(self.guidance_config.strategy, "uses_noise_field", False))

    def render_noise_field(self, batch: dict[str, Any], latents: Tensor) -> Optional[Tensor]:  # noqa: UP045
        """The step's views of the bound noise field (None when the strategy uses none)."""
        if not self.uses_noise_field:
            return None
        if self.noise_field is None:
            raise ValueError(
                f"system.guidance.noise={self.cfg.noise!r} needs a noise field fixed on the asset, and no "
                "system gave this guidance one: sdi-ext-system does when training starts "
                "(threestudio_sdi.threestudio.noise_fields.bind_noise_field)"
            )
        return self.noise_field(batch, tuple(latents.shape)).to(latents)

    # ---------------------------------------------------------------- call
    def __call__(
        self,
        rgb: Tensor,
        prompt_utils: Any,
        elevation: Tensor,
        azimuth: Tensor,
        camera_distances: Tensor,
        rgb_as_latents: bool = False,
        guidance_eval: bool = False,
        return_images: bool = False,
        evaluation: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """One guidance step (module docstring). ``evaluation=True``: a validation / test call, whose
        draws come from :meth:`evaluation_generator` (``kwargs["index"]``, threestudio's view index) and
        which leaves the training generator and the fault counter alone."""
        if guidance_eval:
            raise ValueError(
                "sdi-guidance does not implement threestudio's guidance_eval roll-outs; set "
                "system.freq.guidance_eval=0 (sdi-ext-system shows the noisy / κ / target panels instead)"
            )
        rgb = self.check_render(rgb, rgb_as_latents)
        batch, height, width = rgb.shape[:3]
        if elevation.shape[0] != batch:
            raise ValueError(f"elevation has {elevation.shape[0]} cameras but rgb has batch {batch}")
        generator = self.evaluation_generator(kwargs.get("index")) if evaluation else self.generator
        with torch.autocast(device_type=rgb.device.type, enabled=False):
            if rgb_as_latents:
                latents = F.interpolate(
                    rgb.permute(0, 3, 1, 2).float(),
                    (self.latent_size, self.latent_size),
                    mode="bilinear",
                    align_corners=False,
                )
            else:
                latents = self.encode_images(rgb, generator)
            conditioning = self.conditioning(prompt_utils, elevation, azimuth, camera_distances, kwargs)
            step = guidance_step(
                self.model,
                latents,
                self.draw_timestep(generator),
                conditioning,
                self.guidance_config,
                generator=generator,
                schedule=self.schedule,
                noise_field=self.render_noise_field(
                    {
                        "elevation": elevation,
                        "azimuth": azimuth,
                        "camera_distances": camera_distances,
                        **kwargs,
                    },
                    latents,
                ),
            )
            if not evaluation:
                self.nonfinite_steps += len(step.nonfinite)
            if self.cfg.loss_reduction == "mean":
                loss = step.loss
            else:
                loss = 0.5 * F.mse_loss(latents, step.target, reduction="sum") / batch
        out: dict[str, Any] = {
            "loss_sdi": loss,
            "grad_norm": step.grad_norm,
            "min_step": self.min_step,
            "max_step": self.max_step,
            "timestep": step.t,
            "timestep_noisy": step.t_prime,
            "model_evaluations": step.model_evaluations,
            "nonfinite_steps": self.nonfinite_steps,
        }
        if return_images:
            out.update(
                noisy_img=self.decode_panel(step.x_noisy, height, width),
                noise_img=self.decode_panel(step.noise, height, width),
                target_img=self.decode_panel(step.target, height, width),
                latents=latents.detach(),
                target_latent=step.target,
                noise=step.noise,
                noise_pred=step.noise_pred,
            )
        return out
