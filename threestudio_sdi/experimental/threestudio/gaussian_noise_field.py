"""The noise field of ``consistent-noise`` on 3D Gaussians (threestudio-3dgs's ``diff-gaussian-rasterizer``).

**Field.** Each Gaussian i carries fixed N(0, 1) values ε_i ∈ R^C, one per latent channel, for its whole
life (a Gaussian added by densification gets fresh ones, a pruned one takes its values away), plus K
more, the probes π_i ∈ R^K, and the background a map b of N(0, 1) values over ray directions (azimuth ×
elevation cells, as the 3D lab's). All are drawn from the source's own generator, seeded from the
guidance's seed; its state rides in the guidance's checkpoints.

**Render.** The system's own renderer draws the field at z0's resolution, three channels per pass, with
the colours c_i = ½ + a·ε_i as ``colors_precomp`` (a = ½ / max|ε|, so that every colour is in [0, 1] and
threestudio-3dgs's clamp of the render to [0, 1] never acts), in eval mode (a fixed background, no draw
from numpy's random state). Two more passes with c = 0 and c = 1 give r₀ = T·bg and r₁ = 1 − T + T·bg, so
that, exactly and whatever the background,

    N = (r − r₀ − ½(r₁ − r₀)) / a = Σ_i w_i ε_i ,   T = 1 − (r₁ − r₀),

with w_i = α_i T_i the rasterizer's blending weights: a linear render recovers the splatted noise.

**Whitening.** The standard deviation of N at a pixel is sqrt(Σ_i w_i²), which a colour render cannot
give (it is quadratic in the weights). The probes estimate it (Hutchinson): (1/K) Σ_k (Σ_i w_i π_ik)² is
an unbiased estimate of Σ_i w_i², s² = Σ w² · χ²_K / K, and

    κ = (N + T·b(d)) / sqrt(s² · K/(K − 2) + T²),

the lab's exact (Σ w ε + T b)/sqrt(Σ w² + T²) up to the estimate. Where splats cover the pixel fully
(T = 0), κ is a Student t with K degrees of freedom scaled to variance 1 (N(0, 1) as K → ∞); on the
background (T = 1) it is b itself; in between its variance stays within 4 % of 1 (K = 14; it is
E[(Σ w² + T²)/(s² K/(K − 2) + T²)]). The probes are fixed too, so κ stays a fixed function of the
asset and the camera: two views of the same surface get the same κ there. Cost: 2 + ⌈(C + K)/3⌉
renders of the batch per step at z0's resolution (8 for SD latents, C = 4, K = 14).

**Options.** The field is attached as colour is (``attachment: integrated``), one value per Gaussian:
the NeRF field's other options (``attachment: surface``, ``field_resolution``, and the low-frequency
shared form ``shared_scale`` ≥ 1, which lives on a lattice) have no meaning here and are refused. The
colour form of the shared component (``shared``, ``shared_scale: 0``) and partial consistency are
applied by the strategy to whatever the field gives, so they work on Gaussians as on a NeRF.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import threestudio
import torch
from torch import Tensor

from ...threestudio.noise_fields import register_noise_field
from ..strategies.consistent_noise import ConsistentNoise
from .nerf_noise_field import consistent_strategy

RENDERERS = ("diff-gaussian-rasterizer", "diff-gaussian-rasterizer-advanced")
"""threestudio-3dgs's renderers whose ``forward`` takes ``override_color`` as ``colors_precomp``."""
PROBES = 14
"""K: probe channels of the variance estimate (C + K = 18 = 6 passes of 3 channels for SD latents)."""
PASS_CHANNELS = 3
"""The CUDA rasterizer's colour channels per pass."""
BACKGROUND_CELLS = (128, 256)
"""Elevation × azimuth cells of the background noise map."""
SEED_OFFSET = 4 * 2**32
"""The field's generator is seeded with the guidance's seed + this (other streams use seed + k·2³²)."""


