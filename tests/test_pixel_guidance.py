"""``sdi-guidance`` with a pixel-space backbone (``model_factory``), against the threestudio STAND-IN.

Known answers: a guidance call on a render equals the core's ``guidance_step`` on x0 = 2·rgb − 1 with the
same cameras, condition and draws (bit for bit); its gradient on the render is 2(x0 − ẑ0)/N; the
panels are (x + 1)/2. The model is the 3D lab's exact prior through
``threestudio_sdi.experimental.lab3d.threestudio_prior`` (the factory the real-threestudio run uses) or a
recording model defined here, each wrapped in ``threestudio_sdi.testing.pixel_backbone.PixelBackbone``.
Nothing of Stable Diffusion loads: the model key points at a folder that does not exist.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from threestudio_standin.activate import standin_threestudio

from threestudio_sdi.classifier_free import Cameras, Conditioning
from threestudio_sdi.experimental.lab3d.cameras import look_at_c2w
from threestudio_sdi.experimental.lab3d.threestudio_prior import EXACT_PRIOR_FACTORY
from threestudio_sdi.models.protocol import ScheduledModel
from threestudio_sdi.schedule import NoiseSchedule
from threestudio_sdi.score_distillation import guidance_step
from threestudio_sdi.testing.pixel_backbone import PixelBackbone

LAB_PRIOR = EXACT_PRIOR_FACTORY
RECORDING = f"{__name__}:recording_model"
NO_MODEL = "/nonexistent/stable-diffusion"
SIZE = 32  # the lab prior's image side


class RecordingModel(ScheduledModel):
    """A pixel model that predicts ε = 0 and records the conditions and cameras it is called with."""

    prediction_type = "epsilon"

    def __init__(self, size: int = 8, view_conditioned: bool = True) -> None:
        self.schedule = NoiseSchedule.stable_diffusion()
        self.shape = (3, size, size)
        self.view_conditioned = view_conditioned
        self.calls: list[dict[str, Any]] = []

    def predict_noise(self, x_t: torch.Tensor, t: Any, cond: Any, **kwargs: Any) -> torch.Tensor:
        self.calls.append({"cond": cond, **kwargs})
        return torch.zeros_like(x_t)

    def prompt_condition(self, prompt: str) -> int:
        return len(prompt)


def recording_model(**options: Any) -> PixelBackbone:
    return PixelBackbone(RecordingModel(**options))


def not_a_backbone() -> object:
    return object()


def not_a_model() -> PixelBackbone:
    return PixelBackbone(object())


NOT_CALLABLE = 3


@pytest.fixture(scope="module")
def plugin():
    with standin_threestudio() as threestudio:
        yield SimpleNamespace(
            threestudio=threestudio, module=importlib.import_module("threestudio_sdi.threestudio")
        )


def make_guidance(plugin, factory: str = LAB_PRIOR, options: dict | None = None, **overrides: Any):
    config = {
        "pretrained_model_name_or_path": NO_MODEL,
        "model_factory": factory,
        "model_options": options or {},
        "seed": 0,
        **overrides,
    }
    return plugin.threestudio.find("sdi-guidance")(config)


def prompt_utils(prompt: str = "ball", use_perp_neg: bool = False):
    from threestudio.models.prompt_processors.base import PromptProcessorOutput

    empty = torch.zeros(1, 1, 1)
    return PromptProcessorOutput(empty, empty, empty, empty, use_perp_neg=use_perp_neg, prompt=prompt)


def batch_cameras(batch: int) -> dict[str, torch.Tensor]:
    """threestudio's batch keys: angles in degrees, look-at c2w, fovy in RADIANS."""
    elevation = torch.tensor([10.0, 30.0, -5.0])[:batch]
    azimuth = torch.tensor([0.0, 120.0, -100.0])[:batch]
    distance = torch.tensor([1.6, 1.8, 2.0])[:batch]
    fovy = torch.deg2rad(torch.tensor([45.0, 60.0, 50.0])[:batch])
    c2w = look_at_c2w(elevation, azimuth, distance)
    return {
        "elevation": elevation,
        "azimuth": azimuth,
        "camera_distances": distance,
        "c2w": c2w,
        "fovy": fovy,
    }


