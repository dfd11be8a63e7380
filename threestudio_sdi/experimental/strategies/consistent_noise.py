"""``consistent-noise`` (research): κ = a fixed noise field on the asset, rendered into each view.

DDIM keeps one x_T for a whole trajectory; its 3D analogue (Consistent Flow Distillation, Yan et al.,
ICLR 2025) keeps one noise field n on the asset for the whole run and uses as κ its render into the
step's views, whitened so that each view's κ is N(0, I) per pixel. Two views that see the same
surface point then get the same κ there, so the mode that x_{t′} = sqrt(ᾱ_{t′}) z0 + sqrt(1−ᾱ_{t′}) κ
points to is decided by n (different across seeds), instead of by a fresh draw (SDS) or by the blurry
render itself (SDI's inversion). Measured in the 3D lab (docs/lab3d.md), that ends the averaging, but
views that see different parts of n often pick different modes (a multi-faced asset); the shared
component below makes them agree.

The field comes from outside: either a callable ``field(step) -> κ`` [B, ...] given at construction
(the 3D lab binds it to the run's asset and renderer, :mod:`threestudio_sdi.experimental.lab3d.noise_field`),
or the host's render of its field in ``StepContext.noise_field`` (``uses_noise_field``: in threestudio,
``sdi-guidance`` asks the system for it). The core knows nothing about assets. Without either, κ is one
fixed N(0, I) image seeded by ``seed``, the same for every view and step: DDIM's fixed x_T in 2D, where
the image is the parameter. No guided evaluation is spent; t′ = t + δ as the preset draws it.

**How the host renders the field** (options the host reads; the core only carries them): ``attachment``
``integrated`` (the field integrated along each ray with the render's weights, like colour) or
``surface`` (sampled at the ray's expected termination point), on a ``field_resolution``³ lattice
(:mod:`threestudio_sdi.experimental.lab3d.noise_field` has the math and its whitening).

**Shared component** β = ``shared`` ∈ [0, 1], in one of two forms (``shared_scale``):

* ``shared_scale = 0``, the **colour form**: κ_field ← sqrt(1 − β)·κ_field + sqrt(β)·g, with g one N(0, 1)
  value per channel (RGB for a pixel prior, latent channel for Stable Diffusion), the same at every
  pixel of every view and step of the run (seeded by ``seed`` + :data:`SHARED_STREAM_OFFSET`). Each
  pixel stays N(0, 1); what g adds is a direction every view shares: its inner product with a mode's
  render is about the mode's mean colour · g in every view, so the views' posteriors lean to the same
  mode (the one whose mean colour g favours), chosen by the seed. It assumes the modes differ in mean
  colour (in the mean of a latent channel).
* ``shared_scale = L ≥ 1``, the **low-frequency form**: the field itself carries a coarse part, one
  N(0, 1) value per channel on each of L³ cells of the asset's box, with share β; the host renders it
  with the field (so κ arrives whitened and this strategy adds nothing). Views that see one region of
  the asset share its cell's value, so they lean to the mode whose colours over that region it favours.
  It assumes the modes differ in their mean colour over regions of size 2/L, consistently across the
  views that see the region. L = 1 is the colour form attached to the asset (background excluded).

**Partial consistency** ρ = ``consistency`` ∈ [0, 1]: κ = sqrt(ρ)·field + sqrt(1 − ρ)·n with n ~ N(0, I)
fresh every step from the step's generator — still N(0, I) per pixel; ρ = 1 is the field alone (no
draw), ρ = 0 is SDS's noise (the ``random`` strategy's draw).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ...errors import check_choice, check_int, check_range, check_same_shape
from ...noise import randn_like
from ...strategies.base import NoiseEstimate, StepContext, register_strategy
from ...strategies.inversion import overshoot_timestep

SHARED_STREAM_OFFSET = 3 * 2**32
"""The shared component's generator is seeded with seed + this (the fixed image uses seed itself)."""
ATTACHMENTS = ("integrated", "surface")
"""How the host renders the field into a view (module docstring)."""


