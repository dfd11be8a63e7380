"""The pages that say which test tried a behaviour name tests that exist, and every troubleshooting row
names one or is marked advice."""

from __future__ import annotations

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
PAGES = [REPO / "README.md", REPO / "docs" / "threestudio.md", REPO / "docs" / "troubleshooting.md"]


def defined_tests() -> dict[str, set[str]]:
    """{test file name: the test functions it defines}."""
    return {
        path.name: set(re.findall(r"^def (test_\w+)", path.read_text(), flags=re.M))
        for path in TESTS.glob("test_*.py")
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_named_test_exists(page: pathlib.Path) -> None:
    tests = defined_tests()
    every = set().union(*tests.values())
    text = page.read_text()
    missing = [
        f"{file}::{name}"
        for file, name in re.findall(r"`(test_\w+\.py)::(test_\w+)`", text)
        if name not in tests.get(file, ())
    ]
    missing += [name for name in re.findall(r"`(test_\w+)`", text) if name not in every]
    assert not missing, f"{page.name} names tests that do not exist: {missing}"


def test_every_troubleshooting_row_names_a_test_or_is_advice() -> None:
    rows = [
        line
        for line in (REPO / "docs" / "troubleshooting.md").read_text().splitlines()
        if line.startswith("| ")
    ]
    header, _, *body = rows
    assert header.split("|")[-2].strip() == "tried by"
    assert len(body) >= 20
    for row in body:
        tried_by = row.split("|")[-2]
        assert "::test_" in tried_by or "*advice*" in tried_by, row
