"""The cost–outcome frontier on the known-answer prior: outcome against guided UNet evaluations per step.

    python benchmarks/frontier.py run --reuse              # the 3D lab's grid -> benchmarks/results/frontier.json
    python benchmarks/frontier.py report                   # frontier.md and frontier.png (lab + threestudio)

Every noise strategy of the frontier (:data:`FRONTIER_METHODS`: SDS at CFG 7.5 and 100, SDI ``paper`` with
n = 1, 2, 3, 5, 10 inversion steps, ISM, consistent noise integrated along the ray and at the surface,
and its shared component in the colour form and the low-frequency form) distils every class × seed
in the 3D lab (``threestudio_sdi.experimental.lab3d``, its defaults: 32³ voxels, 32² px, 400 steps ×
4 views), scored on 8 held-out views: PSNR to the nearest variant and to the class mean, sharpness,
recovered (≥ 30 dB), view consistency, guided evaluations per step and the run's wall time.

Classes ``ball``, ``tower``, ``crate`` run in the lab's default setting (3 classes × 3 variants, as
``benchmarks/fidelity3d.py``); the equal-mean class ``orb`` (variants of one mean colour that differ in
structure) in a setting with all four classes, so that CFG's unconditional branch mixes all four.

``run`` is resumable: every finished run is written to the results file at once, and a rerun skips
the runs it holds (kill it and run it again to finish the grid); it goes seed by seed, and within a
seed method by method in the order of ``--methods``, so a partial grid has every class of the first
methods. ``--reuse`` imports the rows of the
committed full runs of ``benchmarks/fidelity3d.py`` (same settings; runs are deterministic per seed)
instead of running them again; imported rows name their source. ``report`` also reads
``frontier3d-threestudio.json``, the real-threestudio frontier (``tests/threestudio_cpu/run_frontier.py``),
when it exists.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, machine

from threestudio_sdi.experimental.lab3d.assets import CLASS_NAMES, EQUAL_MEAN_CLASS
from threestudio_sdi.experimental.lab3d.cli import parse_methods
from threestudio_sdi.experimental.lab3d.experiment import Lab3D, LabSettings, seed_list
from threestudio_sdi.experimental.lab3d.methods import FRONTIER_METHODS
from threestudio_sdi.experimental.lab3d.report import RECOVERED_PSNR, mean_std

LABELS = {
    "sds": "SDS, CFG 7.5",
    "sds-cfg100": "SDS, CFG 100",
    "sdi-paper-n1": "SDI paper, n = 1",
    "sdi-paper-n2": "SDI paper, n = 2",
    "sdi-paper-n3": "SDI paper, n = 3",
    "sdi-paper-n5": "SDI paper, n = 5",
    "sdi-paper": "SDI paper, n = 10",
    "ism": "ISM",
    "consistent-noise": "consistent, integrated",
    "consistent-surface": "consistent, surface",
    "consistent-shared-10": "consistent + shared colour (β 0.1)",
    "consistent-shared-surface-10": "consistent surface + shared colour",
    "consistent-lowfreq-10": "consistent + shared low-frequency (2³, β 0.1)",
}
STANDARD_CLASSES = CLASS_NAMES
LAB_SETTINGS = {
    "default": LabSettings(),
    "equal-mean": LabSettings(class_names=(*CLASS_NAMES, EQUAL_MEAN_CLASS)),
}
"""The lab setting of each class: the default for the standard classes, four classes for ``orb``."""
REUSABLE = ("fidelity3d.json", "fidelity3d-research-consistent.json", "fidelity3d-research-shared.json")
"""Committed full runs in the default setting whose rows ``--reuse`` imports."""
LAB_RESULTS = "frontier.json"
THREESTUDIO_RESULTS = "frontier3d-threestudio.json"

Job = tuple[str, str, int]  # method, class, seed


def lab_of(class_name: str) -> str:
    return "equal-mean" if class_name == EQUAL_MEAN_CLASS else "default"


# ------------------------------------------------------------------ the results file
def load(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"rows": [], "commands": []}


def save(path: Path, report: dict[str, Any]) -> None:
    """Write atomically (a kill never leaves half a file)."""
    temporary = path.with_suffix(".json.part")
    temporary.write_text(json.dumps(report, indent=1, default=str))
    os.replace(temporary, path)


def done(report: dict[str, Any]) -> set[Job]:
    return {(row["method"], row["class"], row["seed"]) for row in report["rows"]}


def reusable_rows(results: Path, wanted: set[Job]) -> list[dict[str, Any]]:
    """Rows of :data:`REUSABLE` in the default setting for the jobs in ``wanted``."""
    expected = json.loads(json.dumps(LAB_SETTINGS["default"].as_dict(), default=str))
    found: list[dict[str, Any]] = []
    for name in REUSABLE:
        path = results / name
        if not path.is_file():
            continue
        source = json.loads(path.read_text())
        if source["settings"].get("consistent") != expected:
            continue
        for row in source["rows"]["consistent"]:
            job = (row["method"], row["class"], row["seed"])
            if job in wanted:
                found.append({**row, "lab": "default", "source": f"benchmarks/results/{name}"})
                wanted.discard(job)
    return found


# ------------------------------------------------------------------ running
_LABS: dict[str, Lab3D] = {}


def run_job(job: Job) -> tuple[Job, dict[str, Any]]:
    """One lab run in this process (each lab setting built once per process)."""
    torch.set_num_threads(1)
    method, class_name, seed = job
    lab = lab_of(class_name)
    if lab not in _LABS:
        _LABS[lab] = Lab3D(LAB_SETTINGS[lab])
    started = time.process_time()
    record = _LABS[lab].run(method, _LABS[lab].class_index(class_name), seed)
    cpu_seconds = round(time.process_time() - started, 1)  # one thread: less load-bound than wall time
    return job, {**record.row, "cpu_seconds": cpu_seconds, "lab": lab, "source": "benchmarks/frontier.py"}


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LAB_RESULTS
    report = load(path)
    report["machine"] = machine()
    report["settings"] = {name: settings.as_dict() for name, settings in LAB_SETTINGS.items()}
    report["commands"].append(" ".join(["python benchmarks/frontier.py", *sys.argv[1:]]))
    methods = parse_methods(args.methods)
    classes = args.classes.split(",")
    for name in classes:
        if name not in (*STANDARD_CLASSES, EQUAL_MEAN_CLASS):
            raise SystemExit(
                f"--classes entry {name!r}: known classes are {', '.join(STANDARD_CLASSES)}, orb"
            )
    jobs = [(m, c, s) for s in seed_list(args.seeds) for m in methods for c in classes]  # a seed at a time
    wanted = set(jobs) - done(report)
    if args.reuse:
        imported = reusable_rows(out, wanted)
        report["rows"] += imported
        print(f"imported {len(imported)} rows from {', '.join(REUSABLE)}", flush=True)
    save(path, report)
    todo = [job for job in jobs if job not in done(report)]
    print(f"{len(todo)} runs to go ({len(jobs) - len(todo)} of {len(jobs)} done)", flush=True)
    start = time.perf_counter()

    def collect(job: Job, row: dict[str, Any]) -> None:
        report["rows"].append(row)
        save(path, report)
        print(
            f"[{time.perf_counter() - start:6.0f} s] {job[1]:>5} {job[0]:>28} seed {job[2]}: "
            f"#{row.get('nearest_variant')} {row.get('psnr_nearest', math.nan):.1f} dB, class mean "
            f"{row.get('psnr_class_mean', math.nan):.1f} dB, {row['evaluations_per_step']:.2f} evals/step, "
            f"{row['seconds']:.0f} s",
            flush=True,
        )

    if args.workers > 1:
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            for future in as_completed([pool.submit(run_job, job) for job in todo]):
                collect(*future.result())
    else:
        for job in todo:
            collect(*run_job(job))
    return 0


# ------------------------------------------------------------------ the report
def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method (frontier order): mean ± std of each outcome, recovered count, runs, mean wall time."""
    summaries = []
    for method in [m for m in FRONTIER_METHODS if any(row["method"] == m for row in rows)]:
        runs = [row for row in rows if row["method"] == method]
        summary: dict[str, Any] = {"method": method, "runs": len(runs)}
        for key in (
            "evaluations_per_step",
            "psnr_nearest",
            "psnr_class_mean",
            "sharpness",
            "view_consistency",
            "seconds",
            "cpu_seconds",
        ):
            values = [row[key] for row in runs if row.get(key) is not None and math.isfinite(row[key])]
            summary[key] = mean_std(values) if values else None
        summary["recovered"] = sum(row.get("psnr_nearest", -math.inf) >= RECOVERED_PSNR for row in runs)
        summary["diverged"] = sum(bool(row.get("diverged")) for row in runs)
        summaries.append(summary)
    return summaries


