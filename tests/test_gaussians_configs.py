"""configs/sdi-gs.yaml and configs/sds-gs.yaml: matched runs of threestudio-3dgs, SDI against SDS.

Against our classes imported with the threestudio STAND-IN; with THREESTUDIO_3DGS_ROOT set, sds-gs.yaml
is also compared with threestudio-3dgs's own configs/gaussian_splatting.yaml (it differs only in the
Stable Diffusion it loads). The runs themselves: tests/test_gaussians_threestudio.py.
"""

from __future__ import annotations

import importlib
import os
import pathlib

import pytest
from config_files import CONFIGS, load, resolved
from omegaconf import OmegaConf
from threestudio_standin.activate import standin_threestudio

GUIDANCE_ONLY = ("guidance_type", "guidance")
"""The blocks of ``system`` in which the two configs differ (with the guidance's loss weight)."""


@pytest.fixture(scope="module")
def plugin():
    with standin_threestudio():
        yield importlib.import_module("threestudio_sdi.threestudio")


def test_the_two_configs_differ_only_in_the_guidance():
    sdi, sds = load("sdi-gs.yaml"), load("sds-gs.yaml")
    assert (sdi.seed, sdi.data_type) == (sds.seed, sds.data_type)
    for key in ("data", "trainer", "checkpoint"):
        assert resolved(sdi, key) == resolved(sds, key), key
    for key in set(sds.system) | set(sdi.system):
        if key in (*GUIDANCE_ONLY, "loss"):
            continue
        assert OmegaConf.select(sdi, f"system.{key}") == OmegaConf.select(sds, f"system.{key}"), key
    sdi_loss, sds_loss = resolved(sdi, "system.loss"), resolved(sds, "system.loss")
    assert sdi_loss.pop("lambda_sdi") > 0 and sds_loss.pop("lambda_sds") == 0.1
    assert sdi_loss == sds_loss  # the same regularisers
    assert sdi.data.batch_size == 4 and sdi.trainer.max_steps == 5000


def test_sdi_gs_mixes_the_guidance_state_into_threestudio_3dgs_system(plugin):
    config = load("sdi-gs.yaml")
    assert config.system_type == f"gaussian-splatting-system:{plugin.STATE_MIXIN_NAME}"
    assert load("sds-gs.yaml").system_type == "gaussian-splatting-system"
    assert config.system.geometry_type == "gaussian-splatting"
    assert config.system.renderer_type == "diff-gaussian-rasterizer"


def test_sdi_gs_guidance_parses_as_sdi_guidance_with_the_sds_loss_scale(plugin):
    from threestudio_sdi.models.model_source import DEFAULT_MODEL_ID

    config = load("sdi-gs.yaml")
    assert config.system.guidance_type == "sdi-guidance"
    guidance = resolved(config, "system.guidance")
    core = plugin.SDIGuidance.check_config(guidance)  # refuses weighting_strategy "sds", unknown keys
    assert guidance["weighting_strategy"] is None and guidance["loss_reduction"] == "sum"
    assert guidance["trainer_max_steps"] == 5000 and guidance["t_anneal"]
    assert core.preset == "paper" and core.guidance_scale == 7.5
    assert guidance["pretrained_model_name_or_path"] == DEFAULT_MODEL_ID
    prompt = resolved(config, "system.prompt_processor")
    assert prompt["pretrained_model_name_or_path"] == DEFAULT_MODEL_ID


def test_the_plain_guidance_switch_is_refused_with_the_setting_named(plugin):
    """threestudio-3dgs's SDS config switched to sdi-guidance keeps ``weighting_strategy: sds``."""
    block = {**resolved(load("sds-gs.yaml"), "system.guidance")}
    block.pop("min_step_percent"), block.pop("max_step_percent")
    with pytest.raises(ValueError, match="weighting_strategy='sds' has no effect in sdi-guidance"):
        plugin.SDIGuidance.check_config(block)


THREESTUDIO_3DGS_ROOT = os.environ.get("THREESTUDIO_3DGS_ROOT")


@pytest.mark.skipif(not THREESTUDIO_3DGS_ROOT, reason="THREESTUDIO_3DGS_ROOT is not set")
def test_sds_gs_is_threestudio_3dgs_own_config_but_for_the_model():
    theirs = OmegaConf.load(pathlib.Path(THREESTUDIO_3DGS_ROOT) / "configs" / "gaussian_splatting.yaml")
    ours = load("sds-gs.yaml")
    for config in (theirs, ours):
        config.name = "x"
        config.system.guidance.pretrained_model_name_or_path = "model"
        config.system.prompt_processor.pretrained_model_name_or_path = "model"
    assert OmegaConf.to_container(ours, resolve=False) == OmegaConf.to_container(theirs, resolve=False)


def test_sdi_bench_has_both_as_built_in_methods():
    from sdi_bench.methods import BUILTIN_METHODS, select_methods
    from sdi_bench.plan import build_plan
    from sdi_bench.suites import load_suite

    methods = select_methods("sdi-gs,sds-gs", BUILTIN_METHODS)
    assert [method.config for method in methods] == [CONFIGS / "sdi-gs.yaml", CONFIGS / "sds-gs.yaml"]
    plan = build_plan(load_suite("paper43"), methods, (0, 1))
    assert len(plan.runs) == 43 * 2 * 2 and {run.method for run in plan.runs} == {"sdi-gs", "sds-gs"}
