"""sdi-bench's help: every subcommand and option is described; bad settings are errors, not tracebacks."""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

import pytest

from sdi_bench.cli import build_parser, main

SUBCOMMANDS = ("plan", "run", "score", "report")


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_subcommand_and_option_has_help():
    found = subparsers()
    assert tuple(found) == SUBCOMMANDS
    for name, parser in found.items():
        assert parser.description, name
        for action in parser._actions:
            assert action.help and action.help.strip(), f"sdi-bench {name} {action.option_strings}"


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in SUBCOMMANDS)])
def test_help_prints_and_exits_cleanly(argv):
    result = subprocess.run(
        [sys.executable, "-m", "sdi_bench.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.startswith("usage: sdi-bench")
    assert "%%" not in result.stdout  # argparse prints a description's text as it is
    if argv == ["run", "--help"]:
        for option in (
            "--threestudio",
            "--gpus",
            "--partition",
            "--time",
            "--gpus-per-task",
            "--max-parallel",
        ):
            assert option in result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--threestudio", "/nonexistent", "--out", "{tmp}"], "is not a threestudio checkout"),
        (["run", "--threestudio", "{standin}", "--out", "{tmp}", "--gpus", "0,0"], "distinct GPU ids"),
        (["run", "--threestudio", "{standin}", "--out", "{tmp}"], "has no runs yet"),
        (["plan", "--suite", "paper43", "--first", "0"], "--first must be at least 1"),
        (["plan", "--prompts", "/nonexistent.txt"], "cannot read it"),
        (["score", "--out", "{tmp}/none"], "no results store"),
    ],
)
def test_bad_settings_name_the_setting(argv, message, tmp_path, capsys):
    standin = str(pathlib.Path(__file__).resolve().parent / "bench_standin")
    assert main([arg.replace("{tmp}", str(tmp_path)).replace("{standin}", standin) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