def _cell(value: tuple[float, float] | None, digits: int) -> str:
    if value is None:
        return "–"
    mean, std = value
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"


def table(summaries: Sequence[dict[str, Any]]) -> str:
    header = (
        "| strategy | guided evals/step | PSNR nearest | PSNR class mean | sharpness | view consistency "
        "| recovered ≥ 30 dB | wall s/run | CPU s/run |"
    )
    lines = [header, "|" + "---|" * 9]
    for s in summaries:
        lines.append(
            f"| {LABELS[s['method']]} (`{s['method']}`) | {_cell(s['evaluations_per_step'], 1)} "
            f"| {_cell(s['psnr_nearest'], 1)} | {_cell(s['psnr_class_mean'], 1)} | {_cell(s['sharpness'], 2)} "
            f"| {_cell(s['view_consistency'], 2)} | {s['recovered']}/{s['runs']} "
            f"| {_cell(s['seconds'], 0)} | {_cell(s['cpu_seconds'], 0)} |"
        )
    return "\n".join(lines)


def groups(report: dict[str, Any], where: str) -> dict[str, list[dict[str, Any]]]:
    """The rows split into the standard classes and the equal-mean class."""
    rows = report.get("rows", [])
    return {
        f"{where}, classes {', '.join(STANDARD_CLASSES)}": [
            r for r in rows if r["class"] in STANDARD_CLASSES
        ],
        f"{where}, equal-mean class {EQUAL_MEAN_CLASS}": [r for r in rows if r["class"] == EQUAL_MEAN_CLASS],
    }


