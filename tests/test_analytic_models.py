"""Known-answer tests of the analytic denoisers (GaussianModel, GaussianMixtureModel).

Exactness: ε̂ must equal −sqrt(1−ᾱ) ∇ log p_t computed by autograd from an explicit float64 density
(a torch.distributions.MultivariateNormal mixture). Statistical tests draw a fresh seed (printed, so a
failure can be replayed) and use margins measured over 200 seeds (noted at each assertion).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from threestudio_sdi.prediction import epsilon_from_output, output_from_epsilon, predict_x0
from threestudio_sdi.schedule import NoiseSchedule
from threestudio_sdi.testing.gaussian import GaussianModel
from threestudio_sdi.testing.mixture import GaussianMixtureModel, load_digits_images

TIMESTEPS = [-99, 0, 1, 20, 250, 500, 999]
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


@pytest.fixture
def generator(fresh_seed: int) -> torch.Generator:
    """A generator on a fresh seed (conftest's ``fresh_seed``, printed and reported on failure)."""
    return torch.Generator().manual_seed(fresh_seed)


@pytest.fixture(scope="module")
def digits() -> GaussianMixtureModel:
    return GaussianMixtureModel.from_digits()


def mixed_timesteps(batch: int, generator: torch.Generator) -> torch.Tensor:
    t = torch.randint(-99, 1000, (batch,), generator=generator)
    t[:3] = torch.tensor([-99, 0, 999])
    return t


def reference_epsilon(
    means: torch.Tensor,
    covariances: torch.Tensor,
    weights: torch.Tensor,
    x: torch.Tensor,
    alpha: torch.Tensor,
) -> torch.Tensor:
    """−sqrt(1−ᾱ) ∇ log Σ_k π_k N(x; sqrt(ᾱ) μ_k, ᾱ Σ_k + (1−ᾱ) I) by autograd, per sample (x: [B, d]).

    ``weights`` is [K] or per sample [B, K]; a zero weight drops the component.
    """
    dim = means.shape[1]
    a = alpha.reshape(-1, 1, 1, 1)
    x = x.detach().clone().requires_grad_(True)
    components = MultivariateNormal(
        a[..., 0].sqrt() * means,
        covariance_matrix=a * covariances + (1 - a) * torch.eye(dim, dtype=torch.float64),
        validate_args=False,
    )  # batch shape [B, K]
    log_weights = weights.log() - weights.sum(-1, keepdim=True).log()
    log_p = torch.logsumexp(log_weights + components.log_prob(x[:, None, :]), dim=1)
    (gradient,) = torch.autograd.grad(log_p.sum(), x)
    return -(1 - alpha[:, None]).sqrt() * gradient


def random_mixture(generator: torch.Generator, dim: int = 6) -> dict[str, torch.Tensor]:
    """Five components in three classes; component 2 has a rank-2 (singular) covariance."""
    count = 5
    factors = torch.randn(count, dim, dim, generator=generator, dtype=torch.float64)
    factors[2, :, 2:] = 0
    covariances = factors @ factors.transpose(1, 2) / dim
    covariances[[0, 1, 3, 4]] += 0.05 * torch.eye(dim, dtype=torch.float64)
    return {
        "means": 1.5 * torch.randn(count, dim, generator=generator, dtype=torch.float64),
        "covariances": covariances,
        "weights": torch.rand(count, generator=generator, dtype=torch.float64) + 0.2,
        "classes": torch.tensor([0, 1, 0, 2, 1]),
    }


def alpha_of(schedule: NoiseSchedule, t: int | torch.Tensor, batch: int) -> torch.Tensor:
    return schedule.alpha_bar(t).to(torch.float64).expand(batch)


# --- exact ε -------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [*TIMESTEPS, "mixed"])
def test_gaussian_epsilon_is_exact_score(t: int | str, generator: torch.Generator) -> None:
    model = GaussianModel(shape=(1, 4, 4), exponent=1.5)
    batch = 6
    t_arg = mixed_timesteps(batch, generator) if t == "mixed" else t
    x = 2 * torch.randn(batch, 1, 4, 4, generator=generator, dtype=torch.float64)
    alpha = alpha_of(model.schedule, t_arg, batch)
    expected = reference_epsilon(
        torch.zeros(1, 16, dtype=torch.float64),
        torch.diag(model.variances)[None],
        torch.ones(1),
        x.reshape(batch, 16),
        alpha,
    )
    assert torch.allclose(
        model.predict_noise(x, t_arg, None).reshape(batch, 16), expected, rtol=0, atol=1e-10
    )
    # cond is ignored: the model is unconditional
    assert torch.equal(model.predict_noise(x, t_arg, 3), model.predict_noise(x, t_arg, None))


def test_gaussian_closed_form_values() -> None:
    """ε = sqrt(1−ᾱ) x / (ᾱ λ + 1 − ᾱ) at one hand-checked point: λ = (1, 2^-2), ᾱ = 0.36."""
    schedule = NoiseSchedule.from_alphas_cumprod(torch.tensor([0.64, 0.36]))
    model = GaussianModel(shape=(2,), exponent=2.0, schedule=schedule)
    eps = model.predict_noise(torch.tensor([[1.0, 1.0]], dtype=torch.float64), 1, None)
    assert torch.allclose(
        eps, torch.tensor([[0.8 / 1.0, 0.8 / (0.36 / 4 + 0.64)]], dtype=torch.float64), atol=1e-15
    )


@pytest.mark.parametrize("cond", [None, 0, 2, "per-sample"])
@pytest.mark.parametrize("t", [-99, 0, 600, 999, "mixed"])
def test_mixture_epsilon_is_exact_score(
    t: int | str, cond: int | str | None, generator: torch.Generator
) -> None:
    parameters = random_mixture(generator)
    model = GaussianMixtureModel(**parameters, shape=(2, 3))
    batch = 8
    t_arg = mixed_timesteps(batch, generator) if t == "mixed" else t
    labels = torch.randint(0, 3, (batch,), generator=generator)
    cond_arg = labels if cond == "per-sample" else cond
    x = 2 * torch.randn(batch, 2, 3, generator=generator, dtype=torch.float64)
    alpha = alpha_of(model.schedule, t_arg, batch)
    weights = parameters["weights"].expand(batch, -1)
    if cond is not None:  # p_t(x | y): only the class's components, renormalised
        label = labels if cond == "per-sample" else torch.full((batch,), cond)
        weights = weights * (parameters["classes"][None, :] == label[:, None])
    expected = reference_epsilon(
        parameters["means"], parameters["covariances"], weights, x.reshape(batch, 6), alpha
    )
    output = model.predict_noise(x, t_arg, cond_arg).reshape(batch, 6)
    assert torch.allclose(output, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cond", [None, 7])
def test_digits_epsilon_is_exact_score(
    digits: GaussianMixtureModel, cond: int | None, generator: torch.Generator
) -> None:
    images, _ = load_digits_images()
    batch = 6
    t = mixed_timesteps(batch, generator)
    alpha = alpha_of(digits.schedule, t, batch)
    x0 = images[torch.randint(0, images.shape[0], (batch,), generator=generator)]
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    x_t = alpha.view(-1, 1, 1, 1).sqrt() * x0 + (1 - alpha).view(-1, 1, 1, 1).sqrt() * noise
    keep = torch.ones(10, dtype=torch.bool) if cond is None else digits.classes == cond
    expected = reference_epsilon(
        digits.means[keep], digits.covariances[keep], digits.weights[keep], x_t.reshape(batch, 64), alpha
    )
    assert torch.allclose(digits.predict_noise(x_t, t, cond).reshape(batch, 64), expected, rtol=0, atol=1e-10)


def test_per_sample_timesteps_match_single_timesteps(
    digits: GaussianMixtureModel, generator: torch.Generator
) -> None:
    """A LongTensor[B] of timesteps (some repeated) equals one call per sample."""
    x = torch.randn(12, 1, 8, 8, generator=generator, dtype=torch.float64)
    t = torch.tensor([5, 5, 5, 5, 5, 5, 5, 5, 900, 900, -99, 300])
    labels = torch.randint(0, 10, (12,), generator=generator)
    batched = digits.predict_noise(x, t, labels)
    for b in range(12):
        single = digits.predict_noise(x[b : b + 1], int(t[b]), int(labels[b]))
        assert torch.allclose(batched[b : b + 1], single, rtol=0, atol=1e-12)


# --- prediction types ------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("kind", ["gaussian", "mixture"])
def test_prediction_types_encode_the_same_epsilon(
    kind: str, prediction_type: str, generator: torch.Generator
) -> None:
    def build(prediction: str) -> GaussianModel | GaussianMixtureModel:
        if kind == "gaussian":
            return GaussianModel(prediction_type=prediction)
        return GaussianMixtureModel(
            **random_mixture(torch.Generator().manual_seed(0), dim=64),
            shape=(1, 8, 8),
            prediction_type=prediction,
        )

    model, reference = build(prediction_type), build("epsilon")
    batch = 8
    t = mixed_timesteps(batch, generator)
    cond = None if kind == "gaussian" else torch.randint(0, 3, (batch,), generator=generator)
    x = torch.randn(batch, 1, 8, 8, generator=generator, dtype=torch.float64)
    alpha = alpha_of(model.schedule, t, batch).view(-1, 1, 1, 1)
    eps = reference.predict_noise(x, t, cond)
    output = model.predict_noise(x, t, cond)
    assert model.prediction_type == prediction_type
    assert torch.allclose(epsilon_from_output(output, x, alpha, prediction_type), eps, rtol=0, atol=1e-10)
    x0 = predict_x0(x, eps, alpha)
    spelled_out = {"epsilon": eps, "sample": x0, "v_prediction": alpha.sqrt() * eps - (1 - alpha).sqrt() * x0}
    assert torch.allclose(output, spelled_out[prediction_type], rtol=1e-10, atol=1e-10)


def test_output_from_epsilon_inverts_epsilon_from_output(generator: torch.Generator) -> None:
    x = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    eps = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    alpha = torch.tensor([0.999, 0.5, 0.1, 0.005], dtype=torch.float64)[:, None]
    for prediction_type in PREDICTION_TYPES:
        output = output_from_epsilon(eps, x, alpha, prediction_type)
        assert torch.allclose(epsilon_from_output(output, x, alpha, prediction_type), eps, atol=1e-12)
    with pytest.raises(ValueError, match="prediction_type"):
        output_from_epsilon(eps, x, alpha, "x0")


def test_float32_input_keeps_its_dtype(digits: GaussianMixtureModel) -> None:
    x = torch.randn(3, 1, 8, 8)
    assert digits.predict_noise(x, 10, 2).dtype == torch.float32
    assert GaussianModel().predict_noise(x, 10, None).dtype == torch.float32


# --- Gaussian spectrum -----------------------------------------------------------------------------


@pytest.mark.parametrize(("dim", "n_bands"), [(1, 1), (5, 5), (64, 4), (64, 1), (1000, 7), (7, 6)])
def test_frequency_bands_partition_the_image(dim: int, n_bands: int) -> None:
    bands = GaussianModel(shape=(dim,)).frequency_bands(n_bands)
    assert len(bands) == n_bands and all(band.numel() > 0 for band in bands)
    assert torch.equal(torch.cat(bands), torch.arange(dim))


def test_frequency_bands_are_log_spaced() -> None:
    bands = GaussianModel().frequency_bands(4)
    assert [band.tolist() for band in bands][:2] == [[0, 1], [2, 3, 4, 5, 6]]
    assert (bands[2][0].item(), bands[3][0].item()) == (7, 22)


def test_band_variance_ratio_of_true_samples_is_one(generator: torch.Generator) -> None:
    model = GaussianModel()
    samples = model.sample(20000, generator=generator)
    assert samples.shape == (20000, 1, 8, 8) and samples.dtype == torch.float64
    ratio = model.band_variance_ratio(samples)
    # max |ratio − 1| over 200 seeds: 0.023 (std of the 2-frequency band ≈ 0.007)
    assert torch.allclose(ratio, torch.ones(4, dtype=torch.float64), atol=0.05), ratio
    assert torch.allclose(model.band_variance_ratio(0.5 * samples), 0.25 * ratio, rtol=1e-12)
    damped = samples.reshape(20000, 64).clone()
    damped[:, model.frequency_bands()[3]] = 0
    assert model.band_variance_ratio(damped.reshape(samples.shape))[3] == 0


# --- mixture sampling and classes --------------------------------------------------------------


def test_mixture_samples_have_the_class_moments(generator: torch.Generator) -> None:
    parameters = random_mixture(generator, dim=3)
    model = GaussianMixtureModel(**parameters)
    n = 20000
    samples = model.sample(n, cond=2, generator=generator)  # class 2 = component 3 only
    mean, covariance = parameters["means"][3], parameters["covariances"][3]
    standard_error = (covariance.diagonal() / n).sqrt()
    assert ((samples.mean(0) - mean).abs() < 5 * standard_error).all()
    assert torch.allclose(samples.T.cov(), covariance, atol=0.06 * covariance.diagonal().max().item())
    mixture_samples = model.sample(n, generator=generator)
    weights = parameters["weights"] / parameters["weights"].sum()
    assert torch.allclose(mixture_samples.mean(0), weights @ parameters["means"], atol=0.15)


def test_class_log_posterior_is_bayes_rule(generator: torch.Generator) -> None:
    parameters = random_mixture(generator)
    parameters["covariances"][2] += 0.1 * torch.eye(6, dtype=torch.float64)  # positive definite
    model = GaussianMixtureModel(**parameters)
    x0 = model.sample(10, generator=generator)
    joint = torch.log(parameters["weights"] / parameters["weights"].sum()) + MultivariateNormal(
        parameters["means"], parameters["covariances"]
    ).log_prob(x0[:, None, :])
    expected = torch.stack(
        [joint[:, parameters["classes"] == c].logsumexp(1) - joint.logsumexp(1) for c in range(3)], dim=1
    )
    assert torch.allclose(model.class_log_posterior(x0), expected, atol=1e-10)


def test_digits_model(digits: GaussianMixtureModel) -> None:
    images, labels = load_digits_images()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float64 and labels.dtype == torch.long
    assert (
        images.min() == -1 and images.max() == 1 and torch.equal((images + 1) * 8, ((images + 1) * 8).round())
    )
    assert digits.num_classes == 10 and digits.shape == (1, 8, 8) and digits.num_components == 10
    assert torch.allclose(digits.weights, torch.bincount(labels).double() / 1797)
    assert torch.allclose(digits.means[3], images[labels == 3].reshape(-1, 64).mean(0))
    assert torch.allclose(digits.eigenvalues.min(), torch.tensor(2e-2, dtype=torch.float64))
    assert torch.equal(digits.alphas_cumprod, NoiseSchedule.stable_diffusion().alphas_cumprod)
    assert digits.initial_alpha_cumprod == digits.alphas_cumprod[0].item() and digits.steps_offset == 1


def test_digit_samples_are_new_digits_of_their_class(
    digits: GaussianMixtureModel, generator: torch.Generator
) -> None:
    classes = torch.arange(10).repeat_interleave(20)
    samples = digits.sample(200, cond=classes, generator=generator)
    assert samples.shape == (200, 1, 8, 8)
    predicted = digits.class_log_posterior(samples).argmax(dim=1)
    accuracy = (predicted == classes).double().mean().item()
    assert accuracy >= 0.98, accuracy  # 40,000 samples over 200 seeds: all classified correctly

    images, _ = load_digits_images()
    train = images.reshape(-1, 64)
    distances = torch.cdist(train, train).fill_diagonal_(math.inf)
    typical = distances.min(dim=1).values.median().item()  # 2.02: distinct training digits, nearest pairs
    nearest = torch.cdist(samples.reshape(200, 64), train).min(dim=1).values
    # the closest of 200 samples to any training image, over 200 seeds: ≥ 1.49 (0.74 × typical)
    assert nearest.min().item() > 0.5 * typical, (nearest.min().item(), typical)


def test_from_digits_forwards_options() -> None:
    schedule = NoiseSchedule.from_alphas_cumprod(torch.linspace(0.99, 0.01, 50, dtype=torch.float64))
    model = GaussianMixtureModel.from_digits(ridge=0.05, schedule=schedule, prediction_type="v_prediction")
    assert model.schedule is schedule and model.prediction_type == "v_prediction"
    assert torch.allclose(model.eigenvalues.min(), torch.tensor(0.05, dtype=torch.float64))


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (0, 8)}, "shape"),
        ({"shape": 8}, "shape"),
        ({"exponent": math.nan}, "exponent"),
        ({"prediction_type": "x0"}, "prediction_type"),
        ({"schedule": "stable-diffusion"}, "schedule"),
        ({"dtype": torch.int64}, "dtype"),
    ],
)
def test_gaussian_rejects_bad_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GaussianModel(**kwargs)


