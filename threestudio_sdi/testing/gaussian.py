"""An analytic denoiser: zero-mean Gaussian data with a power-law spectrum, exact noise prediction.

The data x0 ∈ R^d (d = prod(shape)) is N(0, diag(λ)) with λ_k = k^(−p), k = 1..d: the flattened image
index k − 1 holds "frequency" k, so large k are the faint fine details that mode-seeking distillation
tends to wash out. With x_t = sqrt(ᾱ) x0 + sqrt(1−ᾱ) ε the noisy marginal is N(0, diag(ᾱλ + 1 − ᾱ)),
and the minimum-mean-square noise prediction is exact and elementwise:

    E[ε | x_t] = −sqrt(1−ᾱ) ∇ log p_t(x_t) = sqrt(1−ᾱ) x_t / (ᾱ λ + 1 − ᾱ).

The module also holds the input checks shared with :mod:`threestudio_sdi.testing.mixture`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..denoiser import PREDICTION_TYPES
from ..errors import check_choice, check_finite_number, check_int
from ..models.protocol import ScheduledModel
from ..prediction import output_from_epsilon
from ..schedule import NoiseSchedule


def check_image_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` as a tuple of positive ints (at least one dimension), else ValueError naming ``name``."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of positive ints, got {shape!r}") from None
    if not dims or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in dims):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {shape!r}")
    return dims


def check_schedule(schedule: NoiseSchedule | None) -> NoiseSchedule:
    """``schedule``, or Stable Diffusion's when None; ValueError if it is not a :class:`NoiseSchedule`."""
    if schedule is None:
        return NoiseSchedule.stable_diffusion()
    if not isinstance(schedule, NoiseSchedule):
        raise ValueError(f"schedule must be a NoiseSchedule or None, got {type(schedule).__name__}")
    return schedule


