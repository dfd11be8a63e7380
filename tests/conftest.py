"""Shared fixtures: fresh seeds printed on failure, and small protocol models defined here."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from threestudio_sdi.schedule import NoiseSchedule

# The test models are tiny: more than one intra-op thread only adds synchronisation, and on a loaded
# 2-core machine OpenMP barriers made the tiny UNet 30x slower.
torch.set_num_threads(1)


@pytest.fixture
def fresh_seed(request: pytest.FixtureRequest) -> int:
    """A new seed each run, shown in the test's report so that a failure can be replayed."""
    seed = int(torch.seed() % 2**31)
    request.node.user_properties.append(("seed", seed))
    print(f"fresh seed: {seed}")
    return seed


class ZeroNoiseModel:
    """A protocol model that predicts ε = 0 everywhere: DDIM hops then only rescale by sqrt(ᾱ_b/ᾱ_a)."""

    prediction_type = "epsilon"

    def __init__(self, schedule: NoiseSchedule | None = None) -> None:
        schedule = schedule or NoiseSchedule.stable_diffusion()
        self.alphas_cumprod = schedule.alphas_cumprod
        self.initial_alpha_cumprod = schedule.initial_alpha_cumprod
        self.steps_offset = schedule.steps_offset
        self.calls = 0

    def predict_noise(self, x_t: Tensor, t: int | Tensor, cond: Any) -> Tensor:
        self.calls += 1
        return torch.zeros_like(x_t)


@pytest.fixture
def zero_model() -> ZeroNoiseModel:
    return ZeroNoiseModel()
