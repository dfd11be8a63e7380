"""Metrics behind one interface (:class:`.base.Scorer`); ``SCORERS`` names the built-in ones.

A new metric is one scorer class: put it in a module, add it here (or pass ``--metrics
package.module:ClassName``); ``sdi-bench score`` gives it a ``--<name>-model`` option.
"""

from __future__ import annotations

import importlib

from ..errors import BenchError
from .base import MetricModel, Scorer, ScorerUnavailable

SCORERS = {
    "clip": "sdi_bench.scoring.clip:ClipScoreScorer",
    "clip-iqa": "sdi_bench.scoring.clip_iqa:ClipIqaScorer",
    "imagereward": "sdi_bench.scoring.imagereward:ImageRewardScorer",
    "hpsv2": "sdi_bench.scoring.hpsv2:HpsV2Scorer",
}
DEFAULT_METRICS = "clip,clip-iqa"


def scorer_class(name: str) -> type[Scorer]:
    """A built-in scorer by name, or any scorer class as ``package.module:ClassName``."""
    target = SCORERS.get(name, name)
    module_name, _, class_name = target.partition(":")
    if not class_name:
        raise BenchError(
            f"--metrics: {name!r} is not a metric ({', '.join(SCORERS)}) nor package.module:ClassName"
        )
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise BenchError(f"--metrics: cannot import {target!r} ({error})") from None
    if not (isinstance(found, type) and issubclass(found, Scorer)):
        raise BenchError(f"--metrics: {target!r} is not a sdi_bench.scoring.base.Scorer subclass")
    return found


__all__ = ["DEFAULT_METRICS", "SCORERS", "MetricModel", "Scorer", "ScorerUnavailable", "scorer_class"]
