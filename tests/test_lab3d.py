"""The 3D lab end to end: the known-answer sanity run, the assets, the metrics, the methods, the CLI."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from threestudio_sdi.experimental.lab3d.assets import MAX_VARIANTS, make_assets
from threestudio_sdi.experimental.lab3d.cli import main
from threestudio_sdi.experimental.lab3d.distill import DistillSettings, distill_3d
from threestudio_sdi.experimental.lab3d.experiment import Lab3D, LabSettings, seed_list
from threestudio_sdi.experimental.lab3d.methods import METHODS, SDS_STEP_RANGE, get_method
from threestudio_sdi.experimental.lab3d.metrics import high_frequency_energy, measure, psnr, ssim
from threestudio_sdi.experimental.lab3d.prior import ExactViewPrior
from threestudio_sdi.experimental.lab3d.renderer import RenderSettings
from threestudio_sdi.experimental.lab3d.report import format_table, summarise
from threestudio_sdi.presets import get_preset
from threestudio_sdi.timesteps import annealed_timestep


def test_with_one_variant_per_class_distillation_recovers_the_asset(fresh_seed: int) -> None:
    """Known answer: the prior of each class is one Gaussian around the true render, so the renderer,
    the optimiser and the prior together must recover the asset (held-out PSNR ≥ 30 dB)."""
    lab = Lab3D(LabSettings(variants_per_class=1, distill=DistillSettings(steps=300)))
    record = lab.run("sdi-paper", lab.class_index("crate"), fresh_seed)
    print(record.row)
    assert record.row["nearest_variant"] == 0
    assert record.row["psnr_nearest"] >= 30.0
    assert 0.75 < record.row["sharpness"] < 1.25
    assert not record.row["diverged"] and record.row["nonfinite_views"] == 0


def _tiny_lab(**kwargs) -> Lab3D:
    distill = DistillSettings(steps=4, views_per_step=2)
    settings = LabSettings(grid_resolution=12, render=RenderSettings(16, 16), eval_views=3, distill=distill)
    return Lab3D(replace(settings, **kwargs))


def test_distillation_is_reproducible_per_seed() -> None:
    lab = _tiny_lab()
    method = get_method("sdi-official")
    first = distill_3d(lab.prior, method, 1, seed=5, settings=lab.settings.distill)
    again = distill_3d(lab.prior, method, 1, seed=5, settings=lab.settings.distill)
    other = distill_3d(lab.prior, method, 1, seed=6, settings=lab.settings.distill)
    torch.testing.assert_close(first.grid.density, again.grid.density, rtol=0, atol=0)
    assert first.timesteps == again.timesteps
    assert not torch.equal(first.grid.density, other.grid.density)
    assert first.model_evaluations > len(first.timesteps)  # inversion spends more than one per step


def test_assets_are_seeded_distinct_and_independent_of_the_variant_count() -> None:
    three = make_assets(resolution=16, variants_per_class=3, seed=7)
    four = make_assets(resolution=16, variants_per_class=4, seed=7)
    assert three.classes.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for class_index in range(3):
        for field in ("density", "colour"):
            torch.testing.assert_close(
                getattr(three.grid, field)[three.members(class_index)],
                getattr(four.grid, field)[four.members(class_index)[:3]],
                rtol=0,
                atol=0,
            )
        densities = three.grid.colour[three.members(class_index)]
        for a in range(3):
            for b in range(a + 1, 3):
                assert (densities[a] - densities[b]).abs().mean() > 0.05
    assert three.grid.density.min() >= 0 and 0 < three.grid.colour.min() and three.grid.colour.max() < 1
    other_seed = make_assets(resolution=16, variants_per_class=3, seed=8)
    assert not torch.equal(other_seed.grid.colour, three.grid.colour)
    with pytest.raises(ValueError, match=f"variants_per_class must be <= {MAX_VARIANTS}"):
        make_assets(variants_per_class=MAX_VARIANTS + 1)
    with pytest.raises(ValueError, match="class name"):
        make_assets(class_names=("ball", "teapot"))


def test_metrics_have_their_known_answers() -> None:
    lab = _tiny_lab()
    members = lab.assets.members(2)
    truth, opacity = lab.truth_rgb[members], lab.truth_opacity[members]
    exact = measure(truth[1], opacity[1], truth, opacity)
    assert exact.nearest_variant == 1 and math.isinf(exact.psnr_nearest)
    assert exact.ssim_nearest == pytest.approx(1.0)
    assert exact.sharpness == pytest.approx(1.0) and exact.silhouette_iou == 1.0
    assert exact.view_consistency == 1.0 and exact.per_view_nearest == [1, 1, 1]
    averaged = measure(truth.mean(0), opacity.mean(0), truth, opacity)
    assert math.isinf(averaged.psnr_class_mean) and averaged.psnr_nearest < 30
    assert averaged.sharpness < 1  # averaging the variants blurs their edges
    # PSNR of a known error: a constant offset of 0.2 in [−1, 1] is 0.1 in [0, 1], i.e. 20 dB.
    assert psnr(truth[0] + 0.2, truth[0]) == pytest.approx(20.0)
    assert ssim(truth[0], truth[0]) == pytest.approx(1.0) and ssim(-truth[0], truth[0]) < 0.5
    noisy = truth[0] + 0.1 * torch.randn_like(truth[0])
    assert high_frequency_energy(noisy) > high_frequency_energy(truth[0])


def test_methods_use_their_timestep_policies() -> None:
    generator = torch.Generator().manual_seed(0)
    for name, method in METHODS.items():
        if method.timesteps == "annealed":
            preset = get_preset(method.config.preset)
            expected = annealed_timestep(30, 100, preset.min_step_percent, preset.max_step_percent, 1000)
            assert method.timestep(30, 100, 1000, generator) == expected, name
        else:
            drawn = [method.timestep(30, 100, 1000, generator) for _ in range(200)]
            assert 1000 * SDS_STEP_RANGE[0] <= min(drawn) and max(drawn) <= 1000 * SDS_STEP_RANGE[1], name
            assert len(set(drawn)) > 100
    with pytest.raises(ValueError, match="method must be one of"):
        get_method("vsd")


def test_the_inconsistent_prior_is_measured_against_each_views_preferred_variant() -> None:
    lab = _tiny_lab(prior="inconsistent")
    record = lab.run("sds", 0, seed=0)
    assert record.row["psnr_view_target"] is not None and math.isfinite(record.row["psnr_view_target"])
    assert isinstance(lab.prior, ExactViewPrior) and record.turntable.shape == (3, 3, 16, 16)


def test_report_aggregates_seeds_and_formats_a_table() -> None:
    rows = [
        {
            "method": "m",
            "class": "ball",
            "seed": s,
            "psnr_nearest": p,
            "nearest_variant": v,
            "diverged": False,
        }
        for s, p, v in ((1, 31.0, 2), (0, 29.0, 0))
    ]
    (summary,) = summarise(rows)
    assert summary["psnr_nearest"] == pytest.approx((30.0, math.sqrt(2)))
    assert summary["recovered"] == 1 and summary["variants"] == {"ball": [0, 2]}
    table = format_table([summary], markdown=True)
    assert "30.0 ± 1.4" in table and "ball 0 2" in table and "| 1/2 |" in table
    assert seed_list("0-2,5") == [0, 1, 2, 5]
    with pytest.raises(ValueError, match="--seeds entry"):
        seed_list("a")


def test_cli_writes_its_table_json_and_turntable(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "lab3d"
    argv = ["--methods", "sds,sdi-paper", "--steps", "3", "--views-per-step", "2", "--image-size", "16"]
    argv += [
        "--samples-per-ray",
        "16",
        "--grid",
        "12",
        "--eval-views",
        "3",
        "--seeds",
        "0-1",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "PSNR nearest" in printed and "sdi-paper" in printed
    report = json.loads((out / "metrics.json").read_text())
    assert [(r["method"], r["seed"]) for r in report["rows"]] == [
        ("sds", 0),
        ("sds", 1),
        ("sdi-paper", 0),
        ("sdi-paper", 1),
    ]
    assert report["settings"]["distill"]["steps"] == 3
    assert (out / "turntable_ball.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        main(["--methods", "sds,nope", "--out", str(out)])
