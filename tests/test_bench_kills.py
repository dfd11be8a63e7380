"""Kills and races: real signals to real processes, against the stand-in slowed down.

A run's training belongs to its `run` (it dies with it, grandchildren included); a claim is retaken
only when its owner and its training are provably gone; a training that outlived its `run` (a Slurm
job, or a supervisor of its own) is reported, waited for and recorded once; a second `run` with
another config on the same --out never touches the first one's rows. Every check reads the stand-in's
ledger: what really trained, how often, and whether two trainings of a run were ever alive together.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest
import yaml
from bench_harness import STANDIN, Bench, StderrReader, pid_alive, wait_for

from sdi_bench.cli import build_parser, plan_from
from sdi_bench.execution import RunSettings, execute_run, spec_for
from sdi_bench.ownership import HOST, TRAINING, read_json
from sdi_bench.store import Store


@pytest.fixture
def bench(tmp_path):
    bench = Bench(tmp_path)
    yield bench
    bench.close()


def training_started(bench: Bench, count: int = 1):
    return lambda: len(bench.ledger("start")) >= count


def holding(bench: Bench) -> tuple[dict, pathlib.Path]:
    """An environment whose trainings wait after their start until the returned file exists."""
    hold = bench.folder / "release"
    return {**bench.env, "SDI_BENCH_STANDIN_HOLD": str(hold)}, hold


def trainings(bench: Bench) -> dict[str, int]:
    """The pid of each training process that wrote training.json, by attempt folder."""
    found = {}
    for record in (bench.out / "runs").rglob(TRAINING):
        data = read_json(record)
        if data:
            found[str(record.parent)] = int(data["pid"])
    return found


def test_kill_9_of_run_kills_its_training_and_the_next_run_trains_each_run_once(bench):
    env, hold = holding(bench)
    process = bench.start("long", 2, "--gpus", "0", env=env)
    wait_for(training_started(bench), "a training to start")
    wait_for(lambda: list(bench.out.glob("runs/**/standin-child.pid")), "the training's child process")
    ((killed_attempt, training_pid),) = trainings(bench).items()
    child_pid = int(next(bench.out.glob("runs/**/standin-child.pid")).read_text())
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    # the training and the process it started die with their `run`
    wait_for(lambda: not pid_alive(training_pid), f"training pid {training_pid} to die with its run", 60)
    wait_for(lambda: not pid_alive(child_pid), f"its child pid {child_pid} to die with it", 60)
    assert bench.ledger("end") == []
    killed_run = next(row["run_id"] for row in bench.rows().values() if row["status"] == "running")

    hold.touch()
    resumed = bench.run("long", 2, "--gpus", "0")
    assert resumed.returncode == 0, resumed.stderr
    rows = bench.rows()
    assert all(row["status"] == "done" for row in rows.values()) and len(rows) == 2
    assert sorted(bench.ledger("end")) == sorted(rows)  # each run trained to the end exactly once
    assert bench.overlaps() == []
    # nor does what a finished training started and left behind outlive its attempt
    children = [int(path.read_text()) for path in bench.out.glob("runs/**/standin-child.pid")]
    assert len(children) == 3 and not any(pid_alive(pid) for pid in children)
    # the killed attempt was retaken in a new folder; its own folder is kept as it was
    assert rows[killed_run]["attempts"] == 2 and pathlib.Path(killed_attempt).is_dir()
    assert (pathlib.Path(killed_attempt) / "launch.log").is_file()


def test_a_finished_training_ends_what_it_started_when_its_supervisor_cannot(bench, monkeypatch):
    """The supervisor ends the training's group after the training exits; a supervisor killed in between
    cannot. The training (the launcher, leader of its group) ends the rest of its group itself."""
    from sdi_bench import execution
    from sdi_bench.ownership import new_owner

    monkeypatch.setattr(execution, "end_group", lambda process: None)  # the supervisor's clean-up lost
    bench.out.mkdir()
    args = build_parser().parse_args(bench.command("long", 1)[3:])
    store = Store(bench.out)
    store.sync_plan(plan_from(args).runs)
    claim = store.claim(new_owner(), retries=1, lease_seconds=600)
    outcome = execute_run(spec_for(claim, RunSettings(threestudio=STANDIN, python=sys.executable)))
    assert outcome.status == "done", outcome
    child = int(next(bench.out.glob("runs/**/standin-child.pid")).read_text())
    wait_for(lambda: not pid_alive(child), f"the training's child pid {child} to end with it", 30)


def orphan_supervisor(bench: Bench, run_id: str, env: dict) -> subprocess.Popen:
    """Claim ``run_id`` for an owner that is gone (a finished process of this host) and start its
    attempt under a supervisor of its own, as a Slurm job whose submitter died would be."""
    args = build_parser().parse_args(bench.command("slow", 2)[3:])
    store = Store(bench.out)
    store.sync_plan(plan_from(args).runs)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    claim = store.claim(f"{HOST}:{int(gone.stdout)}:?:gone00", retries=1, lease_seconds=600, run_ids=[run_id])
    spec = spec_for(claim, RunSettings(threestudio=STANDIN, python=sys.executable))
    code = (
        "import json, sys\n"
        "from sdi_bench.execution import RunSpec, execute_run\n"
        "spec = json.loads(sys.argv[1]); spec['overlays'] = tuple(spec['overlays']); spec['args'] = tuple(spec['args'])\n"
        "print(execute_run(RunSpec(**spec)).status)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(spec.__dict__)], env=env, stdout=subprocess.PIPE, text=True
    )


def test_a_training_that_outlived_its_run_is_reported_waited_for_and_recorded_once(bench):
    bench.out.mkdir()
    args = build_parser().parse_args(bench.command("slow", 2)[3:])
    orphan = plan_from(args).runs[0].run_id
    env, hold = holding(bench)
    supervisor = orphan_supervisor(bench, orphan, env)
    wait_for(training_started(bench), "the orphan's training to start")

    process = bench.start("slow", 2, "--gpus", "0", "--lease-seconds", "10")
    stderr = StderrReader(process)
    wait_for(lambda: stderr.count("outlived") or process.poll() is not None, "the orphan to be reported")
    hold.touch()
    assert process.wait(timeout=120) == 0, stderr.text
    stderr.join()
    assert f"{orphan}: its training (supervisor pid {supervisor.pid} on {HOST}) outlived" in stderr.text
    assert "waiting for it to end, then its result is recorded" in stderr.text
    assert supervisor.wait(timeout=60) == 0 and supervisor.stdout.read().strip() == "done"
    rows = bench.rows()
    assert {row["status"] for row in rows.values()} == {"done"}
    # the orphan's run was not trained again: its one attempt was recorded from its folder
    assert rows[orphan]["attempts"] == 1 and bench.ledger("start").count(orphan) == 1
    assert sorted(bench.ledger("end")) == sorted(rows) and bench.overlaps() == []


def test_an_attempt_whose_claim_was_retaken_before_it_started_never_trains(bench):
    store = Store(bench.out)
    args = build_parser().parse_args(bench.command("ok", 1)[3:])
    store.sync_plan(plan_from(args).runs)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    queued = store.claim(f"{HOST}:{int(gone.stdout)}:?:gone00", retries=1, lease_seconds=600)
    # its owner is gone and the attempt never started (a queued Slurm job): the next claim takes it over
    retaken = store.claim("me", retries=1, lease_seconds=600)
    assert (retaken.run_id, retaken.attempt) == (queued.run_id, 2)
    assert read_json(queued.attempt_dir / "supervisor.json")["abandoned_by"] == "me"
    # the queued job starts at last: its attempt is abandoned, nothing trains
    outcome = execute_run(spec_for(queued, RunSettings(threestudio=STANDIN, python=sys.executable)))
    assert (outcome.status, outcome.outcome) == ("abandoned", "abandoned")
    assert bench.ledger("start") == [] and not (queued.attempt_dir / "launch.log").exists()


def test_a_slurm_job_whose_submitter_was_killed_runs_on_and_is_recorded_once(bench):
    pytest.importorskip("submitit")
    extra = ["--executor", "slurm", "--cluster", "local", "--max-parallel", "2", "--gpus-per-task", "0"]
    env, hold = holding(bench)
    submitter = bench.start("slow", 3, *extra, "--poll-seconds", "0.2", env=env)
    wait_for(training_started(bench, 2), "two jobs to start training")
    submitter.send_signal(signal.SIGKILL)
    submitter.wait(timeout=60)
    # the jobs run on without their submitter (as Slurm jobs do)
    assert len(bench.ledger("start")) == 2 and all(pid_alive(pid) for pid in trainings(bench).values())

    process = bench.start("slow", 3, *extra, "--poll-seconds", "0.2")
    stderr = StderrReader(process)
    wait_for(lambda: stderr.count("outlived") == 2 or process.poll() is not None, "both jobs to be reported")
    hold.touch()
    assert process.wait(timeout=120) == 0, stderr.text
    stderr.join()
    assert stderr.count("outlived the `sdi-bench run` that started it") == 2
    rows = bench.rows()
    assert len(rows) == 3 and {row["status"] for row in rows.values()} == {"done"}
    assert sorted(bench.ledger("start")) == sorted(bench.ledger("end")) == sorted(rows)  # once each
    assert bench.overlaps() == []
    assert sorted(row["attempts"] for row in rows.values()) == [1, 1, 1]


def test_a_second_run_with_another_config_on_the_same_out_never_touches_the_first(bench):
    # run A trains with 6 steps; run B (2 steps) runs on the same --out while A's first run is in flight
    env, hold = holding(bench)
    first = bench.start("slow", 2, "--set", "trainer.max_steps=6", env=env)
    wait_for(training_started(bench), "run A to start training")
    second = bench.run("slow", 2, "--set", "trainer.max_steps=2")
    assert second.returncode == 0, second.stderr
    assert "(2 new)" in second.stdout  # B's runs are its own rows
    assert [row["status"] for row in bench.rows().values()].count("running") == 1  # A's, untouched
    hold.touch()
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    rows = bench.rows()
    assert len(rows) == 4 and {row["status"] for row in rows.values()} == {"done"}
    for row in rows.values():
        steps = next(
            int(arg.split("=")[1]) for arg in reversed(json.loads(row["args"])) if "max_steps" in arg
        )
        trial = pathlib.Path(row["trial_dir"])
        parsed = yaml.safe_load((trial / "configs" / "parsed.yaml").read_text())
        assert parsed["trainer"]["max_steps"] == steps and (trial / "save" / f"it{steps}-test").is_dir()
        assert (trial / "standin-prompt.txt").read_text(encoding="utf-8") == row["prompt"]
    assert sorted(bench.ledger("end")) == sorted(rows) and bench.overlaps() == []
    # B again: its runs are done, so nothing trains; A's are not B's
    again = bench.run("slow", 2, "--set", "trainer.max_steps=2")
    assert again.returncode == 0 and "(0 new)" in again.stdout and len(bench.ledger("start")) == 4


def test_a_result_made_by_another_config_is_never_recorded_as_done(bench):
    from sdi_bench import layout
    from sdi_bench.outcome import classify

    result = bench.run("ok", 1)
    assert result.returncode == 0, result.stderr
    (row,) = bench.rows().values()
    attempt, trial = pathlib.Path(row["attempt_dir"]), pathlib.Path(row["trial_dir"])
    args, prompt = json.loads(row["args"]), row["prompt"]
    assert classify(attempt, 0, 1.0, args, prompt).status == "done"
    parsed = trial / "configs" / "parsed.yaml"
    config = yaml.safe_load(parsed.read_text())
    config["trainer"]["max_steps"] = 16  # outputs of a run with another max_steps
    parsed.write_text(yaml.safe_dump(config))
    wrong = classify(attempt, 0, 1.0, args, prompt)
    assert (wrong.status, wrong.outcome) == ("failed", "config-mismatch")
    assert "trainer.max_steps is 16, this run's config sets 4" in wrong.error
    config["trainer"]["max_steps"] = 4
    config["system"]["prompt_processor"]["prompt"] = "another prompt"
    parsed.write_text(yaml.safe_dump(config))
    assert (
        "system.prompt_processor.prompt is 'another prompt'" in classify(attempt, 0, 1.0, args, prompt).error
    )
    # the prompt the prompt processor held, when the training process reports it
    config["system"]["prompt_processor"]["prompt"] = prompt
    parsed.write_text(yaml.safe_dump(config))
    report = json.loads((attempt / layout.REPORT).read_text())
    (attempt / layout.REPORT).write_text(json.dumps({**report, "prompt": prompt + "!"}))
    assert "the prompt processor trained on" in classify(attempt, 0, 1.0, args, prompt).error


def test_the_training_does_not_start_when_its_supervisor_is_already_gone(tmp_path):
    report = tmp_path / "launch_report.json"
    lifeline, held = os.pipe()
    os.close(held)  # the supervisor's end is closed: it is gone
    result = subprocess.run(
        [sys.executable, "-m", "sdi_bench.launcher", "--threestudio", str(STANDIN), "--report", str(report)]
        + ["--", "--config", "x.yaml", "--train"],
        env={**os.environ, "SDI_BENCH_LIFELINE_FD": str(lifeline)},
        pass_fds=(lifeline,),
        capture_output=True,
        text=True,
        timeout=120,
    )
    os.close(lifeline)
    assert result.returncode != 0 and "the supervisor is gone; not starting" in result.stderr
    assert not report.exists() and read_json(tmp_path / TRAINING)["pid"] > 0
