"""The 3D lab's first command (``sdi-lab3d --demo``), its runner (worker processes, progress per step),
the verdicts and labels of its table and picture, and its command line's one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from threestudio_sdi.experimental.lab3d.cli import main
from threestudio_sdi.experimental.lab3d.demo import DEMO_DEFAULTS, DEMO_METHODS, demo_table
from threestudio_sdi.experimental.lab3d.distill import DistillSettings
from threestudio_sdi.experimental.lab3d.experiment import LabSettings
from threestudio_sdi.experimental.lab3d.figures import run_label
from threestudio_sdi.experimental.lab3d.renderer import RenderSettings, VoxelGrid, stacked_fields
from threestudio_sdi.experimental.lab3d.report import verdict
from threestudio_sdi.experimental.lab3d.runner import Job, RunFailed, run_jobs

TINY = LabSettings(
    grid_resolution=12, render=RenderSettings(16, 16), eval_views=3, distill=DistillSettings(3, 2)
)
TINY_ARGS = [
    "--steps",
    "3",
    "--grid",
    "12",
    "--image-size",
    "16",
    "--samples-per-ray",
    "16",
    "--eval-views",
    "3",
]


def test_workers_give_the_rows_a_single_process_gives_and_report_every_step() -> None:
    jobs = [Job(TINY, method, 0, seed) for method in ("sds", "sdi-paper") for seed in (0, 1)]
    steps: dict[int, list[int]] = {}
    here = dict(run_jobs(jobs, workers=1))
    there = dict(run_jobs(jobs, workers=2, on_step=lambda i, done: steps.setdefault(i, []).append(done)))
    assert sorted(there) == list(range(len(jobs)))
    for index in range(len(jobs)):
        mine, theirs = here[index].row, there[index].row
        assert {k: v for k, v in mine.items() if k != "seconds"} == {
            k: v for k, v in theirs.items() if k != "seconds"
        }
        torch.testing.assert_close(here[index].turntable, there[index].turntable, rtol=0, atol=0)
        assert steps[index] == [1, 2, 3]


def test_a_run_that_fails_in_a_worker_names_its_job() -> None:
    jobs = [Job(TINY, "sds", 0, 0), Job(TINY, "sds", 7, 0)]  # there is no class 7
    with pytest.raises(RunFailed, match="run sds, class 7, seed 0 failed in a worker"):
        list(run_jobs(jobs, workers=2))


def test_verdicts_and_labels_say_what_became_of_a_run() -> None:
    base = {"method": "m", "nearest_variant": 2, "nonfinite_views": 0, "diverged": False}
    assert verdict({**base, "psnr_nearest": 33.24, "psnr_class_mean": 18.0}) == "recovered #2 (33.2 dB)"
    blend = {**base, "psnr_nearest": 18.4, "psnr_class_mean": 26.2}
    assert verdict(blend) == "a blend of the variants (26.2 dB to their mean)"
    assert (
        verdict({**base, "psnr_nearest": 23.6, "psnr_class_mean": 18.9})
        == "nearest #2, not recovered (23.6 dB)"
    )
    assert verdict({**base, "diverged": True}) == "DIVERGED: non-finite asset"
    collapsed = {**base, "diverged": True, "psnr_nearest": 9.0, "psnr_class_mean": 9.5}
    assert verdict(collapsed) == "DIVERGED: silhouette lost"
    assert run_label({**blend, "nonfinite_views": 3}).splitlines() == [
        "m",
        "a blend of the variants",
        "(26.2 dB to their mean)",
        "(3 non-finite views skipped)",
    ]


def test_the_demo_runs_its_three_methods_and_says_how_to_read_its_table(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "demo"
    assert main(["--demo", *TINY_ARGS, "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "metrics.json").read_text())
    assert [row["method"] for row in report["rows"]] == list(DEMO_METHODS)
    settings = report["settings"]
    assert settings["distill"]["steps"] == 3  # the command line overrides the demo's budget...
    assert settings["distill"]["lr"] == DEMO_DEFAULTS["lr"]  # ...and the demo's other values stay
    assert settings["distill"]["views_per_step"] == DEMO_DEFAULTS["views_per_step"]
    assert settings["class_names"] == ["ball", "tower", "crate"]  # the lab's exact prior, every class
    assert (out / "turntable_ball.png").stat().st_size > 10_000
    table = demo_table(report["rows"])
    assert table in printed
    for column in (
        "evals/step",
        "nearest variant",
        "PSNR to it",
        "PSNR to class mean",
        "sharpness",
        "outcome",
    ):
        assert column in printed.split("How to read it")[1], column  # every column is explained
    assert "What to look at" in printed


def test_classes_is_the_option_of_both_the_lab_and_the_benchmark(tmp_path: Path) -> None:
    assert main(["--methods", "sds", "--classes", "tower,crate", *TINY_ARGS, "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "metrics.json").read_text())["rows"]
    assert [row["class"] for row in rows] == ["tower", "crate"]
    assert (tmp_path / "turntable_tower.png").is_file() and (tmp_path / "turntable_crate.png").is_file()
    help_text = subprocess.run(
        [sys.executable, "benchmarks/fidelity3d.py", "--help"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--classes" in help_text and not re.search(r"--class\b(?!es)", help_text)


BAD = [
    (["--seeds", "9" * 22], "--seeds entry", "9" * 22),
    (["--seeds", "4294967296"], "--seeds entry", "4294967296"),
    (["--classes", "pyramid"], "--classes entry", "pyramid"),
    (["--methods", "sds,nope"], "--methods entry", "nope"),
    (["--workers", "0"], "--workers", "0"),
]


@pytest.mark.parametrize("argv, option, value", BAD, ids=[" ".join(b[0])[:30] for b in BAD])
def test_a_bad_option_gets_one_line(
    argv: list[str], option: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as stop:
        main([*argv, *TINY_ARGS, "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("sdi-lab3d: error: ") and option in line and value in line


@pytest.mark.parametrize("under", [False, True], ids=["a file", "under a file"])
def test_out_that_is_a_file_is_refused_before_a_run(under: bool, tmp_path: Path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    out = blocker / "lab3d" if under else blocker
    done = subprocess.run(
        [sys.executable, "-m", "threestudio_sdi.experimental.lab3d", *TINY_ARGS, "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"sdi-lab3d: error: --out {out}: "
        + (f"lies under {blocker}, which is a file, not a folder" if under else "is a file, not a folder")
    ]
    assert blocker.read_text() == "keep me"


def test_the_stacked_volume_is_kept_only_while_the_grid_is_unchanged_and_needs_no_gradient() -> None:
    grid = VoxelGrid(
        torch.rand(2, 4, 4, 4, dtype=torch.float64), torch.rand(2, 3, 4, 4, 4, dtype=torch.float64)
    )
    first = stacked_fields(grid)
    assert stacked_fields(grid) is first
    torch.testing.assert_close(first[0, 4 + 1], grid.colour[1, 0], rtol=0, atol=0)  # asset 1, red
    grid.colour.mul_(0.5)  # changed in place: built again
    again = stacked_fields(grid)
    assert again is not first
    torch.testing.assert_close(again[0, 4 + 1], grid.colour[1, 0], rtol=0, atol=0)
    trained = VoxelGrid(torch.rand(4, 4, 4, requires_grad=True), torch.rand(3, 4, 4, 4))
    assert stacked_fields(trained) is not stacked_fields(trained)


def test_a_missing_module_is_named_at_start_with_its_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from threestudio_sdi.experimental.lab import extras

    real = extras.importlib.util.find_spec
    monkeypatch.setattr(extras.importlib.util, "find_spec", lambda n: None if n == "matplotlib" else real(n))
    with pytest.raises(SystemExit) as stop:
        main(["--demo"])
    assert str(stop.value.code) == (
        "sdi-lab3d: error: sdi-lab3d needs matplotlib, not installed here: pip install matplotlib"
    )
