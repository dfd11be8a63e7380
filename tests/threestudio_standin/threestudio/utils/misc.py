"""STAND-IN: ``C()`` schedules and the device (CPU here)."""

from __future__ import annotations

from typing import Any

import torch

from .config import config_to_primitive


def get_device() -> torch.device:
    return torch.device("cpu")


def _segment(value: list, global_step: int) -> list:
    """[start_step, start, end, end_step] of a piecewise list [s0, v0, v1, s1, v2, s2, ...]."""
    if len(value) < 6:
        return value
    points = [(value[0], value[1])] + [(value[i + 1], value[i]) for i in range(2, len(value) - 1, 2)]
    for (step_a, value_a), (step_b, value_b) in zip(points, points[1:]):
        if global_step < step_b:
            return [step_a, value_a, value_b, step_b]
    (step_a, value_a), (step_b, value_b) = points[-2], points[-1]
    return [step_a, value_a, value_b, step_b]


def C(value: Any, epoch: int, global_step: int) -> float:
    """A number as is; a list is a linear schedule on global_step (int end) or epoch (float end)."""
    if isinstance(value, (int, float)):
        return value
    value = config_to_primitive(value)
    if not isinstance(value, list):
        raise TypeError(f"Scalar specification only supports list, got {type(value)}")
    if len(value) == 3:
        value = [0, *value]
    value = _segment(value, global_step)
    if len(value) != 4:
        raise ValueError(f"bad schedule {value}")
    start_step, start_value, end_value, end_step = value
    current = global_step if isinstance(end_step, int) else epoch
    fraction = max(min(1.0, (current - start_step) / (end_step - start_step)), 0.0)
    return start_value + (end_value - start_value) * fraction
