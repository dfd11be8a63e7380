"""The diffusers-backed stack on a tiny random-weight Stable Diffusion built offline."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffusers import DDIMScheduler, StableDiffusionPipeline  # noqa: E402

from threestudio_sdi.models import Denoiser, DiffusersModel, load_stable_diffusion  # noqa: E402
from threestudio_sdi.models.stable_diffusion import LatentCodec, PromptEncoder  # noqa: E402
from threestudio_sdi.prediction import predict_branches  # noqa: E402
from threestudio_sdi.schedule import NoiseSchedule  # noqa: E402
from threestudio_sdi.testing.tiny_sd import (  # noqa: E402
    IMAGE_SIZE,
    LATENT_SIZE,
    MAX_PROMPT_TOKENS,
    TEXT_HIDDEN_SIZE,
    tiny_stable_diffusion,  # noqa: E402
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd"), seed=0)


@pytest.fixture(scope="session")
def pipeline(tiny_path: pathlib.Path) -> StableDiffusionPipeline:
    return StableDiffusionPipeline.from_pretrained(tiny_path, local_files_only=True, safety_checker=None)


@pytest.fixture(scope="session")
def parts(tiny_path: pathlib.Path):
    return load_stable_diffusion(tiny_path, device="cpu", local_files_only=True)


def test_tiny_stack_is_small_and_seeded(tiny_path: pathlib.Path, tmp_path: pathlib.Path) -> None:
    size = sum(file.stat().st_size for file in tiny_path.rglob("*") if file.is_file())
    assert size < 5 * 2**20
    for name in ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_path / name).exists(), name
    assert (tiny_path / "tokenizer" / "vocab.json").exists()
    assert (tiny_path / "tokenizer" / "merges.txt").exists()
    from safetensors import safe_open

    with safe_open(str(tiny_path / "text_encoder" / "model.safetensors"), "pt") as weights:
        assert all(name.startswith("text_model.") for name in weights.keys())  # the hub layout
    again = StableDiffusionPipeline.from_pretrained(
        tiny_stable_diffusion(tmp_path / "again", seed=0), local_files_only=True, safety_checker=None
    )
    other = StableDiffusionPipeline.from_pretrained(
        tiny_stable_diffusion(tmp_path / "other", seed=1), local_files_only=True, safety_checker=None
    )
    reference = StableDiffusionPipeline.from_pretrained(tiny_path, local_files_only=True, safety_checker=None)
    weight = reference.unet.conv_in.weight
    assert torch.equal(again.unet.conv_in.weight, weight)
    assert not torch.equal(other.unet.conv_in.weight, weight)


def test_tiny_stack_loads_as_a_stable_diffusion_pipeline(pipeline: StableDiffusionPipeline) -> None:
    assert pipeline.unet.config.sample_size == LATENT_SIZE
    assert pipeline.unet.config.cross_attention_dim == TEXT_HIDDEN_SIZE
    assert pipeline.vae.config.scaling_factor == pytest.approx(0.18215)
    assert pipeline.tokenizer.model_max_length == MAX_PROMPT_TOKENS
    assert len(pipeline.tokenizer) == pipeline.text_encoder.config.vocab_size
    assert isinstance(pipeline.scheduler, DDIMScheduler)
    config = pipeline.scheduler.config
    assert (config.beta_schedule, config.set_alpha_to_one, config.steps_offset) == ("scaled_linear", False, 1)
    assert (config.clip_sample, config.prediction_type) == (False, "epsilon")
    ids = pipeline.tokenizer(["the cat and a dog"]).input_ids[0]
    assert ids[0] == pipeline.tokenizer.bos_token_id and ids[-1] == pipeline.tokenizer.eos_token_id
    assert pipeline.tokenizer.convert_tokens_to_ids("the</w>") in ids  # the BPE merges are used
    images = pipeline(
        "a photo of a cat",
        height=IMAGE_SIZE,
        width=IMAGE_SIZE,
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert images.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)


def test_load_stable_diffusion(parts) -> None:
    model, codec, prompts = parts.model, parts.codec, parts.prompts
    assert isinstance(model, DiffusersModel) and isinstance(model, Denoiser)
    assert NoiseSchedule.of_model(model) is model.schedule
    assert isinstance(codec, LatentCodec) and isinstance(prompts, PromptEncoder)
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert model.prediction_type == "epsilon"
    assert model.uncond_embeddings.shape == (1, MAX_PROMPT_TOKENS, TEXT_HIDDEN_SIZE)
    torch.testing.assert_close(model.uncond_embeddings, prompts.encode([""]))


def test_load_stable_diffusion_names_a_missing_folder(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(OSError, match="no-such-model"):
        load_stable_diffusion(missing, device="cpu", local_files_only=True)


def test_schedule_matches_diffusers(parts, pipeline: StableDiffusionPipeline) -> None:
    scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    schedule = parts.model.schedule
    assert schedule.alphas_cumprod.dtype == torch.float64
    torch.testing.assert_close(
        schedule.alphas_cumprod, scheduler.alphas_cumprod.to(torch.float64), atol=1e-6, rtol=0
    )
    assert parts.model.initial_alpha_cumprod == pytest.approx(float(scheduler.final_alpha_cumprod), abs=1e-6)
    assert parts.model.steps_offset == 1
    torch.testing.assert_close(parts.model.alphas_cumprod, schedule.alphas_cumprod)


@pytest.mark.parametrize("timestep", [500, -99, "tensor"])
def test_batched_call_equals_separate_calls(parts, timestep) -> None:
    model = parts.model
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(2, 4, LATENT_SIZE, LATENT_SIZE, generator=generator)
    t = torch.tensor([10, 900]) if timestep == "tensor" else timestep
    cond = parts.prompts.encode(["a photo of a cat"])
    neg1 = parts.prompts.encode(["blurry", "a dog"])
    neg2 = torch.randn(1, MAX_PROMPT_TOKENS, TEXT_HIDDEN_SIZE, generator=generator)
    conds = [cond, None, neg1, neg2]
    calls = model.unet_calls
    batched = model.predict_noise_batched(x_t, t, conds)
    assert model.unet_calls == calls + 1
    separate = [model.predict_noise(x_t, t, c) for c in conds]
    assert model.unet_calls == calls + 1 + len(conds)
    for one, other in zip(batched, separate):
        assert one.shape == x_t.shape and one.dtype == x_t.dtype
        torch.testing.assert_close(one, other, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched[0], batched[1])  # the branches really differ
    assert not torch.allclose(batched[2][0], batched[2][1])  # per-sample conditions are kept apart
    calls = model.unet_calls
    via_branches = predict_branches(model, x_t, t, conds)
    assert model.unet_calls == calls + 1
    torch.testing.assert_close(via_branches[1], batched[1])


def test_outputs_are_plain_constants_in_autograd(parts) -> None:
    latents = torch.randn(1, 4, LATENT_SIZE, LATENT_SIZE, requires_grad=True)
    noisy = latents * 0.9 + 0.1  # x_t built from a tensor that requires grad
    eps = parts.model.predict_noise(noisy, 500, None)
    assert not eps.requires_grad
    loss = (latents * eps).sum() + ((latents - eps) ** 2).sum()
    loss.backward()
    torch.testing.assert_close(latents.grad, eps + 2 * (latents.detach() - eps))
    eps.mul_(2)  # in-place updates work too (no inference tensors)


def test_bad_conditions_are_named(parts) -> None:
    x_t = torch.zeros(2, 4, LATENT_SIZE, LATENT_SIZE)
    with pytest.raises(ValueError, match=r"conds\[1\].*batch size 3"):
        parts.model.predict_noise_batched(
            x_t, 10, [None, torch.zeros(3, MAX_PROMPT_TOKENS, TEXT_HIDDEN_SIZE)]
        )
    with pytest.raises(ValueError, match=r"conds\[0\]"):
        parts.model.predict_noise(x_t, 10, torch.zeros(1, 5, TEXT_HIDDEN_SIZE))
    with pytest.raises(ValueError, match="t must"):
        parts.model.predict_noise(x_t, torch.tensor([1, 2, 3]), None)


def test_encode_is_differentiable_and_decode_is_an_image(parts) -> None:
    codec = parts.codec
    rgb = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, requires_grad=True)
    latents = codec.encode(rgb, generator=torch.Generator().manual_seed(0))
    assert latents.shape == (2, 4, LATENT_SIZE, LATENT_SIZE)
    latents.square().sum().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0 and rgb.grad.isfinite().all()
    again = codec.encode(rgb, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, latents)
    mean = codec.encode(rgb, mode="mean")
    torch.testing.assert_close(codec.encode(rgb, mode="mean"), mean)
    with pytest.raises(ValueError, match="mode"):
        codec.encode(rgb, mode="median")
    images = codec.decode(latents)
    assert images.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE) and not images.requires_grad
    assert images.min() >= 0 and images.max() <= 1


def test_prompt_encoder_caches_each_prompt(pipeline: StableDiffusionPipeline) -> None:
    encoder = PromptEncoder(pipeline.tokenizer, pipeline.text_encoder)
    batches: list[int] = []
    forward = encoder.text_encoder.forward

    def counting_forward(input_ids, *args, **kwargs):
        batches.append(input_ids.shape[0])
        return forward(input_ids, *args, **kwargs)

    encoder.text_encoder.forward = counting_forward
    try:
        first = encoder.encode(["a cat", "a dog", "a cat"])
        assert first.shape == (3, MAX_PROMPT_TOKENS, TEXT_HIDDEN_SIZE)
        assert batches == [2]
        torch.testing.assert_close(first[0], first[2])
        second = encoder.encode(["a dog", "a cat"])
        assert batches == [2]
        torch.testing.assert_close(second, first[[1, 0]])
        encoder.encode(["a cat", "a bird"])
        assert batches == [2, 1]
        assert encoder.cached_prompts == ["a cat", "a dog", "a bird"]
    finally:
        del encoder.text_encoder.forward
    with pytest.raises(ValueError, match="prompts"):
        encoder.encode("a cat")


def test_importing_models_does_not_import_diffusers() -> None:
    code = (
        "import sys, threestudio_sdi.models, threestudio_sdi.models.diffusers_model, "
        "threestudio_sdi.models.stable_diffusion, threestudio_sdi.testing.tiny_sd\n"
        "assert 'diffusers' not in sys.modules, 'diffusers imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
