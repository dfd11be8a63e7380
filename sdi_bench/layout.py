"""threestudio's output layout: ``<exp_root_dir>/<name>/<tag>/`` with ``configs/parsed.yaml``,
``ckpts/last.ckpt`` and ``save/it<N>-test/<i>.png`` (render | normal | opacity panels side by side)."""

from __future__ import annotations

import pathlib
import re

OUTPUTS = "outputs"
"""The attempt's ``exp_root_dir`` (inside the attempt folder)."""
REPORT = "launch_report.json"
"""What the launch wrapper writes when the training process ends (see :mod:`.launcher`)."""
LOG = "launch.log"
"""stdout and stderr of the training process."""

_TEST_DIR = re.compile(r"^it(\d+)-test$")


def find_trial_dir(attempt_dir: pathlib.Path) -> pathlib.Path | None:
    """The threestudio trial folder of an attempt (the one holding ``configs/parsed.yaml``)."""
    found = sorted((attempt_dir / OUTPUTS).glob("*/*/configs/parsed.yaml"))
    return found[-1].parent.parent if found else None


def test_view_dir(trial_dir: pathlib.Path) -> pathlib.Path | None:
    """``save/it<N>-test`` of the highest N that holds at least one PNG."""
    candidates = []
    for path in (trial_dir / "save").glob("it*-test"):
        match = _TEST_DIR.match(path.name)
        if match and path.is_dir() and any(path.glob("*.png")):
            candidates.append((int(match.group(1)), path))
    return max(candidates)[1] if candidates else None


def test_views(trial_dir: pathlib.Path) -> list[pathlib.Path]:
    """The test renders of a trial in view order (``0.png``, ``1.png``, …)."""
    folder = test_view_dir(trial_dir)
    if folder is None:
        return []
    numbered = [(int(path.stem), path) for path in folder.glob("*.png") if path.stem.isdigit()]
    return [path for _, path in sorted(numbered)]


def eval_size(trial_dir: pathlib.Path) -> tuple[int, int] | None:
    """(width, height) of one test panel from ``configs/parsed.yaml`` (``data.eval_width/height``)."""
    import yaml

    try:
        config = yaml.safe_load((trial_dir / "configs" / "parsed.yaml").read_text(encoding="utf-8"))
        data = config["data"]
        width = data.get("eval_width", data.get("width"))
        height = data.get("eval_height", data.get("height"))
        return (int(width), int(height)) if width and height else None
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None
