"""The one denoiser interface every sampler, strategy and guidance step of this package runs on.

A model is any object with

* ``alphas_cumprod``: Tensor[T], ᾱ_t of its training schedule (strictly decreasing in (0, 1]);
* ``prediction_type``: ``"epsilon"``, ``"v_prediction"`` or ``"sample"`` — what its output means;
* ``predict_noise(x_t, t, cond) -> Tensor``: the network output for the noisy input ``x_t``
  [B, *shape] at timestep ``t`` (an int, possibly negative — see below — or a LongTensor[B]) under
  condition ``cond``; ``cond=None`` means unconditional. The output has the shape of ``x_t`` and is
  read according to ``prediction_type`` (ε itself for ``"epsilon"``).

Optional attributes, used when present:

* ``initial_alpha_cumprod`` (float): ᾱ of negative timesteps (default ᾱ_0); ``steps_offset`` (int);
  or a ready ``schedule`` (:class:`threestudio_sdi.schedule.NoiseSchedule`) instead of all three.
* ``predict_noise_batched(x_t, t, conds) -> list[Tensor]``: the outputs for several conditions
  (entries may be None) from **one** network call; :func:`threestudio_sdi.prediction.predict_branches`
  uses it for classifier-free guidance and Perp-Neg, falling back to one ``predict_noise`` per branch.
* ``view_conditioned = True``: the model is conditioned on the camera of each view (Zero123, MVDream,
  the exact prior of :mod:`threestudio_sdi.experimental.lab3d`); both methods above then receive
  ``cameras=`` (:class:`threestudio_sdi.classifier_free.Cameras` or None) as a keyword argument.

Negative timesteps mean "before the first training step" and use ``initial_alpha_cumprod``: the
released SDI code evaluates the network at timestep −99 at the origin of its inversion.

Model families are adapted to this interface in :mod:`threestudio_sdi.models` (k-diffusion's
``external.py`` way); the core never imports them.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@runtime_checkable
class Denoiser(Protocol):
    """Structural type of a model; see the module docstring."""

    alphas_cumprod: Tensor
    prediction_type: str

    def predict_noise(self, x_t: Tensor, t: int | Tensor, cond: Any) -> Tensor:
        """Network output at (x_t, t) under ``cond`` (None = unconditional)."""
        ...
