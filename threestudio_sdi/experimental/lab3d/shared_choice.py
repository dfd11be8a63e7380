"""Which variant ``consistent-shared`` is expected to pick: the one the shared component g favours.

With κ = sqrt(1 − β)·field + sqrt(β)·g (g one N(0, 1) value per colour channel for the run,
:mod:`threestudio_sdi.experimental.strategies.consistent_noise`), x_t carries sqrt((1 − ᾱ)β)·g at every pixel of every
view. In the exact prior's responsibilities r_k ∝ exp(−‖x_t − sqrt(ᾱ) μ_k‖² / 2v) this offset enters
through ⟨g·1, μ_k⟩, i.e. through the mean colour of variant k's render, which is about the same from
every view. So every view leans to

    k* = argmax_k  Σ_c g_c (m_kc − m̄_c),

m_kc the mean of channel c over variant k's held-out renders and m̄_c the class's mean over its
variants. The prediction ignores the asset's own state and the field; the full runs test it.
"""

from __future__ import annotations

from ..strategies.consistent_noise import shared_values
from .experiment import Lab3D


def shared_preference(lab: Lab3D, class_index: int, seed: int) -> tuple[int, list[float]]:
    """(k*, the scores Σ_c g_c (m_kc − m̄_c) of the class's variants) for the run seed ``seed``."""
    members = lab.assets.members(class_index)
    means = lab.truth_rgb[members].double().mean(dim=(1, 3, 4))  # [variants, 3]: over views and pixels
    g = shared_values(seed, means.shape[1])
    scores = ((means - means.mean(dim=0)) * g).sum(dim=1)
    return int(scores.argmax()), [round(float(v), 4) for v in scores]
