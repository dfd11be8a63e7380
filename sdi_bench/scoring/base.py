"""The scorer interface: a metric is one :class:`Scorer` subclass; nothing else knows its package.

A scorer loads its model once (:meth:`Scorer.load`, which names the weights it uses) and then scores
the test views of one run against the run's prompt (:meth:`Scorer.score`: per metric, the run's
value and its spread over the views). Heavy packages are imported inside ``load``, so listing scorers imports none of them.
"""

from __future__ import annotations

import abc
import hashlib
import importlib.metadata
import pathlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from PIL import Image

from ..errors import BenchError


class ScorerUnavailable(BenchError):
    """A metric's package or weights are missing; the message says how to provide them."""


@dataclass(frozen=True)
class MetricModel:
    """The model a scorer uses: ``label`` goes into every table; ``details`` into results.json."""

    label: str
    details: dict[str, Any] = field(default_factory=dict)


class Scorer(abc.ABC):
    """One metric family (e.g. CLIP-IQA gives quality, sharpness and real).

    Class attributes:
        name: the ``--metrics`` name.
        metrics: metric key → table heading (e.g. ``{"clip": "CLIP ↑"}``).
        option: the ``sdi-bench score`` option that names the weights (e.g. ``"--clip-model"``).
        default_model: the weights used when the option is not given.
        model_help: what the option accepts.
    """

    name: ClassVar[str]
    metrics: ClassVar[dict[str, str]]
    option: ClassVar[str] = "--model"
    default_model: ClassVar[str]
    model_help: ClassVar[str]

    def __init__(self, model: str | None = None, device: str = "cpu") -> None:
        self.model = model or self.default_model
        self.device = device

    @abc.abstractmethod
    def load(self) -> MetricModel:
        """Load the model (once); raise :class:`ScorerUnavailable` with advice if it cannot."""

    @abc.abstractmethod
    def score(self, views: Sequence[Image.Image], prompt: str) -> dict[str, tuple[float, float | None]]:
        """Per metric key: (the run's value over all views, the standard deviation over views or None)."""

    def unavailable(self, reason: str, how: str) -> ScorerUnavailable:
        """The error for missing weights: what failed and how to point the scorer at local weights."""
        return ScorerUnavailable(
            f"{self.name}: cannot load {self.model!r} ({reason}). {how} Then pass {self.option} with it."
        )


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of distributions (``"-"`` when one is missing)."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "-"
    return found


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def weights_fingerprint(path: pathlib.Path) -> str:
    """sha256 (12 hex digits) of a weights file, or of a folder's weight files in name order."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in WEIGHT_SUFFIXES)
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def describe_weights(model: str, revision: str | None = None) -> tuple[str, dict[str, Any]]:
    """A table label and details for weights given as a local path or a hub id."""
    path = pathlib.Path(model).expanduser()
    if path.exists():
        fingerprint = weights_fingerprint(path)
        return f"{path.resolve()} (sha256 {fingerprint})", {
            "source": "local",
            "path": str(path.resolve()),
            "sha256_12": fingerprint,
        }
    label = f"{model}@{revision[:10]}" if revision else model
    return label, {"source": "hub", "id": model, "revision": revision}
