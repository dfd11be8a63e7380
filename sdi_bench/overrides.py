"""A threestudio command-line override that carries any text exactly: the prompt.

threestudio reads ``key=value`` overrides with ``OmegaConf.from_cli``, so a value is read twice over:

1. as YAML: the value is written as a YAML double-quoted scalar, every character outside YAML's
   printable set (and ``"``, ``\\``, tabs and line breaks, which YAML would fold) as an escape, so an
   emoji or a backslash arrives as it was;
2. by OmegaConf's interpolation grammar, *each time* the string is resolved, when it contains ``${``:
   one resolution turns ``\\${`` into a literal ``${`` and ``\\\\`` before ``${`` into one backslash.
   The text is escaped once per resolution threestudio makes (:data:`THREESTUDIO_RESOLUTIONS`).

Text without ``${`` is the same after any number of resolutions; text with it needs exactly that number.
:mod:`.attribution` checks every finished run against its ``parsed.yaml`` (written after the first
resolution), and the real-threestudio test checks the prompt its prompt processor holds.
"""

from __future__ import annotations

import re

THREESTUDIO_RESOLUTIONS = 3
"""How often a prompt is resolved in threestudio before its prompt processor reads it:
``load_config`` resolves the whole config (``OmegaConf.resolve``; ``configs/parsed.yaml`` is this),
``parse_structured`` reads the prompt processor's block into its ``Config`` (``Config(**cfg)``), and
the processor reads ``self.cfg.prompt`` (threestudio 0.2.3: ``utils/config.py``, ``utils/base.py``)."""

PROMPT_KEY = "system.prompt_processor.prompt"
MISSING_MARKER = "???"
"""OmegaConf reads a value that is exactly this as missing, however it is quoted or escaped: no override
can carry it as text."""

_BEFORE_INTERPOLATION = re.compile(r"(\\*)\$\{")


def escape_interpolations(text: str, resolutions: int) -> str:
    """``text`` such that ``resolutions`` OmegaConf resolutions give back ``text``.

    One level: a run of k backslashes before ``${`` becomes 2k + 1 backslashes (k literal ones, then
    the escape of ``${``); backslashes elsewhere are literal and stay as they are.
    """
    for _ in range(resolutions):
        text = _BEFORE_INTERPOLATION.sub(lambda match: "\\" * (2 * len(match.group(1)) + 1) + "${", text)
    return text


def _printable(character: str) -> bool:
    """In YAML's printable set, and not one that a quoted scalar folds (tab, line breaks, NEL, LS, PS)."""
    code = ord(character)
    return (
        0x20 <= code <= 0x7E
        or 0xA0 <= code <= 0xD7FF
        or (0xE000 <= code <= 0xFFFD and code not in (0xFEFF,))
        or 0x10000 <= code <= 0x10FFFF
    ) and code not in (0x2028, 0x2029)


def yaml_double_quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar that a YAML parser reads back exactly."""
    parts = []
    for character in text:
        if character in '"\\':
            parts.append("\\" + character)
        elif _printable(character):
            parts.append(character)
        else:
            code = ord(character)
            parts.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return '"' + "".join(parts) + '"'


def text_override(key: str, text: str, resolutions: int = THREESTUDIO_RESOLUTIONS) -> str:
    """``key="..."`` that sets ``key`` to exactly ``text`` after ``resolutions`` resolutions; ValueError
    for :data:`MISSING_MARKER`, which no override can carry."""
    if text == MISSING_MARKER:
        raise ValueError(f"{key}={text!r} is OmegaConf's marker of a missing value, not text: reword it")
    return f"{key}={yaml_double_quoted(escape_interpolations(text, resolutions))}"