def check_dtype(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` if it is a torch floating-point dtype, else ValueError."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a torch floating-point dtype, got {dtype!r}")
    return dtype


def check_batch(name: str, x: Tensor, shape: tuple[int, ...]) -> int:
    """Batch size B of ``x`` if it has shape [B, *shape] with B ≥ 1, else ValueError naming both shapes."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a tensor of shape [B, *{shape}], got {type(x).__name__}")
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape or x.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape [B, {', '.join(map(str, shape))}] for the model shape {shape}, "
            f"got {tuple(x.shape)}"
        )
    return int(x.shape[0])


def check_per_sample_index(name: str, value: Tensor, batch: int, what: str = "an int") -> Tensor:
    """An integer tensor of shape [] or [batch] (one index per sample), on the CPU; else ValueError."""
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise ValueError(f"{name} must be {what} or an integer tensor, got a tensor of dtype {value.dtype}")
    if value.ndim > 1 or (value.ndim == 1 and value.shape[0] != batch):
        raise ValueError(
            f"{name} must be an int or a tensor of shape [{batch}] (the batch), got {tuple(value.shape)}"
        )
    return value.detach().cpu()


def class_components(cond: Any, batch: int, class_masks: Tensor) -> Tensor | None:
    """Bool [B, K]: the components each of ``batch`` samples may use under ``cond`` (None: all).

    ``cond`` is None, a class index, or an integer tensor of one class per sample; ``class_masks`` is
    Bool [C, K], the components of each class. ValueError for anything else or a class outside 0..C−1.
    """
    if cond is None:
        return None
    if isinstance(cond, Tensor):
        labels = check_per_sample_index("cond", cond, batch, "a class index").long().expand(batch)
    elif isinstance(cond, numbers.Integral) and not isinstance(cond, bool):
        labels = torch.full((batch,), int(cond), dtype=torch.long)
    else:
        raise ValueError(f"cond must be None, a class index or a LongTensor[B], got {cond!r}")
    num_classes = class_masks.shape[0]
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f"cond must be a class index in 0..{num_classes - 1}, got {labels[bad][0].item()}")
    return class_masks[labels]


def alpha_bar_per_sample(schedule: NoiseSchedule, t: int | Tensor, batch: int) -> Tensor:
    """ᾱ_t for each of ``batch`` samples, float64 [B] on the CPU.

    ``t`` is an int (shared by the batch; negative → ``initial_alpha_cumprod``) or an integer tensor
    with one timestep per sample (shape [B]) or a single one (0-d).
    """
    if isinstance(t, Tensor):
        t = check_per_sample_index("t", t, batch)
    else:
        t = check_int("t", int(t) if isinstance(t, numbers.Integral) else t)
    return schedule.alpha_bar(t).to(torch.float64).expand(batch)


class GaussianModel(ScheduledModel):
    """Zero-mean Gaussian data with spectrum λ_k = k^(−p), and its exact noise predictor.

    Unconditional: ``cond`` is ignored, so classifier-free guidance is a no-op (ε_c = ε_u) on this
    model. Implements :class:`threestudio_sdi.denoiser.Denoiser`.

    Args:
        shape: image shape, d = prod(shape) ≥ 1 coordinates (default (1, 8, 8), d = 64).
        exponent: p of the power law (default 1.5).
        schedule: training schedule (default :meth:`NoiseSchedule.stable_diffusion`).
        prediction_type: what :meth:`predict_noise` returns: ``"epsilon"``, ``"sample"`` (x̂0) or
            ``"v_prediction"``.
        dtype: dtype of the computation (default float64, for exact predictions).
    """

    def __init__(
        self,
        shape: Sequence[int] = (1, 8, 8),
        exponent: float = 1.5,
        schedule: NoiseSchedule | None = None,
        prediction_type: str = "epsilon",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.shape = check_image_shape("shape", shape)
        self.exponent = check_finite_number("exponent", exponent)
        self.schedule = check_schedule(schedule)
        self.prediction_type = check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        self.dtype = check_dtype(dtype)
        self.dim = math.prod(self.shape)
        frequencies = torch.arange(1, self.dim + 1, dtype=torch.float64)
        self.variances = frequencies.pow(-self.exponent).to(self.dtype)

    def predict_noise(self, x_t: Tensor, t: int | Tensor, cond: Any = None) -> Tensor:
        """Exact E[ε | x_t] = sqrt(1−ᾱ_t) x_t / (ᾱ_t λ + 1 − ᾱ_t), expressed in ``prediction_type``.

        ``t`` is an int or a LongTensor[B] (one ᾱ per sample); ``cond`` is ignored. The output has the
        shape and dtype of ``x_t`` (computed in the model's dtype).
        """
        batch = check_batch("x_t", x_t, self.shape)
        x = x_t.reshape(batch, self.dim).to(self.dtype)
        alpha = alpha_bar_per_sample(self.schedule, t, batch).to(x)[:, None]
        variances = self.variances.to(x.device)
        epsilon = (1 - alpha).sqrt() * x / (alpha * variances + 1 - alpha)
        output = output_from_epsilon(epsilon, x, alpha, self.prediction_type)
        return output.reshape(x_t.shape).to(x_t.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact data samples x0 ~ N(0, diag(λ)), Tensor[n, *shape] in the model's dtype."""
        n = check_int("n", n, low=1)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (noise * self.variances.to(torch.float64).sqrt()).to(self.dtype).reshape(n, *self.shape)

    def frequency_bands(self, n_bands: int = 4) -> list[Tensor]:
        """Log-spaced bands of frequencies k = 1..d as index tensors into the flattened image.

        Band i holds k ∈ [e_i, e_{i+1}) with e_i ≈ (d + 1)^(i / n_bands), rounded and nudged so that
        every band is non-empty; together the bands cover every index 0..d−1 exactly once.
        """
        n_bands = check_int("n_bands", n_bands, low=1)
        if n_bands > self.dim:
            raise ValueError(f"n_bands must be <= the {self.dim} coordinates of the model, got {n_bands}")
        edges = [round((self.dim + 1) ** (i / n_bands)) for i in range(n_bands + 1)]
        edges[0], edges[-1] = 1, self.dim + 1
        for i in range(1, n_bands):  # at least one frequency per band, leaving room for the rest
            edges[i] = min(max(edges[i], edges[i - 1] + 1), self.dim + 1 - (n_bands - i))
        return [torch.arange(edges[i] - 1, edges[i + 1] - 1) for i in range(n_bands)]

    def band_variance_ratio(self, samples: Tensor, n_bands: int = 4) -> Tensor:
        """Kept variance per frequency band: mean over the band of mean(x_k²) / λ_k (1.0 = the data).

        ``samples`` is Tensor[N, *shape]; the second moment is taken around the true mean 0. Returns a
        float64 Tensor[n_bands], from the coarsest band (large λ) to the finest.
        """
        count = check_batch("samples", samples, self.shape)
        x = samples.detach().reshape(count, self.dim).to("cpu", torch.float64)
        ratio = x.square().mean(dim=0) / self.variances.to(torch.float64)
        return torch.stack([ratio[band].mean() for band in self.frequency_bands(n_bands)])
