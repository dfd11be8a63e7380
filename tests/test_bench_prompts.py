"""Prompts reach threestudio exactly: emoji, ${...}, backslashes, quotes, YAML's own characters.

The override is checked against OmegaConf read the way threestudio reads a prompt (three resolutions:
``load_config``, ``parse_structured``, ``self.cfg.prompt``), and end to end: the stand-in, which reads
it the same way, writes the prompt it trained on, and sdi-bench checks ``parsed.yaml`` before it
records a run as done.
"""

from __future__ import annotations

import pathlib
import re
from dataclasses import dataclass

import pytest
from bench_harness import Bench
from hypothesis import given, settings
from hypothesis import strategies as st

from sdi_bench.errors import BenchError
from sdi_bench.overrides import (
    MISSING_MARKER,
    PROMPT_KEY,
    THREESTUDIO_RESOLUTIONS,
    escape_interpolations,
    text_override,
)
from sdi_bench.suites import read_prompts

omegaconf = pytest.importorskip("omegaconf")
OmegaConf = omegaconf.OmegaConf

HARD_PROMPTS = [
    "a 🍓 strawberry, 🥐 and 中文",
    "a prompt with ${oc.env:HOME}",
    "a back\\slash, a \\${escaped} one, \\\\${two} and a trailing \\",
    "a \"quoted\" and 'single quoted' prompt",
    "key: value, [a list], {a: map}, #hash, & anchor, * alias, | pipe, > fold, % percent, @ at, `tick`",
    "null",
    "1e-3",
    "${",
    "tab\there, NEL\x85 and LS\u2028 inside",
]


@dataclass
class PromptProcessorConfig:
    prompt: str = "a hamburger"


def as_threestudio_reads_it(override: str) -> tuple[str, str]:
    """(what parsed.yaml holds, what the prompt processor trains on) for a prompt override."""
    base = OmegaConf.create({"system": {"prompt_processor": {"prompt": "a hamburger", "spawn": False}}})
    cfg = OmegaConf.merge(base, OmegaConf.from_cli([override]))  # load_config
    OmegaConf.resolve(cfg)
    parsed = OmegaConf.to_container(cfg, resolve=False)["system"]["prompt_processor"]["prompt"]
    block = cfg.system.prompt_processor
    config = OmegaConf.structured(PromptProcessorConfig(prompt=block["prompt"]))  # parse_structured
    return parsed, config.prompt  # self.cfg.prompt


@pytest.mark.parametrize("prompt", HARD_PROMPTS)
def test_a_hard_prompt_arrives_exactly(prompt):
    parsed, trained = as_threestudio_reads_it(text_override(PROMPT_KEY, prompt))
    assert trained == prompt
    assert parsed == escape_interpolations(prompt, THREESTUDIO_RESOLUTIONS - 1)


def test_a_plain_prompt_is_a_plain_quoted_string():
    assert text_override(PROMPT_KEY, "A car made out of sushi") == f'{PROMPT_KEY}="A car made out of sushi"'


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(["$", "{", "}", "\\", '"', "'", ":", " ", "#", "${", "\\${", "=", ",", "${a}"]),
            st.characters(blacklist_categories=("Cs",)),
        ),
        min_size=1,
        max_size=16,
    )
    .map("".join)
    .filter(lambda text: text != MISSING_MARKER)  # refused: test_the_missing_marker_is_refused
)
def test_any_text_arrives_exactly(prompt):
    assert as_threestudio_reads_it(text_override(PROMPT_KEY, prompt))[1] == prompt


def test_hard_prompts_train_as_they_are_stored_end_to_end(tmp_path):
    # a prompts file holds one prompt per line: those that a line can hold
    prompts = [
        prompt for prompt in HARD_PROMPTS if prompt.splitlines() == [prompt] and prompt == prompt.strip()
    ]
    bench = Bench(tmp_path, prompts=prompts)
    result = bench.run("ok", len(prompts), "--gpus", "0,1")
    assert result.returncode == 0, result.stderr
    rows = bench.rows()
    assert sorted(row["prompt"] for row in rows.values()) == sorted(prompts)
    for row in rows.values():
        assert (row["status"], row["outcome"]) == ("done", "ok"), row["error"]
        trial = pathlib.Path(row["trial_dir"])
        assert (trial / "standin-prompt.txt").read_text(encoding="utf-8") == row["prompt"]


def test_the_missing_marker_is_refused_as_a_prompt(tmp_path):
    """``???`` is OmegaConf's missing value however it is written: threestudio would train on the
    config's own prompt instead (found by the property test above with a fresh seed)."""
    override = f'{PROMPT_KEY}="???"'
    assert as_threestudio_reads_it(override)[1] == "a hamburger"  # what would happen: silently another
    with pytest.raises(ValueError, match=re.escape(f"{PROMPT_KEY}='???' is OmegaConf's marker")):
        text_override(PROMPT_KEY, "???")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a hamburger\n???\n")
    with pytest.raises(BenchError, match=re.escape("line 2 is '???', OmegaConf's marker of a missing value")):
        read_prompts(prompts)
    prompts.write_text("a hamburger\n??? of a hamburger\n")  # only the whole value is the marker
    assert read_prompts(prompts) == ("a hamburger", "??? of a hamburger")
    assert as_threestudio_reads_it(text_override(PROMPT_KEY, "??? of a hamburger"))[1] == "??? of a hamburger"
