"""Research noise strategies (issue 9 part 5): a known answer for each solver, noise field and target.

* ``newton-krylov``: GMRES solves a full Krylov space exactly; the JVP equals the dense Jacobian; one
  Newton step lands on the Gaussian's closed-form fixed point κ* = σ_t z0/λ when the Krylov space holds
  every distinct eigenvalue of J_F; the line search never lets ‖R‖ grow.
* ``safeguarded-anderson``: a restart factor that never fires changes nothing; one that fires restarts
  from the best iterate with a damped step.
* ``consistent-noise``: the rendered field is N(0, 1) per pixel exactly (its coefficients have unit
  norm); an empty asset shows the background noise, an opaque one the noise of the first voxel hit.
* ``ode-target``: one grid point is SDI's one-step target; more points converge at first order to the
  closed-form probability-flow ODE of the Gaussian.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from test_fixed_point import CountingModel, relative_error
from test_fixed_point import closed_form as closed_form_fixed_point
from torch import Tensor

from threestudio_sdi.classifier_free import Conditioning, Guide
from threestudio_sdi.experimental.lab3d.cameras import camera_rays, make_cameras
from threestudio_sdi.experimental.lab3d.distill import DistillSettings, distill_3d
from threestudio_sdi.experimental.lab3d.experiment import Lab3D, LabSettings
from threestudio_sdi.experimental.lab3d.methods import RESEARCH_METHODS, get_method
from threestudio_sdi.experimental.lab3d.noise_field import (
    AssetNoise,
    NoiseField,
    draw_noise_field,
    render_noise,
)
from threestudio_sdi.experimental.lab3d.renderer import RenderSettings, ray_box_interval
from threestudio_sdi.experimental.lab3d.run_context import RunContext
from threestudio_sdi.experimental.lab3d.shared_choice import shared_preference
from threestudio_sdi.experimental.solvers import (
    JVP_EVALUATIONS,
    _dense_jacobian,
    _gmres_direction,
    fixed_point_map,
    map_and_jvp,
    newton_krylov,
    refine_fixed_point,
)
from threestudio_sdi.experimental.strategies import ConsistentNoise, NewtonKrylovNoise, OdeTarget
from threestudio_sdi.experimental.strategies.ode_target import ode_grid, solve_ode_target
from threestudio_sdi.prediction import predict_x0
from threestudio_sdi.schedule import NoiseSchedule
from threestudio_sdi.score_distillation import GuidanceConfig, guidance_step, step_context
from threestudio_sdi.strategies import InversionConfig, make_strategy, strategy_names
from threestudio_sdi.testing.gaussian import GaussianModel
from threestudio_sdi.testing.mixture import GaussianMixtureModel

RESEARCH = ("newton-krylov", "safeguarded-anderson", "consistent-noise", "ode-target")


def test_the_research_strategies_are_registered() -> None:
    assert set(RESEARCH) <= set(strategy_names())
    for name in RESEARCH:
        assert type(make_strategy(name)).__name__  # constructible by name with its defaults


# ------------------------------------------------------------------ newton-krylov
def test_gmres_solves_the_system_in_a_full_krylov_space(fresh_seed: int) -> None:
    """min ‖b − AΔ‖ over nested Krylov spaces: the residual never grows with m, and m = d solves."""
    generator = torch.Generator().manual_seed(fresh_seed)
    dim = 5
    matrix = 3 * torch.eye(dim, dtype=torch.float64) + torch.randn(
        2, dim, dim, generator=generator, dtype=torch.float64
    )
    rhs = torch.randn(2, dim, generator=generator, dtype=torch.float64)

    def apply(v: Tensor) -> Tensor:
        return torch.einsum("bij,bj->bi", matrix, v)

    norms = [float((rhs - apply(_gmres_direction(apply, rhs, m))).norm()) for m in range(1, dim + 1)]
    assert all(b <= a * (1 + 1e-10) for a, b in zip(norms, norms[1:])), norms
    exact = torch.linalg.solve(matrix, rhs[..., None])[..., 0]
    torch.testing.assert_close(_gmres_direction(apply, rhs, dim), exact, rtol=1e-9, atol=1e-9)


def test_the_jvp_of_the_guided_map_is_the_dense_jacobian(fresh_seed: int) -> None:
    """Digits mixture, CFG 7.5 (F non-linear): forward mode equals reverse-mode rows, float64."""
    digits = GaussianMixtureModel.from_digits()
    generator = torch.Generator().manual_seed(fresh_seed)
    labels = torch.tensor([3, 7])
    z0 = digits.sample(2, labels, generator)
    kappa = torch.randn(z0.shape, generator=generator, dtype=torch.float64)
    tangent = torch.randn(z0.shape, generator=generator, dtype=torch.float64)
    guide = Guide(digits, Conditioning(cond=labels), 7.5)
    t = 600
    mapped, jvp = map_and_jvp(guide, z0, kappa, t, tangent)
    jacobian = _dense_jacobian(guide, z0, kappa.reshape(2, -1), t)
    expected = torch.einsum("bij,bj->bi", jacobian, tangent.reshape(2, -1)).reshape(z0.shape)
    torch.testing.assert_close(jvp, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(mapped, fixed_point_map(guide, z0, kappa, t), rtol=0, atol=0)


@pytest.mark.parametrize(("exponent", "krylov_dim"), [(0.0, 1), (1.5, 4)])
def test_one_newton_step_lands_on_the_gaussians_fixed_point(
    exponent: float, krylov_dim: int, fresh_seed: int
) -> None:
    """F is affine with J_F = diag(c_k), c_k = (1−ᾱ)/(ᾱλ_k + 1−ᾱ): GMRES with m ≥ the number of distinct
    c_k (1 when every λ_k = 1; d = 4 for the power law on 2×2) solves the Newton system exactly."""
    model = CountingModel(GaussianModel(shape=(1, 2, 2), exponent=exponent))
    z0 = model.model.sample(3, torch.Generator().manual_seed(fresh_seed))
    t = 1 + fresh_seed % 998
    start = torch.randn(
        z0.shape, generator=torch.Generator().manual_seed(fresh_seed + 1), dtype=torch.float64
    )
    result = newton_krylov(
        Guide(model, Conditioning(), 0.0), z0, t, start, newton_steps=1, krylov_dim=krylov_dim,
        tolerance=1e-12,
    )  # fmt: skip
    assert relative_error(result.noise, closed_form_fixed_point(model.model, z0, t)) < 1e-8
    assert result.iterations == 1 and result.residuals[-1] < 1e-8 and not result.diverged
    assert result.model_evaluations == 1 + krylov_dim * JVP_EVALUATIONS + 1  # R(κ0), JVPs, one trial
    assert model.calls == 1 + krylov_dim + 1  # one forward-mode pass per JVP: charged as 2


def test_a_too_small_krylov_space_is_not_exact_on_the_power_law() -> None:
    """The counterpart of the test above: 4 distinct eigenvalues, m = 2 leaves an error."""
    model = GaussianModel(shape=(1, 2, 2), exponent=1.5)
    z0 = model.sample(3, torch.Generator().manual_seed(0))
    result = newton_krylov(Guide(model, Conditioning(), 0.0), z0, 500, torch.zeros_like(z0), krylov_dim=2)
    assert relative_error(result.noise, closed_form_fixed_point(model, z0, 500)) > 1e-4


def test_the_line_search_never_lets_the_residual_grow(fresh_seed: int) -> None:
    """Digits at t = 900, CFG 7.5, a random start and a 1-dimensional Krylov space (a poor Newton model):
    per sample, ‖R‖ of the answer is at most ‖R‖ of the start, measured independently."""
    digits = GaussianMixtureModel.from_digits()
    generator = torch.Generator().manual_seed(fresh_seed)
    labels = torch.tensor([0, 1, 2, 3])
    z0 = digits.sample(4, labels, generator)
    start = torch.randn(z0.shape, generator=generator, dtype=torch.float64)
    guide = Guide(digits, Conditioning(cond=labels), 7.5)
    result = newton_krylov(guide, z0, 900, start, newton_steps=3, krylov_dim=1, max_backtracks=2)

    def norms(kappa: Tensor) -> Tensor:
        return (fixed_point_map(guide, z0, kappa, 900) - kappa).flatten(1).norm(dim=1)

    assert (norms(result.noise) <= norms(start) * (1 + 1e-12)).all()
    assert result.model_evaluations <= 1 + 3 * (1 * JVP_EVALUATIONS + 3)


# ------------------------------------------------------------------ safeguarded-anderson
def _digits_problem(seed: int) -> tuple[Guide, Tensor, Tensor]:
    digits = GaussianMixtureModel.from_digits()
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor([4, 5, 6])
    z0 = digits.sample(3, labels, generator)
    start = torch.randn(z0.shape, generator=generator, dtype=torch.float64)
    return Guide(digits, Conditioning(cond=labels), 7.5), z0, start


def test_a_restart_factor_that_never_fires_changes_nothing(fresh_seed: int) -> None:
    guide, z0, start = _digits_problem(fresh_seed)
    options = {"method": "anderson", "mixing": 0.5, "memory": 3, "max_iterations": 6}
    plain = refine_fixed_point(guide, z0, 800, start, **options)
    never = refine_fixed_point(guide, z0, 800, start, restart_factor=1e12, **options)
    assert torch.equal(plain.noise, never.noise) and plain.residuals == never.residuals


def test_a_restart_factor_needs_anderson() -> None:
    guide, z0, start = _digits_problem(0)
    with pytest.raises(ValueError, match="restart_factor.*'damped'"):
        refine_fixed_point(guide, z0, 800, start, method="damped", mixing=1.0, restart_factor=2.0)


def test_a_growing_residual_restarts_from_the_best_iterate() -> None:
    """Every iterate after a growth (‖R‖ above the previous one) is κ_best + β R(κ_best)."""
    guide, z0, start = _digits_problem(0)
    iterates: list[Tensor] = []
    result = refine_fixed_point(
        guide, z0, 950, start, method="anderson", mixing=1.0, memory=3, max_iterations=12,
        restart_factor=1.0, divergence_factor=1e6,
        callback=lambda info: iterates.append(info["noise"].clone().double()),
    )  # fmt: skip
    residuals = [fixed_point_map(guide, z0, k, 950) - k for k in iterates]
    norms = torch.stack([r.flatten(1).norm(dim=1) for r in residuals])  # [iterate, sample]
    restarts = 0
    for k in range(1, len(iterates) - 1):
        if (norms[k] > norms[k - 1]).any():
            best = norms[: k + 1].argmin(dim=0)
            samples = torch.arange(z0.shape[0])
            kappa_best = torch.stack(iterates[: k + 1])[best, samples]
            residual_best = torch.stack(residuals[: k + 1])[best, samples]
            torch.testing.assert_close(iterates[k + 1], kappa_best + residual_best, rtol=1e-9, atol=1e-9)
            restarts += 1
    assert restarts >= 1, norms  # the setting was chosen so that Anderson's residual grows
    assert not result.diverged


# ------------------------------------------------------------------ consistent-noise
def test_the_fixed_image_is_one_draw_for_every_view_and_step(fresh_seed: int) -> None:
    model = GaussianModel(shape=(1, 4, 4))
    z0 = model.sample(3, torch.Generator().manual_seed(fresh_seed))
    config = GuidanceConfig(noise=ConsistentNoise(seed=fresh_seed))
    first = guidance_step(model, z0, 500, Conditioning(), config, generator=torch.Generator().manual_seed(1))
    again = guidance_step(
        model, z0 * 0.5, 300, Conditioning(), config, generator=torch.Generator().manual_seed(2)
    )
    other = guidance_step(
        model, z0, 500, Conditioning(), GuidanceConfig(noise=ConsistentNoise(seed=fresh_seed + 1))
    )
    assert torch.equal(first.noise[0], first.noise[1]) and torch.equal(first.noise, again.noise)
    assert not torch.equal(first.noise, other.noise)
    assert first.model_evaluations == 1  # only the prediction: no guided evaluation for κ


def test_partial_consistency_mixes_the_field_with_a_fresh_draw(fresh_seed: int) -> None:
    """κ = sqrt(ρ)·field + sqrt(1−ρ)·n with n the step generator's draw: ρ = 0 is SDS's ``random`` κ
    exactly, ρ = 1 draws nothing, and 0 < ρ < 1 is the mixture of the two."""
    model = GaussianModel(shape=(1, 4, 4))
    z0 = model.sample(2, torch.Generator().manual_seed(fresh_seed))

    def kappa(noise: Any) -> Tensor:
        config = GuidanceConfig(noise=noise, inversion=InversionConfig(overshoot=False))
        generator = torch.Generator().manual_seed(fresh_seed)
        return guidance_step(model, z0, 400, Conditioning(), config, generator=generator).noise

    field, fresh = kappa(ConsistentNoise(seed=5)), kappa("random")
    assert torch.equal(kappa(ConsistentNoise(seed=5, consistency=0.0)), fresh)
    assert torch.equal(kappa(ConsistentNoise(seed=5, consistency=1.0)), field)
    expected = math.sqrt(0.8) * field + math.sqrt(0.2) * fresh
    torch.testing.assert_close(
        kappa(ConsistentNoise(seed=5, consistency=0.8)), expected, rtol=1e-12, atol=1e-12
    )
    with pytest.raises(ValueError, match="consistent_noise.consistency"):
        ConsistentNoise(consistency=1.5)


def test_the_shared_component_is_one_value_per_channel_for_the_whole_run(fresh_seed: int) -> None:
    """κ = sqrt(1−β)·field + sqrt(β)·g: with β = 1 every pixel of a channel holds the same g_c, in
    every view and step; the seed picks g; and each pixel keeps unit variance (coefficients 1−β and β)."""
    model = GaussianModel(shape=(3, 4, 4))
    z0 = model.sample(2, torch.Generator().manual_seed(fresh_seed))

    def kappa(strategy: ConsistentNoise, t: int = 400) -> Tensor:
        return guidance_step(model, z0, t, Conditioning(), GuidanceConfig(noise=strategy)).noise

    only_shared = kappa(ConsistentNoise(seed=fresh_seed, shared=1.0))
    per_channel = only_shared[0, :, :1, :1]
    assert torch.equal(only_shared, per_channel.expand_as(only_shared))  # constant per channel, all views
    assert torch.equal(only_shared, kappa(ConsistentNoise(seed=fresh_seed, shared=1.0), t=900))
    assert not torch.equal(only_shared, kappa(ConsistentNoise(seed=fresh_seed + 1, shared=1.0)))
    field = kappa(ConsistentNoise(seed=fresh_seed))
    mixed = kappa(ConsistentNoise(seed=fresh_seed, shared=0.1))
    torch.testing.assert_close(
        mixed, math.sqrt(0.9) * field + math.sqrt(0.1) * only_shared, rtol=1e-12, atol=1e-12
    )
    assert torch.equal(kappa(ConsistentNoise(seed=fresh_seed, shared=0.0)), field)


def test_sdi_guidance_builds_every_research_strategy_by_name_with_its_options() -> None:
    """The one ``noise`` switch reaches every research strategy, with ``noise_options`` as its fields."""
    pytest.importorskip("omegaconf")
    from threestudio_standin.activate import standin_threestudio

    with standin_threestudio():
        from threestudio_sdi.threestudio.guidance import noise_strategy

        assert noise_strategy("newton-krylov", {"krylov_dim": 3}) == NewtonKrylovNoise(krylov_dim=3)
        assert noise_strategy("ode-target", {"steps": 4}) == OdeTarget("inversion", steps=4)
        assert noise_strategy("consistent-noise", {"shared": 0.1}) == ConsistentNoise(shared=0.1)
        with pytest.raises(ValueError, match="system.guidance.noise='safeguarded-anderson'.*memry"):
            noise_strategy("safeguarded-anderson", {"memry": 2})


def _one_camera(azimuth: float) -> Any:
    full = torch.ones(1, dtype=torch.float64)
    return make_cameras(20.0 * full, azimuth * full, 2.0 * full, 50.0 * full)


def test_the_rendered_field_is_standard_normal_per_pixel(fresh_seed: int) -> None:
    """κ is linear in the field's values, κ_p = Σ_j c_pj n_j, and the whitening makes Σ_j c_pj² = 1 for
    every pixel and channel, whatever the asset: so κ_p ~ N(0, 1) exactly."""
    generator = torch.Generator().manual_seed(fresh_seed)
    resolution = 6
    field = NoiseField(
        torch.randn(3, resolution, resolution, resolution, generator=generator, dtype=torch.float64),
        torch.randn(3, 8, 16, generator=generator, dtype=torch.float64),
    )
    density = 3 * torch.rand(8, 8, 8, generator=generator, dtype=torch.float64)  # partly transparent
    settings = RenderSettings(image_size=5, samples_per_ray=24)
    cameras = _one_camera(float(torch.rand((), generator=generator)) * 360 - 180)

    def kappa(voxels: Tensor, background: Tensor) -> Tensor:
        return render_noise(NoiseField(voxels, background), density, cameras, settings).flatten()

    jacobian_voxels, jacobian_background = torch.autograd.functional.jacobian(
        kappa, (field.voxels, field.background), vectorize=True
    )
    squared = jacobian_voxels.flatten(1).pow(2).sum(1) + jacobian_background.flatten(1).pow(2).sum(1)
    torch.testing.assert_close(squared, torch.ones_like(squared), rtol=1e-12, atol=1e-12)


def _background_cell(field: NoiseField, direction: Tensor) -> Tensor:
    """Independent: the (elevation row, azimuth column) cell of a unit direction, in degrees."""
    height, width = field.background.shape[-2:]
    x, y, z = (float(v) for v in direction)
    azimuth = math.degrees(math.atan2(y, x)) + 180.0
    elevation = math.degrees(math.asin(max(-1.0, min(1.0, z)))) + 90.0
    column = min(int(azimuth / 360.0 * width), width - 1)
    row = min(int(elevation / 180.0 * height), height - 1)
    return field.background[:, row, column]


def test_an_empty_asset_shows_the_background_and_an_opaque_one_its_first_voxel() -> None:
    field = draw_noise_field(seed=3, resolution=16, background_size=(16, 32))
    settings = RenderSettings(image_size=6, samples_per_ray=32)
    cameras = _one_camera(40.0)
    origins, directions = camera_rays(cameras, settings.image_size)
    rays = directions[0].reshape(-1, 3).float()
    empty = render_noise(field, torch.zeros(8, 8, 8), cameras, settings)[0].reshape(3, -1)
    for p in range(rays.shape[0]):
        torch.testing.assert_close(empty[:, p], _background_cell(field, rays[p]), rtol=0, atol=1e-6)
    opaque = render_noise(field, torch.full((8, 8, 8), 1e4), cameras, settings)[0].reshape(3, -1)
    origin = origins[0].float().expand_as(rays)
    near, far = ray_box_interval(origin, rays)
    first = origin + (near + 0.5 * (far - near) / settings.samples_per_ray)[:, None] * rays
    index = ((first + 1) / 2 * 15).round().long()  # the lattice spans the box [−1, 1]³, 16 points a side
    expected = field.voxels[:, index[:, 2], index[:, 1], index[:, 0]]
    torch.testing.assert_close(opaque, expected, rtol=0, atol=1e-5)


def test_asset_noise_needs_the_cameras() -> None:
    model = GaussianModel(shape=(3, 4, 4))
    noise = AssetNoise(draw_noise_field(0, resolution=4), lambda: torch.zeros(4, 4, 4), RenderSettings(4, 4))
    step = step_context(model, torch.zeros(1, 3, 4, 4), 500, Conditioning(), GuidanceConfig())
    with pytest.raises(ValueError, match="cameras"):
        noise(step)


# ------------------------------------------------------------------ ode-target
def test_the_ode_grid() -> None:
    assert ode_grid(500, 0, 6) == [500, 400, 300, 200, 100, 0]
    assert ode_grid(500, 0, 1) == [500]
    assert ode_grid(3, 0, 10) == [3, 2, 1, 0]  # duplicates dropped
    assert ode_grid(100, 300, 3) == [100]  # t_end above t is clamped to t


def test_a_one_point_ode_target_is_the_one_step_target(fresh_seed: int) -> None:
    digits = GaussianMixtureModel.from_digits()
    labels = torch.tensor([1, 8])
    z0 = digits.sample(2, labels, torch.Generator().manual_seed(fresh_seed))
    one_point = GuidanceConfig(noise=OdeTarget(make_strategy("inversion"), steps=1))
    outputs = [
        guidance_step(digits, z0, 700, Conditioning(cond=labels), config, generator=torch.Generator().manual_seed(fresh_seed))
        for config in (one_point, GuidanceConfig(noise="inversion"))
    ]  # fmt: skip
    assert torch.equal(outputs[0].target, outputs[1].target)
    assert outputs[0].model_evaluations == outputs[1].model_evaluations


def test_the_ode_target_converges_to_the_gaussians_flow(fresh_seed: int) -> None:
    """On the Gaussian the PF-ODE is solved in closed form, x̄(σ) = x̄(σ_t)·sqrt((λ + σ²)/(λ + σ_t²))
    with x̄ = x/sqrt(ᾱ): the k-point DDIM solve from x_t to t_end approaches it at first order in the
    step, spending k − 1 guided evaluations beyond the step's own prediction. (t_end = 20: down to 0 the
    faintest coordinates, λ ≈ 0.002, are still pre-asymptotic at 129 points, with ratios ≈ 0.35.)"""
    model = CountingModel(GaussianModel(shape=(1, 8, 8), exponent=1.5))
    schedule, t, t_end = model.schedule, 800, 20
    x_t = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(fresh_seed), dtype=torch.float64)
    variances = model.model.variances.view(1, 1, 8, 8)
    ratio = ((variances + schedule.sigma(t_end) ** 2) / (variances + schedule.sigma(t) ** 2)).sqrt()
    x_end = schedule.alpha_bar(t_end).sqrt() * x_t / schedule.alpha_bar(t).sqrt() * ratio
    exact = predict_x0(x_end, model.model.predict_noise(x_end, t_end), schedule.alpha_bar(t_end))
    step = step_context(model, x_t, t, Conditioning(), GuidanceConfig(), schedule)
    errors = []
    for k in (3, 9, 33, 129):
        model.calls = 0
        target, extra = solve_ode_target(step, x_t, model.model.predict_noise(x_t, t), ode_grid(t, t_end, k))
        assert extra == model.calls == k - 1
        errors.append(relative_error(target, exact))
    print("relative target error for 3, 9, 33, 129 points:", errors)
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert 0.2 < errors[-1] / errors[-2] < 0.35, errors  # first order: 4x the steps, ~1/4 the error
    assert errors[-1] < 0.015, errors


# ------------------------------------------------------------------ in the 3D lab
@pytest.mark.parametrize("name", sorted(RESEARCH_METHODS))
def test_each_research_method_runs_in_the_3d_lab(name: str) -> None:
    """A tiny lab (12³ grid, 16² px, 2 steps × 2 views): finite, and κ bound to the run where it must be."""
    distill = DistillSettings(steps=2, views_per_step=2)
    lab = Lab3D(LabSettings(grid_resolution=12, render=RenderSettings(16, 16), eval_views=2, distill=distill))
    method = get_method(name)
    run = RunContext(0, lambda: torch.zeros(12, 12, 12), lab.prior.render_settings)

    def noise_of(config: GuidanceConfig) -> Any:
        strategy = config.strategy
        return strategy.noise if isinstance(strategy, OdeTarget) else strategy

    if isinstance(noise_of(method.config), ConsistentNoise):
        assert noise_of(method.config).field is None  # by name: the fixed image
        assert isinstance(noise_of(method.run_config(run)).field, AssetNoise)  # bound to the run's asset
    else:
        assert method.run_config(run) is method.config
    result = distill_3d(lab.prior, method, 0, seed=1, settings=distill)
    assert result.grid.density.isfinite().all() and result.model_evaluations >= len(result.timesteps)


# ------------------------------------------------------------------ through a diffusers UNet
def test_the_research_strategies_run_through_the_tiny_stable_diffusion(tmp_path: Any) -> None:
    """Forward-mode AD (Newton–Krylov's JVPs) and the ODE solve go through diffusers' UNet, with CFG."""
    pytest.importorskip("diffusers")
    from threestudio_sdi.models import load_stable_diffusion
    from threestudio_sdi.testing.tiny_sd import tiny_stable_diffusion

    parts = load_stable_diffusion(tiny_stable_diffusion(tmp_path / "tiny-sd"), local_files_only=True)
    cond, uncond = parts.prompts.encode(["a cat"]), parts.prompts.encode([""])
    conditioning = Conditioning(cond=cond.expand(2, -1, -1), uncond=uncond.expand(2, -1, -1))
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    plain = guidance_step(parts.model, z0, 700, conditioning, GuidanceConfig(noise="inversion"))
    for noise in ("newton-krylov", "safeguarded-anderson", "ode-target"):
        out = guidance_step(parts.model, z0, 700, conditioning, GuidanceConfig(noise=noise))
        assert out.target.isfinite().all() and not out.nonfinite, noise
        assert out.model_evaluations > plain.model_evaluations, noise


def test_the_shared_preference_is_the_variant_whose_mean_colour_g_favours(fresh_seed: int) -> None:
    """Independently: the mean colours from the truth turntables, g from the strategy's own component."""
    lab = Lab3D(LabSettings(grid_resolution=12, render=RenderSettings(16, 16), eval_views=3))
    class_index = fresh_seed % 3
    seed = fresh_seed % 1000
    rows = lab.truth_turntables(class_index)
    means = torch.stack([v.double().mean(dim=(0, 2, 3)) for k, v in rows.items() if k.startswith("truth")])
    step = step_context(
        None, torch.zeros(1, 3, 2, 2), 500, Conditioning(), GuidanceConfig(), NoiseSchedule.stable_diffusion()
    )
    g = ConsistentNoise(seed=seed, shared=1.0).shared_component(step)[0, :, 0, 0]
    expected = ((means - means.mean(dim=0)) @ g).tolist()
    choice, scores = shared_preference(lab, class_index, seed)
    assert scores == pytest.approx(expected, abs=1e-4) and choice == max(
        range(len(expected)), key=expected.__getitem__
    )
