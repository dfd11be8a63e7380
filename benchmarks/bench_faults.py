"""Faults against `sdi-bench run`: many real `kill -9`s at random moments (inside store writes too),
concurrent `run`s, and a second `run` with another config on the same --out; then every run is
checked. Runs against the stand-in of threestudio's launch.py, on a CPU: the faults are counted from
the ledger it writes (when each training starts and ends, and whether another of its run was alive).

    python benchmarks/bench_faults.py --threestudio tests/bench_standin                # 60 rounds, seed 0
    python benchmarks/bench_faults.py --threestudio tests/bench_standin --rounds 10    # a quick look

Each round starts one or two `run` processes (config A: trainer.max_steps=4, or config B: 3, both on
one --out; seed ``round // 3``, so that rounds find runs to train) and kills them with SIGKILL:
after a random delay, a random moment into a training, or the moment the store has a write in
progress (its rollback journal exists; the kill counts as inside a write when the journal is still
there after the process died). After
each kill the trainings of the killed `run` must die on their own. At the end, A and B run once each
over every round's seed without faults, and every planned run is checked:

* lost: a planned run (of A or B) that is not done;
* duplicated: a run two of whose trainings were alive at once (the stand-in's ledger records it), or
  with two attempts that both finished (a finished attempt's result must be recorded, not retrained);
* misattributed: a done run whose result is not its config's: its trial folder outside its own
  attempt folder, or ``parsed.yaml`` (max_steps, seed, prompt), the test folder ``it<N>-test`` or the
  prompt the stand-in trained on disagreeing with the run's row;
* orphans: a training that ran on after its `run` was killed: still alive 5 s after the kill, or
  ending (the stand-in's ledger) after it.

Writes ``benchmarks/results/bench-faults.json`` (and ``.md``) with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import Any

from common import RESULTS, machine, markdown_table
from tqdm import tqdm

CONFIGS = {"A": 4, "B": 3}
"""Config name → trainer.max_steps."""
METHODS = {"m1": ["standin.step_seconds=0.5"], "m2": ["standin.step_seconds=0.6", "standin.child=true"]}
ROUNDS_PER_SEED = 3
ORPHAN_SECONDS = 5.0


class Faults:
    def __init__(
        self, folder: pathlib.Path, threestudio: pathlib.Path, prompts: int, rng: random.Random
    ) -> None:
        self.folder, self.threestudio, self.rng = folder, threestudio, rng
        self.out = folder / "out"
        self.ledger = folder / "ledger.txt"
        self.methods = folder / "methods.yaml"
        self.methods.write_text(
            json.dumps(
                {"methods": {name: {"base": "sds", "overrides": extra} for name, extra in METHODS.items()}}
            )
        )
        self.prompts = folder / "prompts.txt"
        self.prompts.write_text("".join(f"fault prompt {index}\n" for index in range(prompts)))
        self.env = {
            **os.environ,
            "SDI_BENCH_STANDIN_LEDGER": str(self.ledger),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        names = ("rounds", "kills", "kills_inside_writes", "kills_during_training", "run_processes")
        self.counts = dict.fromkeys((*names, "orphans", "orphans_alive_after_5s"), 0)
        self.killed_attempts: list[tuple[pathlib.Path, float]] = []
        """The attempt folders of killed runs, with the time of the kill."""

    def command(self, config: str, seeds: str) -> list[str]:
        return [
            sys.executable, "-m", "sdi_bench.cli", "run", "--threestudio", str(self.threestudio), "--out", str(self.out),
            "--prompts", str(self.prompts), "--methods-file", str(self.methods), "--methods", ",".join(METHODS),
            "--seeds", seeds, "--set", f"trainer.max_steps={CONFIGS[config]}", "--set", "standin.test_views=3",
            "--gpus", "0,1", "--no-progress",
        ]  # fmt: skip

    def start(self, config: str) -> subprocess.Popen:
        self.counts["run_processes"] += 1
        return subprocess.Popen(
            self.command(config, str(self.counts["rounds"] // ROUNDS_PER_SEED)),
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def trainings_of(self, supervisor: int) -> dict[pathlib.Path, int]:
        """attempt folder → training pid, of the attempts whose supervisor is the process ``supervisor``."""
        found = {}
        for gate in (self.out / "runs").rglob("supervisor.json") if (self.out / "runs").exists() else []:
            try:
                if json.loads(gate.read_text()).get("pid") == supervisor:
                    found[gate.parent] = int(json.loads((gate.parent / "training.json").read_text())["pid"])
            except (OSError, ValueError, KeyError):
                pass
        return found

    def kill(self, process: subprocess.Popen, in_write: bool = False) -> None:
        """SIGKILL ``process`` (if it still runs); with ``in_write``, the moment the store's journal exists."""
        journal = self.out / "results.sqlite-journal"
        before = self.trainings_of(process.pid)  # read first: an in-write kill must not wait for it
        if in_write:
            deadline = time.monotonic() + 20
            while process.poll() is None and not journal.exists() and time.monotonic() < deadline:
                pass  # a busy wait: a write lasts milliseconds
        else:
            before = self.trainings_of(process.pid)
        if process.poll() is not None:
            return
        training = any(alive(pid) for pid in before.values())
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.counts["kills"] += 1
        if journal.exists():
            self.counts["kills_inside_writes"] += 1
        if training:
            self.counts["kills_during_training"] += 1
        trainings = {**before, **self.trainings_of(process.pid)}
        self.killed_attempts += [(folder, time.time()) for folder in trainings]
        self.count_orphans(list(trainings.values()))

    def count_orphans(self, trainings: list[int]) -> None:
        """Count the trainings of a killed run still alive after ORPHAN_SECONDS (then stop them)."""
        deadline = time.monotonic() + ORPHAN_SECONDS
        suspects = {pid for pid in trainings if alive(pid)}
        while suspects and time.monotonic() < deadline:
            time.sleep(0.1)
            suspects = {pid for pid in suspects if alive(pid)}
        self.counts["orphans"] += len(suspects)
        self.counts["orphans_alive_after_5s"] += len(suspects)
        for pid in suspects:
            os.kill(pid, signal.SIGKILL)

    def round(self) -> None:
        """One fault: a kill at a random moment, a kill inside a write, or two runs and a kill."""
        kind = self.rng.choice(["random", "training", "write", "concurrent", "other-config"])
        config = self.rng.choice(list(CONFIGS))
        if kind in ("random", "training", "write"):
            started = len(self.events("start"))
            process = self.start(config)
            if kind == "random":
                time.sleep(self.rng.uniform(0.0, 15.0))
            elif kind == "training":
                deadline = time.monotonic() + 60
                while (
                    len(self.events("start")) == started
                    and process.poll() is None
                    and time.monotonic() < deadline
                ):
                    time.sleep(0.02)
                time.sleep(self.rng.uniform(0.0, 2.0))
            self.kill(process, in_write=kind == "write")
            processes = [process]
        else:
            other = config if kind == "concurrent" else ("B" if config == "A" else "A")
            processes = [self.start(config), self.start(other)]
            time.sleep(self.rng.uniform(0.5, 15.0))
            victim = self.rng.choice(processes)
            self.kill(victim, in_write=self.rng.random() < 0.5)
            survivor = processes[1 - processes.index(victim)]
            if self.rng.random() < 0.5:
                time.sleep(self.rng.uniform(0.0, 3.0))
                self.kill(survivor)
        for process in processes:
            if process.poll() is None:
                process.wait(timeout=600)
        self.counts["rounds"] += 1

    def events(self, kind: str) -> list[list[str]]:
        """The ledger's lines of one kind (start, end, overlap)."""
        if not self.ledger.exists():
            return []
        return [line.split() for line in self.ledger.read_text().splitlines() if line.startswith(kind + " ")]

    def seeds(self) -> str:
        return f"0-{max(0, self.counts['rounds'] - 1) // ROUNDS_PER_SEED}"

    def finish(self) -> None:
        """A and B once more each over every round's seed, without faults: every run must end done."""
        for config in CONFIGS:
            command = self.command(config, self.seeds())
            result = subprocess.run(command, env=self.env, capture_output=True, text=True)
            if result.returncode != 0:
                raise SystemExit(f"the final run of config {config} failed:\n{result.stderr[-3000:]}")
            self.counts["run_processes"] += 1

    def check(self) -> dict[str, Any]:
        """Lost, duplicated and misattributed runs, from the store, the ledger and the run folders."""
        import yaml

        from sdi_bench.cli import build_parser, plan_from

        planned = {}
        for config in CONFIGS:
            args = build_parser().parse_args(self.command(config, self.seeds())[3:])
            planned.update({run.run_id: config for run in plan_from(args).runs})
        with sqlite3.connect(self.out / "results.sqlite") as db:
            db.row_factory = sqlite3.Row
            rows = {row["run_id"]: dict(row) for row in db.execute("SELECT * FROM runs")}
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        if not self.ledger.is_file():
            raise SystemExit(
                f"--threestudio {self.threestudio} wrote no ledger: give the stand-in, tests/bench_standin"
            )
        events = [line.split() for line in self.ledger.read_text().splitlines()]
        lost = sorted(run for run in planned if rows.get(run, {}).get("status") != "done")
        overlaps = {run for event, run, *_ in events if event == "overlap"}
        finished_twice = set()
        for run in planned:
            reports = [
                json.loads(path.read_text())
                for path in (self.out / "runs" / run).glob("attempt-*/launch_report.json")
            ]
            if sum(report.get("outcome") == "ok" and report.get("exit_code") == 0 for report in reports) > 1:
                finished_twice.add(run)
        misattributed = []
        for run, config in planned.items():
            row = rows.get(run)
            if row is None or row["status"] != "done":
                continue
            trial = pathlib.Path(row["trial_dir"])
            parsed = yaml.safe_load((trial / "configs" / "parsed.yaml").read_text())
            steps = CONFIGS[config]
            if not (
                trial.is_relative_to(row["attempt_dir"])
                and parsed["trainer"]["max_steps"] == steps
                and parsed["seed"] == row["seed"]
                and parsed["system"]["prompt_processor"]["prompt"] == row["prompt"]
                and (trial / "save" / f"it{steps}-test").is_dir()
                and (trial / "standin-prompt.txt").read_text(encoding="utf-8") == row["prompt"]
            ):
                misattributed.append(run)
        ends = {(run, attempt): float(at) for event, run, attempt, at in events if event == "end"}
        late = []
        for folder, killed_at in self.killed_attempts:
            run = str(folder.parent.relative_to(self.out / "runs"))
            ended_at = ends.get((run, folder.name.removeprefix("attempt-")), 0.0)
            if ended_at > killed_at:
                late.append(round(ended_at - killed_at, 3))  # it trained to its end after its `run` was gone
        self.counts["orphans"] += len(late)
        starts = sum(event == "start" for event, *_ in events)
        finished = sum(event == "end" for event, *_ in events)
        return {
            "runs": len(planned),
            "done": sum(rows.get(run, {}).get("status") == "done" for run in planned),
            "lost": len(lost),
            "duplicated": len(overlaps | finished_twice),
            "misattributed": len(misattributed),
            "orphans_ending_after_the_kill_seconds": late,
            "trainings_started": starts,
            "trainings_killed": starts - finished,
            "attempts": sum(row["attempts"] for row in rows.values()),
            "integrity_check": integrity,
            "lost_runs": lost,
            "duplicated_runs": sorted(overlaps | finished_twice),
            "misattributed_runs": misattributed,
        }


def alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--threestudio",
        type=pathlib.Path,
        required=True,
        help="the stand-in of threestudio (tests/bench_standin): its ledger counts the trainings",
    )
    parser.add_argument("--rounds", type=int, default=60, help="fault rounds (default 60)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per config (× 2 methods; default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault schedule (default 0)")
    parser.add_argument(
        "--json",
        type=pathlib.Path,
        default=RESULTS / "bench-faults.json",
        help="result file (and .md beside it)",
    )
    args = parser.parse_args()
    started = time.time()
    info = machine()
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True)
    with tempfile.TemporaryDirectory(prefix="sdi-bench-faults-") as folder:
        faults = Faults(
            pathlib.Path(folder), args.threestudio.resolve(), args.prompts, random.Random(args.seed)
        )
        for _ in tqdm(range(args.rounds), desc="fault rounds", unit="round"):
            faults.round()
        faults.finish()
        checked = faults.check()  # counts the orphans that the ledger shows too
        result = {**faults.counts, **checked}
    summary = {
        "command": " ".join(["python", "benchmarks/bench_faults.py", *sys.argv[1:]]),
        "commit": commit.stdout.strip() or None,
        "seed": args.seed,
        "configs": {name: f"trainer.max_steps={steps}" for name, steps in CONFIGS.items()},
        "seconds": round(time.time() - started, 1),
        "machine": info,
        **result,
    }
    header = ["rounds", "kills", "inside writes", "during training", "trainings killed", "run processes"]
    header += ["runs", "lost", "duplicated", "misattributed", "orphans", "integrity"]
    row = [summary[key] for key in ("rounds", "kills", "kills_inside_writes", "kills_during_training")]
    row += [summary["trainings_killed"]]
    row += [summary["run_processes"], summary["runs"], summary["lost"]]
    row += [summary["duplicated"], summary["misattributed"], summary["orphans"], summary["integrity_check"]]
    table = markdown_table(header, [row])
    print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    args.json.with_suffix(".md").write_text(
        f"# sdi-bench under faults\n\n`{summary['command']}` ({summary['seconds']} s, {info['cpu']}, "
        f"{info['cpu_count']} CPUs, load {info['load_average_at_start']})\n\n{table}\n"
    )
    print(f"wrote {args.json}")
    return (
        0
        if result["lost"] == result["duplicated"] == result["misattributed"] == result["orphans"] == 0
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
