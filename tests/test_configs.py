"""The YAML configs: they load, their keys are real config fields, and the A/B configs agree.

Keys are checked against our classes imported with the threestudio STAND-IN (tests/threestudio_standin);
the integration test checks the built-in SDS / VSD blocks against the real threestudio.
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib

import pytest
from config_files import CONFIGS, load, resolved
from omegaconf import OmegaConf
from threestudio_standin.activate import standin_threestudio

REPO = pathlib.Path(__file__).resolve().parents[1]
ALL = sorted(path.name for path in CONFIGS.glob("*.yaml"))
GAUSSIANS = ["sdi-gs.yaml", "sds-gs.yaml"]
"""threestudio-3dgs's system and geometry: checked by tests/test_gaussians_configs.py."""
SDI = [name for name in ALL if name.startswith("sdi") and name not in GAUSSIANS]
KNOWN_LAMBDAS = {
    "lambda_sdi",
    "lambda_orient",
    "lambda_sparsity",
    "lambda_opaque",
    "lambda_z_variance",
    "lambda_convex",
}


@pytest.fixture(scope="module")
def plugin():
    with standin_threestudio():
        yield importlib.import_module("threestudio_sdi.threestudio")


def field_names(config_class) -> set[str]:
    return {field.name for field in dataclasses.fields(config_class)}


STEPS = {"sdi-2view.yaml": 5000, "sdi-gs.yaml": 5000, "sds-gs.yaml": 5000}
"""trainer.max_steps of each config (default 10 000): sdi-2view.yaml spends the same UNet budget in half the steps."""


def test_the_expected_configs_exist():
    assert ALL == [
        "sdi-24gb.yaml",
        "sdi-2view.yaml",
        "sdi-consistent-shared.yaml",
        "sdi-gs.yaml",
        "sdi-official.yaml",
        "sdi.yaml",
        "sds-gs.yaml",
        "sds.yaml",
        "vsd.yaml",
    ]


def test_the_configs_are_real_files_where_the_extension_keeps_them():
    """The repository root is the extension (custom/threestudio-sdi/ after a git clone), so the run
    command's custom/threestudio-sdi/configs/sdi.yaml is configs/sdi.yaml here: a file, not a link."""
    from threestudio_sdi.extension import config_dir

    assert config_dir() == CONFIGS and (REPO / "__init__.py").is_file()
    for name in ALL:
        assert (CONFIGS / name).is_file() and not (CONFIGS / name).is_symlink()
    assert not CONFIGS.is_symlink()


@pytest.mark.parametrize("name", ALL)
def test_every_yaml_loads(name):
    config = load(name)
    for key in ("name", "data_type", "data", "system_type", "system", "trainer", "checkpoint"):
        assert key in config, key
    assert OmegaConf.is_missing(config.system.prompt_processor, "prompt")
    assert resolved(config, "trainer")["max_steps"] == STEPS.get(name, 10000)


@pytest.mark.parametrize("name", SDI)
def test_sdi_configs_use_our_names_and_fields(plugin, name):
    config = load(name)
    assert config.system_type == "sdi-ext-system"
    assert config.system.guidance_type == "sdi-guidance"
    guidance = resolved(config, "system.guidance")
    assert set(guidance) <= field_names(plugin.SDIGuidance.Config), set(guidance) - field_names(
        plugin.SDIGuidance.Config
    )
    parsed = OmegaConf.structured(plugin.SDIGuidance.Config(**guidance))  # types check too
    assert parsed.trainer_max_steps == config.trainer.max_steps == STEPS.get(name, 10000)
    assert parsed.resume_schedule == "keep"  # a longer resumed run never restarts the anneal
    system_keys = set(config.system) - {"loggers"}
    assert system_keys <= field_names(plugin.SDIExtSystem.Config), system_keys - field_names(
        plugin.SDIExtSystem.Config
    )
    assert set(config.system.loss) <= KNOWN_LAMBDAS


