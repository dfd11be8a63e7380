"""What a Python has for threestudio, and what threestudio's own loader makes of ``custom/`` (sdi-doctor's probe).

Run in the threestudio folder, in threestudio's Python, by ``python path/to/cpu_harness probe DIST...``
(``__main__.py``): :func:`environment` first (versions, CUDA-only imports, CUDA), then
:func:`import_threestudio` with the stand-ins for what is missing, and :func:`extension`: launch.py's
``load_custom_modules()``, which folder registered ``sdi-guidance`` and ``sdi-ext-system`` (from which
files), and every config of that folder through threestudio's ``load_config`` and its components'
Config classes. Nothing of threestudio_sdi is imported here: the extension in ``custom/`` loads its own.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import inspect
import io
import pathlib
import re
import sys
import tempfile
from collections.abc import Sequence
from types import ModuleType
from typing import Any

NAMES = ("sdi-guidance", "sdi-ext-system")
COMPONENTS = ("geometry", "material", "background", "renderer", "guidance", "prompt_processor")


def error_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip().splitlines()[0]


def environment(distributions: Sequence[str]) -> dict[str, Any]:
    """Versions of ``distributions`` (None: not installed), the import errors of the CUDA-only packages
    and nerfacc, and CUDA: device, version and free memory in GiB (False without a CUDA device)."""
    versions: dict[str, str | None] = {}
    for name in distributions:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    errors = {}
    for module in ("tinycudann", "nvdiffrast.torch", "nerfacc"):
        try:
            importlib.import_module(module)
        except Exception as error:  # an extension built for another CUDA raises OSError, RuntimeError, ...
            errors[module.split(".")[0]] = error_line(error)
    import torch

    cuda = torch.cuda.is_available() and {
        "device": torch.cuda.get_device_name(0),
        "version": torch.version.cuda,
        "free_gb": torch.cuda.mem_get_info(0)[0] / 2**30,
    }
    return {"versions": versions, "errors": errors, "cuda": cuda}


def extension(threestudio: ModuleType, launch: ModuleType, stubs: pathlib.Path) -> dict[str, Any]:
    """launch.py's ``load_custom_modules()`` in the current folder, and what it registered and loads."""
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        launch.load_custom_modules()
    custom = sorted(path.name for path in pathlib.Path("custom").iterdir())
    folder = next((name for name in custom if hasattr(sys.modules.get(name), "REGISTERED_NAMES")), None)
    modules = threestudio.__modules__
    report = {
        "stand_ins": sorted(name for name, module in sys.modules.items() if _under(module, stubs)),
        "import_failed": re.findall(r"Cannot import (\S+) module for custom nodes: (.*)", printed.getvalue()),
        "custom": custom,
        "extension": folder,
        "registered": {name: inspect.getfile(modules[name]) for name in NAMES if name in modules},
        "configs": {},
        "configs_needing": {},
    }
    from threestudio.utils.config import load_config, parse_structured

    for path in sorted(pathlib.Path("custom", folder).glob("configs/*.yaml")) if folder else []:
        try:
            with tempfile.TemporaryDirectory() as outputs:  # load_config makes the trial's folder
                arguments = ["system.prompt_processor.prompt=x", f"exp_root_dir={outputs}"]
                config = load_config(str(path), cli_args=arguments, n_gpus=1)
            missing = [name for name in config.system_type.split(":") if name not in modules]
            if missing:  # another extension's system (threestudio-3dgs's): not installed here
                report["configs_needing"][path.name] = ", ".join(missing)
                continue
            system = parse_structured(threestudio.find(config.system_type).Config, config.system)
            for kind in COMPONENTS:
                parse_structured(threestudio.find(system[f"{kind}_type"]).Config, system[kind])
            report["configs"][path.name] = None
        except Exception as error:  # any config error threestudio raises is the finding
            report["configs"][path.name] = error_line(error)
    return report


def _under(module: ModuleType | None, folder: pathlib.Path) -> bool:
    name, file = getattr(module, "__name__", "."), str(getattr(module, "__file__", ""))
    return "." not in name and file.startswith(str(folder))
