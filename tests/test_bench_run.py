"""`sdi-bench run` end to end against the stand-in of threestudio's launch.py (tests/bench_standin).

Outcomes and retries, the Lightning probe, SIGTERM and resume, two concurrent `run` processes, and the
Slurm path through submitit's local executor. Runs are counted with the stand-in's ledger (a line when
a training process starts and one when it ends), so "exactly once" is checked on what really ran.
"""

from __future__ import annotations

import json
import pathlib
import signal

import pytest
from bench_harness import Bench, wait_for


@pytest.fixture
def bench(tmp_path):
    bench = Bench(tmp_path)
    yield bench
    bench.close()


def by_method(rows: dict[str, dict]) -> dict[str, dict]:
    return {row["method"]: row for row in rows.values()}


def test_failures_are_retried_then_reported_and_oom_counts_as_diverged(bench):
    result = bench.run("ok,flaky,broken,oom,crash", 1, "--gpus", "0,1", "--retries", "1")
    assert result.returncode == 0, result.stderr
    rows = by_method(bench.rows())
    assert len(rows) == 5
    summary = {
        name: (row["status"], row["outcome"], row["attempts"], row["failures"]) for name, row in rows.items()
    }
    assert summary == {
        "ok": ("done", "ok", 1, 0),
        "flaky": ("done", "ok", 2, 1),  # failed once, retried, done
        "broken": ("failed", "error", 2, 2),  # failed, retried once, failed for good
        "oom": ("diverged", "oom", 1, 0),  # out of memory is diverged, not retried
        "crash": ("failed", "no-report", 2, 2),
    }
    assert "stand-in told to fail" in rows["broken"]["error"]
    assert "CUDA out of memory" in rows["oom"]["error"]
    assert "stand-in told to fail" in rows["broken"]["log_tail"]
    assert f"failed: {rows['broken']['run_id']} after 2 failed attempt(s)" in result.stdout
    assert "1 diverged, 2 failed" in result.stdout
    trial = pathlib.Path(rows["ok"]["trial_dir"])
    assert (trial / "configs" / "parsed.yaml").is_file() and (trial / "ckpts" / "last.ckpt").is_file()
    assert sorted(path.name for path in (trial / "save" / "it4-test").iterdir()) == [
        f"{i}.png" for i in range(6)
    ]
    assert rows["ok"]["wall_seconds"] > 0 and rows["ok"]["exit_code"] == 0

    # invoked again: finished runs are skipped and the failed one has no retries left
    started = len(bench.ledger("start"))
    again = bench.run("ok,flaky,broken,oom,crash", 1, "--gpus", "0,1", "--retries", "1")
    assert again.returncode == 0 and len(bench.ledger("start")) == started
    # with more retries the two failed runs are tried once more, and fail again
    more = bench.run("ok,flaky,broken,oom,crash", 1, "--retries", "2")
    assert more.returncode == 0
    rows = by_method(bench.rows())
    assert (rows["broken"]["attempts"], rows["crash"]["attempts"], rows["ok"]["attempts"]) == (3, 3, 1)
    assert len(bench.ledger("start")) == started + 2


def test_the_injected_callback_measures_the_training_process(bench):
    pytest.importorskip("pytorch_lightning")
    result = bench.run("light,light-nan,light-empty", 1, "--gpus", "0,1")
    assert result.returncode == 0, result.stderr
    rows = by_method(bench.rows())
    light = rows["light"]
    assert (light["status"], light["steps"]) == ("done", 4)
    assert light["steps_per_second"] > 0 and light["train_seconds"] > 0
    assert light["peak_vram_bytes"] is None and light["peak_rss_bytes"] > 0  # a CPU run has no CUDA peak
    details = json.loads(light["details"])
    assert details["test_views"] == 6 and details["params_finite"] is True
    assert 0.05 < details["max_opacity_coverage"] < 1
    assert "pytorch_lightning" in details["versions"]
    nan = rows["light-nan"]
    assert (nan["status"], nan["outcome"]) == ("diverged", "nan")
    assert json.loads(nan["details"])["nonfinite_losses"] == 3  # steps 2, 3 and 4
    empty = rows["light-empty"]
    assert (empty["status"], empty["outcome"]) == ("diverged", "empty")
    assert json.loads(empty["details"])["max_opacity_coverage"] == 0.0


def test_a_run_killed_with_sigterm_resumes_and_finishes_every_run_exactly_once(bench):
    process = bench.start("slow", 4, "--gpus", "0")

    def one_done_one_training() -> bool:
        if process.poll() is not None or not (bench.out / "results.sqlite").exists():
            return process.poll() is not None
        statuses = [row["status"] for row in bench.rows().values()]
        return statuses.count("done") >= 1 and len(bench.ledger("start")) > len(bench.ledger("end"))

    wait_for(one_done_one_training, "a finished run and one in training")
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM: stopping" in stderr and "run the same command again to resume" in stderr
    rows = bench.rows()
    statuses = sorted(row["status"] for row in rows.values())
    assert "running" not in statuses and "pending" in statuses and "done" in statuses
    interrupted = [
        row["run_id"] for row in rows.values() if row["status"] == "pending" and row["attempts"] == 1
    ]
    assert len(interrupted) == 1 and interrupted[0] in bench.ledger("start")
    assert interrupted[0] not in bench.ledger("end")

    resumed = bench.run("slow", 4, "--gpus", "0")
    assert resumed.returncode == 0, resumed.stderr
    rows = bench.rows()
    assert len(rows) == 4 and all(row["status"] == "done" for row in rows.values())
    assert sorted(bench.ledger("end")) == sorted(rows)  # every run trained to the end exactly once
    assert rows[interrupted[0]]["attempts"] == 2 and rows[interrupted[0]]["failures"] == 0


def test_two_run_processes_share_the_work_without_overlap(bench, tmp_path):
    # every training process waits until two have started: it only goes on if the other `run`
    # (one worker each) took a run at the same time
    env = {**bench.env, "SDI_BENCH_STANDIN_BARRIER": f"{tmp_path / 'barrier'}:2"}
    first = bench.start("ok", 6, "--gpus", "0", env=env)
    second = bench.start("ok", 6, "--gpus", "0", env=env)
    for process in (first, second):
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    rows = bench.rows()
    assert len(rows) == 6 and all(row["status"] == "done" and row["attempts"] == 1 for row in rows.values())
    assert sorted(bench.ledger("start")) == sorted(rows) == sorted(bench.ledger("end"))


def test_the_slurm_path_runs_through_submitits_local_executor(bench):
    pytest.importorskip("submitit")
    extra = ["--executor", "slurm", "--cluster", "local", "--max-parallel", "2", "--gpus-per-task", "0"]
    result = bench.run("ok,flaky,oom", 1, *extra, "--time", "10")
    assert result.returncode == 0, result.stderr
    rows = by_method(bench.rows())
    assert {name: (row["status"], row["attempts"]) for name, row in rows.items()} == {
        "ok": ("done", 1),
        "flaky": ("done", 2),
        "oom": ("diverged", 1),
    }
    jobs = {json.loads(row["job_ref"])["cluster"] for row in rows.values() if row["job_ref"]}
    assert jobs <= {"local"}
    logs = list((bench.out / "submitit").rglob("*_log.out"))
    assert len(logs) == 4  # one submitit job per attempt
    assert sorted(bench.ledger("end")) == sorted(
        row["run_id"] for row in rows.values() if row["status"] == "done"
    )
