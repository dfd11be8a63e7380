"""benchmarks/fidelity3d.py: a kill loses only the runs in progress, and no worker outlives it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(status.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_run_keeps_every_finished_run_and_leaves_no_worker(workers: int, tmp_path: Path) -> None:
    out = tmp_path / "f3"
    command = [sys.executable, "benchmarks/fidelity3d.py", "--quick", "--steps", "2", "--methods", "sds"]
    command += ["--seeds", "0-39", "--workers", str(workers), "--out", str(out), "--no-progress"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    report_path = out / "fidelity3d.json"
    deadline = time.monotonic() + 240
    report: dict = {}
    while time.monotonic() < deadline and process.poll() is None:
        if report_path.is_file():
            report = json.loads(report_path.read_text())  # always whole: written beside, then renamed
            if report["runs_done"] >= 3:
                break
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()[0].decode()[-2000:]
    workers_seen = _children(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    report = json.loads(report_path.read_text())
    assert report["complete"] is False and report["runs_planned"] == 40
    done = report["runs_done"]
    assert 3 <= done < 40
    rows = report["rows"]["consistent"]
    assert len(rows) == done and all(row["method"] == "sds" for row in rows)
    # the .md is replaced right after the .json: a kill between the two leaves it one run behind
    shown = re.search(r"Partial: (\d+) of 40 runs", (out / "fidelity3d.md").read_text())
    assert shown is not None and done - 1 <= int(shown.group(1)) <= done
    assert not list(out.glob("*.partial"))
    if workers > 1:
        assert len(workers_seen) >= workers  # the pool (and the queues' helper threads' process)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers_seen):
            time.sleep(0.2)
        assert not [pid for pid in workers_seen if _alive(pid)], "workers outlived the killed run"
