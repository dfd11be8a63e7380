"""Real threestudio with the real threestudio-3dgs on a CPU: set-up and the CPU layers of sdi-gs.yaml.

:func:`start` prepares a working directory whose ``custom/`` holds ``threestudio-sdi`` (this repository)
and ``threestudio-3dgs`` (links; neither checkout is written to: bytecode is off), imports threestudio
with the stand-ins of ``threestudio_sdi.testing.cpu_harness`` and, at the END of ``sys.path``, this
folder's ``stubs/`` (``diff_gaussian_rasterization``, ``simple_knn``: an installed package wins), lets
threestudio's own ``launch.load_custom_modules()`` load both extensions, and gives threestudio-3dgs's
modules (and ``threestudio.utils.ops``, whose Gaussian camera helpers it calls) the ``cuda`` shim.
Runs then go through launch.py's ``main()`` with a CPU Trainer, as in tests/threestudio_cpu.
"""

from __future__ import annotations

import pathlib
import sys
from dataclasses import dataclass
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
STUBS = HERE / "stubs"
SDI_GS_YAML = REPO / "configs" / "sdi-gs.yaml"
SDS_GS_YAML = REPO / "configs" / "sds-gs.yaml"
EXTENSION = "threestudio-3dgs"
SIZE = 32
"""Renders of 32×32 px: the tiny SD's native size, the exact prior's too."""

sys.path.insert(0, str(REPO / "tests" / "threestudio_cpu"))
from harness import Harness  # noqa: E402  (tests/threestudio_cpu/harness.py)


def check_3dgs_checkout(root: pathlib.Path) -> pathlib.Path:
    root = pathlib.Path(root).resolve()
    if not (root / "__init__.py").is_file() or not (root / "system" / "gaussian_splatting.py").is_file():
        raise ValueError(f"{root} is not a threestudio-3dgs checkout (no system/gaussian_splatting.py)")
    return root


@dataclass
class GaussianHarness:
    """A :class:`Harness` for threestudio-3dgs runs, with what :func:`start` did."""

    h: Harness
    gs_root: pathlib.Path
    shim: Any
    shimmed: list[str]

    def gs_module(self, name: str) -> Any:
        """A loaded module of threestudio-3dgs by its dotted name in the extension (``geometry.gaussian_base``)."""
        return sys.modules[f"{EXTENSION}.{name}"]

    def sdi_gs(self, name: str, *layers: dict[str, Any]) -> pathlib.Path:
        """configs/sdi-gs.yaml on the CPU with the tiny SD (its own seed 0), plus ``layers``."""
        tiny = {"local_files_only": True, "half_precision_weights": False, "seed": 0}
        return self.h.config(name, cpu_layer(self.h.tiny, tiny), *layers, base=SDI_GS_YAML)

    def sds_gs(self, name: str, *layers: dict[str, Any]) -> pathlib.Path:
        """configs/sds-gs.yaml (threestudio's SDS) on the CPU with the tiny SD, plus ``layers``."""
        tiny = {"half_precision_weights": False}
        return self.h.config(name, cpu_layer(self.h.tiny, tiny), *layers, base=SDS_GS_YAML)


def cpu_layer(tiny: pathlib.Path, guidance: dict[str, Any]) -> dict[str, Any]:
    """32×32 px, 256 initial Gaussians, 1 validation and 2 test views, the tiny SD, precision 32."""
    return {
        "use_timestamp": False,
        "data": {
            "width": SIZE,
            "height": SIZE,
            "eval_width": SIZE,
            "eval_height": SIZE,
            "n_val_views": 1,
            "n_test_views": 2,
        },
        "system": {
            "geometry": {"init_num_pts": 256},
            "prompt_processor": {"prompt": "a delicious hamburger", "spawn": False},
            "guidance": {"pretrained_model_name_or_path": str(tiny), **guidance},
        },
        "trainer": {"log_every_n_steps": 1, "num_sanity_val_steps": 0, "precision": 32},
    }


def modules_under(root: pathlib.Path) -> list[str]:
    """Loaded modules whose file is in ``root`` and which hold a module-level ``torch``."""
    names = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if (
            path
            and root in pathlib.Path(path).resolve().parents
            and getattr(module, "torch", None) is not None
        ):
            names.append(name)
    return sorted(names)


def start(threestudio_root: pathlib.Path, gs_root: pathlib.Path, workdir: pathlib.Path) -> GaussianHarness:
    """The working directory, threestudio, both extensions and the shim (module docstring)."""
    import os

    from threestudio_sdi.testing.cpu_harness import import_threestudio, load_launch, patches, prepare_workdir
    from threestudio_sdi.testing.tiny_sd import tiny_stable_diffusion

    sys.dont_write_bytecode = True
    root = pathlib.Path(threestudio_root).resolve()
    gs_root = check_3dgs_checkout(gs_root)
    workdir = pathlib.Path(workdir).resolve()
    prepare_workdir(workdir, root)
    link = workdir / "custom" / EXTENSION
    if not link.exists():
        link.symlink_to(gs_root, target_is_directory=True)
    os.chdir(workdir)
    threestudio = import_threestudio(root)
    if str(STUBS) not in sys.path:
        sys.path.append(str(STUBS))
    import torch

    torch.set_num_threads(1)
    launch = load_launch(root)
    launch.load_custom_modules()
    for name in ("threestudio-sdi", EXTENSION):
        if name not in sys.modules:
            raise RuntimeError(f"launch.load_custom_modules() did not load custom/{name}")
    patches.apply()
    import cuda_shim

    shimmed = [*modules_under(gs_root), "threestudio.utils.ops"]
    shim = cuda_shim.install(shimmed)
    h = Harness(root, workdir, threestudio, launch, tiny_stable_diffusion(workdir / "tiny-sd"))
    return GaussianHarness(h, gs_root, shim, shimmed)
