"""sdi-bench score: view collection, the CLIP and CLIP-IQA scorers on a tiny random CLIP (the real
torchmetrics and transformers code paths, offline), one-scorer extensibility, missing-model errors."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from PIL import Image

from sdi_bench.cli import main
from sdi_bench.outcome import Outcome
from sdi_bench.plan import PlannedRun
from sdi_bench.scoring.base import MetricModel, Scorer
from sdi_bench.scoring.clip import ClipScoreScorer
from sdi_bench.scoring.clip_iqa import ClipIqaScorer
from sdi_bench.scoring.images import load_render, select_views
from sdi_bench.scoring.score import collect_views
from sdi_bench.store import Store

pytest.importorskip("torchmetrics")
PANEL = 32


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> pathlib.Path:
    from bench_standin.make_tiny_clip import tiny_clip

    return tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def write_trial(trial: pathlib.Path, grays: Sequence[int], step: int = 10) -> None:
    """A threestudio trial whose test view i has a uniform render of gray ``grays[i]`` (then a white
    normal panel and a black opacity panel, which a scorer must never see)."""
    (trial / "configs").mkdir(parents=True)
    (trial / "configs" / "parsed.yaml").write_text(f"data:\n  eval_width: {PANEL}\n  eval_height: {PANEL}\n")
    folder = trial / "save" / f"it{step}-test"
    folder.mkdir(parents=True)
    for index, gray in enumerate(grays):
        image = np.zeros((PANEL, 3 * PANEL, 3), dtype=np.uint8)
        image[:, :PANEL] = gray
        image[:, PANEL : 2 * PANEL] = 255
        Image.fromarray(image).save(folder / f"{index}.png")


def done_store(out: pathlib.Path, trials: dict[str, Sequence[int]]) -> Store:
    """A store whose runs (one per prompt) are done, with synthetic trials."""
    store = Store(out)
    runs = [
        PlannedRun(f"m/{prompt}/seed0/h", "m", prompt, index, 0, "/c.yaml", (), (), "h", "s")
        for index, prompt in enumerate(trials)
    ]
    store.sync_plan(runs)
    for prompt, grays in trials.items():
        claim = store.claim("test", retries=0, lease_seconds=60)
        trial = out / "trials" / prompt
        write_trial(trial, grays)
        store.finish(claim, Outcome(status="done", outcome="ok", attempt_dir=str(out), trial_dir=str(trial)))
    return store


def test_views_are_spread_evenly_over_the_turntable():
    paths = [pathlib.Path(f"{index}.png") for index in range(120)]
    chosen = [int(path.stem) for path in select_views(paths, 50)]
    assert len(chosen) == 50 and chosen[0] == 0 and chosen[-1] == 119
    gaps = np.diff(chosen)
    assert set(gaps.tolist()) <= {2, 3}
    assert select_views(paths[:12], 50) == paths[:12]


def test_the_render_panel_is_cut_out_of_threestudios_test_image(tmp_path):
    write_trial(tmp_path / "trial", [40, 200])
    views, unreadable = collect_views(tmp_path / "trial", 50)
    assert unreadable == [] and [view.size for view in views] == [(PANEL, PANEL)] * 2
    assert [int(np.asarray(view).mean()) for view in views] == [40, 200]
    # without parsed.yaml a square panel is assumed
    (tmp_path / "trial" / "configs" / "parsed.yaml").unlink()
    assert load_render(tmp_path / "trial" / "save" / "it10-test" / "0.png", None).size == (PANEL, PANEL)


def views_of(grays: Sequence[int]) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(np.clip(gray + rng.integers(-40, 40, (PANEL, PANEL, 3)), 0, 255).astype(np.uint8))
        for gray in grays
    ]


def clip_features(
    folder: pathlib.Path, images: list[Image.Image], texts: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit image and text features of the tiny CLIP, computed directly with transformers."""
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        vision = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        tokens = processor(text=texts, return_tensors="pt", padding=True)
        text = model.text_projection(model.text_model(**tokens).pooler_output)
    return vision / vision.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)


