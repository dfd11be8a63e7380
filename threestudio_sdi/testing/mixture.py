"""An analytic class-conditional denoiser: a Gaussian mixture with exact noise prediction.

Component k has weight π_k, mean μ_k, covariance Σ_k and class y_k. With x_t = sqrt(ᾱ) x0 + sqrt(1−ᾱ) ε,

    p_t(x) = Σ_k π_k N(x; sqrt(ᾱ) μ_k, C_k),   C_k = ᾱ Σ_k + (1 − ᾱ) I,
    ε̂(x_t) = −sqrt(1−ᾱ) ∇ log p_t(x_t) = sqrt(1−ᾱ) Σ_k r_k(x_t) C_k⁻¹ (x_t − sqrt(ᾱ) μ_k),

with responsibilities r_k ∝ π_k N(x_t; sqrt(ᾱ) μ_k, C_k). Conditioning on a class y keeps only the
components with y_k = y (weights renormalised within the class), which is exactly p_t(x | y).

Each Σ_k = U_k diag(s_k) U_kᵀ is eigendecomposed once; C_k = U_k diag(ᾱ s_k + 1 − ᾱ) U_kᵀ is then
diagonal in the same basis for every ᾱ, so inverses and log-determinants cost O(d) per component and
a step is two matrix products ([B, d] × [d, K d] and back) plus a logsumexp over components.

:meth:`GaussianMixtureModel.from_digits` fits one component per class to scikit-learn's 8×8 digits.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..denoiser import PREDICTION_TYPES
from ..errors import check_choice, check_int, check_range
from ..models.protocol import ScheduledModel
from ..prediction import output_from_epsilon
from ..schedule import NoiseSchedule
from .gaussian import (
    alpha_bar_per_sample,
    check_batch,
    check_dtype,
    check_image_shape,
    check_schedule,
    class_components,
)

DIGITS_SHAPE = (1, 8, 8)
DEFAULT_DIGITS_RIDGE = 2e-2
"""Ridge added to every digit-class covariance (in the [−1, 1] pixel scale); see ``from_digits``."""


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[Any, Any]:
    from sklearn.datasets import load_digits  # lazy: scikit-learn is only needed for the digits

    digits = load_digits()
    return digits.data, digits.target


def load_digits_images() -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled 8×8 digits (1,797 images, pixel values 0..16) scaled to [−1, 1] by x/8 − 1.

    Returns (images float64 [N, 1, 8, 8], labels LongTensor [N]), fresh tensors on every call.
    """
    data, target = _digits_arrays()
    images = torch.tensor(data, dtype=torch.float64).reshape(-1, *DIGITS_SHAPE) / 8 - 1
    return images, torch.tensor(target, dtype=torch.long)


