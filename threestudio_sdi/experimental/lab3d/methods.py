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
SDS's loss has SDI's weighting (∂loss/∂z0 ∝ σ_t(ε̂ − κ), docs/method.md §1), not threestudio's w(t) = 1 − ᾱ_t.

A new noise strategy is one more line in :data:`METHODS`. A method whose strategy needs the run itself
(``consistent-noise``: a noise field on the run's asset) also names a ``bind``: it receives the method's
config and the :class:`RunContext` and returns the run's config (:meth:`Method.run_config`).

**Research methods** (issue 9 part 5; ``paper`` preset, annealed; settings in :data:`RESEARCH_METHODS`):

* ``newton-krylov``: inversion with n = 3, then 1 Newton step, GMRES of dimension 2 (JVPs charged 2
  evaluations each), at most 1 halving of the step;
* ``safeguarded-anderson``: inversion with n = 3, then Anderson (m = 3, β = ½, ≤ 4 updates) restarting
  from the best iterate whenever the residual grows;
* ``consistent-noise``: κ = the run's fixed 64³ noise field rendered through the current asset;
* ``consistent-noise-50``, ``consistent-noise-80``: κ = sqrt(ρ)·field + sqrt(1 − ρ)·fresh N(0, I), ρ = 0.5
  and 0.8 (partial consistency);
* ``consistent-shared-2``, ``consistent-shared-10``: κ = sqrt(1 − β)·field + sqrt(β)·g, g one N(0, 1) value
  per channel for the whole run, β = 0.02 and 0.1 (a mode choice every view shares);
* ``ode-target``: κ from inversion with n = 3, target = 6-point DDIM solve of the PF-ODE from x_{t′} to 0;
* ``consistent-flow``: consistent noise + the 6-point ODE target.

**Frontier methods** (issue 19; ``benchmarks/frontier.py``):

* ``consistent-surface``: the field sampled at each ray's expected termination point instead of
  integrated along it; ``consistent-shared-surface-10`` the same with the colour form, β = 0.1;
* ``consistent-lowfreq-10``: the low-frequency shared component, β = 0.1 on L³ = 2³ cells of the asset
  (the form argued for a latent prior, whose modes need not differ in mean colour);
* ``sdi-paper-n1`` … ``-n5``: ``sdi-paper`` with n = 1, 2, 3, 5 inversion steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from ...errors import check_choice
from ...score_distillation import GuidanceConfig
from ...strategies import InversionConfig, NoiseStrategy
from ...timesteps import annealed_timestep, random_timestep
from ..strategies import ConsistentNoise, NewtonKrylovNoise, OdeTarget, SafeguardedAndersonNoise
from .noise_field import AssetNoise, field_of
from .run_context import RunContext

TIMESTEP_POLICIES = ("annealed", "random")
SDS_STEP_RANGE = (0.02, 0.98)
"""threestudio's SDS ``min_step_percent`` / ``max_step_percent``."""


Binding = Callable[[GuidanceConfig, RunContext], GuidanceConfig]
"""Builds a run's guidance config from the method's config and the run (module docstring)."""


@dataclass(frozen=True)
class Method:
    """A guidance config, a timestep policy (``annealed`` or ``random``) and an optional run binding."""

    config: GuidanceConfig
    timesteps: str
    bind: Binding | None = None

    def __post_init__(self) -> None:
        check_choice("timesteps", self.timesteps, TIMESTEP_POLICIES)

    def run_config(self, run: RunContext) -> GuidanceConfig:
        """The config of one run: ``config``, or what ``bind`` makes of it for ``run``."""
        return self.config if self.bind is None else self.bind(self.config, run)

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


def with_noise_field(strategy: NoiseStrategy, run: RunContext) -> NoiseStrategy:
    """``strategy`` with every ``consistent-noise`` in it (itself, or an ODE target's κ) given the run's
    field: a fresh field from the run's seed as the strategy describes it (64³ by default), rendered
    through the run's current asset."""
    if isinstance(strategy, OdeTarget):
        return replace(strategy, noise=with_noise_field(strategy.noise, run))
    if isinstance(strategy, ConsistentNoise):
        strategy = replace(strategy, seed=run.seed)
        field = AssetNoise(
            field_of(strategy, CHANNELS), run.density, run.render_settings, strategy.attachment
        )
        return replace(strategy, field=field)
    return strategy


def bind_noise_field(config: GuidanceConfig, run: RunContext) -> GuidanceConfig:
    """A :data:`Binding`: the config with its strategy's noise field bound to the run."""
    return replace(config, noise=with_noise_field(config.strategy, run))


CHEAP_INVERSION = InversionConfig(n_steps=3)
"""The inversion (n = 3) that starts the research solvers and the ODE target (leaves budget for them)."""
ODE_STEPS = 6
PARTIAL_CONSISTENCIES = (0.5, 0.8)
"""ρ of the partly consistent noise methods."""
SHARED_SHARES = (0.02, 0.1)
"""β of the consistent noise methods with a shared per-channel component."""
CHANNELS = 3
"""The lab's prior is over RGB images: the field has one value per colour channel."""
FRONTIER_INVERSION_STEPS = (1, 2, 3, 5)
"""n of the ``sdi-paper-n<n>`` methods (``sdi-paper`` is n = 10): SDI at fewer evaluations per step."""
LOW_FREQUENCY_SCALE = 2
"""L of ``consistent-lowfreq-10``: the shared component is one value per channel on each of L³ cells."""

RESEARCH_METHODS: dict[str, Method] = {
    "newton-krylov": Method(GuidanceConfig(noise=NewtonKrylovNoise(), inversion=CHEAP_INVERSION), "annealed"),
    "safeguarded-anderson": Method(
        GuidanceConfig(noise=SafeguardedAndersonNoise(), inversion=CHEAP_INVERSION), "annealed"
    ),
    "consistent-noise": Method(GuidanceConfig(noise=ConsistentNoise()), "annealed", bind_noise_field),
    **{
        f"consistent-noise-{round(100 * rho)}": Method(
            GuidanceConfig(noise=ConsistentNoise(consistency=rho)), "annealed", bind_noise_field
        )
        for rho in PARTIAL_CONSISTENCIES
    },
    **{
        f"consistent-shared-{round(100 * beta)}": Method(
            GuidanceConfig(noise=ConsistentNoise(shared=beta)), "annealed", bind_noise_field
        )
        for beta in SHARED_SHARES
    },
    "consistent-surface": Method(
        GuidanceConfig(noise=ConsistentNoise(attachment="surface")), "annealed", bind_noise_field
    ),
    "consistent-shared-surface-10": Method(
        GuidanceConfig(noise=ConsistentNoise(shared=0.1, attachment="surface")), "annealed", bind_noise_field
    ),
    "consistent-lowfreq-10": Method(
        GuidanceConfig(noise=ConsistentNoise(shared=0.1, shared_scale=LOW_FREQUENCY_SCALE)),
        "annealed",
        bind_noise_field,
    ),
    **{
        f"sdi-paper-n{n}": Method(
            GuidanceConfig(preset="paper", noise="inversion", inversion=InversionConfig(n_steps=n)),
            "annealed",
        )
        for n in FRONTIER_INVERSION_STEPS
    },
    "ode-target": Method(
        GuidanceConfig(noise=OdeTarget("inversion", steps=ODE_STEPS), inversion=CHEAP_INVERSION), "annealed"
    ),
    "consistent-flow": Method(
        GuidanceConfig(noise=OdeTarget(ConsistentNoise(), steps=ODE_STEPS)), "annealed", bind_noise_field
    ),
}
"""The research candidates of issue 9 part 5 (module docstring); not in the default benchmark run."""

METHODS: dict[str, Method] = {
    "sds": Method(GuidanceConfig(noise="random", guidance_scale=7.5), "random"),
    "sds-cfg100": Method(GuidanceConfig(noise="random", guidance_scale=100.0), "random"),
    "sdi-paper": Method(GuidanceConfig(preset="paper", noise="inversion"), "annealed"),
    "sdi-official": Method(GuidanceConfig(preset="official", noise="inversion"), "annealed"),
    "ism": Method(GuidanceConfig(preset="paper", noise="uncond-inversion"), "annealed"),
    "fixed-point": Method(GuidanceConfig(preset="paper", noise="fixed-point"), "annealed"),
}
"""The compared methods: the default of the CLI and of ``benchmarks/fidelity3d.py``."""

ALL_METHODS: dict[str, Method] = {**METHODS, **RESEARCH_METHODS}
"""Every method by name (:data:`METHODS` and the research candidates)."""

FRONTIER_METHODS = (
    "sds",
    "sds-cfg100",
    *(f"sdi-paper-n{n}" for n in FRONTIER_INVERSION_STEPS),
    "sdi-paper",
    "ism",
    "consistent-noise",
    "consistent-surface",
    "consistent-shared-10",
    "consistent-shared-surface-10",
    "consistent-lowfreq-10",
)
"""The strategies of the cost–outcome frontier (``benchmarks/frontier.py``, in the lab and in threestudio)."""


def get_method(name: str) -> Method:
    """The method called ``name``; ValueError listing the names otherwise."""
    return ALL_METHODS[check_choice("method", name, tuple(ALL_METHODS))]