def shared_values(seed: int, channels: int) -> Tensor:
    """g: one N(0, 1) value per channel [C], float64, from seed + :data:`SHARED_STREAM_OFFSET`."""
    generator = torch.Generator().manual_seed(seed + SHARED_STREAM_OFFSET)
    return torch.randn(channels, generator=generator, dtype=torch.float64)


NoiseField = Callable[[StepContext], Tensor]
"""κ of a step's views from a noise field fixed for the run."""


@register_strategy("consistent-noise")
@dataclass(frozen=True)
class ConsistentNoise:
    """κ = the run's fixed noise field rendered into the step's views (module docstring).

    Attributes:
        field: the injected noise field; None = the host's (``StepContext.noise_field``), or without one a
            fixed N(0, I) image for every view.
        seed: the seed of that image (unused with a field) and of the shared component.
        consistency: ρ, the share of κ's variance that comes from the field (module docstring).
        shared: β, the share of the field's variance in the shared component.
        shared_scale: 0 = the colour form (one value per channel at every pixel); L ≥ 1 = the
            low-frequency form (one value per channel on each of L³ cells of the asset, in the field).
        attachment: how the host renders the field: ``integrated`` along each ray, or at the ``surface``.
        field_resolution: the side of the field's lattice, in voxels across the asset's box.
    """

    uses_noise_field = True
    field: NoiseField | None = None
    seed: int = 0
    consistency: float = 1.0
    shared: float = 0.0
    shared_scale: int = 0
    attachment: str = "integrated"
    field_resolution: int = 64

    def __post_init__(self) -> None:
        check_int("consistent_noise.seed", self.seed, low=0)
        check_range("consistent_noise.consistency", self.consistency, 0.0, 1.0)
        check_range("consistent_noise.shared", self.shared, 0.0, 1.0)
        check_int("consistent_noise.shared_scale", self.shared_scale, low=0)
        check_choice("consistent_noise.attachment", self.attachment, ATTACHMENTS)
        check_int("consistent_noise.field_resolution", self.field_resolution, low=2)

    def shared_component(self, step: StepContext) -> Tensor:
        """g (:func:`shared_values` of ``seed``) broadcast to z0's shape."""
        values = shared_values(self.seed, step.z0.shape[1])
        return values.reshape(1, -1, *([1] * (step.z0.ndim - 2))).expand_as(step.z0)

    def fixed_image(self, step: StepContext) -> Tensor:
        """One N(0, I) image of z0's shape [1:] from ``seed``, repeated over the batch."""
        generator = torch.Generator().manual_seed(self.seed)
        image = torch.randn(step.z0.shape[1:], generator=generator, dtype=torch.float64)
        return image.expand_as(step.z0)

    def __call__(self, step: StepContext) -> NoiseEstimate:
        t_prime = overshoot_timestep(step)
        if self.field is not None:
            kappa = self.field(step)
        elif step.noise_field is not None:
            kappa = step.noise_field
        elif self.shared_scale and self.shared:
            raise ValueError(
                f"consistent_noise.shared_scale={self.shared_scale} puts the shared component on the asset, "
                "but this step has no noise field on an asset (set shared_scale=0 for one value per channel)"
            )
        else:
            kappa = self.fixed_image(step)
        check_same_shape("consistent noise", kappa, step.z0, "z0")
        kappa = kappa.detach().to(step.z0)
        if self.shared > 0 and self.shared_scale == 0:
            shared = self.shared_component(step).to(step.z0)
            kappa = math.sqrt(1 - self.shared) * kappa + math.sqrt(self.shared) * shared
        if self.consistency < 1:
            fresh = randn_like(step.z0, step.generator)
            kappa = math.sqrt(self.consistency) * kappa + math.sqrt(1 - self.consistency) * fresh
        return NoiseEstimate(kappa, t_prime)