# ------------------------------------------------------------------ the factory
def test_a_factory_string_builds_the_model_and_no_stable_diffusion_loads(plugin):
    guidance = make_guidance(plugin, options={"variants_per_class": 1})
    assert type(guidance.model).__name__ == "PromptedExactPrior" and guidance.model.shape == (3, SIZE, SIZE)
    assert guidance.image_size == SIZE and guidance.model.assets.num_assets == 3  # ball, tower, crate
    assert guidance.schedule is guidance.model.schedule


def test_the_options_reach_the_factory(plugin):
    guidance = make_guidance(plugin, RECORDING, {"size": 12, "view_conditioned": False})
    assert guidance.model.shape == (3, 12, 12) and guidance.model.view_conditioned is False


@pytest.mark.parametrize(
    ("factory", "options", "message"),
    [
        (LAB_PRIOR.replace(":", "."), None, "model_factory must be 'package.module:function'"),
        (LAB_PRIOR + ":x", None, "model_factory must be 'package.module:function'"),
        (":exact_prior", None, "model_factory must be 'package.module:function'"),
        ("no_such_module_here:make", None, "cannot import module 'no_such_module_here'"),
        (f"{__name__}:no_such_function", None, f"module '{__name__}' has no function 'no_such_function'"),
        (f"{__name__}:NOT_CALLABLE", None, f"module '{__name__}' has no function 'NOT_CALLABLE'"),
        (LAB_PRIOR, {"variants": 2}, r"model_options=\{'variants': 2\} do not fit"),
        (f"{__name__}:not_a_backbone", None, "returned a object without model, codec, image_size"),
        (f"{__name__}:not_a_model", None, r"has no method predict_noise\(\)"),
        (RECORDING, {"size": 0}, r"must have shape \(3, S, S\)"),
    ],
)
def test_a_bad_factory_is_a_clear_error(plugin, factory, options, message):
    with pytest.raises(ValueError, match=message):
        make_guidance(plugin, factory, options)


@pytest.mark.parametrize(("key", "value"), [("image_size", 64), ("accelerate", True)])
def test_stable_diffusion_only_settings_are_refused_with_a_pixel_model(plugin, key, value):
    with pytest.raises(ValueError, match=f"system.guidance.{key}={value!r} applies to Stable Diffusion"):
        make_guidance(plugin, **{key: value})


