"""A :class:`Harness` that writes the CPU configs of the real-threestudio harness and launches them.

A run's config is a YAML file in the working directory: a base config (ours, or one of threestudio's
own) merged with layers of overrides (:mod:`threestudio_sdi.testing.cpu_harness.configs`) and saved
unresolved, so that threestudio's ``load_config`` resolves it exactly as it resolves a user's config. :meth:`Harness.run` then calls
threestudio's ``launch.py`` ``main()`` on it (:func:`threestudio_sdi.testing.cpu_harness.launcher.launch_on_cpu`).
"""

from __future__ import annotations

import os
import pathlib
import sys
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from threestudio_sdi.testing.cpu_harness import import_threestudio, load_launch, patches, prepare_workdir
from threestudio_sdi.testing.cpu_harness.configs import (  # noqa: F401 (the layers the scenarios use)
    CPU,
    CPU_RESET,
    PROMPT,
    PURE_TORCH_FIELD,
    sdi_guidance,
    steps,
    write_config,
)
from threestudio_sdi.testing.cpu_harness.launcher import LaunchRun, launch_on_cpu

REPO = pathlib.Path(__file__).resolve().parents[2]
SDI_YAML = REPO / "configs" / "sdi.yaml"
DETERMINISTIC = {
    "data": {
        # a collate draws elevation e or asin(sin(e)) by chance (the same only at 0); at global step 0
        # ``progressive_view`` swaps in (eval_elevation_deg, azimuth 0), and a prefetched batch keeps it
        "elevation_range": [0, 0],
        "eval_elevation_deg": 0,
        "azimuth_range": [0, 0],
        "camera_distance_range": [1.8, 1.8],
        "fovy_range": [60, 60],
        "light_distance_range": [1.5, 1.5],
        "camera_perturb": 0.0,
        "center_perturb": 0.0,
        "up_perturb": 0.0,
        "light_position_perturb": 0.0,
    },
    "system": {"renderer": {"randomized": False}},
}
"""Cameras, lights and ray samples that do not depend on the global RNG or on when a batch was drawn
(threestudio draws them from the global RNG, which Lightning does not restore on resume, and Lightning
draws batch k + 1 before step k): the guidance's own draws are then all that varies."""


@dataclass
class Harness:
    """One working directory with ``custom/threestudio-sdi`` linked in, and the tiny model."""

    root: pathlib.Path
    workdir: pathlib.Path
    threestudio: ModuleType
    launch: ModuleType
    tiny: pathlib.Path

    def config(self, name: str, *layers: dict[str, Any], base: pathlib.Path = SDI_YAML) -> pathlib.Path:
        """``base`` merged with ``layers``, the run's name as its tag, written unresolved to a file."""
        own = {"name": "harness", "tag": name, "exp_root_dir": str(self.workdir / "outputs")}
        return write_config(self.workdir / "configs" / f"{name}.yaml", base, *layers, own)

    def sdi_config(self, name: str, *layers: dict[str, Any]) -> pathlib.Path:
        """configs/sdi.yaml on the CPU with the tiny model, plus ``layers``."""
        return self.config(name, CPU_RESET, CPU, {"system": sdi_guidance(self.tiny)}, *layers)

    def trial(self, name: str) -> pathlib.Path:
        """The trial folder of the run called ``name`` (threestudio's ``<exp_root_dir>/<name>/<tag>``)."""
        return self.workdir / "outputs" / "harness" / name

    def run(
        self, config: pathlib.Path, mode: str = "train", *overrides: str, keep_error: bool = False
    ) -> LaunchRun:
        return launch_on_cpu(self.launch, str(config), mode, overrides, keep_error=keep_error)


@dataclass
class Opened:
    """A :class:`Harness` ready to launch runs, and what opening it did."""

    harness: Harness
    patched: list[str]
    builtin_modules: int


def open_harness(root: pathlib.Path, workdir: pathlib.Path) -> Opened:
    """In a fresh working directory (threestudio's tree is never written to): link this repository as
    ``custom/threestudio-sdi`` and the checkout's ``load``, import the real threestudio with the CPU
    stand-ins and patches, load our extension with launch.py's own ``load_custom_modules()``, and build
    the tiny offline Stable Diffusion the prompt processor reads."""
    root, workdir = root.resolve(), workdir.resolve()
    prepare_workdir(workdir, root)
    os.chdir(workdir)
    warnings.filterwarnings("ignore")
    threestudio = import_threestudio(root)
    patched = patches.apply()
    import torch

    # The models are tiny: on a shared 2-core machine extra intra-op threads only add OpenMP barriers
    # (the tiny UNet runs ~30x slower with them, as tests/conftest.py notes).
    torch.set_num_threads(1)
    builtin_modules = len(threestudio.__modules__)
    launch = load_launch(root)
    launch.load_custom_modules()  # threestudio's own loader: executes custom/threestudio-sdi/__init__.py
    if "threestudio-sdi" not in sys.modules:
        raise RuntimeError("launch.load_custom_modules() did not load custom/threestudio-sdi")
    from threestudio_sdi.testing.tiny_sd import tiny_stable_diffusion

    harness = Harness(root, workdir, threestudio, launch, tiny_stable_diffusion(workdir / "tiny-sd"))
    return Opened(harness, patched, builtin_modules)
