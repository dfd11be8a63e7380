"""What the lab commands need installed, checked at start: one line with the ``pip install`` that fixes it.

``pip install -e .`` installs what ``sdi-lab`` and ``sdi-lab3d`` need (torch, numpy, tqdm, matplotlib,
scikit-learn); the threestudio extension's ``requirements.txt`` does not (threestudio itself never needs
matplotlib or scikit-learn), and ``sdi-lab --model tiny-sd`` needs the ``[diffusers]`` extra. The
``pip install`` line names each missing distribution with the version this package asks for (read from
its installed metadata, so that it never upgrades what threestudio pins), or plainly when the package
runs from a checkout that pip did not install.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from collections.abc import Mapping

DISTRIBUTION = "threestudio-sdi"
LAB_MODULES = {"matplotlib": "matplotlib"}
"""Import name → distribution: what both labs need beyond the extension's requirements (the figures;
tqdm, numpy and torch come with ``requirements.txt`` and threestudio)."""
DIGITS_MODULES = {"sklearn": "scikit-learn"}
"""The digits model's data set (``sklearn.datasets.load_digits``)."""
DIFFUSERS_MODULES = {"diffusers": "diffusers", "transformers": "transformers", "safetensors": "safetensors"}
"""The ``[diffusers]`` extra: Stable Diffusion stacks (``--model tiny-sd``)."""


def missing(modules: Mapping[str, str]) -> list[str]:
    """The distributions of ``modules`` (import name → distribution) whose module cannot be imported."""
    return [dist for name, dist in modules.items() if importlib.util.find_spec(name) is None]


def requirement(distribution: str) -> str:
    """``distribution`` with the version this package requires (``"diffusers>=0.19.3"``), or bare."""
    try:
        requires = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return distribution
    for line in requires:
        spec = line.split(";")[0].strip()
        name = re.match(r"[A-Za-z0-9_.-]+", spec)
        if name and name.group(0).lower().replace("_", "-") == distribution.lower():
            return spec
    return distribution


def missing_message(command: str, distributions: list[str], extra: str | None = None) -> str:
    """One line: what ``command`` needs that is not installed, and the ``pip install`` that adds it."""
    specs = [requirement(d) for d in distributions]
    line = " ".join(f'"{spec}"' if re.search(r"[<>=!~]", spec) else spec for spec in specs)
    what = f" (threestudio-sdi's [{extra}] extra)" if extra else ""
    return f"{command} needs {', '.join(distributions)}{what}, not installed here: pip install {line}"


def check_installed(command: str, modules: Mapping[str, str], extra: str | None = None) -> None:
    """SystemExit (status 1) with ``<program>: error:`` and :func:`missing_message` when a module of
    ``modules`` cannot be imported; ``command`` is the program and the options that need them."""
    absent = missing(modules)
    if absent:
        raise SystemExit(f"{command.split()[0]}: error: {missing_message(command, absent, extra)}")
