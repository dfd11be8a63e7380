"""Known-answer 3D lab: score distillation of a voxel asset from an exact, view-conditioned prior.

Host-free and CPU-fast (pure torch): procedural ground-truth assets (:mod:`.assets`), a differentiable
emission–absorption renderer (:mod:`.renderer`), threestudio's random cameras (:mod:`.cameras`), the
exact prior whose per-view density is a mixture over renders of the class's true variants
(:mod:`.prior`), Adam distillation with one guidance step per iteration (:mod:`.distill`), the methods
compared (:mod:`.methods`), outcomes against the known assets on held-out views (:mod:`.metrics`), and
the ``sdi-lab3d`` command (:mod:`.cli`). See ``docs/lab3d.md``.
"""

from .assets import AssetSet, make_assets
from .cameras import CameraRanges, sample_cameras, turntable_cameras
from .distill import DistillSettings, distill_3d
from .experiment import Lab3D, LabSettings
from .methods import METHODS, Method
from .prior import ExactViewPrior, ViewInconsistentPrior
from .renderer import RenderSettings, VoxelGrid, render

__all__ = [
    "METHODS",
    "AssetSet",
    "CameraRanges",
    "DistillSettings",
    "ExactViewPrior",
    "Lab3D",
    "LabSettings",
    "Method",
    "RenderSettings",
    "ViewInconsistentPrior",
    "VoxelGrid",
    "distill_3d",
    "make_assets",
    "render",
    "sample_cameras",
    "turntable_cameras",
]
