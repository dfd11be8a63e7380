"""What a noise strategy receives and returns, and how strategies register by name.

A guidance step (:func:`threestudio_sdi.score_distillation.guidance_step`, SPEC §2) needs the noise κ
and its level t′ ≥ t with x_{t′} = sqrt(ᾱ_{t′}) z0 + sqrt(1−ᾱ_{t′}) κ. A **noise strategy** is a
callable that computes them from a :class:`StepContext` and returns a :class:`NoiseEstimate`:

* ``random`` — κ ~ N(0, I), t′ = t (SDS);
* ``cached`` — κ given by the caller, the previous step's ε̂ (DDIM's κ-cache, 2D only);
* ``inversion`` — DDIM inversion of z0 to t′ = t + δ, prompt-conditioned at CFG γ_inv (SDI);
* ``uncond-inversion`` — the same inversion, unconditional (ISM-style);
* ``fixed-point`` — research: κ refined toward the fixed point of SPEC §1.

A new strategy is one file with a class and one :func:`register_strategy` line (see
``ARCHITECTURE.md``). Its own options are constructor arguments: :func:`make_strategy` passes a
strategy the option blocks (e.g. ``inversion=InversionConfig(...)``) that its constructor accepts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch
from torch import Tensor

from ..cfg import Conditioning
from ..errors import check_choice
from ..prediction import predict_x0
from ..schedule import NoiseSchedule

if TYPE_CHECKING:
    from ..score_distillation import GuidanceConfig


@dataclass(frozen=True)
class StepContext:
    """Everything a strategy may use to choose the noise of one guidance step.

    Attributes:
        model: the denoiser (:mod:`threestudio_sdi.denoiser`).
        z0: the detached latents (or image) [B, ...] of the step.
        t: the timestep the model will be told (1 … T−1).
        conditioning: the prompt, the unconditional branch, Perp-Neg negatives, the cameras.
        config: the step's :class:`~threestudio_sdi.score_distillation.GuidanceConfig` (preset, γ, n, η, δ).
        schedule: the model's noise schedule.
        generator: the random generator of every draw of the step (δ, η noise, SDS noise).
        cached: the caller's κ (``cached`` strategy only), else None.
    """

    model: Any
    z0: Tensor
    t: int
    conditioning: Conditioning
    config: GuidanceConfig
    schedule: NoiseSchedule
    generator: torch.Generator | None = None
    cached: Tensor | None = None


@dataclass(frozen=True)
class NoiseEstimate:
    """A strategy's answer: κ at level t′, the guided model evaluations spent, optional details.

    Attributes:
        noise: κ [B, ...], shaped like z0.
        t_prime: the noise level t′ ≥ t of x_{t′} (the model is still told t).
        model_evaluations: guided model evaluations the strategy spent (the prediction's is not counted).
        details: anything the strategy reports (e.g. a :class:`~threestudio_sdi.fixed_point.FixedPointResult`).
    """

    noise: Tensor
    t_prime: int
    model_evaluations: int = 0
    details: Any = None


class NoiseStrategy(Protocol):
    """The interface of a strategy: a name and a call (module docstring).

    A strategy may also define ``target(step, x_noisy, noise_pred) -> (ẑ0, evaluations)`` to replace
    the one-step target :func:`one_step_target` (research: e.g. a multi-step solve of the
    probability-flow ODE from x_{t′}); ``evaluations`` are the guided evaluations it adds.
    """

    name: str
    takes_cached_noise: bool
    """True when κ is the caller's (``cached``, 2D only)."""
    by_name_in_3d: bool
    """False when the strategy built by name has no 3D meaning: ``cached`` (the caller's κ) and
    ``consistent-noise`` (its field on the asset must be injected; by name it is one image for all views)."""

    def __call__(self, step: StepContext) -> NoiseEstimate: ...


def one_step_target(step: StepContext, x_noisy: Tensor, noise_pred: Tensor) -> tuple[Tensor, int]:
    """ẑ0 = (x_{t′} − sqrt(1−ᾱ_t) ε̂) / sqrt(ᾱ_t), the one-step target of SPEC §2; no extra evaluation."""
    return predict_x0(x_noisy, noise_pred, step.schedule.alpha_bar(step.t)), 0


StrategyClass = TypeVar("StrategyClass", bound=type)
_REGISTRY: dict[str, type] = {}


def register_strategy(name: str) -> Callable[[StrategyClass], StrategyClass]:
    """Class decorator: make the strategy available as ``GuidanceConfig(noise=name)``.

    Sets ``cls.name``; a class without ``takes_cached_noise`` gets False, one without
    ``by_name_in_3d`` gets ``not takes_cached_noise``. A name may be registered once (ValueError naming
    the class that has it).
    """

    def decorator(cls: StrategyClass) -> StrategyClass:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"noise strategy {name!r} is already registered by {existing.__qualname__}")
        cls.name = name
        if not hasattr(cls, "takes_cached_noise"):
            cls.takes_cached_noise = False
        if not hasattr(cls, "by_name_in_3d"):
            cls.by_name_in_3d = not cls.takes_cached_noise
        _REGISTRY[name] = cls
        return cls

    return decorator


def strategy_names() -> tuple[str, ...]:
    """The registered strategy names, in registration order."""
    return tuple(_REGISTRY)


def strategy_class(name: str) -> type:
    """The class registered as ``name``; ValueError listing the known names otherwise."""
    return _REGISTRY[check_choice("noise", name, strategy_names())]


def make_strategy(name: str, **options: Any) -> NoiseStrategy:
    """An instance of the strategy ``name`` with the option blocks its constructor accepts.

    ``options`` maps block names to configs (``inversion=InversionConfig(...)``, ...); blocks that the
    strategy does not take are ignored, so a caller can pass every block it has.
    """
    cls = strategy_class(name)
    accepted = inspect.signature(cls).parameters
    return cls(**{key: value for key, value in options.items() if key in accepted})