def test_clip_score_is_torchmetrics_clipscore_of_the_views(tiny_clip):
    scorer = ClipScoreScorer(model=str(tiny_clip))
    model = scorer.load()
    assert model.label.startswith(str(tiny_clip)) and "sha256" in model.label
    assert model.details["packages"]["torchmetrics"] != "-"
    views = views_of([30, 120, 220])
    image, text = clip_features(tiny_clip, views, ["a ripe strawberry"])
    cosines = (image @ text.T)[:, 0]
    value, spread = scorer.score(views, "a ripe strawberry")["clip"]
    assert value == pytest.approx(max(100 * float(cosines.mean()), 0.0), abs=1e-3)
    assert spread is None  # CLIPScore keeps only the sum


def test_clip_iqa_uses_the_papers_prompt_pairs_on_correctly_scaled_images(tiny_clip):
    scorer = ClipIqaScorer(model=str(tiny_clip))
    model = scorer.load()
    assert model.details["prompt_pairs"] == {
        "quality": ["Good photo.", "Bad photo."],
        "sharpness": ["Sharp photo.", "Blurry photo."],
        "real": ["Real photo.", "Abstract photo."],
    }
    views = views_of([30, 120, 220, 90])
    values = scorer.score(views, "ignored")
    pairs = ["Good photo.", "Bad photo.", "Sharp photo.", "Blurry photo.", "Real photo.", "Abstract photo."]
    image, anchors = clip_features(tiny_clip, views, pairs)
    probabilities = (100 * image @ anchors.T).reshape(len(views), 3, 2).softmax(-1)[..., 0]
    for column, key in enumerate(("quality", "sharpness", "real")):
        expected = probabilities[:, column]
        value, spread = values[f"clipiqa_{key}"]
        assert value == pytest.approx(100 * float(expected.mean()), abs=1e-3), key
        assert spread == pytest.approx(100 * float(expected.std(unbiased=False)), abs=1e-3), key


class MeanGray(Scorer):
    """A metric written for this test: the mean gray level of the render panels, in percent."""

    name = "gray"
    metrics = {"gray": "gray %"}
    default_model = "none"
    model_help = "no weights"

    def load(self) -> MetricModel:
        return MetricModel("arithmetic", {"packages": {}})

    def score(self, views, prompt):
        values = [100 * np.asarray(view).mean() / 255 for view in views]
        return {"gray": (float(np.mean(values)), float(np.std(values)))}


def test_a_new_metric_is_one_scorer_class_and_scoring_is_stored_once(tmp_path, capsys):
    grays = {"p0": list(range(0, 240, 2)), "p1": [51] * 4}  # 120 views, then 4
    store = done_store(tmp_path, grays)
    argv = [
        "score",
        "--out",
        str(tmp_path),
        "--metrics",
        f"{__name__}:MeanGray",
        "--views",
        "50",
        "--no-progress",
    ]
    assert main(argv) == 0
    scores = {row["run_id"]: row for row in store.scores()}
    chosen = [grays["p0"][index] for index in np.unique(np.linspace(0, 119, 50).round().astype(int))]
    assert scores["m/p0/seed0/h"]["value"] == pytest.approx(100 * np.mean(chosen) / 255, abs=1e-9)
    assert scores["m/p0/seed0/h"]["n_views"] == 50 and scores["m/p1/seed0/h"]["n_views"] == 4
    assert scores["m/p1/seed0/h"]["value"] == pytest.approx(20.0)
    out = capsys.readouterr().out
    assert "scored 2" in out and "fewer than 50 test views" in out
    assert main(argv) == 0
    assert "scored 0, already scored 2" in capsys.readouterr().out
    assert main([*argv, "--rescore"]) == 0
    assert "scored 2, already scored 0" in capsys.readouterr().out


def break_png(path: pathlib.Path, how: str) -> None:
    """A test render made unreadable: empty, cut in half, or replaced by bytes that are no image."""
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"not a png" * 10}[how])


