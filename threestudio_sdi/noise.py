"""Seeded Gaussian draws that land on the device of the tensor they perturb."""

from __future__ import annotations

import torch
from torch import Tensor


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """N(0, I) with the shape and dtype of ``x``, drawn on the generator's device, moved to ``x``'s.

    Drawing on the generator's device keeps a seeded CPU generator reproducible whatever device the
    model runs on. The copy to a GPU is asynchronous (``non_blocking``): the draw is staged at once and
    the host does not wait for the device.
    """
    device = generator.device if generator is not None else x.device
    draw = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device)
    return draw.to(x.device, non_blocking=True)