def _float_tensor(name: str, value: Any) -> Tensor:
    try:
        tensor = torch.as_tensor(value).detach().to("cpu", torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a real tensor, got {type(value).__name__}") from None
    if not tensor.isfinite().all():
        raise ValueError(f"{name} contains NaN or Inf ({int((~tensor.isfinite()).sum())} elements)")
    return tensor


class GaussianMixtureModel(ScheduledModel):
    """Class-conditional Gaussian mixture with exact noise prediction (see the module docstring).

    Implements :class:`threestudio_sdi.denoiser.Denoiser`; ``cond`` is None (the full
    mixture), a class index, or a LongTensor[B] of class indices.

    Args:
        means: Tensor[K, d], μ_k.
        covariances: Tensor[K, d, d], symmetric positive semi-definite Σ_k (positive definite for
            :meth:`class_log_posterior` and for ᾱ = 1).
        weights: Tensor[K] of positive mixture weights (normalised to sum to 1).
        classes: LongTensor[K], the class of each component; classes 0..max(classes) must each own at
            least one component.
        shape: image shape with prod(shape) = d (default (d,)).
        schedule: training schedule (default :meth:`NoiseSchedule.stable_diffusion`).
        prediction_type: ``"epsilon"``, ``"sample"`` (x̂0) or ``"v_prediction"``.
        dtype: dtype of the computation (default float64, for exact predictions).
    """

    def __init__(
        self,
        means: Tensor,
        covariances: Tensor,
        weights: Tensor,
        classes: Tensor,
        shape: Sequence[int] | None = None,
        schedule: NoiseSchedule | None = None,
        prediction_type: str = "epsilon",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        means = _float_tensor("means", means)
        if means.ndim != 2 or 0 in means.shape:
            raise ValueError(f"means must have shape [K, d] with K, d >= 1, got {tuple(means.shape)}")
        count, dim = means.shape
        covariances = _float_tensor("covariances", covariances)
        if tuple(covariances.shape) != (count, dim, dim):
            raise ValueError(
                f"covariances must have shape [K, d, d] = {(count, dim, dim)} to match means, "
                f"got {tuple(covariances.shape)}"
            )
        weights = _float_tensor("weights", weights)
        if tuple(weights.shape) != (count,):
            raise ValueError(
                f"weights must have shape [K] = ({count},) to match means, got {tuple(weights.shape)}"
            )
        if (weights <= 0).any():
            raise ValueError(f"weights must be positive, got {weights[weights <= 0][0].item()}")
        classes = torch.as_tensor(classes).detach().cpu()
        if classes.dtype.is_floating_point or classes.dtype.is_complex or classes.dtype == torch.bool:
            raise ValueError(f"classes must be an integer tensor, got dtype {classes.dtype}")
        classes = classes.long()
        if tuple(classes.shape) != (count,):
            raise ValueError(
                f"classes must have shape [K] = ({count},) to match means, got {tuple(classes.shape)}"
            )
        if (classes < 0).any():
            raise ValueError(f"classes must be >= 0, got {classes.min().item()}")
        self.num_classes = int(classes.max()) + 1
        missing = sorted(set(range(self.num_classes)) - set(classes.tolist()))
        if missing:
            raise ValueError(
                f"classes must give every class 0..{self.num_classes - 1} a component; missing {missing}"
            )

        self.shape = (dim,) if shape is None else check_image_shape("shape", shape)
        if math.prod(self.shape) != dim:
            raise ValueError(
                f"shape {self.shape} has {math.prod(self.shape)} elements but means have d = {dim}"
            )
        self.schedule = check_schedule(schedule)
        self.prediction_type = check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        self.dtype = check_dtype(dtype)
        self.dim = dim

        scale = covariances.abs().amax(dim=(1, 2)).clamp(min=1.0)
        asymmetry = (covariances - covariances.transpose(1, 2)).abs().amax(dim=(1, 2))
        if (asymmetry > 1e-10 * scale).any():
            k = int(torch.nonzero(asymmetry > 1e-10 * scale)[0])
            raise ValueError(f"covariances[{k}] must be symmetric, max |Σ − Σᵀ| = {asymmetry[k].item():.3g}")
        eigenvalues, eigenvectors = torch.linalg.eigh((covariances + covariances.transpose(1, 2)) / 2)
        smallest = eigenvalues[:, 0]
        if (smallest < -1e-10 * dim * scale).any():
            k = int(torch.nonzero(smallest < -1e-10 * dim * scale)[0])
            raise ValueError(
                f"covariances[{k}] must be positive semi-definite, "
                f"its smallest eigenvalue is {smallest[k].item():.6g}"
            )

        self.means = means.to(self.dtype)
        self.covariances = covariances.to(self.dtype)
        self.weights = (weights / weights.sum()).to(self.dtype)
        self.classes = classes
        self.eigenvalues = eigenvalues.clamp(min=0).to(self.dtype)  # s_k, [K, d]
        self.eigenvectors = eigenvectors.to(self.dtype)  # U_k, [K, d, d], columns = eigenvectors
        self._log_weights = self.weights.log()
        self._projected_means = torch.einsum("kd,kde->ke", means, eigenvectors).to(self.dtype)  # U_kᵀ μ_k
        self._to_eigen = eigenvectors.permute(1, 0, 2).reshape(dim, count * dim).to(self.dtype)
        self._from_eigen = eigenvectors.permute(0, 2, 1).reshape(count * dim, dim).to(self.dtype)
        self._class_masks = classes[None, :] == torch.arange(self.num_classes)[:, None]  # [C, K]

    @property
    def num_components(self) -> int:
        """K, the number of mixture components."""
        return int(self.means.shape[0])

    def _component_mask(self, cond: Any, batch: int) -> Tensor | None:
        """Bool Tensor[B, K]: the components each sample may use under ``cond`` (None: all)."""
        return class_components(cond, batch, self._class_masks)

    def _eigen_terms(self, x: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
        """For x [B, d] and ᾱ [B]: C_k⁻¹(x − sqrt(ᾱ) μ_k) in U_k's basis [B, K, d], and log π_k N_k [B, K].

        The ᾱ-dependent factors are built once per distinct ᾱ when the batch has few (usually one).
        """
        batch, count = x.shape[0], self.num_components
        levels, level_of_sample = alpha.unique(return_inverse=True)
        if 2 * levels.numel() > batch:  # mostly distinct ᾱ: per sample, without the gather
            levels, level_of_sample = alpha, None
        a = levels[:, None, None]
        variance = torch.addcmul(1 - a, a, self.eigenvalues.to(x.device))  # ᾱ s + 1 − ᾱ, [L, K, d]
        log_normaliser = self._log_weights.to(x.device) - 0.5 * (
            variance.log().sum(-1) + self.dim * math.log(2 * math.pi)
        )  # [L, K]
        inverse = variance.reciprocal()
        root = a.sqrt()
        if level_of_sample is not None and levels.numel() > 1:
            root, inverse, log_normaliser = (
                root[level_of_sample],
                inverse[level_of_sample],
                log_normaliser[level_of_sample],
            )
        projected = (x @ self._to_eigen.to(x.device)).reshape(batch, count, self.dim)  # U_kᵀ x
        residual = torch.addcmul(projected, root, self._projected_means.to(x.device), value=-1)
        whitened = residual * inverse
        return whitened, log_normaliser - 0.5 * torch.linalg.vecdot(whitened, residual)

    def predict_noise(self, x_t: Tensor, t: int | Tensor, cond: Any = None) -> Tensor:
        """Exact ε̂ = −sqrt(1−ᾱ_t) ∇ log p_t(x_t | cond), expressed in ``prediction_type``.

        ``t`` is an int (negative → ``initial_alpha_cumprod``) or a LongTensor[B]; ``cond`` is None,
        a class index or a LongTensor[B] of classes. Output: shape and dtype of ``x_t``.
        """
        batch = check_batch("x_t", x_t, self.shape)
        mask = self._component_mask(cond, batch)
        x = x_t.reshape(batch, self.dim).to(self.dtype)
        alpha = alpha_bar_per_sample(self.schedule, t, batch).to(x)
        whitened, log_joint = self._eigen_terms(x, alpha)
        if mask is not None:
            log_joint = log_joint.masked_fill(~mask.to(x.device), -math.inf)
        responsibilities = torch.softmax(log_joint, dim=-1)
        weighted = (responsibilities[:, :, None] * whitened).reshape(batch, -1)
        epsilon = (1 - alpha[:, None]).sqrt() * (weighted @ self._from_eigen.to(x.device))
        output = output_from_epsilon(epsilon, x, alpha[:, None], self.prediction_type)
        return output.reshape(x_t.shape).to(x_t.dtype)

    def sample(self, n: int, cond: Any = None, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact samples x0 ~ p(x0 | cond), Tensor[n, *shape] in the model's dtype (on the CPU).

        ``cond``: None (the full mixture), a class index, or a LongTensor[n] of classes.
        """
        n = check_int("n", n, low=1)
        mask = self._component_mask(cond, n)
        probabilities = self.weights.to(torch.float64).expand(n, -1)
        if mask is not None:
            probabilities = probabilities * mask
        components = torch.multinomial(probabilities, 1, generator=generator)[:, 0]
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64).to(self.dtype)
        samples = torch.empty(n, self.dim, dtype=self.dtype)
        for k in components.unique().tolist():
            chosen = components == k
            root = self.eigenvectors[k] * self.eigenvalues[k].sqrt()  # U_k diag(sqrt(s_k))
            samples[chosen] = self.means[k] + noise[chosen] @ root.T
        return samples.reshape(n, *self.shape)

    def class_log_posterior(self, x0: Tensor) -> Tensor:
        """log p(y | x0) under the clean mixture (ᾱ = 1), Tensor[B, num_classes] in the model's dtype.

        Needs positive-definite covariances (the clean density is otherwise degenerate).
        """
        batch = check_batch("x0", x0, self.shape)
        if (self.eigenvalues <= 0).any():
            k = int(torch.nonzero((self.eigenvalues <= 0).any(dim=1))[0])
            raise ValueError(
                f"class_log_posterior needs positive-definite covariances; covariances[{k}] is singular"
            )
        x = x0.reshape(batch, self.dim).to(self.dtype)
        _, log_joint = self._eigen_terms(x, torch.ones(batch, dtype=self.dtype, device=x.device))
        class_mask = self._class_masks.to(x.device)
        per_class = log_joint[:, None, :].masked_fill(~class_mask[None], -math.inf).logsumexp(dim=-1)
        return per_class - log_joint.logsumexp(dim=-1, keepdim=True)

    @classmethod
    def from_digits(cls, ridge: float = DEFAULT_DIGITS_RIDGE, **kwargs: Any) -> GaussianMixtureModel:
        """One full-covariance Gaussian per digit class of scikit-learn's 8×8 digits (10 classes).

        Images come from :func:`load_digits_images` ([−1, 1] scale, shape (1, 8, 8)); component c has
        the class mean, the unbiased class covariance + ``ridge`` · I, and weight = class frequency.
        ``kwargs`` go to the constructor (``schedule``, ``prediction_type``, ``dtype``).

        Why a ridge, and why 2e-2: about 180 images per class in d = 64 leave 10–16 directions of each
        class covariance exactly singular (the border pixels are always −1) and the tail of the
        spectrum poorly estimated. Unridged, C_k's smallest eigenvalue at t = 0 would be 1 − ᾱ_0 ≈
        8.5e-4, so the score's curvature there (≈ 1/8.5e-4 ≈ 1,200) would be 1,600–6,700× that along
        the digit's main directions (largest class eigenvalue 1.35–5.7). With 2e-2 (about the median
        per-class eigenvalue, so only the poorly estimated tail is lifted) that curvature is ≤ ≈ 48 and
        the condition number of Σ_k ≤ ≈ 300; the added standard deviation 0.14 is about one grey level
        of the dataset (step 1/8 = 0.125); 5-fold held-out Bayes-classifier accuracy is at its plateau
        (97.5% at 1e-3, 98.9% at 2e-2, 99.0–99.1% at 3e-2–1e-1); 100% of sampled digits are classified
        as their class; and samples are new digits, not copies (a sample's nearest training image is
        at median distance 2.8, ≥ 1.49 in 40,000 samples, against 2.0 between nearest training pairs).
        Larger ridges add visible background speckle to the samples for no accuracy gain.
        """
        ridge = check_range("ridge", ridge, low=0.0)
        images, labels = load_digits_images()
        data = images.reshape(images.shape[0], -1)
        means, covariances, weights = [], [], []
        for label in range(int(labels.max()) + 1):
            members = data[labels == label]
            centered = members - members.mean(dim=0)
            means.append(members.mean(dim=0))
            covariances.append(
                centered.T @ centered / (members.shape[0] - 1)
                + ridge * torch.eye(data.shape[1], dtype=torch.float64)
            )
            weights.append(members.shape[0] / data.shape[0])
        kwargs.setdefault("shape", DIGITS_SHAPE)
        return cls(
            torch.stack(means),
            torch.stack(covariances),
            torch.tensor(weights, dtype=torch.float64),
            torch.arange(len(means)),
            **kwargs,
        )
