"""Run the REAL threestudio on a CPU, for tests and benchmarks: import stand-ins and run-time patches.

threestudio targets CUDA: ``import threestudio`` needs tiny-cuda-nn and nvdiffrast (not on PyPI), its
``get_device`` always returns ``cuda``, and nerfacc's packed volume rendering has CUDA kernels only.
This module makes a threestudio checkout importable and trainable on a CPU without writing into it:

* :func:`import_threestudio` imports it from a checkout, with the stand-ins of ``stubs/`` appended to
  the END of ``sys.path`` (an installed package always wins; see ``stubs/README.md``);
* :func:`threestudio_sdi.testing.cpu_harness.patches.apply` patches ``get_device`` and the nerfacc functions
  that need CUDA;
* :func:`threestudio_sdi.testing.cpu_harness.launcher.launch_on_cpu` runs launch.py's own ``main()`` with a CPU
  Trainer (``--train`` / ``--test`` / ``--export``, ``resume=``, overrides) and records the steps;
* :func:`prepare_workdir` builds a working directory whose ``custom/threestudio-sdi`` links to this
  repository (its root is the extension) and whose ``load`` links to the checkout's (launch.py reads
  both relative to the working directory).

Nothing here is imported by the core or the plugin; tests and benchmarks call it.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType

STUBS = pathlib.Path(__file__).resolve().parent / "stubs"
EXTENSION_ROOT = pathlib.Path(__file__).resolve().parents[3]
"""The root of this source checkout: the extension folder threestudio loads (``__init__.py``, ``configs/``)."""


def check_checkout(root: pathlib.Path) -> pathlib.Path:
    """``root`` resolved, or ValueError if it is not a threestudio checkout."""
    root = pathlib.Path(root).resolve()
    if not (root / "threestudio" / "__init__.py").is_file() or not (root / "launch.py").is_file():
        raise ValueError(f"{root} is not a threestudio checkout (it needs threestudio/ and launch.py)")
    return root


def prepare_workdir(
    workdir: pathlib.Path, root: pathlib.Path, extension: pathlib.Path = EXTENSION_ROOT
) -> None:
    """``workdir/custom/threestudio-sdi`` → ``extension`` and ``workdir/load`` → the checkout's ``load/``."""
    (workdir / "custom").mkdir(parents=True, exist_ok=True)
    link = workdir / "custom" / "threestudio-sdi"
    if not link.exists():
        link.symlink_to(extension, target_is_directory=True)
    if not (workdir / "load").exists():
        (workdir / "load").symlink_to(root / "load", target_is_directory=True)


def import_threestudio(root: pathlib.Path) -> ModuleType:
    """The real threestudio from the checkout ``root``, with CPU stand-ins only for what is missing."""
    root = check_checkout(root)
    sys.path.insert(0, str(root))
    # Import what probes for torchvision before the torchvision stand-in becomes visible.
    import diffusers  # noqa: F401
    import pytorch_lightning  # noqa: F401
    import torchmetrics  # noqa: F401
    import transformers  # noqa: F401

    if str(STUBS) not in sys.path:
        sys.path.append(str(STUBS))
    import threestudio

    location = pathlib.Path(threestudio.__file__).resolve()
    if root not in location.parents or getattr(threestudio, "__standin__", False):
        raise RuntimeError(f"expected threestudio from {root}, imported {location}")
    return threestudio


def load_launch(root: pathlib.Path) -> ModuleType:
    """threestudio's ``launch.py`` of the checkout ``root`` as a module (its ``main`` is not run)."""
    spec = importlib.util.spec_from_file_location("threestudio_launch", check_checkout(root) / "launch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
