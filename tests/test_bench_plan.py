"""sdi-bench plans: the paper43 suite, methods and methods files, run ids, config hashes, GPU-hours."""

from __future__ import annotations

import json
import pathlib
import re

import pytest
import yaml

from sdi_bench.cli import main
from sdi_bench.errors import BenchError
from sdi_bench.methods import (
    BUILTIN_METHODS,
    CONFIG_DIR,
    Method,
    load_methods_file,
    select_methods,
)
from sdi_bench.plan import build_plan, gpu_hours, parse_seeds
from sdi_bench.suites import load_suite, prompt_slug, read_prompts

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_SUITE = REPO.parent / "shared" / "prompts" / "sdi_paper_43.txt"


def test_paper43_is_the_papers_43_prompts_verbatim():
    suite = load_suite("paper43")
    assert len(suite.prompts) == 43 and len(set(suite.prompts)) == 43
    assert suite.prompts[0] == "A car made out of sushi"
    assert "A DSLR photo of a an old man" in suite.prompts  # the paper's typos are kept
    assert "A rabbit, animated movie character, high detail 3d mode" in suite.prompts
    if not SHARED_SUITE.is_file():
        pytest.skip(f"{SHARED_SUITE} is not here to compare with")
    assert suite.prompts == tuple(SHARED_SUITE.read_text(encoding="utf-8").splitlines())


def test_a_prompt_file_skips_blanks_and_comments_and_rejects_repeats(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# my prompts\na red apple\n\n  a blue car  \n")
    assert read_prompts(path) == ("a red apple", "a blue car")
    assert load_suite(prompts_file=path).name == "mine"
    path.write_text("a red apple\na red apple\n")
    with pytest.raises(BenchError, match="line 2 repeats"):
        read_prompts(path)
    with pytest.raises(BenchError, match="exactly one"):
        load_suite("paper43", path)


def test_slugs_are_safe_and_unique_over_the_suite():
    slugs = [prompt_slug(prompt) for prompt in load_suite("paper43").prompts]
    assert len(set(slugs)) == 43
    assert all(set(slug) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-") for slug in slugs)
    assert prompt_slug("A ripe strawberry").startswith("a_ripe_strawberry-")


def test_builtin_methods_point_to_our_configs():
    assert list(BUILTIN_METHODS) == [
        "sdi",
        "sdi-official",
        "sds",
        "vsd",
        "sdi-2view",
        "sdi-consistent-shared",
        "sdi-gs",
        "sds-gs",
    ]
    for method in BUILTIN_METHODS.values():
        assert method.config.parent == CONFIG_DIR and method.config.is_file(), method.name
    two_view = yaml.safe_load(BUILTIN_METHODS["sdi-2view"].config.read_text())
    one_view = yaml.safe_load(BUILTIN_METHODS["sdi"].config.read_text())
    # two cameras per step at half the steps: the same number of rendered views (UNet budget)
    assert two_view["data"]["batch_size"] * two_view["trainer"]["max_steps"] == (
        one_view["data"]["batch_size"] * one_view["trainer"]["max_steps"]
    )
    assert two_view["data"]["batch_size"] == 2
    assert two_view["system"]["guidance"] == one_view["system"]["guidance"]
    assert "core_options" not in two_view["system"]["guidance"]


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_sdi_consistent_shared_is_sdi_yaml_with_the_noise_switched():
    one = flatten(yaml.safe_load(BUILTIN_METHODS["sdi"].config.read_text()))
    other = flatten(yaml.safe_load(BUILTIN_METHODS["sdi-consistent-shared"].config.read_text()))
    changed = {
        key: (one.get(key), other.get(key))
        for key in one.keys() | other.keys()
        if one.get(key) != other.get(key)
    }
    assert changed == {
        "name": ("sdi", "sdi-consistent-shared"),
        "system.guidance.noise": ("inversion", "consistent-noise"),
        "system.guidance.noise_options.seed": (None, "${seed}"),
        "system.guidance.noise_options.shared": (None, 0.1),
    }, "sdi-consistent-shared.yaml must follow sdi.yaml: regenerate it from sdi.yaml with these differences"


def test_sdi_2view_is_sdi_yaml_with_two_views_and_every_step_count_halved():
    one = flatten(yaml.safe_load(BUILTIN_METHODS["sdi"].config.read_text()))
    two = flatten(yaml.safe_load(BUILTIN_METHODS["sdi-2view"].config.read_text()))
    changed = {
        key: (one.get(key), two.get(key)) for key in one.keys() | two.keys() if one.get(key) != two.get(key)
    }
    assert changed == {
        "name": ("sdi", "sdi-2view"),
        "data.batch_size": (1, 2),
        "trainer.max_steps": (10000, 5000),
        "trainer.val_check_interval": (50, 25),
        "system.geometry.pos_encoding_config.start_step": (2000, 1000),
        "system.geometry.pos_encoding_config.update_steps": (500, 250),
        "system.material.ambient_only_steps": (1000, 500),
        "system.loss.lambda_sparsity": ([0, 0.15, 0.0, 3000], [0, 0.15, 0.0, 1500]),
    }, "sdi-2view.yaml must follow sdi.yaml: regenerate it from sdi.yaml with these differences"


def test_a_methods_file_adds_methods_from_a_base_or_a_config(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mine.yaml").write_text("name: mine\n")
    path = tmp_path / "methods.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "methods": {
                    "sdi-5inv": {
                        "base": "sdi",
                        "overrides": ["system.guidance.inversion.n_steps=5"],
                        "minutes": 80,
                    },
                    "mine": {"config": "configs/mine.yaml"},
                }
            }
        )
    )
    methods = load_methods_file(path)
    five = methods["sdi-5inv"]
    assert five.config == BUILTIN_METHODS["sdi"].config
    assert five.overrides == ("system.guidance.inversion.n_steps=5",) and five.minutes == 80
    assert methods["mine"].config == tmp_path / "configs" / "mine.yaml" and methods["mine"].minutes is None
    assert [m.name for m in select_methods("mine,sds", methods)] == ["mine", "sds"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"base": "nope"}, "base 'nope' is not a method"),
        ({"overrides": ["x=1"]}, "give a config"),
        ({"base": "sdi", "overrides": ["novalue"]}, "not of the form key=value"),
        ({"base": "sdi", "minutes": -3}, "minutes must be a positive number"),
        ({"base": "sdi", "typo": 1}, "unknown keys"),
    ],
)
def test_a_bad_methods_file_names_the_problem(tmp_path, entry, message):
    path = tmp_path / "methods.yaml"
    path.write_text(yaml.safe_dump({"methods": {"x": entry}}))
    with pytest.raises(BenchError, match=message):
        load_methods_file(path)


