"""``sdi-guidance``: the threestudio face of :func:`threestudio_sdi.score_distillation.guidance_step`.

A thin adapter. It loads Stable Diffusion through :func:`threestudio_sdi.models.stable_diffusion.
load_stable_diffusion`, turns threestudio's prompt-processor output into a core
:class:`~threestudio_sdi.cfg.Conditioning`, picks the step's timestep with the core policies of
:mod:`threestudio_sdi.timesteps` (threestudio's ``C()`` evaluates scheduled settings), encodes the
render with the VAE, and hands everything to the core. All DDIM, CFG and inversion math lives in the
core; this module only moves tensors between the two APIs.

With ``model_factory`` set, the model is a pixel-space denoiser built by that factory instead
(:mod:`.pixel_model`): no VAE (x0 = 2·rgb − 1), the ``cond`` from ``prompt_utils.prompt``, the cameras
of the batch for a view-conditioned model (:mod:`.batch_cameras`). The rest of the step is the same code.

Returned by a call (every ``loss_<x>`` is weighted by ``system.loss.lambda_<x>``, the scalars are
logged by the system as ``train/<key>``):

* ``loss_sdi``: ½ mean((z0 − stopgrad(ẑ0))²) (``loss_reduction: mean``, SPEC §2), or
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

The annealed t and the convexity weight follow an :class:`~.anneal_clock.AnnealClock` that a checkpoint
keeps too: a run resumed with another ``trainer.max_steps`` does not restart the anneal
(``resume_schedule``).
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

from ..cfg import Conditioning
from ..errors import check_choice
from ..fixed_point import FixedPointConfig
from ..models.accelerated import Acceleration, accelerate
from ..models.model_source import DEFAULT_MODEL_ID
from ..presets import get_preset
from ..schedule import NoiseSchedule
from ..score_distillation import GuidanceConfig, guidance_step
from ..strategies import InversionConfig, make_strategy, strategy_class, strategy_names
from ..timesteps import annealed_timestep, check_step_range, clamp_timestep, random_timestep
from .anneal_clock import RESUME_SCHEDULES, AnnealClock, resumed_clock
from .batch_cameras import cameras_from_batch
from .pixel_model import FACTORY_SETTING, PixelCodec, load_pixel_model, pixel_conditioning
from .registry import register

GUIDANCE_NAME = "sdi-guidance"
MODEL_SETTING = "system.guidance.pretrained_model_name_or_path"
LOSS_REDUCTIONS = ("mean", "sum")


def resolve_noise(enable_sdi: bool, noise: str | None) -> str:
    """The core noise strategy of the switches ``enable_sdi`` and ``noise`` (the override)."""
    if noise is None:
        return "inversion" if enable_sdi else "random"
    check_choice("noise", noise, threed_noise_strategies())
    if not enable_sdi and noise != "random":
        raise ValueError(f"enable_sdi=false means noise='random' (SDS noise), but noise={noise!r} was set")
    return noise


def threed_noise_strategies() -> tuple[str, ...]:
    """The registered strategies usable by name in 3D (``by_name_in_3d``): all but ``cached`` (2D only) and
    ``consistent-noise`` (it needs a noise field on the asset, which only the 3D lab injects)."""
    return tuple(name for name in strategy_names() if strategy_class(name).by_name_in_3d)


def conditioning_from_prompt_utils(
    prompt_utils: Any,
    elevation: Tensor,
    azimuth: Tensor,
    camera_distances: Tensor,
    view_dependent_prompting: bool = True,
) -> Conditioning:
    """threestudio's ``PromptProcessorOutput`` for a batch of cameras -> a core ``Conditioning``.

    Without Perp-Neg, ``get_text_embeddings`` returns [2B, L, D]: the B positive embeddings, then the
    B unconditional ones. With ``prompt_utils.use_perp_neg``, ``get_text_embeddings_perp_neg``
    returns [4B, L, D] — positives (B), unconditional (B), then the two negatives of each sample
    interleaved (sample b's at rows 2b and 2b + 1 of the last 2B) — and the weights [B, 2] (already
    negative), which become ``negatives=[first negatives, second negatives]``.
    """
    batch = elevation.shape[0]
    if getattr(prompt_utils, "use_perp_neg", False):
        if not view_dependent_prompting:
            raise ValueError(
                "Perp-Neg (prompt_processor.use_perp_neg=true) needs view-dependent prompting; "
                "set guidance.view_dependent_prompting=true or use_perp_neg=false"
            )
        embeddings, weights = prompt_utils.get_text_embeddings_perp_neg(
            elevation, azimuth, camera_distances, view_dependent_prompting
        )
        if embeddings.shape[0] != 4 * batch or tuple(weights.shape) != (batch, 2):
            raise ValueError(
                f"get_text_embeddings_perp_neg returned embeddings {tuple(embeddings.shape)} and weights "
                f"{tuple(weights.shape)} for {batch} cameras; expected [{4 * batch}, L, D] and [{batch}, 2]"
            )
        negatives = embeddings[2 * batch :]
        return Conditioning(
            cond=embeddings[:batch],
            uncond=embeddings[batch : 2 * batch],
            negatives=[negatives[0::2], negatives[1::2]],
            negative_weights=weights,
        )
    embeddings = prompt_utils.get_text_embeddings(
        elevation, azimuth, camera_distances, view_dependent_prompting
    )
    if embeddings.shape[0] != 2 * batch:
        raise ValueError(
            f"get_text_embeddings returned {embeddings.shape[0]} embeddings for {batch} cameras; "
            f"expected {2 * batch} (conditional, then unconditional)"
        )
    return Conditioning(cond=embeddings[:batch], uncond=embeddings[batch:])


OPTION_BLOCKS: dict[str, type] = {"inversion": InversionConfig, "fixed_point": FixedPointConfig}
"""Typed config blocks of ``sdi-guidance`` (``system.guidance.<block>.<key>``): research options owned by
the noise strategies; :func:`threestudio_sdi.strategies.make_strategy` hands each strategy the ones it takes."""


TYPED_BLOCKS: dict[str, type] = {**OPTION_BLOCKS, "acceleration": Acceleration}
"""Every typed config block of ``sdi-guidance``: the strategies' and the GPU path's (``acceleration``)."""


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
    strategy = make_strategy(
        resolve_noise(cfg.enable_sdi, cfg.noise),
        **{name: option_block(name, cfg[name]) for name in OPTION_BLOCKS},
    )
    return GuidanceConfig(
        preset=cfg.preset,
        noise=strategy,
        guidance_scale=cfg.guidance_scale,
        inversion_guidance_scale=cfg.inversion_guidance_scale,
        inversion_n_steps=cfg.inversion_n_steps,
        inversion_eta=cfg.inversion_eta,
        overshoot=cfg.overshoot,
        cfg_mode=cfg.cfg_mode,
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
                    f"{FACTORY_SETTING}={cfg.model_factory!r} names a pixel model (renders are resized "
                    "to its own shape); unset it"
                )
    if cfg.weighting_strategy is not None:
        raise ValueError(
            f"system.guidance.weighting_strategy={cfg.weighting_strategy!r} has no effect in {GUIDANCE_NAME}: "
            "SDI's weight is σ_t, implied by its x0-space loss (SPEC §2); set "
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
        """``package.module:function`` returning a pixel-space denoiser (:mod:`.pixel_model`) used instead
        of Stable Diffusion: no VAE, ``cond`` from the prompt, cameras for a view-conditioned model. The
        keys above then name only the Stable Diffusion of the prompt processor (sdi.yaml makes it follow
        ``pretrained_model_name_or_path``)."""
        model_options: dict = field(default_factory=dict)
        """Keyword arguments of ``model_factory``."""
        image_size: Optional[int] = None  # noqa: UP045
        """Renders are resized to image_size² before the VAE; None = the model's native size (512)."""

        preset: str = "paper"
        """``paper`` or ``official`` (SPEC §3): t range, overshoot, inversion grid, eta, CFG mode."""
        enable_sdi: bool = True
        """false: κ ~ N(0, I) afresh each step (SDS noise with SDI's weighting): the ablation."""
        noise: Optional[str] = None  # noqa: UP045
        """Override: ``inversion`` (SDI), ``uncond-inversion`` (ISM-style), ``random``; research:
        ``fixed-point``, ``newton-krylov``, ``safeguarded-anderson``, ``ode-target``."""
        guidance_scale: float = 7.5
        inversion_guidance_scale: float = -7.5
        inversion_n_steps: int = 10
        inversion_eta: float = 0.3
        overshoot: bool = True
        """Invert to t + δ and tell the UNet t (the "denoise slightly lower" trick); false: δ = 0."""
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
        inversion: InversionConfig = field(default_factory=InversionConfig)
        """Research options of the inversion (``order``, ``skip_origin``, ``adaptive_steps``)."""
        fixed_point: FixedPointConfig = field(default_factory=FixedPointConfig)
        """Options of ``noise=fixed-point`` (``start``, ``method``, ``max_iterations``, ...)."""
        accelerate: bool = False
        """The GPU path, same math (:mod:`threestudio_sdi.models.accelerated`): the UNet with the
        ``acceleration`` options; options the device cannot run are skipped and logged."""
        acceleration: Acceleration = field(default_factory=Acceleration)
        """``channels_last``, ``sdpa``, ``compile`` (``compile_backend``, ``compile_mode``), ``cuda_graphs``."""

        def __post_init__(self) -> None:
            # threestudio hands nested blocks to the dataclass as plain nodes: make them typed here, so
            # that a misspelt key fails when the config is parsed, before any weights load.
            for name in TYPED_BLOCKS:
                setattr(self, name, option_block(name, getattr(self, name)))

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
        if self.is_stable_diffusion:
            self.configure_stable_diffusion()
        else:
            self.configure_pixel_model()
        self.schedule = NoiseSchedule.of_model(self.model)
        self.num_train_timesteps = self.schedule.num_train_timesteps
        self.seed = torch.initial_seed() if cfg.seed is None else int(cfg.seed)
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed)
        self.nonfinite_steps = 0
        self._warned_range = False
        self.clock = AnnealClock(int(cfg.trainer_max_steps))
        # Steps of the run: sdi-ext-system sets the trainer's max_steps; a resume compares it with the
        # checkpoint's (``_resumed_from``) at the next update_step.
        self.run_steps = int(cfg.trainer_max_steps)
        self._resumed_from: Optional[int] = None  # noqa: UP045
        self.global_step = 0
        self.update_step(0, 0)
        threestudio.info(f"Loaded {'Stable Diffusion' if self.is_stable_diffusion else cfg.model_factory}!")

    @property
    def is_stable_diffusion(self) -> bool:
        """False when ``model_factory`` names a pixel model."""
        return self.cfg.model_factory is None

    def configure_pixel_model(self) -> None:
        """The factory's pixel model (:mod:`.pixel_model`): renders resized to its S × S, no VAE."""
        cfg = self.cfg
        options = OmegaConf.to_container(cfg.model_options, resolve=True)  # a node after parse_structured
        threestudio.info(f"Building the pixel model {cfg.model_factory}({options}) ...")
        self.model, side = load_pixel_model(cfg.model_factory, options)
        self.codec = PixelCodec()
        self.native_size = self.image_size = self.latent_size = side

    def configure_stable_diffusion(self) -> None:
        """The UNet and the VAE of ``pretrained_model_name_or_path``; renders resized to ``image_size``."""
        from ..models.stable_diffusion import load_stable_diffusion

        cfg = self.cfg
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
        self.model = parts.model
        self.codec = parts.codec
        del parts
        if cfg.accelerate:
            unet = accelerate(self.model, option_block("acceleration", cfg.acceleration))
            for option, reason in unet.skipped.items():
                threestudio.info(f"sdi-guidance: acceleration.{option} skipped: {reason}")
        vae_scale = 2 ** (len(self.codec.vae.config.block_out_channels) - 1)
        self.native_size = int(self.model.unet.config.sample_size) * vae_scale
        self.image_size = int(cfg.image_size or self.native_size)
        if self.image_size % vae_scale:
            raise ValueError(
                f"image_size must be a multiple of the VAE's factor {vae_scale}, got {self.image_size}"
            )
        self.latent_size = self.image_size // vae_scale

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume exactly: the generator, the fault counter, the clock."""
        return {
            "generator": self.generator.get_state(),
            "nonfinite_steps": self.nonfinite_steps,
            "schedule": self.clock.state(),
            "run_steps": self.run_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's state; the clock is reconciled with this run's length at the next step."""
        self.generator.set_state(state["generator"])
        self.nonfinite_steps = int(state.get("nonfinite_steps", 0))
        if "schedule" in state:
            self.clock = AnnealClock.from_state(state["schedule"])
            self._resumed_from = int(state["run_steps"])

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
        if rgb_as_latents and not self.is_stable_diffusion:
            raise ValueError(
                f"rgb_as_latents=true hands the guidance Stable-Diffusion latents, but {FACTORY_SETTING}="
                f"{self.cfg.model_factory!r} names a pixel model, which has no VAE: render RGB (a system "
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
        """The step's conditioning: text embeddings for Stable Diffusion; for a pixel model its
        ``prompt_condition`` and, when it is view-conditioned, the batch's cameras (``c2w``, ``fovy``)."""
        if self.is_stable_diffusion:
            return conditioning_from_prompt_utils(
                prompt_utils, elevation, azimuth, camera_distances, self.cfg.view_dependent_prompting
            )
        cameras = None
        if getattr(self.model, "view_conditioned", False):
            cameras = cameras_from_batch(
                elevation, azimuth, camera_distances, batch.get("c2w"), batch.get("fovy")
            )
        return pixel_conditioning(self.model, prompt_utils, cameras)

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
