"""``official`` = the released SDI code, as tests: an independent re-implementation of the released
guidance step, written here from docs/method.md §3 (and shared/research/sdi_official.md §2) without calling this
package's math, against ``sdi-guidance`` with ``preset=official`` on the tiny Stable Diffusion stack.

* batch 1, plain CFG and Perp-Neg, η = 0, the overshoot δ injected (read from our step, given to the
  reference): the targets ẑ0 and the losses agree to 1e-5 relative in float32;
* batch 2 with Perp-Neg: every row of our step equals its own single-view step exactly, while the
  released code's batching (the UNet sees [x]·4 against [positives; unconditionals; negatives
  interleaved per view], and ``noise_pred_neg[i::2]`` picks each view's i-th negative) pairs a view
  with a negative evaluated on the other view's latent.

With THREESTUDIO_ROOT set, tests/test_threestudio_integration.py runs threestudio's built-in
``stable-diffusion-sdi-guidance`` on the same inputs (match at batch 1, mis-pairing at batch 2).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import pytest
import torch
from threestudio_standin.activate import standin_threestudio
from torch import Tensor

L, D = 77, 32  # token length and hidden size of the tiny text encoder
T = 1000


# ------------------------------------------------------------------ the reference (docs/method.md §3 in words)
@dataclass
class ViewPrompt:
    """One view's text embeddings [1, L, D]: positive, unconditional, Perp-Neg negatives and weights."""

    positive: Tensor
    uncond: Tensor
    negatives: tuple[Tensor, ...] = ()
    weights: tuple[float, ...] = ()


@dataclass
class ReleasedOutput:
    """ẑ0, the loss, the UNet evaluations of the inversion, x_t′ and ε̂ of one released step."""

    target: Tensor
    loss: Tensor
    hops: int
    x_noisy: Tensor
    noise_pred: Tensor


class ReleasedStep:
    """The released guidance step for ONE view (the released code needs batch 1), from docs/method.md §3:

    * inversion grid: the points 100k + 1 (k = 0 … 9, stride T/n, offset ``steps_offset``) below t,
      preceded by the origin −99 (whose ᾱ is ``initial_alpha_cumprod`` = ᾱ_0 for SD 2.1-base), then t′;
    * each hop a → b: ε̂ = CFG(x, a, γ_inv); x̂0 = (x − √(1−ᾱ_a) ε̂)/√ᾱ_a; x ← √ᾱ_b x̂0 + √(1−ᾱ_b) ε̂;
    * CFG without Perp-Neg: ε_c + γ(ε_c − ε_u) (the quirk); Perp-Neg: ε_u + γ(e_pos + Σ_i w_i
      perp(ε_neg_i − ε_u, e_pos)), e_pos = ε_pos − ε_u, perp(a, b) = a − ⟨a, b⟩/‖b‖² b;
    * prediction ε̂ = CFG(x_t′, t, γ_fwd) (the UNet is told t); ẑ0 = (x_t′ − √(1−ᾱ_t) ε̂)/√ᾱ_t;
    * loss = ½ mean((z0 − ẑ0)²) / B.

    One UNet call per guided evaluation, batched as the released code batches it ([cond; uncond], or
    [positive; uncond; negative 1; negative 2] with Perp-Neg), in float32. ᾱ is the cumulative product
    of SD's scaled-linear betas (docs/method.md §1), taken in float64 and rounded once: diffusers' float32
    ``cumprod``, which the released code uses, is itself up to 1e-5 off near t = 1000.
    """

    def __init__(self, unet, scheduler_config, n_steps: int = 10) -> None:
        self.unet = unet
        config = scheduler_config
        assert config.beta_schedule == "scaled_linear" and not config.set_alpha_to_one
        betas = (
            torch.linspace(
                config.beta_start**0.5, config.beta_end**0.5, config.num_train_timesteps, dtype=torch.float64
            )
            ** 2
        )
        self.alphas = torch.cumprod(1 - betas, dim=0)
        self.offset = int(config.steps_offset)
        self.n_steps = n_steps

    def alpha(self, timestep: int) -> Tensor:
        """ᾱ in float32; a negative timestep (the origin) has ᾱ_0 (``set_alpha_to_one`` is false)."""
        return self.alphas[max(timestep, 0)].float()

    def guided(self, x: Tensor, timestep: int, prompt: ViewPrompt, scale: float) -> Tensor:
        embeddings = torch.cat([prompt.positive, prompt.uncond, *prompt.negatives])
        with torch.no_grad():
            eps = self.unet(
                x.repeat(len(embeddings), 1, 1, 1),
                torch.full((len(embeddings),), timestep),
                encoder_hidden_states=embeddings,
            ).sample
        eps_c, eps_u, eps_negatives = eps[0:1], eps[1:2], eps[2:]
        if not prompt.negatives:
            return eps_c + scale * (eps_c - eps_u)
        e_pos = eps_c - eps_u
        total = torch.zeros_like(e_pos)
        for negative, weight in zip(eps_negatives, prompt.weights):
            d = negative[None] - eps_u
            total = total + weight * (d - (d * e_pos).sum() / (e_pos * e_pos).sum() * e_pos)
        return eps_u + scale * (e_pos + total)

    def grid(self, t: int, t_prime: int) -> list[int]:
        stride = T // self.n_steps
        points = [k * stride + self.offset for k in range(self.n_steps) if k * stride + self.offset < t]
        return [points[0] - stride, *points, t_prime]

    def __call__(self, z0: Tensor, t: int, t_prime: int, prompt: ViewPrompt, fwd=7.5, inv=-7.5):
        x = z0.clone()
        grid = self.grid(t, t_prime)
        for a, b in zip(grid, grid[1:]):
            eps = self.guided(x, a, prompt, inv)
            x0 = (x - (1 - self.alpha(a)).sqrt() * eps) / self.alpha(a).sqrt()
            x = self.alpha(b).sqrt() * x0 + (1 - self.alpha(b)).sqrt() * eps
        eps = self.guided(x, t, prompt, fwd)
        target = (x - (1 - self.alpha(t)).sqrt() * eps) / self.alpha(t).sqrt()
        return ReleasedOutput(target, 0.5 * ((z0 - target) ** 2).mean(), len(grid) - 1, x, eps)


