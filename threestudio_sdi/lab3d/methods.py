"""The methods the 3D lab compares, in one table: name → guidance settings + timestep policy.

A method is a :class:`~threestudio_sdi.score_distillation.GuidanceConfig` (its ``noise`` strategy
chooses κ, by registered name) and the policy that picks each step's timestep, as a 3D run does:

* ``annealed`` (SDI, ISM, fixed point): t = T·(max − (max − min)·step/max_steps), the config's preset
  range (``paper`` 1.0 → 0.2, ``official`` 0.98 → 0.25), :func:`threestudio_sdi.timesteps.annealed_timestep`;
* ``random`` (SDS): t ~ U{T·0.02 … T·0.98}, threestudio's SDS range,
  :func:`threestudio_sdi.timesteps.random_timestep`.

Every config keeps γ_inv = −7.5, n = 10, η = 0.3 and the overshoot of its preset. CFG is combined as the
preset says: ``paper`` (and the SDS rows, which use its defaults) ε_u + γ(ε_c − ε_u); ``official``
ε_c + γ(ε_c − ε_u) (the released code's quirk; threestudio's SDS uses the same quirk, i.e. γ + 1).
SDS's loss has SDI's weighting (∂loss/∂z0 ∝ σ_t(ε̂ − κ), SPEC §1), not threestudio's w(t) = 1 − ᾱ_t.

A new noise strategy is one more line in :data:`METHODS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import check_choice
from ..score_distillation import GuidanceConfig
from ..timesteps import annealed_timestep, random_timestep

TIMESTEP_POLICIES = ("annealed", "random")
SDS_STEP_RANGE = (0.02, 0.98)
"""threestudio's SDS ``min_step_percent`` / ``max_step_percent``."""


@dataclass(frozen=True)
class Method:
    """A guidance config and a timestep policy (``annealed`` or ``random``, module docstring)."""

    config: GuidanceConfig
    timesteps: str

    def __post_init__(self) -> None:
        check_choice("timesteps", self.timesteps, TIMESTEP_POLICIES)

    def timestep(
        self, step: int, max_steps: int, num_train_timesteps: int, generator: torch.Generator
    ) -> int:
        """The timestep of training ``step`` of ``max_steps``."""
        if self.timesteps == "annealed":
            preset = self.config.preset_spec
            return annealed_timestep(
                step, max_steps, preset.min_step_percent, preset.max_step_percent, num_train_timesteps
            )
        return random_timestep(*SDS_STEP_RANGE, num_train_timesteps, generator)


METHODS: dict[str, Method] = {
    "sds": Method(GuidanceConfig(noise="random", guidance_scale=7.5), "random"),
    "sds-cfg100": Method(GuidanceConfig(noise="random", guidance_scale=100.0), "random"),
    "sdi-paper": Method(GuidanceConfig(preset="paper", noise="inversion"), "annealed"),
    "sdi-official": Method(GuidanceConfig(preset="official", noise="inversion"), "annealed"),
    "ism": Method(GuidanceConfig(preset="paper", noise="uncond-inversion"), "annealed"),
    "fixed-point": Method(GuidanceConfig(preset="paper", noise="fixed-point"), "annealed"),
}


def get_method(name: str) -> Method:
    """The method called ``name``; ValueError listing the names otherwise."""
    return METHODS[check_choice("method", name, tuple(METHODS))]
