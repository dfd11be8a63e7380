"""The ``fixed-point`` research variant: κ refined toward the fixed point of docs/method.md §1.

SDI wants, for a render z0 at noise level t, the noise κ that DDIM would have used there:

    κ = F(κ),   F(κ) = ε_θ(sqrt(ᾱ_t) z0 + sqrt(1−ᾱ_t) κ, t, y)      (paper eqs. 7–8; ε_θ with CFG)

and approximates it by DDIM inversion. This module iterates on the residual R(κ) = F(κ) − κ from any
start (typically the inversion), one guided model evaluation per iteration:

* ``damped``: κ ← κ + β R(κ) (β = 1 is plain fixed-point iteration, which the paper reports to
  diverge in 3D, Fig. 9);
* ``anderson``: Anderson acceleration (type II, Walker & Ni 2011) with memory m and mixing β: with the
  last m differences ΔK of iterates and ΔR of residuals, γ = argmin ‖R_k − ΔR γ‖ (ridge-regularised) and
  κ ← κ_k + β R_k − (ΔK + β ΔR) γ, per sample; with ``restart_factor`` (safeguarded Anderson) the
  history is dropped, and the iteration restarts from the best iterate, when the residual grows;
* :func:`newton_krylov`: Newton's method on R with the Jacobian never formed: each step solves
  (J_F − I) Δ = −R in a small Krylov space by GMRES, one Jacobian-vector product (``torch.func.jvp``
  through the guided model) per dimension, and a backtracking line search keeps ‖R‖ from growing.

Stopping: the relative residual ‖R(κ)‖ / ‖κ‖ of every sample below ``tolerance``; divergence: a
sample's residual ‖R(κ)‖ non-finite or above ``divergence_factor`` times its starting one. Each
sample's iterate with the smallest residual ‖R(κ)‖ is returned either way.

For the Gaussian of :class:`threestudio_sdi.testing.gaussian.GaussianModel` F is affine and the fixed
point is closed form, κ* = σ_t z0 / λ per coordinate; the map's slope (1−ᾱ)/(ᾱλ + 1 − ᾱ) is close to 1
for faint coordinates, which makes plain iteration slow there. :func:`solve_fixed_point_reference`
solves the fixed point to 1e-8 in float64 by Newton's method with the dense per-sample Jacobian (small
models only), the reference of the κ-error metric of ``benchmarks/fidelity.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from ..classifier_free import Guide, check_guidance_scale
from ..errors import check_choice, check_int, check_range
from ..prediction import add_noise

FIXED_POINT_METHODS = ("damped", "anderson")
FIXED_POINT_STARTS = ("inversion", "random")
DENSE_JACOBIAN_MAX_DIM = 1024
"""Largest per-sample dimension :func:`solve_fixed_point_reference` builds a dense Jacobian for."""


def check_solver_options(
    method: str, mixing: float, memory: int, tolerance: float, max_iterations: int
) -> tuple[str, float, int, float, int]:
    """The refinement's options, validated (ValueError naming ``fixed_point.<option>``)."""
    return (
        check_choice("fixed_point.method", method, FIXED_POINT_METHODS),
        check_range("fixed_point.mixing", mixing, 0.0, 1.0, low_open=True),
        check_int("fixed_point.memory", memory, low=1),
        check_range("fixed_point.tolerance", tolerance, 0.0, low_open=True),
        check_int("fixed_point.max_iterations", max_iterations, low=0),
    )