def test_gaussian_rejects_bad_inputs() -> None:
    model = GaussianModel()
    with pytest.raises(ValueError, match=r"x_t must have shape \[B, 1, 8, 8\].*\(1, 8, 8\).*\(2, 64\)"):
        model.predict_noise(torch.zeros(2, 64), 10, None)
    with pytest.raises(ValueError, match="t must be an int or an integer tensor"):
        model.predict_noise(torch.zeros(2, 1, 8, 8), torch.tensor([1.0, 2.0]), None)
    with pytest.raises(ValueError, match=r"t must be an int or a tensor of shape \[2\]"):
        model.predict_noise(torch.zeros(2, 1, 8, 8), torch.tensor([1, 2, 3]), None)
    with pytest.raises(ValueError, match="timestep 1000"):
        model.predict_noise(torch.zeros(2, 1, 8, 8), 1000, None)
    with pytest.raises(ValueError, match="n_bands"):
        model.frequency_bands(0)
    with pytest.raises(ValueError, match="n_bands"):
        model.frequency_bands(65)
    with pytest.raises(ValueError, match="samples"):
        model.band_variance_ratio(torch.zeros(10, 64))
    with pytest.raises(ValueError, match="n must be >= 1"):
        model.sample(0)


def bad_mixture(name: str) -> dict:
    parameters = random_mixture(torch.Generator().manual_seed(0))
    if name == "means-ndim":
        parameters["means"] = parameters["means"][0]
    elif name == "means-nan":
        parameters["means"][1, 2] = math.nan
    elif name == "covariances-K":
        parameters["covariances"] = parameters["covariances"][:4]
    elif name == "covariances-psd":
        parameters["covariances"][1] -= (
            2 * torch.eye(6, dtype=torch.float64) * parameters["covariances"][1].diagonal().max()
        )
    elif name == "covariances-symmetric":
        parameters["covariances"][4, 0, 1] += 0.5
    elif name == "weights-K":
        parameters["weights"] = parameters["weights"][:3]
    elif name == "weights-positive":
        parameters["weights"][3] = 0.0
    elif name == "classes-K":
        parameters["classes"] = torch.tensor([0, 1, 2])
    elif name == "classes-negative":
        parameters["classes"] = torch.tensor([0, 1, -1, 2, 1])
    elif name == "classes-gap":
        parameters["classes"] = torch.tensor([0, 1, 0, 3, 1])
    elif name == "classes-float":
        parameters["classes"] = torch.tensor([0.0, 1.0, 0.0, 2.0, 1.0])
    elif name == "shape":
        parameters["shape"] = (1, 8, 8)
    elif name == "prediction_type":
        parameters["prediction_type"] = "noise"
    return parameters


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("means-ndim", r"means must have shape \[K, d\]"),
        ("means-nan", "means contains NaN"),
        ("covariances-K", r"covariances must have shape \[K, d, d\] = \(5, 6, 6\).*\(4, 6, 6\)"),
        ("covariances-psd", r"covariances\[1\] must be positive semi-definite"),
        ("covariances-symmetric", r"covariances\[4\] must be symmetric"),
        ("weights-K", r"weights must have shape \[K\] = \(5,\).*\(3,\)"),
        ("weights-positive", "weights must be positive, got 0.0"),
        ("classes-K", r"classes must have shape \[K\]"),
        ("classes-negative", "classes must be >= 0, got -1"),
        ("classes-gap", r"classes must give every class 0..3 a component; missing \[2\]"),
        ("classes-float", "classes must be an integer tensor"),
        ("shape", r"shape \(1, 8, 8\) has 64 elements but means have d = 6"),
        ("prediction_type", "prediction_type"),
    ],
)
def test_mixture_rejects_bad_arguments(name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GaussianMixtureModel(**bad_mixture(name))


def test_mixture_rejects_bad_inputs(digits: GaussianMixtureModel) -> None:
    x = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"cond must be a class index in 0..9, got 10"):
        digits.predict_noise(x, 10, 10)
    with pytest.raises(ValueError, match=r"cond must be a class index in 0..9, got -1"):
        digits.predict_noise(x, 10, torch.tensor([3, -1]))
    with pytest.raises(ValueError, match=r"cond must be an int or a tensor of shape \[2\]"):
        digits.predict_noise(x, 10, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="cond must be a class index or an integer tensor"):
        digits.predict_noise(x, 10, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="cond must be None, a class index"):
        digits.predict_noise(x, 10, "a photo of a seven")
    with pytest.raises(ValueError, match="cond must be a class index in 0..9, got 12"):
        digits.sample(4, cond=12)
    with pytest.raises(ValueError, match=r"x_t must have shape \[B, 1, 8, 8\]"):
        digits.predict_noise(torch.zeros(2, 8, 8), 10, None)
    with pytest.raises(ValueError, match=r"x0 must have shape \[B, 1, 8, 8\]"):
        digits.class_log_posterior(torch.zeros(2, 64))
    with pytest.raises(ValueError, match="ridge"):
        GaussianMixtureModel.from_digits(ridge=-0.01)
    singular = GaussianMixtureModel(**random_mixture(torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match=r"positive-definite covariances; covariances\[2\] is singular"):
        singular.class_log_posterior(torch.zeros(1, 6))