def spread_positions(summaries: Sequence[dict[str, Any]], step: float = 0.035) -> dict[str, float]:
    """Each strategy's x in the figure: its evaluations per step, times 1 + step·k for the k-th of several
    strategies at the same cost (centred), so that they do not hide one another."""
    peers: dict[float, list[str]] = defaultdict(list)
    for s in summaries:
        peers[round(s["evaluations_per_step"][0], 1)].append(s["method"])
    positions = {}
    for s in summaries:
        cost = s["evaluations_per_step"][0]
        same = peers[round(cost, 1)]
        positions[s["method"]] = cost * (1 + step * (same.index(s["method"]) - (len(same) - 1) / 2))
    return positions


def figure(panels: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """One panel per group: PSNR to the nearest variant (filled) and to the class mean (hollow) against
    guided evaluations per step, each strategy labelled with its recovered count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    panels = {title: rows for title, rows in panels.items() if rows}
    columns = 2
    rows_count = max(1, math.ceil(len(panels) / columns))
    fig, axes = plt.subplots(rows_count, columns, figsize=(7.5 * columns, 5.2 * rows_count), squeeze=False)
    colours = plt.get_cmap("tab20")
    for axis, (title, rows) in zip(axes.flat, panels.items()):
        summaries = summarise(rows)
        sdi = [s for s in summaries if s["method"].startswith("sdi-paper")]
        if len(sdi) > 1:
            axis.plot(
                [s["evaluations_per_step"][0] for s in sdi],
                [s["psnr_nearest"][0] for s in sdi],
                color="0.7",
                lw=1,
                zorder=0,
            )
        shown = spread_positions(summaries)
        for s in summaries:
            index = FRONTIER_METHODS.index(s["method"])
            x = shown[s["method"]]
            mean, std = s["psnr_nearest"] or (math.nan, 0.0)
            axis.errorbar(
                x, mean, yerr=std, fmt="o", color=colours(index), capsize=3, label=LABELS[s["method"]]
            )
            if s["psnr_class_mean"] is not None:
                axis.scatter(x, s["psnr_class_mean"][0], facecolors="none", edgecolors=colours(index), s=40)
            axis.annotate(
                f"{s['recovered']}/{s['runs']}",
                (x, mean),
                textcoords="offset points",
                xytext=(6, 4),
                fontsize=7,
                color=colours(index),
            )
        axis.axhline(RECOVERED_PSNR, color="0.5", ls="--", lw=0.8)
        axis.set_xscale("log")
        ticks = sorted({round(s["evaluations_per_step"][0], 1) for s in summaries})
        axis.xaxis.set_major_locator(ticker.FixedLocator(ticks))
        axis.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        axis.xaxis.set_minor_locator(ticker.NullLocator())
        axis.set_xlabel("guided UNet evaluations per step (log; points at one cost spread apart)")
        axis.set_ylabel("PSNR to nearest variant (filled), to class mean (hollow), dB")
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    legend: dict[str, Any] = {}
    for axis in axes.flat:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    order = sorted(legend, key=lambda label: list(LABELS.values()).index(label))
    fig.legend(
        [legend[label] for label in order], order, loc="lower center", ncol=4, fontsize=8, frameon=False
    )
    fig.suptitle("Cost–outcome frontier on the known-answer prior (labels: runs recovered ≥ 30 dB)")
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_command(args: argparse.Namespace) -> int:
    out = Path(args.out)
    lab = load(out / LAB_RESULTS)
    threestudio = load(out / THREESTUDIO_RESULTS)
    panels = {**groups(lab, "3D lab"), **groups(threestudio, "real threestudio")}
    parts = [
        "# The cost–outcome frontier on the known-answer prior (`benchmarks/frontier.py`)",
        "",
        "Mean ± std over runs (classes × seeds); recovered = PSNR ≥ 30 dB to the nearest true variant; "
        "wall s/run = wall time of one run on the machine below, shared with other jobs (load average 1–11 "
        "during the new runs, up to four grids at once; rows imported from fidelity3d*.json ran at load "
        "2–6 with 2 workers); CPU s/run = the run's process CPU time, one torch thread (recorded for the "
        "new runs only).",
    ]
    for source, data in (("3D lab", lab), ("real threestudio", threestudio)):
        if not data.get("rows"):
            continue
        machine_line = ", ".join(f"{k} {v}" for k, v in data.get("machine", {}).items() if v is not None)
        parts += ["", f"## {source}", "", f"Machine: {machine_line}.", ""]
        parts += [f"Commands: {'; '.join(f'`{c}`' for c in dict.fromkeys(data.get('commands', [])))}."]
        for title, rows in groups(data, source).items():
            if rows:
                seeds = sorted({row["seed"] for row in rows})
                parts += ["", f"### {title} (seeds {seeds}, {len(rows)} runs)", "", table(summarise(rows))]
    (out / "frontier.md").write_text("\n".join(parts) + "\n")
    figure(panels, out / "frontier.png")
    print("\n".join(parts))
    print(f"wrote {out / 'frontier.md'} and {out / 'frontier.png'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="the 3D lab's grid (resumable)")
    run_parser.add_argument("--methods", default=",".join(FRONTIER_METHODS))
    run_parser.add_argument("--classes", default=",".join((*STANDARD_CLASSES, EQUAL_MEAN_CLASS)))
    run_parser.add_argument("--seeds", default="0-2")
    run_parser.add_argument("--workers", type=int, default=1, help="processes (one torch thread each)")
    run_parser.add_argument("--reuse", action="store_true", help="import the committed fidelity3d rows")
    report_parser = commands.add_parser("report", help="frontier.md and frontier.png from the results")
    for sub in (run_parser, report_parser):
        sub.add_argument("--out", default=str(RESULTS), help="results folder")
    args = parser.parse_args(argv)
    try:
        return run(args) if args.command == "run" else report_command(args)
    except ValueError as error:
        parser.error(str(error))
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
