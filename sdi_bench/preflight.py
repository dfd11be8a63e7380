"""What a command checks before it touches anything: its own extras, the Python that will train, the
device that will score. Each failure is one line that names the option, its value and the fix."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence

from threestudio_sdi.extension import SOURCE_ROOT

from .errors import BenchError

DISTRIBUTIONS = {"yaml": "pyyaml", "PIL": "pillow", "omegaconf": "omegaconf"}
"""Module → the distribution that provides it, where the names differ."""

TRAINING_MODULES = ("sdi_bench.launcher", "omegaconf", "torch", "pytorch_lightning")
"""What the training Python imports before threestudio's own code runs: the launch wrapper, the
overlays' OmegaConf, and the probe (torch, Lightning)."""


def install_line(python: str = sys.executable) -> str:
    """The command that installs the ``bench`` extra into ``python``."""
    if (SOURCE_ROOT / "setup.py").is_file():
        return f'{python} -m pip install -e "{SOURCE_ROOT}[bench]"'
    return f'{python} -m pip install "threestudio-sdi[bench]"'


def require(command: str, modules: Iterable[str]) -> None:
    """BenchError naming the modules of ``sdi-bench <command>`` that this Python lacks, and the fix."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        names = ", ".join(DISTRIBUTIONS.get(name, name) for name in missing)
        raise BenchError(
            f"`sdi-bench {command}` needs {names} (the bench extra), which {sys.executable} lacks: "
            f"{install_line()}"
        )


def check_training_python(python: str, option: str = "--python") -> None:
    """BenchError unless ``python`` imports what every training process needs (:data:`TRAINING_MODULES`):
    found before any run is claimed, not as one failed attempt per run."""
    probe = (
        "import importlib.util\n"
        "def found(name):\n"
        "    try:\n"
        "        return importlib.util.find_spec(name) is not None\n"
        "    except ImportError:  # its package is missing\n"
        "        return False\n"
        f"print(','.join(name for name in {TRAINING_MODULES!r} if not found(name)))\n"
    )
    try:
        result = subprocess.run(  # not from here: this folder may hold the package the training lacks
            [python, "-c", probe],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            cwd=tempfile.gettempdir(),
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise BenchError(f"{option} {python!r} does not run ({error})") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"{option} {python!r} does not run: {last}")
    missing = [name for name in result.stdout.strip().split(",") if name]
    if missing:
        names = ", ".join(DISTRIBUTIONS.get(name.split(".")[0], name) for name in missing)
        fix = install_line(python)
        if "sdi_bench.launcher" in missing:
            names = names.replace("sdi_bench.launcher", "threestudio-sdi")
        raise BenchError(
            f"{option} {python}: the training Python lacks {names}, so every run would fail: {fix} "
            "(in threestudio's environment this installs no other version of its pins)"
        )


def check_device(device: str, option: str = "--device") -> str:
    """``device`` as torch names it (``auto``: cuda if there is one, else cpu); BenchError if torch does
    not know it or this machine lacks it."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as error:
        first = (str(error).splitlines() or [""])[0]
        raise BenchError(
            f"{option} {device!r} is not a torch device ({first}): give auto, cpu, cuda or cuda:N"
        ) from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise BenchError(
                f"{option} {device!r}: this machine has no CUDA GPU that torch can use; give cpu"
            )
        if parsed.index is not None and parsed.index >= count:
            raise BenchError(
                f"{option} {device!r}: this machine has {count} CUDA GPU(s) (cuda:0 … cuda:{count - 1})"
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise BenchError(f"{option} {device!r}: MPS is not available here; give cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise BenchError(f"{option} {device!r}: the metric models run on cpu, cuda or mps")
    return str(parsed)


def writable_folder(folder: pathlib.Path, option: str) -> pathlib.Path:
    """``folder`` made if missing; BenchError if it is a file, is under one, or cannot be written."""
    from .store import check_folder

    folder = pathlib.Path(folder).expanduser().resolve()
    check_folder(folder, option)
    probe = folder / ".sdi-bench-write-check"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise BenchError(
            f"{option} {folder} is not writable ({error.strerror or error}): give a folder you can write"
        ) from None
    return folder


def at_least(values: Sequence[tuple[str, float | int | None, float]]) -> None:
    """BenchError for the first (option, value, minimum) whose value is below its minimum."""
    for option, value, minimum in values:
        if value is not None and not value >= minimum:
            raise BenchError(f"{option} must be at least {minimum:g}, got {value!r}")
