"""The exact view-conditioned prior: ε is −sqrt(1−ᾱ)∇log p_t in float64, its samples are true renders."""

from __future__ import annotations

import math

import pytest
import torch

from threestudio_sdi.classifier_free import Conditioning, guided_epsilon
from threestudio_sdi.ddim import ddim_timesteps, sample_ddim
from threestudio_sdi.experimental.lab3d.assets import make_assets
from threestudio_sdi.experimental.lab3d.cameras import CameraRanges, make_cameras, sample_cameras
from threestudio_sdi.experimental.lab3d.prior import ExactViewPrior, ViewInconsistentPrior
from threestudio_sdi.experimental.lab3d.renderer import RenderSettings, VoxelGrid, render
from threestudio_sdi.prediction import epsilon_from_output
from threestudio_sdi.score_distillation import GuidanceConfig, guidance_step

SETTINGS = RenderSettings(image_size=12, samples_per_ray=24)


@pytest.fixture(scope="module")
def assets():
    return make_assets(resolution=12, variants_per_class=3)


def _priors(assets, **kwargs) -> list[ExactViewPrior]:
    return [
        ExactViewPrior(assets, SETTINGS, **kwargs),
        ViewInconsistentPrior(assets, SETTINGS, temperature=0.5, **kwargs),
    ]


