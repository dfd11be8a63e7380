"""The known-answer 3D prior through threestudio-3dgs on the CPU: recovery, and SDI / SDS / consistent noise.

    python tests/threestudio_3dgs_cpu/known_answer_gs.py --threestudio-root ... --threestudio-3dgs-root ... \
        --workdir /tmp/ka-gs --report benchmarks/results/gaussians-known-answer.json \
        [--classes ball,crate,tower] [--variants 1,3] [--methods sdi,sds,consistent] [--seeds 0,1,2]

Each run is configs/sdi-gs.yaml through launch.py with threestudio-3dgs's own system, geometry,
densification and renderer, and ``sdi-guidance`` given the 3D lab's exact view-conditioned prior by
``model_factory`` (as tests/threestudio_cpu/known_answer.py does for the NeRF path):

* ``random-camera-datamodule`` with the lab's camera ranges, 4 views of 32×32 px per step, no camera
  perturbation; threestudio's seed and the guidance's seed are the run's seed;
* ``gaussian-splatting`` as in sdi-gs.yaml (its learning rates, opacity, initial sphere of radius 0.8),
  :data:`INITIAL_POINTS` initial Gaussians; the step-based settings of the 5000-step config scaled to the
  run's length S (densify and prune every 300·S/5000 steps from 500·S/5000 on, the position learning
  rate's decay over 1000·S/5000 steps); densify_grad_threshold 0.01 as configured;
* ``diff-gaussian-rasterizer`` that never inverts the white background (the lab renders on white);
* only the guidance's loss trains (the lab distils without regularisers), with sdi-gs.yaml's loss scale.

Methods: ``sdi`` (sdi-gs.yaml: inversion, paper preset, CFG 7.5), ``sds`` (the lab's SDS: the same
guidance with fresh noise and t ~ U(0.02, 0.98), CFG 7.5), ``consistent`` (``noise: consistent-noise``:
the Gaussian noise field), ``consistent-shared-10`` (the same plus the shared colour component,
β = 0.1, as the 3D lab's strategy of that name, but with the component's own seed left at its default
0 in every run: the field follows the run's seed, the shared direction g does not), and ``sds-threestudio`` (threestudio's SDS formula,
:mod:`sds_formula`, with sds-gs.yaml's CFG 100, t schedule and lambda_sds 0.1: the densification
reference).

Scored as the lab scores (``threestudio_sdi.experimental.lab3d.metrics.measure``) on its 8 held-out
turntable views, rendered by threestudio-3dgs's renderer on white, against the true assets rendered by
the lab; the initial Gaussians are scored the same way. Densification is counted by wrapping
``gaussian-splatting``'s ``densification_postfix`` / ``prune_points`` for the run (its code unchanged).
The report is rewritten after every run and rows already in it are skipped, so a killed matrix resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import platform
import sys
import time
from contextlib import contextmanager
from typing import Any

sys.dont_write_bytecode = True
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "threestudio_cpu"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from harness import steps  # noqa: E402
from harness3dgs import SDI_GS_YAML, SIZE, GaussianHarness  # noqa: E402

INITIAL_POINTS = 512
MAX_POINTS = 100_000
"""threestudio-3dgs's ``max_num`` here: past it, it prunes at random back to it. Only a guard: at
sdi-gs.yaml's loss scale 100 steps stay far below it. (A tight cap prunes about half the Gaussians at
random at every densification and spoils the asset: capped at 2 048, 200 steps gave the ball 18.9 dB;
uncapped, 100 steps gave 19.8.)"""
EVAL_VIEWS = 8
CONFIG_STEPS = 5000
"""trainer.max_steps of sdi-gs.yaml, the length its step-based settings are written for."""
METHODS = ("sdi", "sds", "consistent", "consistent-shared-10", "sds-threestudio")
DIVERGED_IOU = 0.5


def scaled(value: int, run_steps: int) -> int:
    """A step count of the 5000-step config at a run of ``run_steps`` steps (at least 1)."""
    return max(1, round(value * run_steps / CONFIG_STEPS))


def sdi_gs_loss_scale() -> tuple[str, float]:
    """(loss_reduction, lambda_sdi) of configs/sdi-gs.yaml."""
    from omegaconf import OmegaConf

    config = OmegaConf.load(SDI_GS_YAML)
    return str(config.system.guidance.loss_reduction), float(config.system.loss.lambda_sdi)


def layers(
    g: GaussianHarness,
    class_name: str,
    variants: int,
    method: str,
    seed: int,
    run_steps: int,
    points: tuple[int, int] = (INITIAL_POINTS, MAX_POINTS),
    sdi_loss: tuple[str, float] | None = None,
) -> tuple:
    from known_answer import data_block

    from threestudio_sdi.experimental.lab3d.threestudio_prior import EXACT_PRIOR_FACTORY

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    data = {**data_block(), "n_test_views": 2}
    reset_guidance = (
        {"guidance": None} if method == "sds-threestudio" else {}
    )  # other keys than sdi-guidance's
    reset = {"data": None, "system": {**reset_guidance, "loss": None}}
    interval, start = scaled(300, run_steps), scaled(500, run_steps)
    geometry = {
        "init_num_pts": points[0],
        "max_num": points[1],
        "position_lr": [0, 0.001, 0.00002, scaled(1000, run_steps)],
        "densification_interval": interval,
        "prune_interval": interval,
        "densify_from_iter": start,
        "prune_from_iter": start,
        "densify_until_iter": run_steps,
        "prune_until_iter": run_steps,
    }
    prior = {
        "model_factory": EXACT_PRIOR_FACTORY,
        "model_options": {"variants_per_class": variants},
        "seed": seed,
    }
    zero = {
        key: 0.0
        for key in (
            "lambda_position",
            "lambda_opacity",
            "lambda_scales",
            "lambda_tv_loss",
            "lambda_depth_tv_loss",
        )
    }
    if method == "sds-threestudio":
        guidance_type = "backbone-sds-guidance"
        guidance = {
            **prior,
            "guidance_scale": 100.0,
            "min_step_percent": 0.02,
            "max_step_percent": [scaled(1000, run_steps), 0.98, 0.5, scaled(1000, run_steps) + 1],
        }
        loss = {"lambda_sds": 0.1, **zero}
    else:
        reduction, weight = sdi_loss or sdi_gs_loss_scale()
        guidance_type = "sdi-guidance"
        guidance = {
            **prior,
            "pretrained_model_name_or_path": str(g.h.tiny),
            "local_files_only": True,
            "half_precision_weights": False,
            "trainer_max_steps": run_steps,
            "loss_reduction": reduction,
            **{
                "sdi": {"noise": "inversion"},
                "sds": {
                    "noise": "random",
                    "t_anneal": False,
                    "min_step_percent": 0.02,
                    "max_step_percent": 0.98,
                },
                "consistent": {"noise": "consistent-noise"},
                "consistent-shared-10": {"noise": "consistent-noise", "noise_options": {"shared": 0.1}},
            }[method],
        }
        loss = {"lambda_sdi": weight, **zero}
    system = {
        "geometry": geometry,
        "renderer": {"invert_bg_prob": 1.0},
        "prompt_processor": {
            "pretrained_model_name_or_path": str(g.h.tiny),
            "prompt": class_name,
            "use_perp_neg": False,
            "spawn": False,
        },
        "guidance_type": guidance_type,
        "guidance": guidance,
        "loss": loss,
    }
    trainer = {"log_every_n_steps": 1, "num_sanity_val_steps": 0, "precision": 32}
    return (
        reset,
        {"use_timestamp": False, "seed": seed, "data": data, "system": system, "trainer": trainer},
        steps(run_steps),
    )


# ------------------------------------------------------------------ densification probe
@contextmanager
def counting_densification(g: GaussianHarness):
    """Counts of Gaussians added and pruned by gaussian-splatting during the block (class methods
    wrapped and restored; their code is unchanged)."""
    model = g.h.threestudio.find("gaussian-splatting")
    counts = {"added": 0, "pruned": 0, "densify_events": 0}
    append, prune, densify = model.densification_postfix, model.prune_points, model.densify

    def densification_postfix(self, new_xyz, *args, **kwargs):
        counts["added"] += int(new_xyz.shape[0])
        return append(self, new_xyz, *args, **kwargs)

    def prune_points(self, mask):
        counts["pruned"] += int(mask.sum())
        return prune(self, mask)

    def densify_counted(self, max_grad):
        counts["densify_events"] += 1
        return densify(self, max_grad)

    model.densification_postfix, model.prune_points, model.densify = (
        densification_postfix,
        prune_points,
        densify_counted,
    )
    try:
        yield counts
    finally:
        model.densification_postfix, model.prune_points, model.densify = append, prune, densify


# ------------------------------------------------------------------ scoring
def render_turntable(g: GaussianHarness, renderer: Any, cameras: Any) -> tuple[Any, Any]:
    """threestudio-3dgs's renders of the lab's cameras: rgb [V, 3, H, W] in [−1, 1] on white and opacity
    [V, H, W] (a render of colour 1 on black), eval mode, no grad."""
    import torch
    from threestudio.utils.ops import get_cam_info_gaussian

    camera_class = g.gs_module("geometry.gaussian_base").Camera
    renderer.eval()
    rgbs, opacities = [], []
    count = renderer.geometry.get_xyz.shape[0]
    for index in range(cameras.c2w.shape[0]):
        fovy = torch.deg2rad(cameras.fovy[index].float())
        w2c, proj, centre = get_cam_info_gaussian(
            c2w=cameras.c2w[index].float(), fovx=fovy, fovy=fovy, znear=0.1, zfar=100
        )
        camera = camera_class(
            FoVx=fovy, FoVy=fovy, image_width=SIZE, image_height=SIZE,
            world_view_transform=w2c, full_proj_transform=proj, camera_center=centre,
        )  # fmt: skip
        with torch.no_grad():
            # eval mode inverts the background it is given: black in, white out, and the reverse
            rgbs.append(renderer(camera, torch.zeros(3))["render"])
            opacities.append(
                renderer(camera, torch.ones(3), override_color=torch.ones(count, 3))["render"][0]
            )
    return torch.stack(rgbs).double() * 2 - 1, torch.stack(opacities).double()


def save_figure(path: pathlib.Path, truth: Any, rgb: Any, scale: int = 4) -> None:
    """A PNG: the nearest true variant's held-out views (top) over the run's renders (bottom)."""
    import numpy as np
    from PIL import Image

    rows = [torch_row.clamp(-1, 1).add(1).div(2) for torch_row in (truth, rgb)]  # [V, 3, H, W] in [0, 1]
    grid = np.concatenate(
        [np.concatenate(list(row.permute(0, 2, 3, 1).cpu().numpy()), axis=1) for row in rows], axis=0
    )
    image = Image.fromarray((grid * 255).round().astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(path)


def scored(
    g: GaussianHarness, renderer: Any, prior: Any, class_index: int, figure: pathlib.Path | None = None
) -> dict[str, Any]:
    from threestudio_sdi.experimental.lab3d import CameraRanges, render, turntable_cameras
    from threestudio_sdi.experimental.lab3d.metrics import measure

    geometry = renderer.geometry
    if not all(bool(value.isfinite().all()) for value in geometry.state_dict().values()):
        return {"finite": False, "diverged": True}
    cameras = turntable_cameras(EVAL_VIEWS, CameraRanges())
    members = prior.assets.members(class_index)
    truth = render(prior.assets.grid, cameras, prior.render_settings)
    rgb, opacity = render_turntable(g, renderer, cameras)
    row: dict[str, Any] = {"finite": True}
    row.update(measure(rgb, opacity, truth.rgb[members], truth.opacity[members]).as_dict())
    row.pop("psnr_view_target", None)
    row["diverged"] = row["silhouette_iou"] < DIVERGED_IOU or math.isnan(row["psnr_nearest"])
    if figure is not None:
        save_figure(figure, truth.rgb[members][row["nearest_variant"]], rgb)
    return row


def load_gaussians(g: GaussianHarness, geometry: Any, state: dict[str, Any]) -> None:
    """``geometry`` set to the Gaussians of a system state (as threestudio-3dgs's on_load_checkpoint)."""
    import numpy as np

    base = g.gs_module("geometry.gaussian_base")
    tensors = {key[len("geometry.") :]: value for key, value in state.items() if key.startswith("geometry.")}
    count = tensors["_xyz"].shape[0]
    geometry.create_from_pcd(
        base.BasicPointCloud(np.zeros((count, 3)), np.zeros((count, 3)), np.zeros((count, 3))), 10
    )
    geometry.training_setup()
    geometry.load_state_dict(tensors)


# ------------------------------------------------------------------ one run
KEYS = ("class", "variants_per_class", "method", "seed", "steps", "initial_points", "max_points", "sdi_loss")
"""What names one run (a report row's ``setting``; rows already in the report are skipped)."""


def run_one(g: GaussianHarness, spec: dict[str, Any], figures: pathlib.Path | None = None) -> dict[str, Any]:
    """One run of ``spec`` (:data:`KEYS`; ``sdi_loss`` = [reduction, lambda] or None for sdi-gs.yaml's);
    with ``figures``, its held-out views under the truth's are saved there as ``<run name>.png``."""
    import sds_formula

    sds_formula.register(g.h.threestudio)
    class_name, method, run_steps = spec["class"], spec["method"], spec["steps"]
    name = "ka-" + "-".join(str(spec[key]) for key in KEYS).replace(" ", "").replace("'", "")
    started = time.perf_counter()
    config_layers = layers(
        g,
        class_name,
        spec["variants_per_class"],
        method,
        spec["seed"],
        run_steps,
        (spec["initial_points"], spec["max_points"]),
        None if spec["sdi_loss"] is None else (str(spec["sdi_loss"][0]), float(spec["sdi_loss"][1])),
    )
    with counting_densification(g) as counts:
        run = g.h.run(g.h.config(name, *config_layers, base=SDI_GS_YAML))
    seconds = time.perf_counter() - started
    system = run.system
    prior = system.guidance.model if method != "sds-threestudio" else system.guidance.backbone.model
    class_index = prior.prompt_condition(class_name)
    figure = None if figures is None else figures / f"{name}.png"
    final = scored(g, system.renderer, prior, class_index, figure)
    final_points = int(system.geometry.get_xyz.shape[0])
    load_gaussians(g, system.geometry, run.initial)
    logged = [step["logged"] for step in run.steps]
    evaluations = [entry.get("train/model_evaluations") for entry in logged]
    every = max(1, run_steps // 20)
    return {
        "setting": {
            **spec,
            "views_per_step": 4,
            "image_size": SIZE,
            "loss": {key: value for key, value in system.cfg.loss.items() if value},
            "loss_reduction": system.cfg.guidance.get("loss_reduction"),
        },
        "final": final,
        "initial": scored(g, system.renderer, prior, class_index),
        "densification": {**counts, "final_points": final_points},
        "gauss_num": [int(entry["gauss_num"]) for entry in logged[::every]],
        "steps": len(run.steps),
        "losses_finite": bool(run.steps) and all(math.isfinite(step["loss"]) for step in run.steps),
        "model_evaluations": None if None in evaluations else int(sum(evaluations)),
        "timesteps": [entry.get("train/timestep") for entry in logged][::every],
        "seconds": round(seconds, 1),
        "figure": None if figure is None else figure.name,
    }


def machine() -> str:
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threestudio-root", required=True, type=pathlib.Path)
    parser.add_argument("--threestudio-3dgs-root", required=True, type=pathlib.Path)
    parser.add_argument("--workdir", required=True, type=pathlib.Path)
    parser.add_argument("--report", required=True, type=pathlib.Path)
    parser.add_argument("--classes", default="ball,crate,tower")
    parser.add_argument("--variants", default="1,3")
    parser.add_argument("--methods", default="sdi,sds,consistent")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--initial-points", type=int, default=INITIAL_POINTS)
    parser.add_argument("--max-points", type=int, default=MAX_POINTS)
    parser.add_argument(
        "--figures", type=pathlib.Path, default=None, help="folder for each run's held-out views"
    )
    parser.add_argument(
        "--sdi-loss",
        default="",
        help="comma-separated REDUCTION:LAMBDA loss scales of sdi-guidance to run (default: sdi-gs.yaml's)",
    )
    args = parser.parse_args()
    import warnings

    import harness3dgs

    warnings.filterwarnings("ignore")
    report_path = args.report.resolve()
    figures = None if args.figures is None else args.figures.resolve()  # before start() changes directory
    g = harness3dgs.start(args.threestudio_root, args.threestudio_3dgs_root, args.workdir)
    report = json.loads(report_path.read_text()) if report_path.is_file() else {"runs": []}
    commands = report.setdefault("commands", [])
    if " ".join(["python", *sys.argv]) not in commands:
        commands.append(" ".join(["python", *sys.argv]))
    report.update(machine=machine(), loss_scale=dict(zip(("reduction", "lambda_sdi"), sdi_gs_loss_scale())))
    done = {json.dumps([row["setting"].get(key) for key in KEYS]) for row in report["runs"]}
    losses = [None] + [
        [part.split(":")[0], float(part.split(":")[1])] for part in args.sdi_loss.split(",") if part
    ]
    plan = [
        {
            "class": class_name,
            "variants_per_class": int(variants),
            "method": method,
            "seed": int(seed),
            "steps": args.steps,
            "initial_points": args.initial_points,
            "max_points": args.max_points,
            "sdi_loss": loss,
        }
        for variants in args.variants.split(",")
        for seed in args.seeds.split(",")
        for class_name in args.classes.split(",")
        for method in args.methods.split(",")
        for loss in (losses if args.sdi_loss else [None])
        if not (loss is not None and method == "sds-threestudio")
    ]
    for index, spec in enumerate(plan):
        if json.dumps([spec[key] for key in KEYS]) in done:
            continue
        print(f"[{index + 1}/{len(plan)}] {json.dumps(spec)}", flush=True)
        row = run_one(g, spec, figures)
        report["runs"].append(row)
        report_path.write_text(json.dumps(report, indent=1, default=str))
        final, counts = row["final"], row["densification"]
        print(
            f"    psnr_nearest {final.get('psnr_nearest', float('nan')):.2f} dB, points +{counts['added']}"
            f" -{counts['pruned']} -> {counts['final_points']}, {row['seconds']} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
