"""The SQLite results store: one row per run, claims with leases, retries, recovery, config changes."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import pathlib

import pytest

from sdi_bench import layout
from sdi_bench.errors import BenchError
from sdi_bench.outcome import Outcome, recover
from sdi_bench.ownership import mark_ended, take_gate
from sdi_bench.plan import PlannedRun
from sdi_bench.store import Store


def planned(index: int, config_hash: str = "h0", method: str = "sdi") -> PlannedRun:
    return PlannedRun(
        run_id=f"{method}/p{index}/seed0/{config_hash}",
        method=method,
        prompt=f"prompt {index}",
        prompt_index=index,
        seed=0,
        config="/c.yaml",
        overlays=(),
        args=(f"system.prompt_processor.prompt=p{index}",),
        config_hash=config_hash,
        setup_hash="s" + config_hash,
    )


def outcome(status: str, kind: str = "ok", attempt_dir: str = "/x") -> Outcome:
    return Outcome(status=status, outcome=kind, attempt_dir=attempt_dir, wall_seconds=1.0)


def test_sync_adds_each_run_once(tmp_path):
    store = Store(tmp_path)
    runs = [planned(i) for i in range(3)]
    assert store.sync_plan(runs) == 3
    assert store.sync_plan(runs) == 0
    assert [run["run_id"] for run in store.runs()] == [run.run_id for run in runs]
    assert all(run["status"] == "pending" for run in store.runs())


def test_claims_go_in_plan_order_and_never_twice(tmp_path):
    store = Store(tmp_path)
    store.sync_plan([planned(i) for i in range(3)])
    first = store.claim("a", retries=1, lease_seconds=60)
    second = store.claim("b", retries=1, lease_seconds=60)
    third = store.claim("a", retries=1, lease_seconds=60)
    assert [first.run_id, second.run_id, third.run_id] == [f"sdi/p{i}/seed0/h0" for i in range(3)]
    assert store.claim("b", retries=1, lease_seconds=60) is None
    assert first.attempt == 1
    assert first.attempt_dir == tmp_path.resolve() / "runs" / "sdi/p0/seed0/h0" / "attempt-1"


def test_only_the_claim_that_launched_an_attempt_writes_its_result(tmp_path):
    store = Store(tmp_path)
    store.sync_plan([planned(0)])
    claim = store.claim("a", retries=1, lease_seconds=60, now=1000.0)
    # the lease ran out: another run takes it over
    takeover = store.claim("b", retries=1, lease_seconds=60, now=1000.0 + 61)
    assert takeover.run_id == claim.run_id and takeover.attempt == 2
    assert store.finish(claim, outcome("done")) is False
    assert store.runs()[0]["status"] == "running"
    assert store.finish(takeover, outcome("done")) is True
    assert store.runs()[0]["status"] == "done" and store.runs()[0]["owner"] is None


def test_an_unexpired_lease_keeps_the_run_and_renew_extends_it(tmp_path):
    store = Store(tmp_path)
    store.sync_plan([planned(0)])
    store.claim("a", retries=1, lease_seconds=60)
    assert store.claim("b", retries=1, lease_seconds=60) is None
    assert store.renew("a", 3600) == 1
    assert store.renew("b", 3600) == 0


def test_failed_runs_are_retried_up_to_retries_then_stay_failed(tmp_path):
    store = Store(tmp_path)
    store.sync_plan([planned(0)])
    for attempt in (1, 2):
        claim = store.claim("a", retries=1, lease_seconds=60)
        assert claim.attempt == attempt
        store.finish(claim, outcome("failed", "error"))
    assert store.claim("a", retries=1, lease_seconds=60) is None
    row = store.runs()[0]
    assert (row["status"], row["attempts"], row["failures"]) == ("failed", 2, 2)
    # a later `run --retries 2` may try once more
    assert store.claim("a", retries=2, lease_seconds=60).attempt == 3


def test_diverged_runs_are_final_and_released_runs_are_not_failures(tmp_path):
    store = Store(tmp_path)
    store.sync_plan([planned(0), planned(1)])
    claim = store.claim("a", retries=1, lease_seconds=60)
    store.finish(claim, outcome("diverged", "oom"))
    other = store.claim("a", retries=1, lease_seconds=60)
    assert other.run_id == "sdi/p1/seed0/h0"
    assert store.release(other) is True
    row = store.runs(["sdi/p1/seed0/h0"])[0]
    assert (row["status"], row["failures"]) == ("pending", 0)
    assert store.claim("a", retries=1, lease_seconds=60).run_id == "sdi/p1/seed0/h0"
    assert store.claim("a", retries=1, lease_seconds=60) is None


def test_a_finished_attempt_of_a_killed_supervisor_is_recovered_not_rerun(tmp_path):
    store = Store(tmp_path)
    store.sync_plan([planned(0)])
    claim = store.claim("a", retries=1, lease_seconds=60, now=1000.0)
    # the attempt finished and wrote its report, then `sdi-bench run` was killed before recording it
    assert take_gate(claim.attempt_dir, {"host": "elsewhere", "pid": 1, "start": None}) is None
    mark_ended(claim.attempt_dir)
    trial = claim.attempt_dir / layout.OUTPUTS / "sdi" / "tag"
    (trial / "configs").mkdir(parents=True)
    (trial / "configs" / "parsed.yaml").write_text(
        "data: {eval_width: 8, eval_height: 8}\nsystem: {prompt_processor: {prompt: prompt 0}}\n"
    )
    (trial / "save" / "it5-test").mkdir(parents=True)
    (trial / "save" / "it5-test" / "0.png").write_bytes(b"png")
    (claim.attempt_dir / layout.REPORT).write_text(json.dumps({"outcome": "ok", "exit_code": 0, "steps": 5}))
    assert store.claim("b", retries=1, lease_seconds=60, now=2000.0, recover=recover) is None
    row = store.runs()[0]
    assert (row["status"], row["attempts"], row["steps"], row["trial_dir"]) == ("done", 1, 5, str(trial))


def test_a_changed_config_is_another_run_and_no_row_is_rewritten(tmp_path):
    store = Store(tmp_path)
    store.sync_plan([planned(0), planned(1)])
    store.finish(store.claim("a", retries=1, lease_seconds=60), outcome("done"))
    in_flight = store.claim("a", retries=1, lease_seconds=60)
    store.add_scores("sdi/p0/seed0/h0", {"clip": (30.0, 1.0, 50)}, "model")
    before = {run["run_id"]: run for run in store.runs()}
    assert store.sync_plan([planned(0, "h1"), planned(1, "h1")]) == 2
    after = {run["run_id"]: run for run in store.runs()}
    assert {key: after[key] for key in before} == before  # the done and the in-flight rows as they were
    assert sorted(set(after) - set(before)) == ["sdi/p0/seed0/h1", "sdi/p1/seed0/h1"]
    assert store.finish(in_flight, outcome("done")) is True  # recorded against its own config
    assert store.runs([in_flight.run_id])[0]["config_hash"] == "h0"
    assert [score["run_id"] for score in store.scores()] == ["sdi/p0/seed0/h0"]
    with pytest.raises(BenchError, match="hash collision"):
        store.sync_plan([dataclasses.replace(planned(0, "h1"), config_hash="other")])


def test_scores_are_one_row_per_run_and_metric(tmp_path):
    store = Store(tmp_path)
    store.sync_plan([planned(0)])
    run_id = "sdi/p0/seed0/h0"
    store.add_scores(run_id, {"clip": (30.0, 1.0, 50), "clipiqa_quality": (80.0, 2.0, 50)}, "m1")
    store.add_scores(run_id, {"clip": (31.0, 1.0, 50)}, "m2")
    rows = {(row["metric"], row["model"]): row["value"] for row in store.scores()}
    assert rows == {("clip", "m2"): 31.0, ("clipiqa_quality", "m1"): 80.0}
    assert store.scored_with("clip", "m2") == {run_id} and store.scored_with("clip", "m1") == set()


def _claim_all(out_dir: str, owner: str, queue: multiprocessing.Queue) -> None:
    store = Store(out_dir)
    taken = []
    while (claim := store.claim(owner, retries=0, lease_seconds=600)) is not None:
        taken.append(claim.run_id)
    queue.put(taken)


def test_concurrent_processes_claim_disjoint_runs(tmp_path):
    store = Store(tmp_path)
    store.sync_plan([planned(i) for i in range(40)])
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_claim_all, args=(str(tmp_path), f"w{i}", queue)) for i in range(3)]
    for worker in workers:
        worker.start()
    taken = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    claimed = [run_id for part in taken for run_id in part]
    assert sorted(claimed) == sorted(run.run_id for run in [planned(i) for i in range(40)])
    owners = {run["owner"] for run in store.runs()}
    assert owners <= {"w0", "w1", "w2"} and all(run["attempts"] == 1 for run in store.runs())


def test_store_on_a_folder_without_one_says_to_run_first(tmp_path):
    with pytest.raises(BenchError, match="run `sdi-bench run` first"):
        Store(pathlib.Path(tmp_path) / "empty", mode="write")
