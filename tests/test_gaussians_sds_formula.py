"""tests/threestudio_3dgs_cpu/sds_formula.py, the densification reference, against threestudio's SDS
written out here (threestudio 28d9d80, ``StableDiffusionGuidance.compute_grad_sds`` and ``__call__``):
per-view t ~ U{min_step … max_step}, x_t = sqrt(ᾱ) x0 + sqrt(1 − ᾱ) ε, ε̂ = ε_c + γ (ε_c − ε_u),
grad = (1 − ᾱ)(ε̂ − ε), loss = ½ Σ (x0 − stopgrad(x0 − grad))² / B, on a pixel model whose ε is known."""

from __future__ import annotations

import math
import pathlib
import sys

import pytest
import torch
from threestudio_standin.activate import standin_threestudio

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "threestudio_3dgs_cpu"))

import sds_formula  # noqa: E402

SIZE = 4


class LinearPixelModel:
    """ε_c(x, t, class k) = 0.3·x + k/10 + t/1000, ε_u = 0.3·x: a pixel model with a known answer."""

    prediction_type = "epsilon"
    shape = (3, SIZE, SIZE)
    view_conditioned = False

    def __init__(self) -> None:
        self.alphas_cumprod = torch.linspace(0.9999, 0.005, 1000, dtype=torch.float64)

    def prompt_condition(self, prompt: str) -> int:
        return {"ball": 1, "crate": 2}[prompt]

    def predict_noise(self, x_t, t, cond):
        shift = 0.0 if cond is None else cond / 10 + float(t) / 1000
        return 0.3 * x_t + shift


def linear_backbone():
    from threestudio_sdi.testing.pixel_backbone import PixelBackbone

    return PixelBackbone(LinearPixelModel())


def test_the_formula_guidance_is_threestudios_sds(fresh_seed):
    with standin_threestudio() as threestudio:
        sds_formula.register(threestudio)
        guidance = threestudio.find(sds_formula.NAME)(
            {
                "model_factory": f"{__name__}:linear_backbone",
                "guidance_scale": 100.0,
                "min_step_percent": 0.02,
                "max_step_percent": 0.98,
                "seed": fresh_seed,
            }
        )
        from threestudio.models.prompt_processors.base import PromptProcessorOutput

        batch = 3
        prompt = PromptProcessorOutput(*(torch.zeros(n, 77, 8) for n in (1, 1, 4, 4)), use_perp_neg=False)
        prompt.prompt = "crate"
        rgb = torch.rand(batch, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(fresh_seed + 1))
        rgb.requires_grad_(True)
        c2w = torch.eye(4).repeat(batch, 1, 1)
        out = guidance(
            rgb,
            prompt,
            torch.zeros(batch),
            torch.zeros(batch),
            torch.full((batch,), 2.0),
            c2w=c2w,
            fovy=torch.full((batch,), math.radians(50)),
        )
        out["loss_sds"].backward()

    generator = torch.Generator().manual_seed(fresh_seed)
    t = torch.randint(20, 980 + 1, [batch], generator=generator)
    x0 = rgb.detach().permute(0, 3, 1, 2) * 2 - 1
    noise = torch.randn(x0.shape, generator=generator)
    alphas = LinearPixelModel().alphas_cumprod.float()
    expected = []
    for view in range(batch):
        a = alphas[t[view]]
        x_t = a.sqrt() * x0[view] + (1 - a).sqrt() * noise[view]
        eps_u = 0.3 * x_t
        eps_c = 0.3 * x_t + 2 / 10 + float(t[view]) / 1000
        eps_hat = eps_c + 100.0 * (eps_c - eps_u)
        expected.append((1 - a) * (eps_hat - noise[view]))
    grad = torch.stack(expected)
    # ∂loss/∂x0 = grad / B and x0 = 2·rgb − 1
    torch.testing.assert_close(rgb.grad, (2 * grad / batch).permute(0, 2, 3, 1), rtol=1e-4, atol=1e-5)
    assert out["loss_sds"].item() == pytest.approx(0.5 * float(grad.pow(2).sum()) / batch, rel=1e-4)
    assert (out["min_step"], out["max_step"]) == (20, 980)
