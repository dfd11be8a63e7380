"""Noise schedule: ᾱ_t lookup and σ_t, from a tensor or a diffusers scheduler config.

Notation (docs/method.md §1): x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε, σ_t = sqrt((1 − ᾱ_t) / ᾱ_t).
A negative timestep means "before the first training step": its ᾱ is the scheduler's
``initial_alpha_cumprod`` (ᾱ_0 for Stable Diffusion 2.1, whose config has
``set_alpha_to_one: false``). The released SDI inversion starts at timestep −99 for that reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .errors import check_finite_number


def betas_from_config(config: Mapping[str, Any]) -> Tensor:
    """β_1..β_T of a diffusers scheduler config, in float64 (same formulas as diffusers)."""
    num_train_timesteps = int(config.get("num_train_timesteps", 1000))
    trained = config.get("trained_betas")
    if trained is not None:
        return torch.as_tensor(trained, dtype=torch.float64)
    kind = config.get("beta_schedule", "linear")
    beta_start = float(config.get("beta_start", 0.0001))
    beta_end = float(config.get("beta_end", 0.02))
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    if kind == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    if kind == "squaredcos_cap_v2":

        def alpha_bar(time: float) -> float:
            return math.cos((time + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [
            min(1 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps), 0.999)
            for i in range(num_train_timesteps)
        ]
        return torch.tensor(betas, dtype=torch.float64)
    raise ValueError(
        f"beta_schedule={kind!r} is not supported; use 'linear', 'scaled_linear' or 'squaredcos_cap_v2'"
    )


def validate_alphas_cumprod(alphas_cumprod: Tensor) -> Tensor:
    """Return ``alphas_cumprod`` as a 1-D float64 tensor, or raise ValueError if it is not a schedule."""
    alphas = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
    if alphas.ndim != 1 or alphas.numel() < 2:
        raise ValueError(
            f"alphas_cumprod must be a 1-D tensor of at least 2 timesteps, got shape {tuple(alphas.shape)}"
        )
    if not torch.isfinite(alphas).all() or (alphas <= 0).any() or (alphas > 1).any():
        bad = alphas[~(torch.isfinite(alphas) & (alphas > 0) & (alphas <= 1))][0].item()
        raise ValueError(f"alphas_cumprod must lie in (0, 1], found {bad}")
    steps = alphas[1:] - alphas[:-1]
    if (steps >= 0).any():
        index = int(torch.nonzero(steps >= 0)[0]) + 1
        raise ValueError(
            "alphas_cumprod must be strictly decreasing, but "
            f"alphas_cumprod[{index}]={alphas[index].item()} >= alphas_cumprod[{index - 1}]={alphas[index - 1].item()}"
        )
    return alphas


@dataclass(frozen=True)
class NoiseSchedule:
    """ᾱ_t for t ∈ {0..T−1} plus the ᾱ used for negative timesteps.

    Attributes:
        alphas_cumprod: float64 tensor [T], strictly decreasing in (0, 1].
        initial_alpha_cumprod: ᾱ of any negative timestep (diffusers' ``initial_alpha_cumprod``).
        steps_offset: the scheduler's ``steps_offset`` (1 for Stable Diffusion); the ``official``
            preset's inversion grid is 100k + steps_offset.
    """

    alphas_cumprod: Tensor
    initial_alpha_cumprod: float
    steps_offset: int = 0
    _tables: dict[tuple[torch.device, torch.dtype], Tensor] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "alphas_cumprod", validate_alphas_cumprod(self.alphas_cumprod))
        initial = check_finite_number("initial_alpha_cumprod", self.initial_alpha_cumprod)
        if not 0 < initial <= 1:
            raise ValueError(f"initial_alpha_cumprod must lie in (0, 1], got {initial}")
        object.__setattr__(self, "initial_alpha_cumprod", initial)

    @property
    def num_train_timesteps(self) -> int:
        """T, the number of training timesteps."""
        return self.alphas_cumprod.numel()

    @classmethod
    def from_alphas_cumprod(
        cls,
        alphas_cumprod: Tensor,
        initial_alpha_cumprod: float | None = None,
        steps_offset: int = 0,
    ) -> NoiseSchedule:
        """Schedule from ᾱ; negative timesteps default to ᾱ_0 (``set_alpha_to_one=False``)."""
        alphas = validate_alphas_cumprod(alphas_cumprod)
        initial = float(alphas[0]) if initial_alpha_cumprod is None else initial_alpha_cumprod
        return cls(alphas, initial, steps_offset)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> NoiseSchedule:
        """Schedule of a diffusers scheduler config (a dict or a ``FrozenDict``)."""
        alphas = torch.cumprod(1.0 - betas_from_config(config), dim=0)
        initial = 1.0 if config.get("set_alpha_to_one", True) else float(alphas[0])
        return cls(alphas, initial, int(config.get("steps_offset", 0)))

    @classmethod
    def stable_diffusion(cls) -> NoiseSchedule:
        """The schedule of Stable Diffusion 1.x/2.x: scaled-linear β 0.00085 → 0.012, T = 1000."""
        return cls.from_config(STABLE_DIFFUSION_SCHEDULER_CONFIG)

    @classmethod
    def of_model(cls, model: Any) -> NoiseSchedule:
        """The schedule of a denoiser (see :mod:`threestudio_sdi.denoiser`).

        Uses ``model.schedule`` when the model carries a :class:`NoiseSchedule`, otherwise its
        ``alphas_cumprod`` with optional ``initial_alpha_cumprod`` and ``steps_offset`` attributes.
        """
        schedule = getattr(model, "schedule", None)
        if isinstance(schedule, NoiseSchedule):
            return schedule
        if not hasattr(model, "alphas_cumprod"):
            raise ValueError(f"model {type(model).__name__} has no alphas_cumprod attribute")
        return cls.from_alphas_cumprod(
            model.alphas_cumprod,
            getattr(model, "initial_alpha_cumprod", None),
            int(getattr(model, "steps_offset", 0)),
        )

    def alpha_bar(self, t: int | Tensor, like: Tensor | None = None) -> Tensor:
        """ᾱ_t; negative t gives ``initial_alpha_cumprod``, t ≥ T is an error.

        Without ``like``: float64 on the CPU (any int or LongTensor t). With ``like`` and an int t: a
        0-dim tensor in ``like``'s dtype on its device, read from a table kept there
        (:meth:`table`), so a hop loop on a GPU copies nothing from the host and never waits for the
        device; the value is the float64 one cast to that dtype.
        """
        if like is not None and not isinstance(t, Tensor):
            if t >= self.num_train_timesteps:
                raise ValueError(f"timestep {t} is outside the schedule's 0..{self.num_train_timesteps - 1}")
            return self.table(like)[max(t, -1) + 1]
        t_tensor = torch.as_tensor(t, dtype=torch.long)
        if (t_tensor >= self.num_train_timesteps).any():
            raise ValueError(
                f"timestep {t_tensor.max().item()} is outside the schedule's 0..{self.num_train_timesteps - 1}"
            )
        values = self.alphas_cumprod[t_tensor.clamp(min=0).cpu()]
        initial = torch.full_like(values, self.initial_alpha_cumprod)
        return torch.where(t_tensor.cpu() < 0, initial, values)

    def table(self, like: Tensor) -> Tensor:
        """[ᾱ of negative t, ᾱ_0, …, ᾱ_{T−1}] in ``like``'s dtype on its device, made once per pair."""
        key = (like.device, like.dtype)
        table = self._tables.get(key)
        if table is None:
            initial = torch.tensor([self.initial_alpha_cumprod], dtype=torch.float64)
            table = torch.cat([initial, self.alphas_cumprod]).to(like.device, like.dtype)
            self._tables[key] = table
        return table

    def sigma(self, t: int | Tensor) -> Tensor:
        """σ_t = sqrt((1 − ᾱ_t)/ᾱ_t), the noise-to-signal ratio of the reparametrised DDIM (eq. 5)."""
        alpha = self.alpha_bar(t)
        return ((1 - alpha) / alpha).sqrt()


STABLE_DIFFUSION_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}
"""The scheduler config of stabilityai/stable-diffusion-2-1-base (the fields SDI uses)."""
