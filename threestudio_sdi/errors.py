"""Checks that turn bad settings and inputs into a ValueError naming the setting and its value."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def check_finite_number(name: str, value: object) -> float:
    """``float(value)``, or ValueError if it is not a finite real number (a string or a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def check_range(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``float(value)`` if it is finite and inside the interval, else ValueError naming ``name``."""
    number = check_finite_number(name, value)
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return number


def check_int(name: str, value: object, low: int | None = None) -> int:
    """``int(value)`` if it is an integer ≥ ``low``, else ValueError naming ``name``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        and not (isinstance(value, float) and value.is_integer())
    ):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    number = int(value)
    if low is not None and number < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return number


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is True or False, else ValueError naming ``name``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else ValueError listing the valid names."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return str(value)


def parse_seeds(name: str, text: str) -> tuple[int, ...]:
    """``"0,1,2"`` or ``"0-4"`` (inclusive) → distinct non-negative seeds; ValueError naming ``name``."""
    seeds: list[int] = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        low, dash, high = entry.partition("-")
        try:
            values = range(int(low), int(high) + 1) if dash and low else [int(entry)]
        except ValueError:
            raise ValueError(f"{name} entry {entry!r} is not an integer or a range like 0-4") from None
        for seed in values:
            if seed < 0 or seed in seeds:
                raise ValueError(f"{name}: seed {seed} is {'negative' if seed < 0 else 'listed twice'}")
            seeds.append(seed)
    if not seeds:
        raise ValueError(f"{name} is empty")
    return tuple(seeds)


def check_same_shape(name: str, tensor: Tensor, reference: Tensor, reference_name: str) -> None:
    """ValueError if ``tensor`` does not have the shape of ``reference``."""
    if tuple(tensor.shape) != tuple(reference.shape):
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)} but {reference_name} has shape {tuple(reference.shape)}"
        )


def check_finite_tensor(name: str, tensor: Tensor) -> None:
    """ValueError if ``tensor`` holds NaN or ±Inf."""
    if not tensor.isfinite().all():
        raise ValueError(f"{name} contains NaN or Inf ({int((~tensor.isfinite()).sum())} elements)")


def nonfinite_views(tensors: Mapping[str, Tensor]) -> dict[int, str]:
    """{view b: the name of the first tensor (in the mapping's order) with NaN or ±Inf in row b}.

    Every tensor is a batch [B, ...] on one device; the result is empty when everything is finite. The
    [tensors, B] mask of finite rows is built on the device and read back once.
    """
    names = list(tensors)
    finite = torch.stack(
        [value.detach().reshape(value.shape[0], -1).isfinite().all(dim=1) for value in tensors.values()]
    )
    bad: dict[int, str] = {}
    for index, view in torch.nonzero((~finite).cpu()).tolist():
        bad.setdefault(view, names[index])
    return dict(sorted(bad.items()))
