"""The Gaussian noise field of consistent noise, and the ``sdi-guidance-state`` mixin, on the CPU in CI.

threestudio is the STAND-IN (tests/threestudio_standin) and the rasterizer the harness's pure-torch
stand-in (tests/threestudio_3dgs_cpu/stubs); threestudio-3dgs's renderer and geometry are imitated below
from their documented behaviour (the integration test runs the real ones). Known answers:

* the splatted noise recovered from three linear colour renders equals Σ_i w_i ε_i rendered directly
  (no clamp, black background), whatever the renderer's background;
* the whitened κ approaches the exact (Σ w ε + T b)/sqrt(Σ w² + T²) — Σ w² from one render per
  Gaussian — as the probes grow, and has unit variance per pixel with the default probes;
* the rows follow pruning and densification; state round trips; the renderer's mode and numpy's
  random state are left alone;
* a system mixed with ``sdi-guidance-state`` binds the field at fit start and restores a checkpoint's
  generator, clock and field after binding.
"""

from __future__ import annotations

import importlib
import math
import pathlib
import sys
from typing import Any

import numpy as np
import pytest
import torch
from threestudio_standin.activate import standin_threestudio

HARNESS = pathlib.Path(__file__).resolve().parent / "threestudio_3dgs_cpu"
sys.path.insert(0, str(HARNESS))
if str(HARNESS / "stubs") not in sys.path:
    sys.path.append(str(HARNESS / "stubs"))

import diff_gaussian_rasterization as dgr  # noqa: E402
from gaussian_cameras import gaussian_camera, look_at  # noqa: E402

SIZE = 12
L, D = 77, 32  # the tiny text encoder's token length and hidden size