def ray_directions(c2w: Tensor, fovy: Tensor, height: int, width: int) -> Tensor:
    """Unit world directions [B, H, W, 3] of the rasterizer's pixel centres (OpenGL ``c2w`` [B, 4, 4],
    ``fovy`` [B] in radians; threestudio-3dgs uses fovy for both axes)."""
    tan = torch.tan(fovy.reshape(-1, 1, 1) / 2)
    columns = (2 * torch.arange(width, dtype=c2w.dtype, device=c2w.device) + 1) / width - 1
    rows = (2 * torch.arange(height, dtype=c2w.dtype, device=c2w.device) + 1) / height - 1
    x = (columns[None, None, :] * tan).expand(-1, height, width)
    y = (-rows[None, :, None] * tan).expand(-1, height, width)  # rows go down, the camera's y up
    camera = torch.stack([x, y, -torch.ones_like(x)], -1)
    return torch.nn.functional.normalize(camera @ c2w[:, None, :3, :3].transpose(-1, -2), dim=-1)


def background_noise(background: Tensor, directions: Tensor) -> Tensor:
    """b(d) [B, C, H, W]: the nearest elevation × azimuth cell of ``background`` [C, rows, columns]."""
    rows, columns = background.shape[-2:]
    azimuth = torch.atan2(directions[..., 1], directions[..., 0])
    elevation = torch.asin(directions[..., 2].clamp(-1, 1))
    column = ((azimuth + math.pi) / (2 * math.pi) * columns).long().clamp(0, columns - 1)
    row = ((elevation + math.pi / 2) / math.pi * rows).long().clamp(0, rows - 1)
    return background[:, row, column].permute(1, 0, 2, 3)


class GaussianNoiseField:
    """The source ``(batch, shape) -> κ`` of a threestudio-3dgs system (module docstring)."""

    def __init__(self, renderer: Any, geometry: Any, seed: int, probes: int = PROBES) -> None:
        if probes < 3:
            raise ValueError(f"probes must be >= 3 (the estimate is scaled by K/(K − 2)), got {probes}")
        self.renderer, self.geometry, self.probes = renderer, geometry, probes
        self.generator = torch.Generator().manual_seed(seed + SEED_OFFSET)
        self.values: Tensor | None = None  # [N, C + K]: ε then π per Gaussian
        self.background: Tensor | None = None  # [C, rows, columns]
        self._follow_topology()

    # ---------------------------------------------------------------- the field
    def _draw(self, rows: int, columns: int) -> Tensor:
        return torch.randn(rows, columns, generator=self.generator)

    def _follow_topology(self) -> None:
        """Keep one row of values per Gaussian through threestudio-3dgs's pruning and densification."""
        prune, append = self.geometry.prune_points, self.geometry.densification_postfix

        def prune_points(mask: Tensor) -> None:
            prune(mask)
            if self.values is not None:
                self.values = self.values[~mask.cpu()]

        def densification_postfix(new_xyz: Tensor, *args: Any, **kwargs: Any) -> None:
            append(new_xyz, *args, **kwargs)
            if self.values is not None:
                self.values = torch.cat([self.values, self._draw(new_xyz.shape[0], self.values.shape[1])])

        self.geometry.prune_points = prune_points
        self.geometry.densification_postfix = densification_postfix

    def _ensure(self, channels: int) -> Tensor:
        """The values of the current Gaussians ([N, C + K]), drawn on first use."""
        count = int(self.geometry.get_xyz.shape[0])
        width = channels + self.probes
        if self.values is not None and self.values.shape[1] != width:
            raise ValueError(
                f"the Gaussian noise field was drawn for {self.values.shape[1] - self.probes} channels, "
                f"z0 now has {channels}"
            )
        if self.values is not None and self.values.shape[0] != count:
            threestudio.warn(
                f"the Gaussian noise field had {self.values.shape[0]} rows for {count} Gaussians (the "
                "geometry changed outside pruning and densification): drawing it afresh"
            )
            self.values = None
        if self.values is None:
            self.values = self._draw(count, width)
            self.background = torch.randn(channels, *BACKGROUND_CELLS, generator=self.generator)
        return self.values

    # ---------------------------------------------------------------- rendering
    def _render(self, batch: Mapping[str, Any], colours: Tensor, height: int, width: int) -> Tensor:
        """[B, 3, H, W] of the renderer with ``colours`` [N, 3] (eval mode, no gradient)."""
        views = {**batch, "width": width, "height": height, "override_color": colours}
        return self.renderer.batch_forward(views)["comp_rgb"].permute(0, 3, 1, 2).float()

    def splat(
        self, batch: Mapping[str, Any], channels: int, height: int, width: int
    ) -> tuple[Tensor, Tensor]:
        """(Σ_i w_i [ε_i, π_i] [B, C + K, H, W], T [B, 1, H, W]) of the batch's views (module docstring)."""
        device = self.geometry.get_xyz.device
        values = self._ensure(channels).to(device)
        scale = 0.5 / float(values.abs().max())
        was_training = self.renderer.training
        self.renderer.train(False)
        try:
            with torch.no_grad():
                zero = self._render(batch, torch.zeros(values.shape[0], 3, device=device), height, width)
                one = self._render(batch, torch.ones(values.shape[0], 3, device=device), height, width)
                splats = []
                for start in range(0, values.shape[1], PASS_CHANNELS):
                    chunk = values[:, start : start + PASS_CHANNELS]
                    padded = torch.nn.functional.pad(chunk, (0, PASS_CHANNELS - chunk.shape[1]))
                    render = self._render(batch, 0.5 + scale * padded, height, width)
                    splats.append(((render - zero - 0.5 * (one - zero)) / scale)[:, : chunk.shape[1]])
        finally:
            self.renderer.train(was_training)
        return torch.cat(splats, 1), (1 - (one - zero)[:, :1]).clamp(0, 1)

    def __call__(self, batch: Mapping[str, Any], shape: tuple[int, ...]) -> Tensor:
        batch_size, channels, height, width = shape
        splatted, transmittance = self.splat(batch, channels, height, width)
        if splatted.shape[0] != batch_size:
            raise ValueError(f"the renderer drew {splatted.shape[0]} views for a batch of {batch_size}")
        directions = ray_directions(batch["c2w"].float().cpu(), batch["fovy"].float().cpu(), height, width)
        behind = background_noise(self.background, directions).to(splatted)
        estimate = splatted[:, channels:].pow(2).mean(1, keepdim=True) * self.probes / (self.probes - 2)
        variance = estimate + transmittance.pow(2)
        return (splatted[:, :channels] + transmittance * behind) / variance.clamp_min(1e-12).sqrt()

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "values": self.values, "background": self.background}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.values, self.background = state["values"], state["background"]