def _noisy_renders(
    prior: ExactViewPrior, cameras, t: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """x_t around the renders of random assets (so every component matters somewhere)."""
    batch = cameras.batch_size
    means = prior.variant_renders(cameras)
    pick = torch.randint(0, means.shape[1], (batch,), generator=generator)
    x0 = means[torch.arange(batch), pick] + 0.3 * torch.randn(
        batch, *prior.shape, generator=generator, dtype=torch.float64
    )
    alpha = prior.schedule.alpha_bar(t).to(torch.float64).view(-1, 1, 1, 1)
    noise = torch.randn(batch, *prior.shape, generator=generator, dtype=torch.float64)
    return alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise


@pytest.mark.parametrize("cond_kind", ["none", "int", "per-view"])
def test_epsilon_is_minus_scaled_autograd_of_the_log_density(assets, cond_kind: str, fresh_seed: int) -> None:
    generator = torch.Generator().manual_seed(fresh_seed)
    cameras = sample_cameras(5, CameraRanges(), generator)
    t = torch.tensor([999, 700, 400, 120, 3])
    cond = {"none": None, "int": 1, "per-view": torch.tensor([0, 2, 1, 1, 0])}[cond_kind]
    for prior in _priors(assets):
        x_t = _noisy_renders(prior, cameras, t, generator).requires_grad_()
        log_density = prior.log_density(x_t, t, cond, cameras=cameras)
        (gradient,) = torch.autograd.grad(log_density.sum(), x_t)
        alpha = prior.schedule.alpha_bar(t).to(torch.float64).view(-1, 1, 1, 1)
        expected = -(1 - alpha).sqrt() * gradient
        epsilon = prior.predict_noise(x_t.detach(), t, cond, cameras=cameras)
        assert epsilon.dtype == torch.float64
        torch.testing.assert_close(epsilon, expected, rtol=1e-9, atol=1e-12)


def test_log_density_is_the_mixture_of_the_assets_renders(assets, fresh_seed: int) -> None:
    """An independent reference: each asset rendered alone, Normal log-densities summed, logsumexp."""
    generator = torch.Generator().manual_seed(fresh_seed)
    cameras = sample_cameras(3, CameraRanges(), generator)
    t = 500
    prior = ViewInconsistentPrior(assets, SETTINGS, noise_std=0.2, temperature=0.5)
    x_t = _noisy_renders(prior, cameras, torch.full((3,), t), generator)
    alpha = float(prior.schedule.alpha_bar(t))
    std = math.sqrt(alpha * 0.2**2 + 1 - alpha)
    for cond in (None, 2):
        terms = []
        for k in range(assets.num_assets):
            if cond is not None and assets.classes[k] != cond:
                continue
            grid = VoxelGrid(assets.grid.density[k], assets.grid.colour[k])
            mean = math.sqrt(alpha) * render(grid, cameras, SETTINGS).rgb
            log_normal = torch.distributions.Normal(mean, std).log_prob(x_t).flatten(1).sum(1)
            members = assets.members(int(assets.classes[k]))
            azimuth = torch.deg2rad(cameras.azimuth[:, None] - (-180.0 + 360.0 * torch.arange(3) / 3))
            within = torch.log_softmax(torch.cos(azimuth) / 0.5, dim=-1)[:, list(members).index(k)]
            class_weight = 0.0 if cond is not None else -math.log(assets.num_classes)
            terms.append(within + class_weight + log_normal)
        reference = torch.stack(terms, dim=-1).logsumexp(-1)
        torch.testing.assert_close(
            prior.log_density(x_t, t, cond, cameras=cameras), reference, rtol=1e-12, atol=1e-9
        )


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_other_prediction_types_encode_the_same_epsilon(
    assets, prediction_type: str, fresh_seed: int
) -> None:
    generator = torch.Generator().manual_seed(fresh_seed)
    cameras = sample_cameras(2, CameraRanges(), generator)
    t = torch.tensor([800, 50])
    epsilon_prior = ExactViewPrior(assets, SETTINGS)
    other = ExactViewPrior(assets, SETTINGS, prediction_type=prediction_type)
    x_t = _noisy_renders(epsilon_prior, cameras, t, generator)
    alpha = epsilon_prior.schedule.alpha_bar(t).to(torch.float64).view(-1, 1, 1, 1)
    decoded = epsilon_from_output(
        other.predict_noise(x_t, t, 0, cameras=cameras), x_t, alpha, prediction_type
    )
    torch.testing.assert_close(
        decoded, epsilon_prior.predict_noise(x_t, t, 0, cameras=cameras), rtol=1e-9, atol=1e-10
    )


def test_batched_branches_equal_separate_calls(assets, fresh_seed: int) -> None:
    generator = torch.Generator().manual_seed(fresh_seed)
    cameras = sample_cameras(3, CameraRanges(), generator)
    prior = ExactViewPrior(assets, SETTINGS)
    x_t = _noisy_renders(prior, cameras, torch.full((3,), 300), generator)
    conds = [None, torch.tensor([2, 0, 1]), 1]
    batched = prior.predict_noise_batched(x_t, 300, conds, cameras=cameras)
    for cond, output in zip(conds, batched):
        torch.testing.assert_close(
            output, prior.predict_noise(x_t, 300, cond, cameras=cameras), rtol=0, atol=0
        )


def test_ddim_samples_of_a_class_are_renders_of_its_variants(assets, fresh_seed: int) -> None:
    """The prior as a diffusion model: DDIM from x_T lands within ~s of one true render of the class."""
    generator = torch.Generator().manual_seed(fresh_seed)
    cameras = sample_cameras(6, CameraRanges(), generator)
    noise_std = 0.05
    prior = ExactViewPrior(assets, SETTINGS, noise_std=noise_std)
    x_T = torch.randn(6, *prior.shape, generator=generator, dtype=torch.float64)
    conditioning = Conditioning(cond=2, cameras=cameras)
    x0 = sample_ddim(prior, x_T, ddim_timesteps(50, 1000, "leading", 1), conditioning, 1.0, disable=True)
    means = prior.variant_renders(cameras)[:, assets.members(2)]  # [B, 3, ...]
    distances = (x0[:, None] - means).flatten(2).pow(2).mean(-1).sqrt()  # RMS per pixel, [B, 3]
    nearest = distances.min(dim=1).values
    # The flow maps N(0, I) onto N(μ_k, s² I), and DDIM's last output is x̂0 at t = 1, E[x0 | x_1], whose
    # RMS distance to μ_k is s² sqrt(ᾱ_1) / sqrt(ᾱ_1 s² + 1 − ᾱ_1) (≈ 0.77 s); 50 steps add a little error.
    alpha = float(prior.schedule.alpha_bar(1))
    expected = noise_std**2 * math.sqrt(alpha) / math.sqrt(alpha * noise_std**2 + 1 - alpha)
    print("RMS distance to the nearest variant:", nearest.tolist(), "expected", expected)
    assert ((nearest > 0.7 * expected) & (nearest < 1.2 * expected)).all(), nearest
    assert (distances.max(dim=1).values > 5 * noise_std).all()  # not an average of the variants


def test_cfg_and_a_guidance_step_run_on_the_prior(assets, fresh_seed: int) -> None:
    generator = torch.Generator().manual_seed(fresh_seed)
    cameras = sample_cameras(2, CameraRanges(), generator)
    prior = ExactViewPrior(assets, SETTINGS)
    x_t = _noisy_renders(prior, cameras, torch.full((2,), 600), generator)
    conditioning = Conditioning(cond=torch.tensor([1, 1]), cameras=cameras)
    # CFG at γ = 1 is the conditional prediction; at γ = 0 the unconditional one.
    conditional = prior.predict_noise(x_t, 600, conditioning.cond, cameras=cameras)
    unconditional = prior.predict_noise(x_t, 600, None, cameras=cameras)
    torch.testing.assert_close(guided_epsilon(prior, x_t, 600, conditioning, 1.0), conditional)
    torch.testing.assert_close(guided_epsilon(prior, x_t, 600, conditioning, 0.0), unconditional)
    z0 = prior.variant_renders(cameras)[:, 3].clone()  # a true render of class 1
    output = guidance_step(
        prior, z0, 500, conditioning, GuidanceConfig(preset="official"), generator=generator
    )
    assert output.target.shape == z0.shape and output.model_evaluations > 1
    assert output.loss.isfinite()


def test_variant_renders_are_cached_per_camera_batch(assets, fresh_seed: int) -> None:
    generator = torch.Generator().manual_seed(fresh_seed)
    cameras = sample_cameras(2, CameraRanges(), generator)
    prior = ExactViewPrior(assets, SETTINGS)
    first = prior.variant_renders(cameras)
    assert prior.variant_renders(cameras) is first
    equal = make_cameras(
        cameras.elevation.clone(), cameras.azimuth.clone(), cameras.distance.clone(), cameras.fovy.clone()
    )
    assert prior.variant_renders(equal) is first
    other = sample_cameras(2, CameraRanges(), generator)
    fresh = prior.variant_renders(other)
    assert fresh is not first and not torch.equal(fresh, first)
    assert fresh.shape == (2, assets.num_assets, *prior.shape)


def test_the_inconsistent_prior_prefers_the_variant_of_each_views_azimuth(assets) -> None:
    prior = ViewInconsistentPrior(assets, SETTINGS, temperature=0.1)
    homes = torch.tensor([-180.0, -60.0, 60.0])  # variant j's home azimuth −180° + 120° j
    cameras = make_cameras(torch.zeros(3), homes + 5.0, torch.full((3,), 1.8), torch.full((3,), 50.0))
    for class_index in range(assets.num_classes):
        assert prior.preferred_variants(cameras, class_index).tolist() == [0, 1, 2]
    weights = prior.variant_log_weights(cameras).exp()
    for class_index in range(assets.num_classes):
        torch.testing.assert_close(
            weights[:, assets.members(class_index)].sum(-1), torch.ones(3, dtype=torch.float64)
        )
    uniform = ExactViewPrior(assets, SETTINGS).variant_log_weights(cameras).exp()
    torch.testing.assert_close(uniform, torch.full_like(uniform, 1 / 3))


def test_bad_calls_are_named(assets) -> None:
    prior = ExactViewPrior(assets, SETTINGS)
    cameras = sample_cameras(2, CameraRanges(), torch.Generator().manual_seed(0))
    x_t = torch.zeros(2, *prior.shape, dtype=torch.float64)
    with pytest.raises(ValueError, match="needs cameras"):
        prior.predict_noise(x_t, 10, 0)
    with pytest.raises(ValueError, match="class index in 0..2"):
        prior.predict_noise(x_t, 10, 3, cameras=cameras)
    with pytest.raises(ValueError, match="cameras has 2 views but x_t has batch 1"):
        prior.predict_noise(x_t[:1], 10, 0, cameras=cameras)
    with pytest.raises(ValueError, match="noise_std"):
        ExactViewPrior(assets, SETTINGS, noise_std=0.0)
    with pytest.raises(ValueError, match="temperature"):
        ViewInconsistentPrior(assets, SETTINGS, temperature=-1.0)
