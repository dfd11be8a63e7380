"""The commands of docs/benchmark.md's "Try it on this machine" section run as written (stand-in, tiny CLIP)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmark.md"
DEMO = "/tmp/sdi-bench-demo"


def try_it_commands() -> list[str]:
    section = DOC.read_text().split("## Try it on this machine", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_the_try_it_commands_run_as_written(tmp_path):
    pytest.importorskip("torchmetrics")
    commands = try_it_commands()
    assert [command.split()[0] for command in commands] == [
        "python",
        "sdi-bench",
        "sdi-bench",
        "sdi-bench",
        "sdi-bench",
    ]
    bin_folder = pathlib.Path(sys.executable).parent
    # one thread per process: tiny models on a shared 2-core machine are slowed down by OpenMP barriers
    env = {**os.environ, "PATH": f"{bin_folder}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    outputs = []
    for command in commands:
        # the documented folder, moved into this test's own temporary folder
        result = subprocess.run(
            command.replace(DEMO, str(tmp_path / "demo")),
            shell=True,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        outputs.append(result.stdout)
    assert "expected: 743.9 GPU-hours" in outputs[1]
    assert "9 done, 0 diverged, 0 failed" in outputs[2]
    table = (tmp_path / "demo" / "table.md").read_text()
    for method in ("sdi", "sds", "vsd"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {method} |"))
        assert "| 3 / 3 |" in row and row.endswith("| complete |"), row
    assert (tmp_path / "demo" / "grid.png").is_file() and (tmp_path / "demo" / "metrics.png").is_file()


@pytest.mark.parametrize(("seeds", "label"), [("0", "× 1 seed"), ("0,1", "× 2 seeds")])
def test_the_gpu_hours_in_the_docs_are_what_plan_prints(seeds, label, capsys):
    from sdi_bench.cli import main

    row = next(
        line
        for line in DOC.read_text().splitlines()
        if line.startswith(f"| paper43 × {{sdi, sds, vsd}} {label}")
    )
    cells = [cell.strip(" *") for cell in row.strip("|").split("|")]
    assert main(["plan", "--suite", "paper43", "--methods", "sdi,sds,vsd", "--seeds", seeds, "--quiet"]) == 0
    out = capsys.readouterr().out
    printed = {
        line.split()[0]: line.split("=")[1].split()[0] for line in out.splitlines() if "GPU-h  [" in line
    }
    assert cells[1:4] == [f"{printed[method]} GPU-h" for method in ("sdi", "sds", "vsd")]
    assert f"expected: {cells[4].removesuffix(' GPU-h')} GPU-hours" in out
