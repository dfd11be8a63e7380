"""From a model's raw output to ε, x0-prediction, and evaluation of several conditions at once.

With x_t = sqrt(ᾱ) x0 + sqrt(1−ᾱ) ε and v = sqrt(ᾱ) ε − sqrt(1−ᾱ) x0 (Salimans & Ho, 2022):

* ``epsilon``:      ε = output
* ``sample``:       ε = (x_t − sqrt(ᾱ) output) / sqrt(1−ᾱ)
* ``v_prediction``: ε = sqrt(ᾱ) output + sqrt(1−ᾱ) x_t

and the one-step denoised image is x̂0 = (x_t − sqrt(1−ᾱ) ε) / sqrt(ᾱ).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from .denoiser import PREDICTION_TYPES


def epsilon_from_output(output: Tensor, x_t: Tensor, alpha_bar: Tensor, prediction_type: str) -> Tensor:
    """ε implied by a model output of the given ``prediction_type`` at noise level ``alpha_bar``."""
    alpha = alpha_bar.to(x_t)
    if prediction_type == "epsilon":
        return output
    if prediction_type == "sample":
        return (x_t - alpha.sqrt() * output) / (1 - alpha).sqrt()
    if prediction_type == "v_prediction":
        return alpha.sqrt() * output + (1 - alpha).sqrt() * x_t
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def output_from_epsilon(epsilon: Tensor, x_t: Tensor, alpha_bar: Tensor, prediction_type: str) -> Tensor:
    """The model output of the given ``prediction_type`` that encodes ``epsilon``; inverse of
    :func:`epsilon_from_output`.

    ``epsilon`` → ε; ``sample`` → x̂0 = (x_t − sqrt(1−ᾱ) ε) / sqrt(ᾱ); ``v_prediction`` →
    v = sqrt(ᾱ) ε − sqrt(1−ᾱ) x̂0, evaluated as (ε − sqrt(1−ᾱ) x_t) / sqrt(ᾱ) (the same value with one
    division fewer). ``alpha_bar`` must broadcast against ``x_t`` (a scalar, or [B, 1, ...] per sample).
    """
    alpha = alpha_bar.to(x_t)
    if prediction_type == "epsilon":
        return epsilon
    if prediction_type == "sample":
        return predict_x0(x_t, epsilon, alpha)
    if prediction_type == "v_prediction":
        return (epsilon - (1 - alpha).sqrt() * x_t) / alpha.sqrt()
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def add_noise(x0: Tensor, noise: Tensor, alpha_bar: Tensor) -> Tensor:
    """x_t = sqrt(ᾱ) x0 + sqrt(1−ᾱ) ε, the forward process at noise level ``alpha_bar``."""
    alpha = alpha_bar.to(x0)
    return alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise


def predict_x0(x_t: Tensor, epsilon: Tensor, alpha_bar: Tensor) -> Tensor:
    """x̂0 = (x_t − sqrt(1−ᾱ) ε) / sqrt(ᾱ), the one-step denoised image (docs/method.md §1)."""
    alpha = alpha_bar.to(x_t)
    return (x_t - (1 - alpha).sqrt() * epsilon) / alpha.sqrt()


def predict_branches(
    model: Any, x_t: Tensor, t: int, conds: Sequence[Any], cameras: Any = None
) -> list[Tensor]:
    """Raw model outputs for each condition in ``conds`` (None = unconditional).

    One call of ``model.predict_noise_batched`` when the model has it (the diffusers model puts
    every branch in a single UNet batch), else one ``predict_noise`` call per branch. A
    view-conditioned model (``model.view_conditioned``) also receives ``cameras=cameras``. Every
    output is checked to have the shape of ``x_t`` (a comparison of Python ints: no device work).
    """
    extra = {"cameras": cameras} if getattr(model, "view_conditioned", False) else {}
    batched = getattr(model, "predict_noise_batched", None)
    if batched is not None:
        outputs = list(batched(x_t, t, list(conds), **extra))
    else:
        outputs = [model.predict_noise(x_t, t, cond, **extra) for cond in conds]
    if len(outputs) != len(conds):
        raise ValueError(f"model returned {len(outputs)} outputs for {len(conds)} conditions")
    for output in outputs:
        if tuple(output.shape) != tuple(x_t.shape):
            raise ValueError(
                f"model output has shape {tuple(output.shape)} but its input x_t has shape {tuple(x_t.shape)}"
            )
    return [output.to(x_t.dtype) for output in outputs]
