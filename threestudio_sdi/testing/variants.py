"""Execution variants of a denoiser that keep its math: for cost measurements and their tests.

* :class:`PerBranchModel` hides ``predict_noise_batched``, so classifier-free guidance and Perp-Neg
  call the network once per branch (the unoptimised path);
* :class:`InferenceModeModel` runs every batched call under ``torch.inference_mode`` and clones the
  outputs out of it (inference tensors cannot enter an autograd graph).

Both keep the wrapped model's schedule and prediction type; outputs equal the wrapped model's to
floating-point reordering.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..models.protocol import ScheduledModel


class _Wrapped(ScheduledModel):
    def __init__(self, model: Any) -> None:
        self.inner = model
        self.schedule = model.schedule
        self.prediction_type = model.prediction_type


class PerBranchModel(_Wrapped):
    """The model without ``predict_noise_batched``: one network call per CFG / Perp-Neg branch."""

    def predict_noise(self, x_t: Tensor, t: int | Tensor, cond: Any) -> Tensor:
        return self.inner.predict_noise(x_t, t, cond)


class InferenceModeModel(_Wrapped):
    """The model with every network call under ``torch.inference_mode`` (outputs cloned out of it)."""

    def predict_noise(self, x_t: Tensor, t: int | Tensor, cond: Any) -> Tensor:
        return self.predict_noise_batched(x_t, t, [cond])[0]

    def predict_noise_batched(self, x_t: Tensor, t: int | Tensor, conds: Sequence[Any]) -> list[Tensor]:
        with torch.inference_mode():
            outputs = self.inner.predict_noise_batched(x_t, t, list(conds))
        return [output.clone() for output in outputs]