def relative_error(value: Tensor, reference: Tensor) -> float:
    return float((value - reference).norm() / reference.norm())


# ------------------------------------------------------------------ ours, through the plugin
@pytest.fixture(scope="module")
def ts():
    with standin_threestudio() as threestudio:
        importlib.import_module("threestudio_sdi.threestudio")
        from threestudio.models.prompt_processors.base import PromptProcessorOutput

        yield threestudio, PromptProcessorOutput


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from threestudio_sdi.testing.tiny_sd import tiny_stable_diffusion

    return str(tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd") / "tiny"))


@pytest.fixture(scope="module")
def reference(tiny_path):
    from diffusers import DDIMScheduler, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_path, subfolder="unet").eval()
    return ReleasedStep(unet, DDIMScheduler.from_pretrained(tiny_path, subfolder="scheduler").config)


def official_guidance(ts, tiny_path, seed):
    threestudio, _ = ts
    return threestudio.find("sdi-guidance")(
        {
            "pretrained_model_name_or_path": tiny_path,
            "preset": "official",
            "inversion": {"eta": 0.0},
            "seed": seed,
            "trainer_max_steps": 10000,
            "half_precision_weights": False,
        }
    )


def prompt_output(ts, use_perp_neg: bool, seed: int = 0):
    _, PromptProcessorOutput = ts
    generator = torch.Generator().manual_seed(seed)
    draw = lambda count: torch.randn(count, L, D, generator=generator)  # noqa: E731
    return PromptProcessorOutput(draw(1), draw(1), draw(4), draw(4), use_perp_neg=use_perp_neg)


CAMERAS = {
    "elevation": torch.tensor([10.0, 20.0]),
    "azimuth": torch.tensor([0.0, 100.0]),  # a front view and a side view: different prompts
    "camera_distances": torch.tensor([1.7, 1.7]),
}


def cameras(views: list[int]) -> dict[str, Tensor]:
    return {key: value[views] for key, value in CAMERAS.items()}


def view_prompt(utils, view: int) -> ViewPrompt:
    """View ``view``'s embeddings as threestudio's prompt processor lays them out for that camera alone."""
    cams = cameras([view])
    if not utils.use_perp_neg:
        embeddings = utils.get_text_embeddings(**cams)
        return ViewPrompt(embeddings[0:1], embeddings[1:2])
    embeddings, weights = utils.get_text_embeddings_perp_neg(**cams)
    return ViewPrompt(
        embeddings[0:1],
        embeddings[1:2],
        (embeddings[2:3], embeddings[3:4]),
        tuple(float(w) for w in weights[0]),
    )


def our_step(guidance, z0: Tensor, views: list[int], utils, global_step: int) -> dict:
    guidance.update_step(0, global_step)
    return guidance(z0.permute(0, 2, 3, 1), utils, **cameras(views), rgb_as_latents=True, return_images=True)


