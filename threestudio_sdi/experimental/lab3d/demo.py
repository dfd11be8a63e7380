"""``sdi-lab3d --demo``: the first command, a 3D generation on the CPU in about a minute.

The 3D lab on its exact prior (every class, the view-consistent prior: :mod:`.prior`), at a smaller
budget than the lab's default run: SDS, SDI and ``consistent-shared-10`` (the research strategy that
recovers a true variant in 23 of 27 runs of the full benchmark, docs/lab3d.md) each distil the ``ball``
from the same start and the same views, in parallel processes. It writes the turntable PNG (the class's
three true variants, their mean, and each method's asset, from 8 held-out views) and prints
:func:`demo_table`: a few columns and what they mean.

**The demo's budget** (:data:`DEMO_DEFAULTS`) against the lab's default (:class:`LabSettings`): 160
steps × 2 views instead of 400 × 4, at 24² px and 32 samples per ray instead of 32² and 64, with Adam's
learning rate 0.1 instead of 0.05 to make up for the fewer steps; the assets (32³ voxels, 3 classes × 3
variants), the prior (s = 0.05) and the methods are the lab's. At this budget seed 0 shows what the full
run measures over 9 runs per method: SDI ends nearer the class mean than any variant, SDS leans to one
variant without reaching it, ``consistent-shared-10`` recovers one (``benchmarks/results/lab3d-demo/``);
over seeds 0–3 SDI is a blend in all 4 and ``consistent-shared-10`` lands nearest one variant in all 4
but recovers it only with seed 0 (``benchmarks/results/lab3d-demo-seeds/``; the full budget recovers
in 23 of 27 runs). Any option of ``sdi-lab3d`` given with ``--demo`` overrides the demo's value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .report import RECOVERED_PSNR, verdict

DEMO_METHODS = ("sds", "sdi-paper", "consistent-shared-10")
DEMO_DEFAULTS: dict[str, Any] = {
    "methods": ",".join(DEMO_METHODS),
    "classes": "ball",
    "seeds": "0",
    "steps": 160,
    "views_per_step": 2,
    "image_size": 24,
    "samples_per_ray": 32,
    "lr": 0.1,
    "workers": len(DEMO_METHODS),
}
"""The ``sdi-lab3d`` options that ``--demo`` sets (module docstring); one worker per method."""

COLUMNS = (
    "method",
    "evals/step",
    "nearest variant",
    "PSNR to it",
    "PSNR to class mean",
    "sharpness",
    "outcome",
)


def demo_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per run: the few measures a newcomer needs, aligned, and the run's verdict in words."""
    body = []
    for row in rows:
        finite = "psnr_nearest" in row
        body.append(
            [
                row["method"] + ("" if len({r["seed"] for r in rows}) == 1 else f" seed {row['seed']}"),
                f"{row['evaluations_per_step']:.1f}",
                f"#{row['nearest_variant']}" if finite else "–",
                f"{row['psnr_nearest']:.1f} dB" if finite else "–",
                f"{row['psnr_class_mean']:.1f} dB" if finite else "–",
                f"{row['sharpness']:.2f}" if finite else "–",
                verdict(row),
            ]
        )
    widths = [max(len(line[i]) for line in [list(COLUMNS), *body]) for i in range(len(COLUMNS))]
    lines = [list(COLUMNS), ["-" * w for w in widths], *body]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def legend(picture: str, variants: int, eval_views: int) -> str:
    """What each column of :func:`demo_table` means, and where to look."""
    return f"""
How to read it. Every method distilled the same class from the same start and the same views; every
number is measured on the {eval_views} held-out views of {picture}, against the class's {variants} true variants.
  evals/step          model evaluations per training step: the cost (SDI inverts DDIM at every step)
  nearest variant     the true variant the asset looks most like (rows truth #0.. of the picture)
  PSNR to it          how close it is: >= {RECOVERED_PSNR:.0f} dB = that variant recovered; ~18 dB = a different asset
  PSNR to class mean  how close it is to the average of the variants (the picture's "class mean" row);
                      higher than "PSNR to it" = a blend of the variants (mode averaging), not one of them
  sharpness           fine detail / the truth's: 1 = as sharp as the truth, below 1 = blurry
  outcome             the above in words, as on the picture: recovered, a blend, not recovered, or DIVERGED
What to look at: in the picture, compare each method's row with the truth rows and with "class mean".
Nine runs per method at the full budget, and what they show: docs/lab3d.md."""
