"""Every bad input gets one line naming the option (or the file) and its value, never a traceback, and
nothing is deleted: --out that is a file or read-only, stores that are empty, not SQLite, truncated,
not ours, of another schema or read-only, bad seeds, leases, devices, a training Python without what
it needs, a missing extra of sdi-bench itself."""

from __future__ import annotations

import os
import pathlib
import signal
import sqlite3
import subprocess
import sys

import pytest
from bench_harness import STANDIN, Bench, cli, without_root_override

from sdi_bench.cli import main
from sdi_bench.store import DATABASE, Store


def one_line_error(capsys, *parts: str) -> str:
    """The error of the last ``main`` call: one line, no traceback, holding every part."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    for part in parts:
        assert part in err, err
    return err


def tree(folder: pathlib.Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to show that nothing was deleted or changed)."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.fixture
def done_bench(tmp_path) -> Bench:
    bench = Bench(tmp_path)
    result = bench.run("ok", 2)
    assert result.returncode == 0, result.stderr
    (pathlib.Path(next(iter(bench.rows().values()))["attempt_dir"]) / "my-notes.txt").write_text("mine")
    return bench


def test_bad_numbers_and_seeds_name_the_option_and_value(tmp_path, capsys):
    plan = ["plan", "--suite", "paper43", "--quiet"]
    cases = [
        (["--seeds", "99999999999999999999"], "--seeds entry '99999999999999999999': seed 99999999999999999999 is above 4294967295"),
        (["--seeds", "4294967296"], "seed 4294967296 is above 4294967295"),
        (["--seeds", "0-100000000"], "--seeds '0-100000000' gives more than 1000 seeds"),
        (["--seeds", "5-2"], "--seeds entry '5-2' runs backwards: write 2-5"),
        (["--first", "0"], "--first must be at least 1, got 0"),
    ]  # fmt: skip
    for extra, message in cases:
        assert main([*plan, *extra]) == 2
        one_line_error(capsys, message)
    run = ["run", "--threestudio", str(STANDIN), "--out", str(tmp_path / "out"), "--suite", "paper43"]
    for extra, message in (
        (["--lease-seconds", "1"], "--lease-seconds must be at least 10, got 1.0"),
        (["--lease-seconds", "nan"], "--lease-seconds must be at least 10, got nan"),
        (["--retries", "-1"], "--retries must be at least 0, got -1"),
        (["--executor", "slurm", "--max-parallel", "0"], "--max-parallel must be at least 1, got 0"),
        (["--executor", "slurm", "--time", "0"], "--time must be at least 1, got 0"),
    ):
        assert main([*run, *extra]) == 2
        one_line_error(capsys, message)
    assert not (tmp_path / "out").exists()  # refused before anything was made
    score = ["score", "--out", str(tmp_path)]
    assert main([*score, "--views", "0"]) == 2
    one_line_error(capsys, "--views must be at least 1, got 0")


@pytest.mark.parametrize("device", ["bogus", "cuda:x", "cuda", "cuda:7"])
def test_a_bad_scoring_device_is_named(tmp_path, capsys, device):
    import torch

    if device.startswith("cuda") and device != "cuda:x" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    Store(tmp_path)
    assert main(["score", "--out", str(tmp_path), "--device", device]) == 2
    if device in ("bogus", "cuda:x"):
        one_line_error(capsys, f"--device {device!r} is not a torch device", "give auto, cpu, cuda or cuda:N")
    else:
        one_line_error(capsys, f"--device {device!r}: this machine has no CUDA GPU that torch can use")


def test_an_out_that_is_a_file_or_under_one_is_named(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    run = ["run", "--threestudio", str(STANDIN), "--suite", "paper43", "--first", "1"]
    for argv, message in (
        ([*run, "--out", str(a_file)], f"--out {a_file} is a file: give a folder"),
        ([*run, "--out", str(a_file / "sub")], f"--out {a_file / 'sub'} is under {a_file}, which is a file"),
        (["score", "--out", str(a_file)], f"--out {a_file} is a file"),
        (["report", "--out", str(a_file)], f"--out {a_file} is a file"),
        (["plan", "--suite", "paper43", "--out", str(a_file)], f"--out {a_file} is a file"),
    ):
        assert main(argv) == 2
        one_line_error(capsys, message)
    Store(tmp_path / "store")
    assert main(["report", "--out", str(tmp_path / "store"), "--to", str(a_file / "report")]) == 2
    one_line_error(capsys, f"--to {a_file / 'report'} is under {a_file}, which is a file")
    assert a_file.read_text() == "not a folder"


def corrupt(path: pathlib.Path, how: str) -> None:
    if how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"this is not a database" * 300)
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "not ours":
        path.unlink()
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE notes (text)")
    else:
        with sqlite3.connect(path) as db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (how,))
        db.close()


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("empty", "is empty (0 bytes): no sdi-bench store. Nothing was changed. Restore it from a backup"),
        ("garbage", "is not an SQLite database (file is not a database). Nothing was changed."),
        ("truncated", "is damaged (database disk image is malformed). Nothing was changed."),
        ("not ours", "is not an sdi-bench store (no table 'meta'). Nothing was changed."),
        ("3", "was written by a newer sdi-bench (schema 3; this one reads schema 2)"),
        ("1", "was written by an older sdi-bench (schema 1; this one reads schema 2)"),
    ],
)
def test_a_store_that_is_not_right_is_refused_and_nothing_is_deleted(done_bench, capsys, how, message):
    out = done_bench.out
    # a store of a few KiB: a truncated one must lose pages, not only free space
    with sqlite3.connect(out / DATABASE) as db:
        db.execute("CREATE TABLE IF NOT EXISTS padding (x)")
        db.executemany("INSERT INTO padding VALUES (?)", [("x" * 500,)] * 40)
    corrupt(out / DATABASE, how)
    before = tree(out)
    started = len(done_bench.ledger("start"))
    for argv in (
        ["run", *done_bench.command("ok", 2)[4:]],
        ["score", "--out", str(out), "--metrics", "clip"],
        ["report", "--out", str(out)],
        ["plan", "--prompts", str(done_bench.prompts), "--out", str(out), "--methods", "sds"],
    ):
        assert main(argv) == 2, argv
        one_line_error(capsys, str(out / DATABASE), message)
    assert tree(out) == before  # nothing deleted, rewritten or added (the user's notes included)
    assert len(done_bench.ledger("start")) == started  # and nothing retrained


def test_a_store_left_in_the_middle_of_a_write_is_read_as_it_was(done_bench, capsys):
    out = done_bench.out
    # a process killed inside a write leaves a hot journal; a reader rolls it back and sees the last commit
    code = (
        "import os, sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('PRAGMA cache_size = 1'); db.execute('BEGIN IMMEDIATE')\n"
        "db.execute(\"UPDATE runs SET status = 'failed', prompt = hex(randomblob(2000))\")\n"
        "print('in the write', flush=True); sys.stdin.readline()\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", code, str(out / DATABASE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout.readline().strip() == "in the write"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert (out / f"{DATABASE}-journal").is_file()
    assert main(["report", "--out", str(out), "--to", str(out.parent / "report")]) == 0
    assert "ok: 2/2 done, complete" in capsys.readouterr().out


def unprivileged(argv: list[str]) -> subprocess.CompletedProcess:
    """``sdi-bench ARGV`` as a process that file permissions bind (root without its override)."""
    return cli(*argv, preexec_fn=without_root_override())


def test_a_read_only_out_is_named_and_read_only_commands_still_work(done_bench, tmp_path):
    out = done_bench.out
    blank = tmp_path / "read-only"
    blank.mkdir()
    (tmp_path / "elsewhere").mkdir()
    modes = {path: path.stat().st_mode for path in (out, out / DATABASE, blank)}
    try:
        for path in modes:
            path.chmod(0o555 if path.is_dir() else 0o444)
        run = [
            "run",
            "--threestudio",
            str(STANDIN),
            "--methods-file",
            str(done_bench.methods),
            "--methods",
            "ok",
        ]
        run += ["--prompts", str(done_bench.prompts), "--first", "2", "--set", "trainer.max_steps=4"]
        run += ["--set", "standin.test_views=6", "--no-progress"]
        result = unprivileged([*run, "--out", str(blank)])
        assert (
            result.returncode == 2 and f"--out {blank} is not writable (Permission denied)" in result.stderr
        )
        assert "Traceback" not in result.stderr and list(blank.iterdir()) == []
        for argv in ([*run, "--out", str(out)], ["score", "--out", str(out), "--metrics", "clip"]):
            result = unprivileged(argv)
            assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
            assert f"{out / DATABASE} is read-only (attempt to write a readonly database)" in result.stderr
        result = unprivileged(["report", "--out", str(out)])
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert (
            f"--out {out} is not writable (Permission denied)" in result.stderr
            and "pass --to" in result.stderr
        )
        # read-only commands open the store read-only: they work on a read-only store
        result = unprivileged(["report", "--out", str(out), "--to", str(tmp_path / "elsewhere")])
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "elsewhere" / "table.md").is_file()
        plan = ["plan", "--prompts", str(done_bench.prompts), "--methods-file", str(done_bench.methods)]
        plan += [
            "--methods",
            "ok",
            "--first",
            "2",
            "--set",
            "trainer.max_steps=4",
            "--set",
            "standin.test_views=6",
        ]
        result = unprivileged([*plan, "--out", str(out)])
        assert result.returncode == 0 and result.stdout.count("[done]") == 2, result.stderr
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


def test_a_training_python_without_what_it_needs_is_refused_before_any_claim(tmp_path, capsys):
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    out = tmp_path / "out"
    argv = ["run", "--threestudio", str(STANDIN), "--out", str(out), "--suite", "paper43", "--first", "1"]
    assert main([*argv, "--python", str(venv / "bin" / "python")]) == 2
    one_line_error(
        capsys,
        f"--python {venv / 'bin' / 'python'}: the training Python lacks threestudio-sdi, omegaconf, torch",
        "so every run would fail",
        "-m pip install",
    )
    assert not out.exists()  # no store, no claim, no attempt
    assert main([*argv, "--python", str(tmp_path)]) == 2
    one_line_error(capsys, f"--python {str(tmp_path)!r} is not an interpreter")


def test_a_missing_extra_of_sdi_bench_says_which_and_how_to_install_it(tmp_path):
    Store(tmp_path)
    code = (
        "import sys\n"
        "sys.modules['torchmetrics'] = None  # as if it were not installed\n"
        "from sdi_bench.cli import main\n"
        f"sys.exit(main(['score', '--out', {str(tmp_path)!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "`sdi-bench score` needs torchmetrics (the bench extra)" in result.stderr
    assert "-m pip install" in result.stderr and "[bench]" in result.stderr


def test_a_new_store_beside_the_runs_of_an_old_one_keeps_them_and_uses_new_attempt_folders(done_bench):
    out = done_bench.out
    (out / DATABASE).rename(out / f"{DATABASE}.broken")  # what the refusal advises
    before = tree(out / "runs")
    result = done_bench.run("ok", 2)
    assert result.returncode == 0, result.stderr
    rows = done_bench.rows()
    assert {row["status"] for row in rows.values()} == {"done"}
    assert all(row["attempt_dir"].endswith("attempt-2") for row in rows.values())
    after = tree(out / "runs")
    assert {name: after[name] for name in before} == before  # the old attempts, the user's notes included
