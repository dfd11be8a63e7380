"""sdi-bench report: per-method mean ± std, diverged %, time, VRAM, incompleteness, the four files."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from sdi_bench.cli import main
from sdi_bench.outcome import Outcome
from sdi_bench.plan import PlannedRun
from sdi_bench.report.aggregate import summarize
from sdi_bench.store import Store

GIB = 2**30


def trial_with_views(folder: pathlib.Path, gray: int) -> pathlib.Path:
    (folder / "configs").mkdir(parents=True)
    (folder / "configs" / "parsed.yaml").write_text("data:\n  eval_width: 16\n  eval_height: 16\n")
    (folder / "save" / "it3-test").mkdir(parents=True)
    image = np.zeros((16, 48, 3), dtype=np.uint8)
    image[:, :16] = gray
    Image.fromarray(image).save(folder / "save" / "it3-test" / "0.png")
    return folder


@pytest.fixture
def store(tmp_path) -> Store:
    """Method ``a``: 3 done (CLIP 30, 32, 34; 60/120/180 s; 2/4/- GiB) + 1 out of memory: complete.
    Method ``b``: 2 done (one scored, CLIP 20), 1 pending: incomplete."""
    store = Store(tmp_path)
    plan = [("a", p) for p in range(4)] + [("b", p) for p in range(3)]
    store.sync_plan(
        [
            PlannedRun(f"{m}/p{p}/seed0", m, f"prompt {p}", p, 0, "/c.yaml", (), (), "h", "s" + m)
            for m, p in plan
        ]
    )
    results = {
        "a/p0/seed0": ("done", 60.0, 2 * GIB, 30.0),
        "a/p1/seed0": ("done", 120.0, 4 * GIB, 32.0),
        "a/p2/seed0": ("done", 180.0, None, 34.0),
        "a/p3/seed0": ("diverged", 5.0, None, None),
        "b/p0/seed0": ("done", 30.0, GIB, 20.0),
        "b/p1/seed0": ("done", 30.0, GIB, None),
    }
    for run_id, (status, seconds, vram, clip) in results.items():
        claim = store.claim("t", retries=0, lease_seconds=60, run_ids=[run_id])
        trial = trial_with_views(tmp_path / "trials" / run_id, 40 if run_id.startswith("a") else 200)
        store.finish(
            claim,
            Outcome(
                status=status,
                outcome="ok" if status == "done" else "oom",
                attempt_dir=str(tmp_path),
                trial_dir=str(trial) if status == "done" else None,
                wall_seconds=seconds,
                peak_vram_bytes=vram,
                gpu_name="NVIDIA RTX A6000" if vram else None,
            ),
        )
        if clip is not None:
            store.add_scores(run_id, {"clip": (clip, 1.0, 50)}, "openai/clip-vit-base-patch32@abc")
    store.add_metric_model(
        "openai/clip-vit-base-patch32@abc",
        ["clip"],
        {"headings": {"clip": "CLIP ↑"}, "packages": {"torchmetrics": "1.9.0", "transformers": "5.0"}},
    )
    store.set_meta({"retries": "1"})
    return store


def test_summaries_have_known_means_and_mark_missing_runs(store):
    summaries = {s.method: s for s in summarize(store.runs(), store.scores(), ["clip"], retries=1)}
    a, b = summaries["a"], summaries["b"]
    assert (a.planned, a.done, a.diverged, a.unfinished) == (4, 3, 1, 0)
    assert a.metrics["clip"].mean == pytest.approx(32.0)
    assert a.metrics["clip"].std == pytest.approx(np.std([30, 32, 34]))
    assert a.diverged_percent == pytest.approx(25.0)
    assert a.median_minutes == pytest.approx(2.0)
    assert (a.mean_peak_vram_gb, a.max_peak_vram_gb) == (pytest.approx(3.0), pytest.approx(4.0))
    assert a.complete and a.status() == "complete"
    assert not b.complete and b.status() == "incomplete: 1 unfinished, 1 unscored (clip)"
    assert b.metrics["clip"].runs == 1


def test_report_writes_the_table_the_json_and_the_figures(store, capsys):
    assert main(["report", "--out", str(store.out_dir)]) == 0
    folder = store.out_dir
    table = (folder / "table.md").read_text()
    row_a = next(line for line in table.splitlines() if line.startswith("| a |"))
    row_b = next(line for line in table.splitlines() if line.startswith("| b |"))
    assert "| 3 / 4 | 32.00 ± 1.63 | 25.0 | 2.0 |" in row_a and "| 3.0 / 4.0 | complete |" in row_a
    assert "20.00 ± 0.00*" in row_b and "**incomplete: 1 unfinished, 1 unscored (clip)**" in row_b
    assert "`clip`: openai/clip-vit-base-patch32@abc — torchmetrics 1.9.0, transformers 5.0" in table
    assert "| SDI, 10k steps | 33.47±2.49 |" in table  # the paper's Table 1, to compare
    assert "GPUs: NVIDIA RTX A6000." in table
    data = json.loads((folder / "results.json").read_text())
    methods = {m["method"]: m for m in data["methods"]}
    assert methods["a"]["complete"] is True and methods["b"]["complete"] is False
    assert methods["a"]["metrics"]["clip"]["mean"] == pytest.approx(32.0)
    assert len(data["runs"]) == 7 and data["runs"][0]["metrics"]["clip"]["value"] == 30.0
    with Image.open(folder / "grid.png") as grid:
        assert grid.width > 100 and grid.height > grid.width  # 4 prompt rows × 2 method columns
        pixels = np.asarray(grid.convert("RGB"))
    # the renders are in the grid: method a's gray 40 and method b's gray 200 both appear
    assert (np.abs(pixels.astype(int) - 40).max(axis=-1) == 0).sum() > 100
    assert (np.abs(pixels.astype(int) - 200).max(axis=-1) == 0).sum() > 100
    with Image.open(folder / "metrics.png") as plot:
        assert plot.width > 100
    assert "b: 2/3 done, incomplete" in capsys.readouterr().out


def test_report_of_an_empty_folder_says_what_to_do(tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path)]) == 2
    assert "run `sdi-bench run` first" in capsys.readouterr().err