def check_gaussian_options(strategy: ConsistentNoise, renderer_type: str) -> None:
    """ValueError naming each ``noise_options`` setting the Gaussian field cannot honour (module docstring)."""
    defaults = ConsistentNoise()
    refused = {
        name: getattr(strategy, name)
        for name in ("attachment", "field_resolution")
        if getattr(strategy, name) != getattr(defaults, name)
    }
    if strategy.shared and strategy.shared_scale:
        refused["shared_scale"] = strategy.shared_scale
    if refused:
        listed = ", ".join(
            f"system.guidance.noise_options.{name}={value!r}" for name, value in refused.items()
        )
        raise ValueError(
            f"{listed}: the {renderer_type} noise field is one value per Gaussian, blended like colour "
            "(attachment 'integrated'); surface attachment, field_resolution and the low-frequency shared "
            "form (shared_scale >= 1) belong to the NeRF field. The colour form (shared_scale: 0) works here"
        )


def gaussian_noise_field(system: Any) -> GaussianNoiseField:
    """The source of a threestudio-3dgs system: its renderer and geometry, seeded from the guidance's seed;
    ValueError naming an option the field cannot honour (:func:`check_gaussian_options`)."""
    renderer_type = system.cfg.renderer_type
    strategy = consistent_strategy(system.guidance.guidance_config.strategy, renderer_type)
    check_gaussian_options(strategy, renderer_type)
    return GaussianNoiseField(system.renderer, system.geometry, int(system.guidance.seed))


for _renderer in RENDERERS:
    register_noise_field(_renderer)(gaussian_noise_field)