@pytest.mark.parametrize(
    ("name", "preset"), [("sdi.yaml", "paper"), ("sdi-official.yaml", "official"), ("sdi-24gb.yaml", "paper")]
)
def test_presets_and_convexity_schedules(plugin, name, preset):
    from threestudio_sdi.regularisers import convexity_schedule

    config = load(name)
    assert config.system.guidance.preset == preset
    assert "lambda_convex" not in config.system.loss  # the preset's schedule, referred to by name
    assert resolved(config, "system")["convexity_schedule"] == preset
    released = {"paper": [0, 0.1, 0.1, 3999, 0.0, 4000], "official": [0, 1.0, 0.1, 4000]}
    assert convexity_schedule(preset, config.trainer.max_steps) == released[preset]
    # docs/method.md §4 weights
    loss = resolved(config, "system.loss")
    assert loss["lambda_sdi"] == 1 and loss["lambda_orient"] == 0.1 and loss["lambda_opaque"] == 0.1
    assert loss["lambda_sparsity"] == [0, 0.15, 0, 3000] and loss["lambda_z_variance"] == 1
    guidance = config.system.guidance
    assert (guidance.guidance_scale, guidance.inversion.guidance_scale) == (7.5, -7.5)
    assert (guidance.inversion.n_steps, guidance.inversion.eta, guidance.inversion.overshoot) == (
        10,
        0.3,
        True,
    )
    assert guidance.noise == "inversion" and guidance.t_anneal and guidance.loss_reduction == "mean"
    assert config.system.prompt_processor.use_perp_neg


def _shared(config):
    return {
        "cameras": {
            key: resolved(config, f"data.{key}")
            for key in ("camera_distance_range", "fovy_range", "elevation_range")
        },
        "resolution": (config.data.width, config.data.height),
        "geometry": resolved(config, "system.geometry"),
        "samples": config.system.renderer.num_samples_per_ray,
        "steps": config.trainer.max_steps,
    }


def test_ab_configs_share_geometry_cameras_resolution_and_budget():
    reference = _shared(load("sdi.yaml"))
    for name in ("sdi-official.yaml", "sds.yaml", "vsd.yaml"):
        assert _shared(load(name)) == reference, name
    sds, vsd = load("sds.yaml"), load("vsd.yaml")
    assert (sds.system_type, sds.system.guidance_type) == ("dreamfusion-system", "stable-diffusion-guidance")
    assert (vsd.system_type, vsd.system.guidance_type) == (
        "prolificdreamer-system",
        "stable-diffusion-vsd-guidance",
    )
    assert set(sds.system.loss) == {"lambda_sds", "lambda_orient", "lambda_sparsity", "lambda_opaque"}
    assert {"lambda_vsd", "lambda_lora"} <= set(vsd.system.loss)


def test_24gb_config_renders_less():
    full, small = load("sdi.yaml"), load("sdi-24gb.yaml")
    assert small.data.width * small.data.height < full.data.width * full.data.height
    assert small.data.eval_width <= small.data.width
    assert small.system.renderer.num_samples_per_ray < full.system.renderer.num_samples_per_ray
    text = (CONFIGS / "sdi-24gb.yaml").read_text()
    assert "trades away" in text.splitlines()[3] or "trades away" in text[:1200]
    # apart from resolution and samples it is sdi.yaml
    for key in ("system.guidance", "system.loss", "system.geometry", "system.material", "trainer"):
        assert resolved(full, key) == resolved(small, key), key


def test_the_consistent_noise_config_builds_its_strategy(plugin):
    """sdi-consistent-shared.yaml's ``noise`` and ``noise_options`` as the plugin builds them at start-up:
    the research strategy (imported on demand), its seed the run's, β = 0.1, one value per channel."""
    guidance = resolved(load("sdi-consistent-shared.yaml"), "system.guidance")
    strategy = importlib.import_module("threestudio_sdi.threestudio.guidance").noise_strategy(
        guidance["noise"], guidance["noise_options"]
    )
    assert (strategy.name, strategy.uses_noise_field) == ("consistent-noise", True)
    assert (strategy.seed, strategy.shared, strategy.shared_scale) == (0, 0.1, 0)
    assert strategy.attachment == "integrated" and strategy.field_resolution == 64