# ------------------------------------------------------------------ one step, known answers
def test_a_step_is_the_cores_step_on_two_rgb_minus_one(plugin):
    """The guidance on a render == guidance_step(prior, 2·rgb − 1, t, cond = class of the prompt,
    cameras of the batch with fovy in degrees), the same generator: loss and target bit for bit."""
    guidance = make_guidance(plugin, trainer_max_steps=100)
    guidance.update_step(0, 40)
    rgb = torch.rand(2, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(1))
    batch = batch_cameras(2)
    out = guidance(rgb, prompt_utils("ball"), **batch, return_images=True)

    cameras = Cameras(
        batch["elevation"],
        batch["azimuth"],
        batch["camera_distances"],
        batch["c2w"],
        torch.rad2deg(batch["fovy"]),
    )
    expected = guidance_step(
        guidance.model,
        rgb.permute(0, 3, 1, 2) * 2 - 1,
        guidance.min_step,
        Conditioning(cond=0, cameras=cameras),
        guidance.guidance_config,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(out["loss_sdi"], expected.loss) and torch.equal(out["target_latent"], expected.target)
    assert out["model_evaluations"] == expected.model_evaluations >= 3
    assert torch.equal(out["latents"], rgb.permute(0, 3, 1, 2) * 2 - 1)


def test_the_gradient_reaches_the_render_without_a_vae(plugin):
    """∂loss/∂rgb = 2 (x0 − ẑ0)/N for x0 = 2·rgb − 1 and loss = ½ mean((x0 − ẑ0)²)."""
    guidance = make_guidance(plugin)
    rgb = torch.rand(1, SIZE, SIZE, 3, requires_grad=True)
    out = guidance(rgb, prompt_utils("tower"), **batch_cameras(1), return_images=True)
    out["loss_sdi"].backward()
    residual = (out["latents"] - out["target_latent"]).permute(0, 2, 3, 1)
    torch.testing.assert_close(rgb.grad, 2 * residual / residual.numel(), rtol=1e-6, atol=1e-12)
    assert rgb.grad.abs().sum() > 0


def test_renders_are_resized_to_the_model_and_panels_decode_by_x_plus_one_over_two(plugin):
    guidance = make_guidance(plugin)
    rgb = torch.rand(2, 20, 20, 3, requires_grad=True)
    out = guidance(rgb, prompt_utils("crate"), **batch_cameras(2), return_images=True)
    assert out["latents"].shape == (2, 3, SIZE, SIZE)
    target = torch.nn.functional.interpolate(
        ((out["target_latent"] + 1) / 2).clamp(0, 1), (20, 20), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(out["target_img"], target.permute(0, 2, 3, 1))
    for key in ("noisy_img", "noise_img", "target_img"):
        assert out[key].shape == (2, 20, 20, 3) and 0 <= out[key].min() and out[key].max() <= 1
    out["loss_sdi"].backward()
    assert rgb.grad.abs().sum() > 0


# ------------------------------------------------------------------ cameras and condition
def test_the_batchs_cameras_reach_a_view_conditioned_model(plugin):
    guidance = make_guidance(plugin, RECORDING)
    batch = batch_cameras(3)
    guidance(torch.rand(3, 8, 8, 3), prompt_utils("a prompt"), **batch)
    assert guidance.model.calls
    for call in guidance.model.calls:
        cameras = call["cameras"]
        assert call["cond"] in (None, len("a prompt"))  # the unconditional branch, or the prompt's
        for name, key in (
            ("elevation", "elevation"),
            ("azimuth", "azimuth"),
            ("distance", "camera_distances"),
        ):
            assert torch.equal(getattr(cameras, name), batch[key])
        assert torch.equal(cameras.c2w, batch["c2w"])
        torch.testing.assert_close(cameras.fovy, torch.tensor([45.0, 60.0, 50.0]))


def test_a_model_that_is_not_view_conditioned_gets_no_cameras(plugin):
    guidance = make_guidance(plugin, RECORDING, {"view_conditioned": False})
    guidance(torch.rand(1, 8, 8, 3), prompt_utils(), **batch_cameras(1))
    assert guidance.model.calls and all("cameras" not in call for call in guidance.model.calls)


def test_the_prompt_names_the_class(plugin):
    guidance = make_guidance(plugin)
    assert [guidance.model.prompt_condition(name) for name in ("ball", " Tower ", "crate")] == [0, 1, 2]
    with pytest.raises(ValueError, match="prompt='a hamburger' names no class.*ball, tower, crate"):
        guidance(torch.rand(1, SIZE, SIZE, 3), prompt_utils("a hamburger"), **batch_cameras(1))


# ------------------------------------------------------------------ refused
def test_rgb_as_latents_is_refused(plugin):
    guidance = make_guidance(plugin)
    with pytest.raises(ValueError, match="rgb_as_latents=true .* names a backbone without latents"):
        guidance(torch.rand(1, 8, 8, 4), prompt_utils(), **batch_cameras(1), rgb_as_latents=True)


def test_perp_neg_is_refused(plugin):
    guidance = make_guidance(plugin)
    with pytest.raises(ValueError, match="use_perp_neg=false"):
        guidance(torch.rand(1, SIZE, SIZE, 3), prompt_utils(use_perp_neg=True), **batch_cameras(1))


def test_fovy_in_degrees_is_refused(plugin):
    guidance = make_guidance(plugin)
    batch = {**batch_cameras(1), "fovy": torch.tensor([55.0])}
    with pytest.raises(ValueError, match=r"fovy must be the vertical field of view in radians, in \(0, π\)"):
        guidance(torch.rand(1, SIZE, SIZE, 3), prompt_utils(), **batch)
