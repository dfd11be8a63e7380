"""The CPU configs of the real-threestudio harness and a :class:`Harness` that writes and launches them.

A run's config is a YAML file in the working directory: a base config (ours, or one of threestudio's
own) merged with layers of overrides by OmegaConf and saved unresolved, so that threestudio's
``load_config`` resolves it exactly as it resolves a user's config. :meth:`Harness.run` then calls
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
from threestudio_sdi.testing.cpu_harness.launcher import LaunchRun, launch_on_cpu

REPO = pathlib.Path(__file__).resolve().parents[2]
SDI_YAML = REPO / "configs" / "sdi.yaml"
PROMPT = "a DSLR photo of a hamburger"

PURE_TORCH_FIELD = {
    "pos_encoding_config": {"otype": "ProgressiveBandFrequency", "n_frequencies": 4},
    "mlp_network_config": {
        "otype": "VanillaMLP",
        "activation": "ReLU",
        "output_activation": "none",
        "n_neurons": 16,
        "n_hidden_layers": 1,
    },
}
"""A geometry network without tiny-cuda-nn: threestudio's pure-torch encoding and MLP."""

CPU_RESET = {
    "system": {"background": None, "geometry": {"pos_encoding_config": None, "mlp_network_config": None}}
}
"""Blocks that name CUDA-only components are cleared first (an OmegaConf merge keeps old keys, and
threestudio's configs reject unknown ones), then set anew by :data:`CPU`."""

CPU = {
    "use_timestamp": False,
    "data": {
        "width": 32,
        "height": 32,
        "eval_width": 32,
        "eval_height": 32,
        "n_val_views": 1,
        "n_test_views": 1,
    },
    "system": {
        "geometry": PURE_TORCH_FIELD,
        "background_type": "solid-color-background",
        "background": {"learned": True},
        "renderer": {
            "estimator": "importance",
            "num_samples_per_ray": 16,
            "num_samples_per_ray_importance": 8,
            "near_plane": 0.1,
            "far_plane": 4.0,
        },
        "prompt_processor": {"prompt": PROMPT, "spawn": False},
    },
    "trainer": {"log_every_n_steps": 1, "num_sanity_val_steps": 0, "precision": 32},
}
"""32×32 renders, 16 + 8 samples per ray, importance sampling, a solid background, precision 32."""

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


def sdi_guidance(tiny: pathlib.Path) -> dict[str, Any]:
    """The guidance block that points sdi.yaml at the tiny model (the prompt processor follows it)."""
    return {
        "guidance": {
            "pretrained_model_name_or_path": str(tiny),
            "local_files_only": True,
            "half_precision_weights": False,
            "seed": 0,
        }
    }


def steps(
    max_steps: int, val_every: int | None = None, checkpoint_every: int | None = None
) -> dict[str, Any]:
    """``max_steps`` training steps, validation every ``val_every`` (default: at the end), checkpoints."""
    return {
        "trainer": {"max_steps": max_steps, "val_check_interval": val_every or max_steps},
        "checkpoint": {
            "save_last": True,
            "save_top_k": -1,
            "every_n_train_steps": checkpoint_every or max_steps,
        },
    }


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
        from omegaconf import OmegaConf

        own = {"name": "harness", "tag": name, "exp_root_dir": str(self.workdir / "outputs")}
        merged = OmegaConf.merge(
            OmegaConf.load(base), *(OmegaConf.create(layer) for layer in layers), OmegaConf.create(own)
        )
        path = self.workdir / "configs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(merged, path)
        return path

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
