"""One setting of the 3D lab — assets, prior, held-out views — and one measured run in it.

:class:`Lab3D` builds the known assets, the exact prior (view-consistent or view-inconsistent) and the
truth's held-out renders once; :meth:`Lab3D.run` distils one asset (method × class × seed) and measures
it (:mod:`threestudio_sdi.experimental.lab3d.metrics`). The CLI and ``benchmarks/fidelity3d.py`` both run through it.

A run **diverged** when its asset went non-finite, or when its silhouette lost half its overlap with the
nearest variant (IoU < ½): the asset collapsed or exploded rather than converged to some render.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import Tensor

from ...errors import check_choice, check_int, parse_seeds
from .assets import CLASS_NAMES, make_assets
from .cameras import turntable_cameras
from .distill import DistillSettings, distill_3d
from .methods import get_method
from .metrics import measure
from .prior import DEFAULT_NOISE_STD, ExactViewPrior, ViewInconsistentPrior
from .renderer import RenderSettings, render

PRIORS = ("consistent", "inconsistent")
DIVERGED_IOU = 0.5


@dataclass(frozen=True)
class LabSettings:
    """Everything that defines a setting of the 3D lab (defaults: the CPU default of ``sdi-lab3d``).

    Attributes:
        grid_resolution: R of the R³ voxel grids (truth and distilled asset).
        variants_per_class: variants of each class (1 = the known-answer sanity setting).
        class_names: the classes (see :mod:`threestudio_sdi.experimental.lab3d.assets`).
        asset_seed: seed of the procedural assets.
        render: image size, samples per ray, background.
        prior: ``consistent`` (:class:`ExactViewPrior`) or ``inconsistent`` (:class:`ViewInconsistentPrior`).
        noise_std: s of every prior component.
        temperature: τ of the view-inconsistent prior.
        eval_views: held-out turntable views.
        distill: steps, views per step, learning rate, camera ranges.
    """

    grid_resolution: int = 32
    variants_per_class: int = 3
    class_names: tuple[str, ...] = CLASS_NAMES
    asset_seed: int = 0
    render: RenderSettings = field(default_factory=RenderSettings)
    prior: str = "consistent"
    noise_std: float = DEFAULT_NOISE_STD
    temperature: float = 0.1
    eval_views: int = 8
    distill: DistillSettings = field(default_factory=DistillSettings)

    def __post_init__(self) -> None:
        check_choice("prior", self.prior, PRIORS)
        check_int("eval_views", self.eval_views, low=1)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunRecord:
    """One run's measured row (JSON-ready) and its held-out renders [V, 3, H, W] for the figures."""

    row: dict[str, Any]
    turntable: Tensor


class Lab3D:
    """The assets, the prior, the held-out views and the truth's renders of one :class:`LabSettings`."""

    def __init__(self, settings: LabSettings) -> None:
        self.settings = settings
        self.assets = make_assets(
            settings.grid_resolution, settings.variants_per_class, settings.class_names, settings.asset_seed
        )
        if settings.prior == "consistent":
            self.prior: ExactViewPrior = ExactViewPrior(self.assets, settings.render, settings.noise_std)
        else:
            self.prior = ViewInconsistentPrior(
                self.assets, settings.render, settings.noise_std, temperature=settings.temperature
            )
        self.eval_cameras = turntable_cameras(settings.eval_views, settings.distill.cameras)
        truth = render(self.assets.grid, self.eval_cameras, settings.render)
        self.truth_rgb, self.truth_opacity = truth.rgb, truth.opacity  # [K, V, ...]

    def class_index(self, name: str) -> int:
        """The index of the class called ``name``."""
        return self.assets.class_names.index(check_choice("class", name, self.assets.class_names))

    def truth_turntables(self, class_index: int) -> dict[str, Tensor]:
        """Label → held-out renders [V, 3, H, W]: each variant of the class, then the class mean."""
        members = self.assets.members(class_index)
        rows = {f"truth #{v}": self.truth_rgb[k] for v, k in enumerate(members.tolist())}
        rows["class mean"] = self.truth_rgb[members].mean(dim=0)
        return rows

    def run(
        self,
        method_name: str,
        class_index: int,
        seed: int,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> RunRecord:
        """Distil one asset and measure it on the held-out views (module docstring); ``callback`` is
        :func:`~threestudio_sdi.experimental.lab3d.distill.distill_3d`'s (called after every step)."""
        result = distill_3d(
            self.prior, get_method(method_name), class_index, seed, self.settings.distill, callback
        )
        rendering = render(result.grid, self.eval_cameras, self.settings.render)
        members = self.assets.members(class_index)
        row: dict[str, Any] = {
            "method": method_name,
            "class": self.assets.class_names[class_index],
            "seed": seed,
            "evaluations_per_step": result.model_evaluations / len(result.timesteps),
            "nonfinite_views": result.nonfinite_views,
            "seconds": round(result.seconds, 2),
        }
        if result.finite:
            view_targets = None
            if isinstance(self.prior, ViewInconsistentPrior):
                view_targets = self.prior.preferred_variants(self.eval_cameras, class_index)
            outcome = measure(
                rendering.rgb,
                rendering.opacity,
                self.truth_rgb[members],
                self.truth_opacity[members],
                view_targets,
            )
            row.update(outcome.as_dict())
            row["diverged"] = outcome.silhouette_iou < DIVERGED_IOU or math.isnan(outcome.psnr_nearest)
        else:
            row["diverged"] = True
        return RunRecord(row, rendering.rgb.detach())


def run_grid(
    lab: Lab3D,
    methods: list[str],
    class_indices: list[int],
    seeds: list[int],
    progress: Any = None,
) -> tuple[list[dict[str, Any]], dict[tuple[str, int], RunRecord]]:
    """Every (method, class, seed); returns the rows and the first seed's record per (method, class).

    ``progress`` (optional) is called with each finished row.
    """
    rows: list[dict[str, Any]] = []
    firsts: dict[tuple[str, int], RunRecord] = {}
    for class_index in class_indices:
        for method in methods:
            for seed in seeds:
                record = lab.run(method, class_index, seed)
                rows.append(record.row)
                firsts.setdefault((method, class_index), record)
                if progress is not None:
                    progress(record.row)
    return rows, firsts


def seed_list(spec: str) -> list[int]:
    """``"0,1,2"`` or ``"0-3"`` (inclusive) → seeds (:func:`threestudio_sdi.errors.parse_seeds`);
    ValueError naming the bad entry."""
    return list(parse_seeds("--seeds", spec))