def test_broken_renders_are_skipped_noted_and_counted_and_the_rest_is_scored_and_reported(tmp_path, capsys):
    grays = {"p0": [10, 20, 30, 40, 50, 60], "p1": [100, 110], "p2": [200, 210, 220]}
    store = done_store(tmp_path, grays)
    views = {name: tmp_path / "trials" / name / "save" / "it10-test" for name in grays}
    for index, how in ((0, "empty"), (2, "truncated"), (5, "garbage")):
        break_png(views["p0"] / f"{index}.png", how)
    for index in (0, 1):
        break_png(views["p1"] / f"{index}.png", "garbage")  # every view of p1
    argv = ["score", "--out", str(tmp_path), "--metrics", f"{__name__}:MeanGray", "--views", "50"]
    assert main([*argv, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    scores = {row["run_id"]: row for row in store.scores()}
    # p0 is scored on its three readable views, p2 on all of its own; p1 has none left
    assert scores["m/p0/seed0/h"]["n_views"] == 3
    assert scores["m/p0/seed0/h"]["value"] == pytest.approx(100 * np.mean([20, 40, 50]) / 255, abs=1e-9)
    assert scores["m/p2/seed0/h"]["value"] == pytest.approx(100 * np.mean([200, 210, 220]) / 255, abs=1e-9)
    assert "m/p1/seed0/h" not in scores
    assert "5 unreadable test render(s) in 2 run(s) were skipped" in captured.out
    assert (
        str(views["p0"] / "0.png") in captured.out
        and "1 done run(s) have no readable test views" in captured.out
    )
    # report: the table is written, and grid.png marks the cells it could not read
    for name in ("p0", "p2"):
        break_png(views[name] / "0.png", "garbage")
    assert main(["report", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and (tmp_path / "grid.png").is_file()
    assert "3 render(s) in grid.png could not be read (marked there)" in captured.out
    assert (tmp_path / "table.md").is_file() and (tmp_path / "metrics.png").is_file()


def test_score_command_with_the_tiny_clip_names_its_weights(tmp_path, tiny_clip, capsys):
    store = done_store(tmp_path, {"p0": [20, 60, 100], "p1": [200, 210, 220]})
    argv = [
        "score",
        "--out",
        str(tmp_path),
        "--clip-model",
        str(tiny_clip),
        "--clip-iqa-model",
        str(tiny_clip),
    ]
    assert main([*argv, "--views", "3", "--device", "cpu", "--no-progress"]) == 0
    metrics = sorted({row["metric"] for row in store.scores()})
    assert metrics == ["clip", "clipiqa_quality", "clipiqa_real", "clipiqa_sharpness"]
    assert len(store.scores()) == 8 and {row["n_views"] for row in store.scores()} == {3}
    models = {row["metric"]: row for row in store.metric_models()}
    assert models["clip"]["model"].startswith(str(tiny_clip))
    assert models["clip"]["details"]["scorer"] == "clip" and models["clip"]["details"]["source"] == "local"


def run_cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sdi_bench.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def test_a_missing_clip_model_says_how_to_use_local_weights(tmp_path):
    done_store(tmp_path, {"p0": [20, 60]})
    for model in (str(tmp_path / "no-such-folder"), "openai/clip-vit-base-patch32"):
        result = run_cli(
            "score", "--out", str(tmp_path), "--metrics", "clip", "--clip-model", model, "--no-progress"
        )
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert f"clip: cannot load {model!r}" in result.stderr
        assert "--clip-model" in result.stderr and "save_pretrained(DIR)" in result.stderr


@pytest.mark.parametrize(
    ("metric", "package", "advice"),
    [("imagereward", "ImageReward", "pip install image-reward"), ("hpsv2", "hpsv2", "pip install hpsv2")],
)
def test_optional_metrics_without_their_package_say_how_to_install_it(
    tmp_path, metric, package, advice, capsys
):
    try:
        __import__(package)
        pytest.skip(f"{package} is installed")
    except ImportError:
        pass
    done_store(tmp_path, {"p0": [20]})
    assert main(["score", "--out", str(tmp_path), "--metrics", metric, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert advice in err and f"--{metric}-model" in err


def test_clip_iqa_default_weights_need_piq(tmp_path, capsys):
    try:
        __import__("piq")
        pytest.skip("piq is installed")
    except ImportError:
        pass
    done_store(tmp_path, {"p0": [20]})
    assert main(["score", "--out", str(tmp_path), "--metrics", "clip-iqa", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "pip install piq" in err and "--clip-iqa-model" in err