def test_seeds_parse_lists_and_ranges():
    assert parse_seeds("0,1") == (0, 1)
    assert parse_seeds("0-3,7") == (0, 1, 2, 3, 7)
    assert parse_seeds(f"{2**32 - 1}") == (2**32 - 1,)  # the largest seed Lightning takes
    assert len(parse_seeds("0-999")) == 1000
    for bad, message in (
        ("", "--seeds is empty"),
        ("a", "entry 'a' is not an integer"),
        ("1,1", "listed twice"),
        ("-1", "seed -1 is negative"),
        ("5-2", "entry '5-2' runs backwards: write 2-5"),
        ("4294967296", "seed 4294967296 is above 4294967295"),
        ("99999999999999999999", "seed 99999999999999999999 is above 4294967295"),
        ("0-100000000", "'0-100000000' gives more than 1000 seeds"),  # at once, not a quadratic hang
        ("0-600,1000-1600", "gives more than 1000 seeds"),
    ):
        with pytest.raises(BenchError, match=re.escape(message)):
            parse_seeds(bad)


def test_a_plan_is_prompts_times_methods_times_seeds_with_stable_ids():
    suite = load_suite("paper43")
    methods = select_methods("sdi,sds,vsd", BUILTIN_METHODS)
    plan = build_plan(suite, methods, (0, 1), settings=["trainer.max_steps=100"])
    assert len(plan.runs) == 43 * 3 * 2
    assert len({run.run_id for run in plan.runs}) == len(plan.runs)
    first = plan.runs[0]
    assert first.run_id == f"sdi/{prompt_slug(suite.prompts[0])}/seed0/{first.config_hash[:8]}"
    assert [run.method for run in plan.runs[:3]] == ["sdi", "sds", "vsd"]  # every method early on
    assert first.args[-5:] == (
        "trainer.max_steps=100",
        f"system.prompt_processor.prompt={json.dumps(suite.prompts[0])}",
        "seed=0",
        f"tag={prompt_slug(suite.prompts[0])}-seed0",
        "use_timestamp=false",
    )
    again = build_plan(suite, methods, (0, 1), settings=["trainer.max_steps=100"])
    assert [run.config_hash for run in again.runs] == [run.config_hash for run in plan.runs]
    other = build_plan(suite, methods, (0, 1), settings=["trainer.max_steps=200"])
    # a run is its config: another config is another run, with another id
    assert all(a.config_hash != b.config_hash for a, b in zip(plan.runs, other.runs))
    assert all(a.run_id != b.run_id for a, b in zip(plan.runs, other.runs))
    assert all(a.setup_hash != b.setup_hash for a, b in zip(plan.runs, other.runs))
    # one setup per method: the prompt and the seed are not part of it
    assert {run.setup_hash for run in plan.runs if run.method == "sdi"} == {first.setup_hash}