class ImitationGaussians(torch.nn.Module):
    """What threestudio-3dgs's ``gaussian-splatting`` geometry exposes to its renderer and densifier."""

    def __init__(self, count: int, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self._xyz = torch.nn.Parameter(0.5 * (torch.rand(count, 3, generator=generator) - 0.5))
        self._scaling = torch.nn.Parameter(torch.full((count, 3), math.log(0.08)))
        self._rotation = torch.nn.Parameter(torch.tensor([[1.0, 0, 0, 0]]).repeat(count, 1))
        self._opacity = torch.nn.Parameter(torch.logit(0.2 + 0.7 * torch.rand(count, 1, generator=generator)))
        self.active_sh_degree = 0

    get_xyz = property(lambda self: self._xyz)
    get_scaling = property(lambda self: torch.exp(self._scaling))
    get_rotation = property(lambda self: torch.nn.functional.normalize(self._rotation))
    get_opacity = property(lambda self: torch.sigmoid(self._opacity))
    get_features = property(lambda self: torch.zeros(self._xyz.shape[0], 1, 3))

    def prune_points(self, mask: torch.Tensor) -> None:
        for name in ("_xyz", "_scaling", "_rotation", "_opacity"):
            setattr(self, name, torch.nn.Parameter(getattr(self, name)[~mask]))

    def densification_postfix(
        self,
        new_xyz,
        new_features_dc,
        new_features_rest,
        new_opacities,
        new_scaling,
        new_rotation,
        new_normal=None,
    ) -> None:  # noqa: E501
        for name, new in (
            ("_xyz", new_xyz),
            ("_scaling", new_scaling),
            ("_rotation", new_rotation),
            ("_opacity", new_opacities),
        ):  # noqa: E501
            setattr(self, name, torch.nn.Parameter(torch.cat([getattr(self, name), new])))


class ImitationRenderer(torch.nn.Module):
    """threestudio-3dgs's ``diff-gaussian-rasterizer``: per view a camera of ``c2w`` and ``fovy`` (for both
    axes), white background inverted in eval mode (and by chance in training), the render clamped."""

    def __init__(self, geometry: ImitationGaussians, background=(1.0, 1.0, 1.0), invert_bg_prob=0.5) -> None:
        super().__init__()
        self.geometry = geometry
        self.background_tensor = torch.tensor(background)
        self.invert_bg_prob = invert_bg_prob

    def batch_forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        renders = []
        for index in range(batch["c2w"].shape[0]):
            camera = gaussian_camera(
                batch["c2w"][index].double(), float(batch["fovy"][index]), batch["width"], batch["height"]
            )
            renders.append(self.forward(camera, self.background_tensor, **batch)["render"])
        return {"comp_rgb": torch.stack(renders).permute(0, 2, 3, 1)}

    def forward(self, camera, bg_color, override_color=None, **kwargs) -> dict[str, Any]:
        invert = np.random.rand() > self.invert_bg_prob if self.training else True
        bg = 1.0 - bg_color if invert else bg_color
        pc = self.geometry
        settings = dgr.GaussianRasterizationSettings(
            image_height=camera.height, image_width=camera.width, tanfovx=camera.tanfovx, tanfovy=camera.tanfovy,
            bg=bg, scale_modifier=1.0, viewmatrix=camera.viewmatrix.float(), projmatrix=camera.projmatrix.float(),
            sh_degree=pc.active_sh_degree, campos=camera.campos.float(), prefiltered=False, debug=False,
        )  # fmt: skip
        color = dgr.GaussianRasterizer(settings)(
            means3D=pc.get_xyz,
            means2D=torch.zeros_like(pc.get_xyz),
            shs=pc.get_features if override_color is None else None,
            colors_precomp=override_color,
            opacities=pc.get_opacity,
            scales=pc.get_scaling,
            rotations=pc.get_rotation,
        )[0]
        return {"render": color.clamp(0, 1)}


def camera_batch(views: int = 3, seed: int = 0) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    azimuth = 360 * torch.rand(views, generator=generator) - 180
    elevation = 40 * torch.rand(views, generator=generator) - 10
    c2w = torch.stack(
        [
            look_at(
                torch.tensor(
                    [
                        2.0 * math.cos(math.radians(e)) * math.cos(math.radians(a)),
                        2.0 * math.cos(math.radians(e)) * math.sin(math.radians(a)),
                        2.0 * math.sin(math.radians(e)),
                    ]
                )
            )
            for e, a in zip(elevation.tolist(), azimuth.tolist())
        ]
    )
    return {
        "elevation": elevation,
        "azimuth": azimuth,
        "camera_distances": torch.full((views,), 2.0),
        "c2w": c2w,
        "fovy": torch.full((views,), math.radians(50.0)),
        "width": 64,
        "height": 64,
    }


@pytest.fixture(scope="module")
def ts():
    with standin_threestudio() as threestudio:
        plugin = importlib.import_module("threestudio_sdi.threestudio")
        field = importlib.import_module("threestudio_sdi.experimental.threestudio.gaussian_noise_field")
        yield threestudio, plugin, field


@pytest.fixture(autouse=True)
def native_variant():
    previous, dgr.VARIANT = dgr.VARIANT, "native"
    yield
    dgr.VARIANT = previous


def direct_render(
    renderer: ImitationRenderer, batch: dict, colours: torch.Tensor, bg=(0.0, 0.0, 0.0)
) -> torch.Tensor:
    """Σ_i w_i c_i + T·bg per view [B, 3, H, W], straight from the rasterizer (no clamp)."""
    images = []
    for index in range(batch["c2w"].shape[0]):
        camera = gaussian_camera(batch["c2w"][index].double(), float(batch["fovy"][index]), SIZE, SIZE)
        settings = dgr.GaussianRasterizationSettings(
            SIZE, SIZE, camera.tanfovx, camera.tanfovy, torch.tensor(bg), 1.0, camera.viewmatrix.float(),
            camera.projmatrix.float(), 0, camera.campos.float(), False, False,
        )  # fmt: skip
        pc = renderer.geometry
        with torch.no_grad():
            images.append(
                dgr.GaussianRasterizer(settings)(
                    means3D=pc.get_xyz,
                    means2D=torch.zeros_like(pc.get_xyz),
                    colors_precomp=colours,
                    opacities=pc.get_opacity,
                    scales=pc.get_scaling,
                    rotations=pc.get_rotation,
                )[0]
            )
    return torch.stack(images)


def exact_kappa(source, renderer, batch, channels: int) -> torch.Tensor:
    """(Σ w ε + T b)/sqrt(Σ w² + T²) with Σ w² from one render per Gaussian (its weight map)."""
    values = source.values
    count = values.shape[0]
    weights = []
    for index in range(count):
        colours = torch.zeros(count, 3)
        colours[index, 0] = 1.0
        weights.append(direct_render(renderer, batch, colours)[:, 0])
    weights = torch.stack(weights)  # [N, B, H, W]
    splat = torch.einsum("nbhw,nc->bchw", weights, values[:, :channels])
    transmittance = 1 - weights.sum(0)[:, None]
    from threestudio_sdi.experimental.threestudio.gaussian_noise_field import background_noise, ray_directions

    behind = background_noise(source.background, ray_directions(batch["c2w"], batch["fovy"], SIZE, SIZE))
    variance = weights.pow(2).sum(0)[:, None] + transmittance.pow(2)
    return (splat + transmittance * behind) / variance.sqrt()


def make_source(ts, count=40, probes=14, seed=3, background=(1.0, 1.0, 1.0)):
    _, _, field = ts
    geometry = ImitationGaussians(count, seed)
    renderer = ImitationRenderer(geometry, background)
    renderer.train()
    return field.GaussianNoiseField(renderer, geometry, seed=seed, probes=probes), renderer


@pytest.mark.parametrize("background", [(1.0, 1.0, 1.0), (0.2, 0.7, 0.4)])
def test_the_splatted_noise_is_exactly_the_linear_render_of_the_values(ts, background):
    source, renderer = make_source(ts, background=background)
    batch = camera_batch()
    splatted, transmittance = source.splat(batch, 4, SIZE, SIZE)
    values = source.values
    for start in range(0, values.shape[1], 3):
        chunk = torch.nn.functional.pad(
            values[:, start : start + 3], (0, 3 - values[:, start : start + 3].shape[1])
        )
        direct = direct_render(renderer, batch, chunk)[:, : min(3, values.shape[1] - start)]
        torch.testing.assert_close(splatted[:, start : start + 3], direct, rtol=0, atol=2e-5)
    alpha = direct_render(renderer, batch, torch.ones(values.shape[0], 3))[:, :1]
    torch.testing.assert_close(transmittance, 1 - alpha, rtol=0, atol=1e-5)
    assert 0.05 < float(alpha.mean()) < 0.95  # the views see both splats and background


def test_kappa_approaches_the_exact_whitening_as_the_probes_grow(ts):
    batch = camera_batch(views=2)
    many, renderer = make_source(ts, probes=600)
    kappa = many(batch, (2, 3, SIZE, SIZE))
    exact = exact_kappa(many, renderer, batch, 3)
    correlation = torch.corrcoef(torch.stack([kappa.flatten(), exact.flatten()]))[0, 1]
    assert correlation > 0.99
    torch.testing.assert_close(kappa, exact, rtol=0, atol=0.25)


def test_kappa_has_unit_variance_per_pixel_with_the_default_probes(ts, fresh_seed):
    """Over fields (seeds), κ at each pixel has mean 0 and variance 1 (a t with K dof rescaled)."""
    batch = camera_batch(views=1)
    draws = []
    for offset in range(60):
        source, _ = make_source(ts, count=30, seed=fresh_seed + offset)
        draws.append(source(batch, (1, 3, SIZE, SIZE)))
    draws = torch.stack(draws)  # [fields, 1, 3, H, W]
    assert abs(float(draws.mean())) < 0.05
    assert 0.93 < float(draws.var(0).mean()) < 1.07  # the old t rescaling gave 0.88 here
    source, renderer = make_source(ts, count=30, seed=fresh_seed)
    kappa = source(batch, (1, 3, SIZE, SIZE))
    exact = exact_kappa(source, renderer, batch, 3)
    assert torch.corrcoef(torch.stack([kappa.flatten(), exact.flatten()]))[0, 1] > 0.85


def test_rows_follow_pruning_and_densification(ts):
    source, renderer = make_source(ts, count=20)
    batch = camera_batch()
    source(batch, (3, 4, SIZE, SIZE))
    before = source.values.clone()
    mask = torch.zeros(20, dtype=torch.bool)
    mask[[1, 4, 9]] = True
    renderer.geometry.prune_points(mask)
    torch.testing.assert_close(source.values, before[~mask])
    geometry = renderer.geometry
    geometry.densification_postfix(
        geometry.get_xyz[:5].detach(), None, None, geometry._opacity[:5].detach(), geometry._scaling[:5].detach(),
        geometry._rotation[:5].detach(),
    )  # fmt: skip
    assert source.values.shape == (22, before.shape[1])
    torch.testing.assert_close(source.values[:17], before[~mask])
    assert not torch.equal(source.values[17:], source.values[:5])  # fresh values, not copies of the parents
    assert source(batch, (3, 4, SIZE, SIZE)).shape == (3, 4, SIZE, SIZE)


def test_the_field_is_fixed_and_its_state_round_trips(ts):
    source, renderer = make_source(ts)
    batch = camera_batch()
    first = source(batch, (3, 4, SIZE, SIZE))
    assert torch.equal(first, source(batch, (3, 4, SIZE, SIZE)))
    state = source.state_dict()
    other, _ = make_source(ts, seed=99)
    other.geometry, other.renderer = source.geometry, renderer
    other.load_state_dict(state)
    assert torch.equal(other(batch, (3, 4, SIZE, SIZE)), first)
    with pytest.raises(ValueError, match="drawn for 4 channels, z0 now has 3"):
        source(batch, (3, 3, SIZE, SIZE))


def test_rendering_the_field_leaves_the_renderers_mode_and_numpys_state_alone(ts):
    source, renderer = make_source(ts)
    state = np.random.get_state()[1].copy()
    source(camera_batch(), (3, 4, SIZE, SIZE))
    assert renderer.training and np.array_equal(np.random.get_state()[1], state)


# ------------------------------------------------------------------ the mixin
@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from threestudio_sdi.testing.tiny_sd import tiny_stable_diffusion

    return str(tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd") / "tiny"))


def gaussian_system_class(ts):
    """A system like gaussian-splatting-system (builds its guidance in configure, renders Gaussians),
    composed with the mixin as ``threestudio.find("<system>:sdi-guidance-state")`` composes it."""
    threestudio, plugin, _ = ts
    from threestudio.systems.base import BaseLift3DSystem

    class ImitationGaussianSystem(BaseLift3DSystem):
        def configure(self) -> None:
            self.geometry = ImitationGaussians(30, 0)
            self.renderer = ImitationRenderer(self.geometry)
            self.guidance = threestudio.find(self.cfg.guidance_type)(self.cfg.guidance)

    return type("imitation:sdi-guidance-state", (plugin.GuidanceStateMixin, ImitationGaussianSystem), {})


def system_config(tiny_path: str, noise: str = "consistent-noise", **noise_options: Any) -> dict:
    guidance = {"pretrained_model_name_or_path": tiny_path, "seed": 0, "noise": noise}
    return {
        "renderer_type": "diff-gaussian-rasterizer",
        "guidance_type": "sdi-guidance",
        "guidance": {**guidance, "noise_options": noise_options},
    }


def prompt_utils(ts):
    from threestudio.models.prompt_processors.base import PromptProcessorOutput

    generator = torch.Generator().manual_seed(0)
    return PromptProcessorOutput(
        *(torch.randn(shape, L, D, generator=generator) for shape in (1, 1, 4, 4)), use_perp_neg=False
    )


def guidance_steps(system, ts, count: int, start: int = 0) -> list[float]:
    losses = []
    batch = camera_batch(views=2, seed=7)
    batch = {key: value for key, value in batch.items() if key not in ("width", "height")}
    for step in range(start, start + count):
        system.guidance.update_step(0, step)
        rgb = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(step))
        losses.append(float(system.guidance(rgb, prompt_utils(ts), **batch)["loss_sdi"]))
    return losses


def test_the_mixin_binds_the_field_and_restores_a_checkpoint_after_binding(ts, tiny_path):
    threestudio, plugin, field = ts
    composed = gaussian_system_class(ts)
    straight = composed(system_config(tiny_path))
    straight.on_fit_start()
    assert isinstance(straight.guidance.noise_field, field.GaussianNoiseField)
    expected = guidance_steps(straight, ts, 4)

    first = composed(system_config(tiny_path))
    first.on_fit_start()
    losses = guidance_steps(first, ts, 2)
    checkpoint: dict[str, Any] = {}
    first.on_save_checkpoint(checkpoint)
    assert set(checkpoint[plugin.guidance_state.GUIDANCE_STATE_KEY]) >= {
        "generator",
        "schedule",
        "noise_field",
    }

    resumed = composed(system_config(tiny_path))
    resumed.geometry.load_state_dict(first.geometry.state_dict())
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.guidance.noise_field is None  # kept until the field is bound
    resumed.on_fit_start()
    torch.testing.assert_close(resumed.guidance.noise_field.values, first.guidance.noise_field.values)
    assert losses + guidance_steps(resumed, ts, 2, start=2) == expected
    assert len(set(expected)) == 4


def test_the_mixin_saves_nothing_for_a_guidance_without_own_state(ts, tiny_path):
    threestudio, plugin, _ = ts

    class ModuleGuidance(torch.nn.Module):
        def state_dict(self, *args, **kwargs):  # an nn.Module: Lightning saves it with the weights
            return super().state_dict(*args, **kwargs)

    system = gaussian_system_class(ts)(system_config(tiny_path, noise="inversion"))
    system.guidance = ModuleGuidance()
    checkpoint: dict[str, Any] = {}
    system.on_save_checkpoint(checkpoint)
    assert plugin.guidance_state.GUIDANCE_STATE_KEY not in checkpoint


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"attachment": "surface"}, "attachment='surface'"),
        ({"field_resolution": 32}, "field_resolution=32"),
        ({"shared": 0.1, "shared_scale": 2}, "shared_scale=2"),
    ],
)
def test_the_nerf_fields_options_are_refused_by_name_on_gaussians(ts, tiny_path, options, named):
    system = gaussian_system_class(ts)(system_config(tiny_path, **options))
    with pytest.raises(ValueError, match=f"system.guidance.noise_options.{named}.*diff-gaussian-rasterizer"):
        system.on_fit_start()


def test_the_shared_colour_form_applies_on_gaussians(ts, tiny_path):
    _, _, field = ts
    plain = gaussian_system_class(ts)(system_config(tiny_path))
    shared = gaussian_system_class(ts)(system_config(tiny_path, shared=0.1))
    for system in (plain, shared):
        system.on_fit_start()
        assert isinstance(system.guidance.noise_field, field.GaussianNoiseField)
    plain_losses, shared_losses = guidance_steps(plain, ts, 2), guidance_steps(shared, ts, 2)
    assert all(math.isfinite(loss) for loss in plain_losses + shared_losses)
    assert all(a != b for a, b in zip(plain_losses, shared_losses, strict=True))