@dataclass(frozen=True)
class FixedPointConfig:
    """Options of the ``fixed-point`` noise strategy (:mod:`threestudio_sdi.experimental.strategies.fixed_point`).

    Attributes:
        start: ``"inversion"`` (the ``inversion`` strategy's κ, without its η noise) or ``"random"``
            (κ ~ N(0, I)).
        method: ``"anderson"`` or ``"damped"`` (:func:`refine_fixed_point`).
        guidance_scale: the CFG of the fixed-point map; None = the step's γ_fwd (docs/method.md §1).
        tolerance: stop when every sample's ‖F(κ) − κ‖/‖κ‖ is below it.
        max_iterations: at most this many κ updates (≥ 0).
        mixing: β ∈ (0, 1], damping / Anderson mixing.
        memory: Anderson history m ≥ 1.
    """

    # typing.Optional, not ``X | None``: OmegaConf reads these annotations (sdi-guidance), on Python 3.9 too.
    start: str = "inversion"
    method: str = "anderson"
    guidance_scale: Optional[float] = None  # noqa: UP045
    tolerance: float = 1e-3
    max_iterations: int = 10
    mixing: float = 0.5
    memory: int = 5

    def __post_init__(self) -> None:
        check_choice("fixed_point.start", self.start, FIXED_POINT_STARTS)
        if self.guidance_scale is not None:
            check_guidance_scale("fixed_point.guidance_scale", self.guidance_scale)
        check_solver_options(**self.solver_options())

    def solver_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`refine_fixed_point` that this config sets."""
        return {
            key: getattr(self, key) for key in ("method", "mixing", "memory", "tolerance", "max_iterations")
        }


@dataclass(frozen=True)
class FixedPointResult:
    """Outcome of :func:`refine_fixed_point` or :func:`solve_fixed_point_reference`.

    Attributes:
        noise: κ, per sample the iterate with the smallest ‖R(κ)‖ (detached, dtype of the start).
        iterations: updates of κ performed (0 when the start already met the tolerance).
        model_evaluations: guided evaluations of F spent (one per residual evaluated).
        residuals: the relative residual max_b ‖R(κ_b)‖/‖κ_b‖ of every evaluated iterate, start first.
        converged: the returned κ meets the tolerance (every sample).
        diverged: the iteration stopped on a non-finite or growing residual.
        sample_residuals: the relative residual ‖R(κ_b)‖/‖κ_b‖ of the returned κ per sample [B].
    """

    noise: Tensor
    iterations: int
    model_evaluations: int
    residuals: list[float] = field(default_factory=list)
    converged: bool = False
    diverged: bool = False
    sample_residuals: Tensor | None = None

    @property
    def residual(self) -> float:
        """The largest per-sample relative residual of ``noise``."""
        if self.sample_residuals is not None:
            return float(self.sample_residuals.max())
        finite = [r for r in self.residuals if math.isfinite(r)]
        return min(finite) if finite else math.inf


def fixed_point_map(guide: Guide, z0: Tensor, kappa: Tensor, t: int) -> Tensor:
    """F(κ) = ε_θ(sqrt(ᾱ_t) z0 + sqrt(1−ᾱ_t) κ, t, y) of the guided denoiser ``guide``.

    Differentiable when the model is (used by :func:`solve_fixed_point_reference`).
    """
    assert guide.schedule is not None
    return guide(add_noise(z0, kappa, guide.schedule.alpha_bar(t)), t)


def relative_residuals(residual: Tensor, kappa: Tensor) -> Tensor:
    """‖R_b‖ / ‖κ_b‖ per sample [B] (float64); a zero κ divides by 1 instead."""
    dims = tuple(range(1, kappa.ndim))
    norms = kappa.double().pow(2).sum(dims).sqrt()
    return residual.double().pow(2).sum(dims).sqrt() / torch.where(norms > 0, norms, torch.ones_like(norms))


def _anderson_step(
    kappa: Tensor, residual: Tensor, kappas: list[Tensor], residuals: list[Tensor], mixing: float
) -> Tensor:
    """Anderson (type II) update of [B, d] iterates from the histories (oldest first), per sample."""
    if len(kappas) < 2:
        return kappa + mixing * residual
    delta_k = torch.stack([b - a for a, b in zip(kappas, kappas[1:])], dim=-1)  # [B, d, m]
    delta_r = torch.stack([b - a for a, b in zip(residuals, residuals[1:])], dim=-1)
    gram = delta_r.transpose(1, 2) @ delta_r  # [B, m, m]
    scale = gram.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(torch.finfo(gram.dtype).tiny)
    ridge = 1e-10 * scale[:, None, None] * torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    try:
        gamma = torch.linalg.solve(gram + ridge, delta_r.transpose(1, 2) @ residual[..., None])  # [B, m, 1]
    except RuntimeError:  # a singular history (e.g. a repeated iterate): take the damped step
        return kappa + mixing * residual
    return kappa + mixing * residual - ((delta_k + mixing * delta_r) @ gamma)[..., 0]


@torch.no_grad()
def refine_fixed_point(
    guide: Guide,
    z0: Tensor,
    t: int,
    start: Tensor,
    *,
    method: str = "anderson",
    mixing: float = 0.5,
    memory: int = 5,
    tolerance: float = 1e-3,
    max_iterations: int = 20,
    divergence_factor: float = 10.0,
    restart_factor: float | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> FixedPointResult:
    """Iterate κ toward κ = F(κ) (module docstring) from ``start``, at most ``max_iterations`` updates.

    Args:
        guide, z0, t: define F (:func:`fixed_point_map`).
        start: the first iterate κ_0 [B, ...] (e.g. :func:`threestudio_sdi.ddim.ddim_invert`'s noise).
        method: ``damped`` or ``anderson``.
        mixing: β in (0, 1], the damping of ``damped`` and the mixing of ``anderson``.
        memory: m ≥ 1, the Anderson history (ignored by ``damped``).
        tolerance: stop when every sample's ‖R(κ)‖/‖κ‖ is below it.
        max_iterations: updates of κ at most; the model is evaluated at most max_iterations + 1 times.
        divergence_factor: stop as diverged when a sample's ‖R‖ exceeds this multiple of its first one.
        restart_factor: the safeguard (None = off): when a sample's ‖R‖ grows above this multiple of the
            previous iterate's, Anderson forgets its history and restarts from the best iterate κ_b with
            a damped step κ_b + β R(κ_b) (no extra evaluation).
        callback: receives ``{"iteration", "noise", "residual"}`` after each evaluated iterate.

    The arithmetic of the updates runs in float64 (the Anderson solve is ill-conditioned in float32);
    the returned κ has ``start``'s dtype.
    """
    method, mixing, memory, tolerance, max_iterations = check_solver_options(
        method, mixing, memory, tolerance, max_iterations
    )
    divergence_factor = check_range("divergence_factor", divergence_factor, 1.0, low_open=True)
    if restart_factor is not None:
        restart_factor = check_range("restart_factor", restart_factor, 1.0)
        if method != "anderson":
            raise ValueError(f"restart_factor restarts Anderson's history; method={method!r} has none")
    if tuple(start.shape) != tuple(z0.shape):
        raise ValueError(f"start has shape {tuple(start.shape)} but z0 has shape {tuple(z0.shape)}")
    z0 = z0.detach()
    batch = z0.shape[0]
    kappa = start.detach().to(torch.float64).reshape(batch, -1)
    history_k: list[Tensor] = []
    history_r: list[Tensor] = []
    best = kappa
    best_residual = torch.zeros_like(kappa)
    previous_norm: Tensor | None = None
    best_norm = torch.full((batch,), math.inf, dtype=torch.float64, device=kappa.device)
    best_relative = best_norm.clone()
    first_norm: Tensor | None = None
    residuals: list[float] = []
    converged = diverged = False
    evaluations = iterations = 0
    while True:
        current = kappa.reshape(z0.shape).to(z0.dtype)
        mapped = fixed_point_map(guide, z0, current, t)
        evaluations += 1
        residual = mapped.detach().to(torch.float64).reshape(batch, -1) - kappa
        norm = residual.pow(2).sum(1).sqrt().nan_to_num(math.inf)
        per_sample = relative_residuals(residual, kappa).nan_to_num(math.inf)
        value = float(per_sample.max())
        residuals.append(value)
        if callback is not None:
            callback({"iteration": iterations, "noise": kappa.reshape(z0.shape), "residual": value})
        improved = norm < best_norm
        best = torch.where(improved[:, None], kappa, best)
        best_residual = torch.where(improved[:, None], residual, best_residual)
        best_norm = torch.where(improved, norm, best_norm)
        best_relative = torch.where(improved, per_sample, best_relative)
        first_norm = norm if first_norm is None else first_norm
        if value < tolerance:
            converged = True
            best, best_relative = kappa, per_sample
            break
        if not norm.isfinite().all() or (norm > divergence_factor * first_norm).any():
            diverged = True
            break
        if iterations >= max_iterations:
            break
        grew = previous_norm is not None and restart_factor is not None
        grew = grew and bool((norm > restart_factor * previous_norm).any())
        previous_norm = norm
        if method == "damped":
            kappa = kappa + mixing * residual
        elif grew:
            history_k, history_r = [], []
            kappa = best + mixing * best_residual
        else:
            history_k = [*history_k, kappa][-(memory + 1) :]
            history_r = [*history_r, residual][-(memory + 1) :]
            kappa = _anderson_step(kappa, residual, history_k, history_r, mixing)
        iterations += 1
    return FixedPointResult(
        noise=best.reshape(z0.shape).to(start.dtype),
        iterations=iterations,
        model_evaluations=evaluations,
        residuals=residuals,
        converged=converged,
        diverged=diverged,
        sample_residuals=best_relative,
    )


def solve_fixed_point_reference(
    guide: Guide,
    z0: Tensor,
    t: int,
    start: Tensor | None = None,
    *,
    tolerance: float = 1e-8,
    max_iterations: int = 50,
) -> FixedPointResult:
    """The fixed point κ = F(κ) in float64 to ``tolerance`` (relative residual), by damped Newton.

    Newton's step solves (J_F − I) Δ = −R per sample with the dense Jacobian J_F of F (one backward
    pass per coordinate, so only for d ≤ :data:`DENSE_JACOBIAN_MAX_DIM`); each sample then halves its
    own step until its residual decreases (at most 30 times; a sample that fails stops there, stalled
    in a local minimum of ‖R‖) and stops once it meets the tolerance.
    ``start`` defaults to κ = 0. The model must be differentiable in x_t (the analytic models are) and
    compute in float64 for a 1e-8 answer. ``model_evaluations`` counts batched F evaluations, the d
    rows of each Jacobian included; ``sample_residuals`` tells which samples converged (a guided map
    need not have a fixed point near the start: CFG can make F expand).
    """
    tolerance = check_range("tolerance", tolerance, 0.0, low_open=True)
    max_iterations = check_int("max_iterations", max_iterations, low=0)
    z0 = z0.detach().to(torch.float64)
    batch = z0.shape[0]
    dim = z0[0].numel()
    if dim > DENSE_JACOBIAN_MAX_DIM:
        raise ValueError(
            f"solve_fixed_point_reference builds a dense {dim}×{dim} Jacobian per sample; it supports "
            f"d <= {DENSE_JACOBIAN_MAX_DIM} (use refine_fixed_point for large models)"
        )
    kappa = torch.zeros(batch, dim, dtype=torch.float64) if start is None else start.detach().double()
    kappa = kappa.reshape(batch, dim).to(z0.device)

    def residual_of(k: Tensor) -> Tensor:
        with torch.no_grad():
            mapped = fixed_point_map(guide, z0, k.reshape(z0.shape), t)
        return mapped.double().reshape(batch, dim) - k

    residual = residual_of(kappa)
    current = relative_residuals(residual, kappa).nan_to_num(math.inf)
    evaluations, residuals = 1, [float(current.max())]
    iterations = 0
    identity = torch.eye(dim, dtype=torch.float64, device=z0.device)
    stalled = torch.zeros(batch, dtype=torch.bool, device=z0.device)
    while iterations < max_iterations:
        active = (current >= tolerance) & current.isfinite() & ~stalled
        if not active.any():
            break
        jacobian = _dense_jacobian(guide, z0, kappa, t)
        evaluations += dim
        step = (torch.linalg.pinv(jacobian - identity) @ -residual[..., None])[..., 0]
        step = torch.where(active[:, None], step, torch.zeros_like(step))
        scale = torch.ones(batch, dtype=torch.float64, device=z0.device)
        pending = active.clone()
        for _ in range(30):
            candidate = kappa + torch.where(pending, scale, torch.zeros_like(scale))[:, None] * step
            candidate_residual = residual_of(candidate)
            evaluations += 1
            value = relative_residuals(candidate_residual, candidate).nan_to_num(math.inf)
            accepted = pending & (value < current)
            kappa = torch.where(accepted[:, None], candidate, kappa)
            residual = torch.where(accepted[:, None], candidate_residual, residual)
            current = torch.where(accepted, value, current)
            pending = pending & ~accepted
            if not pending.any():
                break
            scale = torch.where(pending, scale / 2, scale)
        residuals.append(float(current.max()))
        iterations += 1
        stalled = stalled | pending  # no decrease along Newton's direction: a local minimum of ‖R‖
    final = float(current.max())
    return FixedPointResult(
        noise=kappa.reshape(z0.shape),
        iterations=iterations,
        model_evaluations=evaluations,
        residuals=residuals,
        converged=final < tolerance,
        diverged=not math.isfinite(final),
        sample_residuals=current,
    )


def _dense_jacobian(guide: Guide, z0: Tensor, kappa: Tensor, t: int) -> Tensor:
    """∂F_b/∂κ_b [B, d, d] of the per-sample map (samples are independent: one backward per row)."""
    batch, dim = kappa.shape
    with torch.enable_grad():
        variable = kappa.detach().clone().requires_grad_(True)
        mapped = fixed_point_map(guide, z0, variable.reshape(z0.shape), t).reshape(batch, dim)
        rows = []
        for i in range(dim):
            (gradient,) = torch.autograd.grad(mapped[:, i].sum(), variable, retain_graph=i + 1 < dim)
            rows.append(gradient)
    return torch.stack(rows, dim=1).double()


def map_and_jvp(guide: Guide, z0: Tensor, kappa: Tensor, t: int, tangent: Tensor) -> tuple[Tensor, Tensor]:
    """(F(κ), J_F(κ) v) in one forward-mode pass (``torch.func.jvp`` through the guided model).

    A JVP costs about two to three forward passes of a network; :func:`newton_krylov` counts it as
    :data:`JVP_EVALUATIONS` guided evaluations.
    """
    z0 = z0.detach()
    return torch.func.jvp(lambda k: fixed_point_map(guide, z0, k, t), (kappa,), (tangent,))


JVP_EVALUATIONS = 2
"""Guided evaluations charged for one Jacobian-vector product (primal + tangent)."""


def _gmres_direction(apply: Callable[[Tensor], Tensor], rhs: Tensor, krylov_dim: int) -> Tensor:
    """Δ ∈ K_m(A, b) minimising ‖b − A Δ‖ per sample (GMRES, one restart cycle), [B, d] float64.

    ``apply`` maps a batch of directions [B, d] to A v [B, d] (one batched JVP per Krylov vector).
    Arnoldi with modified Gram–Schmidt; the small least-squares problem min ‖β e1 − H y‖ by ``lstsq``.
    """
    batch = rhs.shape[0]
    beta = rhs.norm(dim=1)
    safe = lambda n: torch.where(n > 0, n, torch.ones_like(n))  # noqa: E731
    basis = [rhs / safe(beta)[:, None]]
    hessenberg = torch.zeros(batch, krylov_dim + 1, krylov_dim, dtype=rhs.dtype, device=rhs.device)
    for j in range(krylov_dim):
        w = apply(basis[j])
        for i, v in enumerate(basis):
            hessenberg[:, i, j] = (w * v).sum(1)
            w = w - hessenberg[:, i, j, None] * v
        hessenberg[:, j + 1, j] = w.norm(dim=1)
        basis.append(w / safe(hessenberg[:, j + 1, j])[:, None])
    e1 = torch.zeros(batch, krylov_dim + 1, 1, dtype=rhs.dtype, device=rhs.device)
    e1[:, 0, 0] = beta
    coefficients = torch.linalg.lstsq(hessenberg, e1).solution[..., 0]  # [B, m]
    return torch.einsum("bm,mbd->bd", coefficients, torch.stack(basis[:krylov_dim]))


@torch.no_grad()
def newton_krylov(
    guide: Guide,
    z0: Tensor,
    t: int,
    start: Tensor,
    *,
    newton_steps: int = 1,
    krylov_dim: int = 2,
    max_backtracks: int = 1,
    tolerance: float = 1e-3,
) -> FixedPointResult:
    """Newton–Krylov on R(κ) = F(κ) − κ from ``start``, safeguarded by a backtracking line search.

    Each Newton step solves (J_F − I) Δ = −R per sample approximately in the Krylov space
    K_m(J_F − I, R) (GMRES, m = ``krylov_dim`` JVPs through the guided model, :func:`map_and_jvp`),
    then tries κ + λΔ for λ = 1, ½, … (``max_backtracks`` halvings): a sample keeps the first trial that
    lowers its ‖R‖, and keeps κ when none does (the safeguard: ‖R‖ never grows). Stops when every
    sample's ‖R‖/‖κ‖ is below ``tolerance``. Evaluations: 1 for R(κ_0), then per Newton step
    m·:data:`JVP_EVALUATIONS` + one per trial. On the Gaussian (F affine, J_F diagonal) one step with m
    at least the number of distinct eigenvalues of J_F is exact.
    """
    newton_steps = check_int("newton_steps", newton_steps, low=0)
    krylov_dim = check_int("krylov_dim", krylov_dim, low=1)
    max_backtracks = check_int("max_backtracks", max_backtracks, low=0)
    tolerance = check_range("tolerance", tolerance, 0.0, low_open=True)
    z0 = z0.detach()
    batch, shape = z0.shape[0], z0.shape
    kappa = start.detach().to(torch.float64).reshape(batch, -1)

    def residual_of(k: Tensor) -> Tensor:
        mapped = fixed_point_map(guide, z0, k.reshape(shape).to(z0.dtype), t)
        return mapped.to(torch.float64).reshape(batch, -1) - k

    def apply(v: Tensor) -> Tensor:  # (J_F − I) v
        current, tangent = kappa.reshape(shape).to(z0.dtype), v.reshape(shape).to(z0.dtype)
        _, jv = map_and_jvp(guide, z0, current, t, tangent)
        return jv.to(torch.float64).reshape(batch, -1) - v

    residual = residual_of(kappa)
    evaluations, iterations = 1, 0
    relative = relative_residuals(residual, kappa).nan_to_num(math.inf)
    residuals = [float(relative.max())]
    while iterations < newton_steps and residuals[-1] >= tolerance:
        direction = _gmres_direction(apply, -residual, krylov_dim)
        evaluations += krylov_dim * JVP_EVALUATIONS
        norm = residual.norm(dim=1).nan_to_num(math.inf)
        pending = torch.ones(batch, dtype=torch.bool, device=kappa.device)
        scale = 1.0
        for _ in range(max_backtracks + 1):
            candidate = kappa + scale * direction
            candidate_residual = residual_of(candidate)
            evaluations += 1
            accepted = pending & (candidate_residual.norm(dim=1).nan_to_num(math.inf) < norm)
            kappa = torch.where(accepted[:, None], candidate, kappa)
            residual = torch.where(accepted[:, None], candidate_residual, residual)
            pending = pending & ~accepted
            if not pending.any():
                break
            scale /= 2
        iterations += 1
        relative = relative_residuals(residual, kappa).nan_to_num(math.inf)
        residuals.append(float(relative.max()))
    return FixedPointResult(
        noise=kappa.reshape(shape).to(start.dtype),
        iterations=iterations,
        model_evaluations=evaluations,
        residuals=residuals,
        converged=residuals[-1] < tolerance,
        diverged=not math.isfinite(residuals[-1]),
        sample_residuals=relative,
    )