def test_the_config_hash_follows_the_config_file_and_the_overlays(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("name: a\n")
    overlay = tmp_path / "o.yaml"
    overlay.write_text("x: 1\n")
    suite = load_suite(prompts_file=_prompts(tmp_path, ["a cat"]))
    method = Method(name="m", config=config)
    hashes = [build_plan(suite, [method], (0,), overlays=[overlay]).runs[0].config_hash]
    overlay.write_text("x: 2\n")
    hashes.append(build_plan(suite, [method], (0,), overlays=[overlay]).runs[0].config_hash)
    config.write_text("name: b\n")
    hashes.append(build_plan(suite, [method], (0,), overlays=[overlay]).runs[0].config_hash)
    assert len(set(hashes)) == 3


def test_gpu_hours_of_the_paper_plan_come_from_the_papers_timings():
    plan = build_plan(load_suite("paper43"), select_methods("sdi,sds,vsd", BUILTIN_METHODS), (0,))
    rows = {row.method: row for row in gpu_hours(plan)}
    assert rows["sds"].hours == pytest.approx(43 * 66 / 60)
    assert rows["vsd"].hours == pytest.approx(43 * 334 / 60)
    assert rows["sdi"].hours == pytest.approx(43 * 119 / 60)
    assert sum(row.hours for row in rows.values()) == pytest.approx(371.95)


def test_plan_command_prints_every_run_and_the_gpu_hours(capsys):
    assert main(["plan", "--suite", "paper43", "--methods", "sdi,sds,vsd", "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(lines) == 258
    assert "43 prompts × 3 methods × 2 seeds = 258 runs" in out
    assert "expected: 743.9 GPU-hours" in out


def test_plan_command_shows_the_status_of_each_run_in_a_results_folder(tmp_path, capsys):
    from sdi_bench.outcome import Outcome
    from sdi_bench.store import Store

    prompts = _prompts(tmp_path, ["a cat", "a dog"])
    plan = build_plan(load_suite(prompts_file=prompts), [BUILTIN_METHODS["sdi"]], (0,))
    store = Store(tmp_path / "out")
    store.sync_plan(plan.runs)
    store.finish(store.claim("t", 0, 60), Outcome(status="done", outcome="ok", attempt_dir="/x"))
    argv = ["plan", "--prompts", str(prompts), "--methods", "sdi", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("[done]") and lines[1].endswith("[pending]")
    assert "sdi/a_cat-" in lines[0] and "(119 min)" in lines[0]


def test_plan_command_rejects_an_unknown_method_without_a_traceback(capsys):
    assert main(["plan", "--suite", "paper43", "--methods", "sdi,nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope' is not a method" in err and "Traceback" not in err


def _prompts(folder: pathlib.Path, prompts: list[str]) -> pathlib.Path:
    path = folder / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n")
    return path