# ------------------------------------------------------------------ batch 1: official == released
@pytest.mark.parametrize("use_perp_neg", [False, True], ids=["cfg", "perp-neg"])
@pytest.mark.parametrize("global_step", [0, 4000, 9000])  # t = 980, 688, 323
def test_official_preset_matches_the_released_step_at_batch_1(
    ts, tiny_path, reference, use_perp_neg, global_step
):
    utils = prompt_output(ts, use_perp_neg)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(global_step + 1))
    for view in (0, 1):
        out = our_step(official_guidance(ts, tiny_path, seed=view), z0, [view], utils, global_step)
        assert torch.equal(out["latents"], z0)  # rgb_as_latents at the latent size: z0 itself
        t, t_prime = out["timestep"], out["timestep_noisy"]
        assert t == int(T * ((0.98 - 0.25) * (1 - global_step / 10000) + 0.25))
        released = reference(z0, t, t_prime, view_prompt(utils, view))
        assert out["model_evaluations"] == released.hops + 1
        alpha = reference.alpha(t_prime)
        kappa = (released.x_noisy - alpha.sqrt() * z0) / (1 - alpha).sqrt()
        assert relative_error(out["noise"], kappa) <= 1e-6  # the inversion: bit-identical here
        assert relative_error(out["target_latent"], released.target) <= 1e-5
        assert abs(out["loss_sdi"].item() - released.loss.item()) <= 1e-5 * released.loss.item()


def test_the_reference_sees_a_wrong_cfg_or_grid(ts, tiny_path, reference):
    """The comparison can fail: the standard CFG or a grid without the origin miss by far more than 1e-5."""
    from threestudio_sdi.threestudio.guidance import GUIDANCE_NAME

    threestudio, _ = ts
    utils = prompt_output(ts, use_perp_neg=False)
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    skip_origin = {"noise": "research-inversion", "noise_options": {"skip_origin": True}}
    for overrides in ({"cfg_mode": "standard"}, skip_origin):
        guidance = threestudio.find(GUIDANCE_NAME)(
            {"pretrained_model_name_or_path": tiny_path, "preset": "official", "inversion": {"eta": 0.0},
             "seed": 0, **overrides}
        )  # fmt: skip
        out = our_step(guidance, z0, [0], utils, 4000)
        released = reference(z0, out["timestep"], out["timestep_noisy"], view_prompt(utils, 0))
        assert relative_error(out["target_latent"], released.target) > 1e-3


# ------------------------------------------------------------------ batch 2 with Perp-Neg
def released_batched_perp_neg(
    reference: ReleasedStep, x: Tensor, t: int, utils, views: list[int], scale: float
) -> Tensor:
    """The released ``predict_noise`` with Perp-Neg at batch B, as the research notes describe it: one UNet
    call on [x]·4 against [positives B; unconditionals B; negatives 2B, view b's at 2b and 2b + 1], then
    e_i_neg = noise_pred_neg[i::2] − ε_u."""
    embeddings, weights = utils.get_text_embeddings_perp_neg(**cameras(views))
    batch = len(views)
    with torch.no_grad():
        noise = reference.unet(
            torch.cat([x] * 4), torch.full((4 * batch,), t), encoder_hidden_states=embeddings
        ).sample
    eps_pos, eps_u, eps_neg = noise[:batch], noise[batch : 2 * batch], noise[2 * batch :]
    e_pos = eps_pos - eps_u
    total = torch.zeros_like(e_pos)
    for i in range(2):
        d = eps_neg[i::2] - eps_u
        dot = (d * e_pos).sum(dim=(1, 2, 3), keepdim=True) / (e_pos * e_pos).sum(dim=(1, 2, 3), keepdim=True)
        total = total + weights[:, i].view(-1, 1, 1, 1) * (d - dot * e_pos)
    return eps_u + scale * (e_pos + total)


def test_at_batch_2_with_perp_neg_every_row_is_its_own_single_view_step(ts, tiny_path, reference):
    utils = prompt_output(ts, use_perp_neg=True)
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(11))
    both = our_step(official_guidance(ts, tiny_path, seed=3), z0, [0, 1], utils, 4000)
    for view in (0, 1):
        single = our_step(official_guidance(ts, tiny_path, seed=3), z0[view : view + 1], [view], utils, 4000)
        assert single["timestep_noisy"] == both["timestep_noisy"]  # the same δ (the same seed)
        for key in ("target_latent", "noise", "noise_pred", "latents"):
            assert torch.equal(both[key][view : view + 1], single[key]), key
        released = reference(
            z0[view : view + 1], both["timestep"], both["timestep_noisy"], view_prompt(utils, view)
        )
        assert relative_error(both["target_latent"][view : view + 1], released.target) <= 1e-5


def test_the_released_batching_pairs_a_view_with_the_other_views_negatives(ts, reference):
    """What the batch-2 test guards against: at batch 2 the released Perp-Neg combination of view b differs
    from view b's own (a negative is evaluated on the other view's latent); at batch 1 it is the same."""
    utils = prompt_output(ts, use_perp_neg=True)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    batched = released_batched_perp_neg(reference, x, 500, utils, [0, 1], 7.5)
    for view in (0, 1):
        own = reference.guided(x[view : view + 1], 500, view_prompt(utils, view), 7.5)
        alone = released_batched_perp_neg(reference, x[view : view + 1], 500, utils, [view], 7.5)
        assert relative_error(alone, own) <= 1e-5
        assert relative_error(batched[view : view + 1], own) > 1e-2
