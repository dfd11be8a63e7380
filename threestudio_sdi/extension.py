"""The threestudio extension of this package: the folder threestudio's ``launch.py`` loads from ``custom/``.

Two ways to install it, both without a symbolic link:

* **git clone** (like every threestudio extension): ``cd custom && git clone <repo> threestudio-sdi``
  and ``pip install -r custom/threestudio-sdi/requirements.txt``. The repository's root is the
  extension: its ``__init__.py`` puts the root on ``sys.path`` and imports the package beside it.
* **pip + drop-in**: ``pip install <repo>`` (editable or not), then
  ``python -m threestudio_sdi.extension /path/to/threestudio``, which writes
  ``custom/threestudio-sdi/__init__.py`` (imports the installed package) and copies the configs beside it
  (:func:`write_drop_in`).

Either way ``--config custom/threestudio-sdi/configs/sdi.yaml`` names a config, and importing
:mod:`threestudio_sdi.threestudio` registers ``sdi-guidance`` and ``sdi-ext-system``.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import shutil
import sys
from collections.abc import Sequence

MIN_THREESTUDIO_VERSION = (0, 2, 3)
"""threestudio 0.2.3 (HEAD 28d9d80, December 2024) is what the plugin is tested against."""
EXTENSION_NAME = "threestudio-sdi"
"""The folder name under threestudio's ``custom/`` (also the module name ``launch.py`` gives it)."""
SOURCE_ROOT = pathlib.Path(__file__).resolve().parents[1]
"""The repository root when the package runs from a source checkout (a clone, or ``pip install -e``)."""
DROP_IN_INIT = '''"""threestudio-sdi drop-in, written by `python -m threestudio_sdi.extension`: imports the installed
package, which registers sdi-guidance and sdi-ext-system; the configs are in configs/ beside this file."""

from threestudio_sdi.threestudio import REGISTERED_NAMES, SDIExtSystem, SDIGuidance  # noqa: F401
'''


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.2.3"`` -> (0, 2, 3); the leading numeric parts of a version string (``"0.3.0.dev1"`` ->
    (0, 3, 0)); () when it starts with no number."""
    match = re.match(r"\d+(\.\d+)*", text.strip())
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def config_dir() -> pathlib.Path:
    """The configs: ``configs/`` of the source checkout, or the copy a wheel installs in the package."""
    for folder in (SOURCE_ROOT / "configs", pathlib.Path(__file__).resolve().parent / "configs"):
        if (folder / "sdi.yaml").is_file():
            return folder
    raise FileNotFoundError(
        f"no configs/ found beside {SOURCE_ROOT} or in the installed package: reinstall threestudio-sdi"
    )


def write_drop_in(threestudio: pathlib.Path) -> pathlib.Path:
    """Write ``<threestudio>/custom/threestudio-sdi/`` (``__init__.py`` and ``configs/``); return it.

    Refuses (FileExistsError) a folder that is already there and is not a drop-in this function wrote,
    e.g. a git clone of the repository: nothing of it is overwritten.
    """
    threestudio = pathlib.Path(threestudio).resolve()
    if not (threestudio / "launch.py").is_file():
        raise FileNotFoundError(f"{threestudio} is not a threestudio checkout (it has no launch.py)")
    target = threestudio / "custom" / EXTENSION_NAME
    init = target / "__init__.py"
    if target.exists() and not (init.is_file() and init.read_text(encoding="utf-8") == DROP_IN_INIT):
        raise FileExistsError(
            f"{target} exists and is not a drop-in written by this command (a git clone of threestudio-sdi "
            "is already an extension): remove it first, or keep using it"
        )
    if target.exists():
        shutil.rmtree(target / "configs", ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(config_dir(), target / "configs")
    init.write_text(DROP_IN_INIT, encoding="utf-8")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m threestudio_sdi.extension THREESTUDIO``: write the drop-in (module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m threestudio_sdi.extension",
        description="Install threestudio-sdi into a threestudio checkout as custom/threestudio-sdi "
        "(an __init__.py that imports this installed package, and the configs).",
    )
    parser.add_argument("threestudio", type=pathlib.Path, help="the threestudio checkout (holds launch.py)")
    args = parser.parse_args(argv)
    try:
        target = write_drop_in(args.threestudio)
    except (FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"wrote {target}: run launch.py from {args.threestudio.resolve()} with "
        f"--config custom/{EXTENSION_NAME}/configs/sdi.yaml"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
