"""The exact view-conditioned prior of the 3D lab: per view, a mixture over renders of known assets.

At camera θ, the clean image x0 ∈ R^d (d = 3·H·W, pixels in [−1, 1]) of class c is distributed as

    p(x0 | c, θ) = Σ_{k ∈ c} π_{k|c}(θ) N(x0; μ_k(θ), s² I),     μ_k(θ) = render(asset_k, θ),

over the class's variants k (the ground-truth assets of :mod:`threestudio_sdi.experimental.lab3d.assets`, rendered by
:mod:`threestudio_sdi.experimental.lab3d.renderer`); unconditionally (cond = None) every class, π_k = π_c π_{k|c}
with π_c = 1/C. With x_t = sqrt(ᾱ) x0 + sqrt(1−ᾱ) ε the noisy marginal is the same mixture with means
sqrt(ᾱ) μ_k and variance v = ᾱ s² + 1 − ᾱ, so the noise prediction is exact and in closed form:

    ε̂(x_t) = −sqrt(1−ᾱ) ∇ log p_t(x_t) = sqrt(1−ᾱ)/v · (x_t − sqrt(ᾱ) Σ_k r_k μ_k),
    r_k ∝ π_k exp(−‖x_t − sqrt(ᾱ) μ_k‖² / (2v))

(responsibilities within the condition's components), in float64. Every view of a batch is its own
mixture, at its own camera, as a view-conditioned diffusion model evaluates each view on its own;
classifier-free guidance and DDIM inversion then work exactly as on the 2D models.

Two priors:

* :class:`ExactViewPrior` (*view-consistent*): π_{k|c} = 1/n_c at every view. Its samples at any single
  view are renders of one true asset (plus N(0, s²) pixel noise): a 3D-consistent prior.
* :class:`ViewInconsistentPrior`: the variant is chosen by the view. Variant j of a class's n_c has a
  home azimuth φ_j = −180° + 360°·j/n_c and π_{k|c}(θ) ∝ exp(cos(φ(θ) − φ_k)/τ): each view favours the
  variant whose home is nearest its azimuth. With a small temperature τ each view's prior is nearly one
  Gaussian, but no single asset explains all views: the setting of content drift and Janus artefacts.

**Cost.** The means μ_k(θ) of every asset at the batch's cameras are rendered once (all K assets in one
ray march, float64) and cached for the last camera batch: a guidance step evaluates the model ~10 times
at the same cameras. An evaluation is then O(B·K·d).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ...classifier_free import Cameras
from ...denoiser import PREDICTION_TYPES
from ...errors import check_choice, check_range
from ...models.protocol import ScheduledModel
from ...prediction import output_from_epsilon
from ...schedule import NoiseSchedule
from ...testing.gaussian import (
    alpha_bar_per_sample,
    check_batch,
    check_schedule,
    class_components,
)
from .assets import AssetSet
from .renderer import RenderSettings, render

DEFAULT_NOISE_STD = 0.05
"""s, the pixel noise of each component (in the [−1, 1] pixel scale: 0.025 of the [0, 1] range)."""


def _same_cameras(a: Cameras, b: Cameras) -> bool:
    """True when two camera batches are the same object or hold equal tensors."""
    if a is b:
        return True
    for name in ("elevation", "azimuth", "distance", "c2w", "fovy"):
        x, y = getattr(a, name), getattr(b, name)
        if (x is None) != (y is None) or (x is not None and (x.shape != y.shape or not torch.equal(x, y))):
            return False
    return True


class ExactViewPrior(ScheduledModel):
    """The view-consistent exact prior (module docstring); a view-conditioned denoiser.

    Implements :class:`threestudio_sdi.denoiser.Denoiser` with ``view_conditioned = True``: every call
    needs ``cameras=`` (:class:`~threestudio_sdi.classifier_free.Cameras`, one per view). ``cond`` is None (every
    class), a class index, or a LongTensor[B] of class indices.

    Args:
        assets: the ground-truth assets (their classes define the conditions).
        render_settings: image size, samples per ray and background of the means μ_k(θ).
        noise_std: s > 0, the pixel standard deviation of each component.
        schedule: training schedule (default Stable Diffusion's).
        prediction_type: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
    """

    view_conditioned = True

    def __init__(
        self,
        assets: AssetSet,
        render_settings: RenderSettings,
        noise_std: float = DEFAULT_NOISE_STD,
        schedule: NoiseSchedule | None = None,
        prediction_type: str = "epsilon",
    ) -> None:
        self.assets = assets
        self.render_settings = render_settings
        self.noise_std = check_range("noise_std", noise_std, 0.0, low_open=True)
        self.schedule = check_schedule(schedule)
        self.prediction_type = check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        self.dtype = torch.float64
        size = render_settings.image_size
        self.shape = (3, size, size)
        self.dim = 3 * size * size
        self.num_classes = assets.num_classes
        self._class_masks = assets.classes[None, :] == torch.arange(self.num_classes)[:, None]  # [C, K]
        self._cache: tuple[Cameras, Tensor] | None = None

    # ------------------------------------------------------------------ the mixture at each view
    def variant_renders(self, cameras: Cameras) -> Tensor:
        """μ_k(θ_b) for every view b and asset k, float64 [B, K, 3, H, W] (cached for the last cameras)."""
        if self._cache is not None and _same_cameras(self._cache[0], cameras):
            return self._cache[1]
        with torch.no_grad():
            means = render(self.assets.grid, cameras, self.render_settings).rgb.transpose(0, 1)
        self._cache = (cameras, means.to(self.dtype))
        return self._cache[1]

    def variant_log_weights(self, cameras: Cameras) -> Tensor:
        """log π_{k|c(k)}(θ_b), float64 [B, K]: 1/n_c for every variant of a class with n_c variants."""
        counts = self._class_masks.sum(dim=1).to(self.dtype)  # [C]
        log_weights = -counts[self.assets.classes].log()
        return log_weights.expand(cameras.batch_size, -1)

    def _component_mask(self, cond: Any, batch: int) -> Tensor | None:
        """Bool [B, K]: the components each view may use under ``cond`` (None: all)."""
        return class_components(cond, batch, self._class_masks)

    def _components(self, x_t: Tensor, t: int | Tensor, cameras: Cameras | None) -> tuple[Tensor, ...]:
        """(x [B, d], ᾱ [B], v [B], scaled means sqrt(ᾱ) μ_k [B, K, d], log π_k N_k [B, K] with π_k = π_{k|c})."""
        batch = check_batch("x_t", x_t, self.shape)
        if not isinstance(cameras, Cameras):
            raise ValueError(
                f"the exact view prior needs cameras=Cameras (one per view), got {type(cameras).__name__}"
            )
        if cameras.batch_size != batch:
            raise ValueError(f"cameras has {cameras.batch_size} views but x_t has batch {batch}")
        x = x_t.reshape(batch, self.dim).to(self.dtype)
        alpha = alpha_bar_per_sample(self.schedule, t, batch).to(x)
        variance = alpha * self.noise_std**2 + 1 - alpha  # v = ᾱ s² + 1 − ᾱ
        means = alpha.sqrt()[:, None, None] * self.variant_renders(cameras).reshape(batch, -1, self.dim)
        squared = (x[:, None, :] - means).pow(2).sum(dim=-1)  # [B, K]
        log_normal = -0.5 * (
            squared / variance[:, None] + self.dim * torch.log(2 * math.pi * variance)[:, None]
        )
        return x, alpha, variance, means, self.variant_log_weights(cameras) + log_normal

    def _log_joint(self, log_components: Tensor, cond: Any) -> Tensor:
        """log π_k N_k [B, K] under ``cond``: within-class weights, or × 1/C for the unconditional."""
        mask = self._component_mask(cond, log_components.shape[0])
        if mask is None:
            return log_components - math.log(self.num_classes)
        return log_components.masked_fill(~mask, -math.inf)

    def _epsilon(
        self, x: Tensor, alpha: Tensor, variance: Tensor, means: Tensor, log_joint: Tensor
    ) -> Tensor:
        responsibilities = torch.softmax(log_joint, dim=-1)  # r_k, [B, K]
        mean = torch.einsum("bk,bkd->bd", responsibilities, means)  # sqrt(ᾱ) Σ_k r_k μ_k
        return ((1 - alpha).sqrt() / variance)[:, None] * (x - mean)

    # ------------------------------------------------------------------ the denoiser interface
    def predict_noise(
        self, x_t: Tensor, t: int | Tensor, cond: Any = None, *, cameras: Cameras | None = None
    ) -> Tensor:
        """Exact ε̂ = −sqrt(1−ᾱ_t) ∇ log p_t(x_t | cond, θ), expressed in ``prediction_type``."""
        return self.predict_noise_batched(x_t, t, [cond], cameras=cameras)[0]

    def predict_noise_batched(
        self, x_t: Tensor, t: int | Tensor, conds: Sequence[Any], *, cameras: Cameras | None = None
    ) -> list[Tensor]:
        """ε̂ under each condition of ``conds``, sharing the component terms (one 'network call')."""
        x, alpha, variance, means, log_components = self._components(x_t, t, cameras)
        outputs = []
        for cond in conds:
            epsilon = self._epsilon(x, alpha, variance, means, self._log_joint(log_components, cond))
            output = output_from_epsilon(epsilon, x, alpha[:, None], self.prediction_type)
            outputs.append(output.reshape(x_t.shape).to(x_t.dtype))
        return outputs

    def log_density(self, x_t: Tensor, t: int | Tensor, cond: Any = None, *, cameras: Cameras) -> Tensor:
        """log p_t(x_t | cond, θ) per view, float64 [B] (differentiable in ``x_t``)."""
        _, _, _, _, log_components = self._components(x_t, t, cameras)
        return self._log_joint(log_components, cond).logsumexp(dim=-1)

    def preferred_variants(self, cameras: Cameras, class_index: int) -> Tensor:
        """The variant (index within the class) of largest weight π_{k|c}(θ) at each view, LongTensor[B]."""
        members = self.assets.members(class_index)
        return self.variant_log_weights(cameras)[:, members].argmax(dim=-1)


class ViewInconsistentPrior(ExactViewPrior):
    """The view-inconsistent prior: the variant is chosen by the view's azimuth (module docstring).

    Args:
        temperature: τ > 0 of π_{k|c}(θ) ∝ exp(cos(φ(θ) − φ_k)/τ); small τ → one variant per view.
        Other arguments as :class:`ExactViewPrior`.
    """

    def __init__(self, *args: Any, temperature: float = 0.1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.temperature = check_range("temperature", temperature, 0.0, low_open=True)
        variant = torch.zeros(self.assets.num_assets, dtype=self.dtype)
        counts = torch.zeros(self.assets.num_assets, dtype=self.dtype)
        for class_index in range(self.num_classes):
            members = self.assets.members(class_index)
            variant[members] = torch.arange(members.numel(), dtype=self.dtype)
            counts[members] = members.numel()
        self.home_azimuth = -180.0 + 360.0 * variant / counts  # φ_k, degrees

    def variant_log_weights(self, cameras: Cameras) -> Tensor:
        """log π_{k|c}(θ_b) = log softmax over the class's variants of cos(φ_b − φ_k)/τ, [B, K]."""
        azimuth = cameras.azimuth.to(self.dtype)[:, None]
        logits = torch.cos(torch.deg2rad(azimuth - self.home_azimuth[None])) / self.temperature  # [B, K]
        log_weights = torch.empty_like(logits)
        for class_index in range(self.num_classes):
            members = self.assets.members(class_index)
            log_weights[:, members] = torch.log_softmax(logits[:, members], dim=-1)
        return log_weights
