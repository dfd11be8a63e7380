"""What a noise strategy receives and returns, and how strategies register by name.

A guidance step (:func:`threestudio_sdi.score_distillation.guidance_step`, docs/method.md §2) needs the
noise κ and its level t′ ≥ t with x_{t′} = sqrt(ᾱ_{t′}) z0 + sqrt(1−ᾱ_{t′}) κ. A **noise strategy** is a
callable that computes them from a :class:`StepContext` and returns a :class:`NoiseEstimate`:

* ``random`` — κ ~ N(0, I), t′ = t (SDS);
* ``cached`` — κ given by the caller, the previous step's ε̂ (DDIM's κ-cache, 2D only);
* ``inversion`` — DDIM inversion of z0 to t′ = t + δ, prompt-conditioned at CFG γ_inv (SDI);
* ``uncond-inversion`` — the same inversion, unconditional (ISM-style).

Research strategies live in :mod:`threestudio_sdi.experimental`, which registers them when imported;
:func:`strategy_class` imports it the first time an unknown name is asked for, so they are loaded only
when used.

A strategy is a frozen dataclass whose fields are its options: :func:`make_strategy` builds one from a
name and a mapping of options (a misspelt option is a ValueError naming it), which is how
``sdi-guidance``'s ``noise_options`` reach every strategy. A new strategy is one file with a class and
one :func:`register_strategy` line (see ``ARCHITECTURE.md``).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor

from ..classifier_free import Conditioning, check_guidance_scale
from ..errors import check_bool, check_choice, check_int, check_range
from ..prediction import predict_x0
from ..presets import Preset
from ..schedule import NoiseSchedule

EXPERIMENTAL_PACKAGE = "threestudio_sdi.experimental"
"""Imported by :func:`strategy_class` for a name that is not registered yet (it registers the research
strategies)."""


@dataclass(frozen=True)
class InversionConfig:
    """The settings of SDI's inversion, one block (the paper's γ_inv, n, η and the overshoot).

    Attributes:
        guidance_scale: γ_inv, the CFG of the inversion (negative, paper §6.2).
        n_steps: n, the inversion grid has stride T/n.
        eta: η ∈ [0, 1] of the entropy term (DDIM's η), placed as the preset says.
        overshoot: invert to t + δ (δ drawn as the preset says) and tell the model t; False: δ = 0.
    """

    guidance_scale: float = -7.5
    n_steps: int = 10
    eta: float = 0.3
    overshoot: bool = True

    def __post_init__(self) -> None:
        check_guidance_scale("inversion.guidance_scale", self.guidance_scale)
        check_int("inversion.n_steps", self.n_steps, low=1)
        check_range("inversion.eta", self.eta, 0.0, 1.0)
        check_bool("inversion.overshoot", self.overshoot)


@dataclass(frozen=True)
class StepContext:
    """Everything a strategy may use to choose the noise of one guidance step (validated on entry).

    Attributes:
        model: the denoiser (:mod:`threestudio_sdi.denoiser`).
        z0: the detached latents (or image) [B, ...] of the step.
        t: the timestep the model will be told (1 … T−1).
        conditioning: the prompt, the unconditional branch, Perp-Neg negatives, the cameras.
        schedule: the model's noise schedule.
        preset: what the paper and the released code disagree on (grid, overshoot, η placement).
        guidance_scale: γ_fwd, the CFG of the prediction.
        cfg_mode: ``"standard"`` or ``"quirk"`` (the preset's unless set).
        inversion: the inversion's settings (γ_inv, n, η, overshoot).
        generator: the random generator of every draw of the step (δ, η noise, SDS noise).
        cached: the caller's κ (``cached`` strategy only), else None.
        noise_field: the step's views rendered from a noise field fixed on the asset by the host (a
            strategy with ``uses_noise_field``, e.g. consistent noise), [B, ...] like z0, else None.
    """

    model: Any
    z0: Tensor
    t: int
    conditioning: Conditioning
    schedule: NoiseSchedule
    preset: Preset
    guidance_scale: float
    cfg_mode: str
    inversion: InversionConfig
    generator: torch.Generator | None = None
    cached: Tensor | None = None
    noise_field: Tensor | None = None


@dataclass(frozen=True)
class NoiseEstimate:
    """A strategy's answer: κ at level t′, the guided model evaluations spent, optional details.

    Attributes:
        noise: κ [B, ...], shaped like z0.
        t_prime: the noise level t′ ≥ t of x_{t′} (the model is still told t).
        model_evaluations: guided model evaluations the strategy spent (the prediction's is not counted).
        details: anything the strategy reports (e.g. a research solver's result).
    """

    noise: Tensor
    t_prime: int
    model_evaluations: int = 0
    details: Any = None


class NoiseStrategy(Protocol):
    """The interface of a strategy: a name and a call (module docstring).

    A strategy may also define ``target(step, x_noisy, noise_pred) -> (ẑ0, evaluations)`` to replace
    the one-step target :func:`one_step_target` (research: e.g. a multi-step solve of the
    probability-flow ODE from x_{t′}); ``evaluations`` are the guided evaluations it adds; and
    ``check(preset)`` to refuse, when the guidance is configured, options the preset does not have.
    """

    name: str
    takes_cached_noise: bool
    """True when κ is the caller's (``cached``, 2D only)."""
    uses_noise_field: bool
    """True when the strategy reads ``StepContext.field``: the host renders a noise field fixed on the
    asset into the step's views (``sdi-guidance`` asks the system for it)."""

    def __call__(self, step: StepContext) -> NoiseEstimate: ...


def one_step_target(step: StepContext, x_noisy: Tensor, noise_pred: Tensor) -> tuple[Tensor, int]:
    """ẑ0 = (x_{t′} − sqrt(1−ᾱ_t) ε̂) / sqrt(ᾱ_t), the one-step target (method §2); no extra evaluation."""
    return predict_x0(x_noisy, noise_pred, step.schedule.alpha_bar(step.t, like=x_noisy)), 0


StrategyClass = TypeVar("StrategyClass", bound=type)
_REGISTRY: dict[str, type] = {}


def register_strategy(name: str) -> Callable[[StrategyClass], StrategyClass]:
    """Class decorator: make the strategy available as ``GuidanceConfig(noise=name)``.

    Sets ``cls.name``; a class without ``takes_cached_noise`` or ``uses_noise_field`` gets False. A name
    may be registered once (ValueError naming the class that has it).
    """

    def decorator(cls: StrategyClass) -> StrategyClass:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"noise strategy {name!r} is already registered by {existing.__qualname__}")
        cls.name = name
        for flag in ("takes_cached_noise", "uses_noise_field"):
            if not hasattr(cls, flag):
                setattr(cls, flag, False)
        _REGISTRY[name] = cls
        return cls

    return decorator


def strategy_names() -> tuple[str, ...]:
    """The registered strategy names, in registration order (research ones once they are imported)."""
    return tuple(_REGISTRY)


def strategy_class(name: str) -> type:
    """The class registered as ``name``; ValueError listing the known names otherwise.

    A name not registered yet imports :data:`EXPERIMENTAL_PACKAGE` once, which registers the research
    strategies, and is looked up again.
    """
    if name not in _REGISTRY and isinstance(name, str):
        importlib.import_module(EXPERIMENTAL_PACKAGE)
    return _REGISTRY[check_choice("noise", name, strategy_names())]


def strategy_options(name: str) -> tuple[str, ...]:
    """The option names of the strategy ``name``: its dataclass fields."""
    cls = strategy_class(name)
    return (
        tuple(item.name for item in dataclasses.fields(cls) if item.init)
        if dataclasses.is_dataclass(cls)
        else ()
    )


def make_strategy(
    name: str, options: Mapping[str, Any] | None = None, *, setting: str = "noise_options"
) -> NoiseStrategy:
    """An instance of the strategy ``name`` with ``options`` (its dataclass fields) as keywords.

    An option the strategy does not have is a ValueError naming ``<setting>.<option>`` and the known ones;
    the strategy checks the values itself.
    """
    cls = strategy_class(name)
    known = strategy_options(name)
    for key in options or {}:
        if key not in known:
            listed = ", ".join(known) if known else "none"
            raise ValueError(f"{setting}.{key} is not an option of noise={name!r}; its options: {listed}")
    return cls(**dict(options or {}))
