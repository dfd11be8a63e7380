"""The noise field of ``consistent-noise`` for threestudio's ``nerf-volume-renderer``.

A second pass over the geometry's own density along the step's rays, at the guidance's resolution: for
z0 of shape [B, C, h, w] (64² latents for Stable Diffusion, S² for a pixel prior) each of the B·h·w
rays is cut to the geometry's bounding box [−r, r]³ and the renderer's [near, far], sampled at N
midpoints, and the density σ_i = ``geometry.forward_density`` there (no gradient) gives the
emission–absorption weights w_i = T_i α_i of the renderer's quadrature. The field — a fixed N(0, 1)
noise volume on the box, C channels, plus a background map over directions — is then rendered with
those weights, ``integrated`` along the ray like colour or sampled at the ``surface`` (the expected
termination point), and whitened so that κ ~ N(0, 1) per pixel and channel exactly
(:mod:`threestudio_sdi.experimental.lab3d.noise_field`, the same math as the 3D lab). An empty volume
shows the background noise; a NaN density counts as empty space; an infinite one as opaque.

The rays are the batch's own (``rays_o``, ``rays_d``) when they are at the guidance's resolution, and
otherwise made from the batch's ``c2w`` and ``fovy`` as threestudio's data modules make them.

The field is the strategy's: its ``seed`` (set ``system.guidance.noise_options.seed: ${seed}`` to follow
the run's seed), ``field_resolution``, ``attachment`` and shared component (``shared``,
``shared_scale``). :meth:`NerfNoiseField.state_dict` records what identifies the field, so the guidance's
checkpoint state carries it; a resume whose ``noise_options`` would draw another field is refused,
so a resumed run either continues the same noise or stops with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ...threestudio.batch_cameras import cameras_from_batch
from ...threestudio.noise_fields import register_noise_field
from ..lab3d.cameras import camera_rays
from ..lab3d.noise_field import MAX_DENSITY, NoiseField, field_of, noise_from_samples
from ..lab3d.renderer import quadrature_weights, ray_samples
from ..strategies.consistent_noise import ConsistentNoise

RENDERER_TYPE = "nerf-volume-renderer"
SAMPLES_PER_RAY = 64
"""N, the uniform samples of each ray through the box (the 3D lab's default)."""
CHUNK_POINTS = 2**18
"""Density queries per call of the geometry (bounds memory at 64² latents × N samples × B views)."""
IDENTITY = ("seed", "field_resolution", "shared", "shared_scale")
"""The strategy options that decide the field's values (its checkpointed state)."""


def consistent_strategy(strategy: Any, renderer_type: str = RENDERER_TYPE) -> ConsistentNoise:
    """The :class:`ConsistentNoise` whose field the source renders; ValueError naming another strategy."""
    if not isinstance(strategy, ConsistentNoise):
        raise ValueError(
            f"the {renderer_type} noise field renders consistent-noise's field, but system.guidance.noise is "
            f"{getattr(strategy, 'name', type(strategy).__name__)!r}"
        )
    return strategy


class NerfNoiseField:
    """``source(batch, shape) -> κ`` of a NeRF-style geometry (module docstring).

    Args:
        density: ``points [P, 3] -> σ [P, 1]`` (threestudio's ``geometry.forward_density``).
        radius: r of the geometry's bounding box [−r, r]³.
        near, far: the renderer's near and far planes (distances along unit ray directions).
        strategy: the consistent-noise strategy (seed, field resolution, attachment, shared component).
        samples: N, samples per ray.
    """

    def __init__(
        self,
        density: Callable[[Tensor], Tensor],
        radius: float,
        near: float,
        far: float,
        strategy: ConsistentNoise,
        samples: int = SAMPLES_PER_RAY,
    ) -> None:
        if not radius > 0 or not far > near:
            raise ValueError(
                f"the noise field needs radius > 0 and far > near, got {radius}, [{near}, {far}]"
            )
        self.density, self.radius, self.near, self.far = density, float(radius), float(near), float(far)
        self.strategy, self.samples = strategy, int(samples)
        self._fields: dict[tuple[int, str], NoiseField] = {}

    # ------------------------------------------------------------------ the field
    def field(self, channels: int, device: torch.device) -> NoiseField:
        """The run's field with ``channels`` channels on ``device`` (drawn once, from the strategy)."""
        key = (channels, str(device))
        if key not in self._fields:
            self._fields[key] = field_of(self.strategy, channels).to(device)
        return self._fields[key]

    def state_dict(self) -> dict[str, Any]:
        """What identifies the field: the strategy's :data:`IDENTITY` options."""
        return {name: getattr(self.strategy, name) for name in IDENTITY}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Check a checkpoint's field against this run's; ValueError naming what differs."""
        own = self.state_dict()
        differs = {name: state[name] for name in IDENTITY if name in state and state[name] != own[name]}
        if differs:
            listed = ", ".join(f"{name}={value!r} (config: {own[name]!r})" for name, value in differs.items())
            raise ValueError(
                f"the checkpoint's consistent-noise field has {listed}: a resumed run must continue the same "
                "noise; set system.guidance.noise_options to the checkpoint's values"
            )

    # ------------------------------------------------------------------ rays
    def rays(self, batch: Mapping[str, Any], height: int, width: int) -> tuple[Tensor, Tensor]:
        """Origins and unit directions [B, h, w, 3] of the step's views at the guidance's resolution."""
        rays_o, rays_d = batch.get("rays_o"), batch.get("rays_d")
        if rays_o is not None and rays_d is not None and tuple(rays_d.shape[1:3]) == (height, width):
            return rays_o, torch.nn.functional.normalize(rays_d, dim=-1)
        if batch.get("c2w") is None or batch.get("fovy") is None or height != width:
            size = "x".join(str(v) for v in (rays_d.shape[1:3] if rays_d is not None else ()))
            raise ValueError(
                f"the {RENDERER_TYPE} noise field renders {height}x{width} views: the batch needs rays_o / "
                f"rays_d at that size (it has {size or 'none'}) or c2w and fovy (square views only)"
            )
        cameras = cameras_from_batch(
            batch["elevation"], batch["azimuth"], batch["camera_distances"], batch["c2w"], batch["fovy"]
        )
        origins, directions = camera_rays(cameras, height)
        return origins[:, None, None, :].expand_as(directions), directions

    # ------------------------------------------------------------------ render
    def __call__(self, batch: Mapping[str, Any], shape: tuple[int, ...]) -> Tensor:
        """κ [B, C, h, w], N(0, 1) per element, of the step's views (module docstring)."""
        views, channels, height, width = shape
        origins, directions = self.rays(batch, height, width)
        if origins.shape[0] != views:
            raise ValueError(f"the batch has {origins.shape[0]} views but z0 has {views}")
        with torch.no_grad():
            device = origins.device
            origins = origins.reshape(-1, 3).float() / self.radius  # the box [−1, 1]³
            directions = directions.reshape(-1, 3).float()
            points, step = ray_samples(
                origins, directions, self.samples, (self.near / self.radius, self.far / self.radius)
            )
            flat = points.reshape(-1, 3) * self.radius
            sigma = torch.cat([self.density(chunk).reshape(-1) for chunk in flat.split(CHUNK_POINTS)])
            sigma = torch.nan_to_num(sigma.float(), nan=0.0, posinf=MAX_DENSITY).clamp(0, MAX_DENSITY)
            weights = quadrature_weights(sigma.reshape(points.shape[:2]) * (step * self.radius)[:, None])
            field = self.field(channels, device)
            kappa = noise_from_samples(field, points, weights, directions, self.strategy.attachment)
        return kappa.reshape(views, height, width, channels).permute(0, 3, 1, 2).contiguous()


@register_noise_field(RENDERER_TYPE)
def nerf_noise_field(system: Any) -> NerfNoiseField:
    """The source of a system with ``nerf-volume-renderer``: its geometry's density, box and planes."""
    renderer = system.renderer.cfg
    return NerfNoiseField(
        system.geometry.forward_density,
        renderer.radius,
        renderer.near_plane,
        renderer.far_plane,
        consistent_strategy(system.guidance.guidance_config.strategy),
    )
