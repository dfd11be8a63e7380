"""The frontier's pieces that run everywhere: the equal-mean class, the frontier's methods, and the
``sdi-guidance`` settings the real-threestudio frontier gives each method (parsed by the plugin against
the threestudio stand-in into the lab's own guidance config)."""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
import sys

import pytest
import torch
from threestudio_standin.activate import standin_threestudio

from threestudio_sdi.experimental.lab3d import LabSettings, make_assets
from threestudio_sdi.experimental.lab3d.assets import CLASS_NAMES, EQUAL_MEAN_CLASS, ORB_PATTERNS
from threestudio_sdi.experimental.lab3d.experiment import Lab3D
from threestudio_sdi.experimental.lab3d.methods import FRONTIER_METHODS, get_method
from threestudio_sdi.experimental.lab3d.run_context import RunContext
from threestudio_sdi.experimental.lab3d.shared_choice import shared_preference
from threestudio_sdi.experimental.strategies import ConsistentNoise

HARNESS = pathlib.Path(__file__).resolve().parent / "threestudio_cpu"


def test_the_default_classes_are_unchanged_by_the_equal_mean_class() -> None:
    assert CLASS_NAMES == ("ball", "tower", "crate") and LabSettings().class_names == CLASS_NAMES
    three = make_assets(16, 2)
    four = make_assets(16, 2, (*CLASS_NAMES, EQUAL_MEAN_CLASS))
    assert torch.equal(four.grid.density[:6], three.grid.density)
    assert torch.equal(four.grid.colour[:6], three.grid.colour)


@pytest.fixture(scope="module")
def lab() -> Lab3D:
    torch.set_num_threads(1)
    return Lab3D(LabSettings(class_names=(*CLASS_NAMES, EQUAL_MEAN_CLASS), eval_views=4))


def test_the_equal_mean_class_shares_one_mean_colour_and_differs_in_structure(lab: Lab3D) -> None:
    """orb's variants: one palette, half the surface each colour; their held-out mean colours agree to
    an eighth of how far the other classes' variants differ, while their renders differ as much."""
    orb = lab.class_index(EQUAL_MEAN_CLASS)
    members = lab.assets.members(orb)
    assert [lab.assets.descriptions[k].split(": ")[1].split(",")[0] for k in members] == list(
        ORB_PATTERNS[:3]
    )
    colours = lab.assets.grid.colour[members]  # one palette: the same two colours in every variant
    palette = torch.unique(colours.flatten(2).transpose(1, 2).reshape(-1, 3).round(decimals=6), dim=0)
    assert palette.shape[0] == 2

    def mean_colour_spread(class_index: int) -> float:
        means = lab.truth_rgb[lab.assets.members(class_index)].mean(dim=(1, 3, 4))  # [variants, 3]
        return float(means.std(dim=0).max())

    def structure_distance(class_index: int) -> float:
        renders = lab.truth_rgb[lab.assets.members(class_index)]
        return float((renders[0] - renders[1:]).pow(2).mean())

    others = [lab.class_index(name) for name in CLASS_NAMES]
    assert mean_colour_spread(orb) < 0.15 * min(mean_colour_spread(c) for c in others)
    assert structure_distance(orb) > 0.5 * min(structure_distance(c) for c in others)
    # the colour form's preference (shared_choice): for every seed's g, under a quarter on orb of what
    # it is on any other class
    for seed in range(3):
        others_strength = min(max(abs(v) for v in shared_preference(lab, c, seed)[1]) for c in others)
        assert max(abs(v) for v in shared_preference(lab, orb, seed)[1]) < 0.25 * others_strength, seed


def test_the_frontier_methods_are_what_they_say() -> None:
    assert len(FRONTIER_METHODS) == len(set(FRONTIER_METHODS)) == 13
    for n in (1, 2, 3, 5):
        config = get_method(f"sdi-paper-n{n}").config
        assert (
            config.strategy.name == "inversion" and config.inversion.n_steps == n and config.preset == "paper"
        )
    run = RunContext(seed=4, density=lambda: torch.zeros(8, 8, 8), render_settings=LabSettings().render)
    expected = {
        "consistent-noise": ("integrated", 0.0, 0),
        "consistent-surface": ("surface", 0.0, 0),
        "consistent-shared-10": ("integrated", 0.1, 0),
        "consistent-shared-surface-10": ("surface", 0.1, 0),
        "consistent-lowfreq-10": ("integrated", 0.1, 2),
    }
    for name, (attachment, shared, scale) in expected.items():
        strategy = get_method(name).run_config(run).strategy
        assert (strategy.attachment, strategy.shared, strategy.shared_scale, strategy.seed) == (
            attachment,
            shared,
            scale,
            4,
        )
        assert strategy.field.attachment == attachment and (strategy.field.field.coarse is not None) == (
            scale > 0
        )


def test_the_threestudio_frontier_gives_sdi_guidance_each_labs_method() -> None:
    """``frontier.guidance_block`` parsed by ``sdi-guidance`` is the lab method's config (the field and
    seed aside, which the host binds), with its timestep policy."""
    sys.path.insert(0, str(HARNESS))
    try:
        with standin_threestudio():
            plugin = importlib.import_module("threestudio_sdi.threestudio")
            frontier = importlib.import_module("frontier")
            for name in FRONTIER_METHODS:
                block = frontier.guidance_block(name, seed=7)
                parsed = plugin.SDIGuidance.check_config(block)
                method = get_method(name)
                lab_strategy = method.config.strategy
                if isinstance(lab_strategy, ConsistentNoise):
                    lab_strategy = dataclasses.replace(lab_strategy, seed=7)
                assert parsed.strategy == lab_strategy, name
                assert dataclasses.replace(parsed, noise=lab_strategy) == dataclasses.replace(
                    method.config, noise=lab_strategy
                ), name
                assert block.get("t_anneal", True) == (method.timesteps == "annealed"), name
    finally:
        sys.path.remove(str(HARNESS))
        for module in ("frontier", "harness", "known_answer"):
            sys.modules.pop(module, None)
