"""No host↔device round-trip in the hop loop (ARCHITECTURE.md, "One guidance step").

On a GPU every ``.item()``, ``.cpu()``, ``bool(tensor)`` or tensor made from Python numbers makes the
host wait for the device; per hop, that exposes Python time against the UNet's. Checked two ways:

* on the CPU, by instrumentation: every such call is counted while DDIM inversion, the strategies and
  whole guidance steps run. The hop loop makes none; a whole step makes the same few at its boundary
  (the z0 check on entry, the overshoot draw on the CPU generator, the non-finite guard at the end)
  whatever the number of hops — so none of them is per hop;
* on CUDA (skipped without a GPU): the inversion and the prediction run under
  ``torch.cuda.set_sync_debug_mode("error")``, and a whole step synchronises exactly twice.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from threestudio_sdi.classifier_free import Conditioning, guided_epsilon
from threestudio_sdi.ddim import ddim_invert
from threestudio_sdi.schedule import NoiseSchedule
from threestudio_sdi.score_distillation import GuidanceConfig, guidance_step, step_context
from threestudio_sdi.strategies import InversionConfig

TENSOR_METHODS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")
FACTORIES = ("tensor", "as_tensor", "from_numpy")


class LinearModel:
    """ε̂ = 0.1·x_t + 0.01·cond: pure tensor arithmetic, so the counts below are the loop's own."""

    prediction_type = "epsilon"

    def __init__(self, device: str = "cpu") -> None:
        self.schedule = NoiseSchedule.stable_diffusion()
        self.calls = 0

    def predict_noise(self, x_t: torch.Tensor, t: int, cond: Any) -> torch.Tensor:
        self.calls += 1
        return 0.1 * x_t if cond is None else 0.1 * x_t + 0.01 * cond


@contextlib.contextmanager
def counting_host_calls() -> Iterator[Counter]:
    """Count the calls of :data:`TENSOR_METHODS` on tensors and of the :data:`FACTORIES` of torch."""
    counts: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in TENSOR_METHODS}
    factories = {name: getattr(torch, name) for name in FACTORIES}

    def counted(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return function(*args, **kwargs)

        return wrapper

    try:
        for name, function in originals.items():
            setattr(torch.Tensor, name, counted(name, function))
        for name, function in factories.items():
            setattr(torch, name, counted(f"torch.{name}", function))
        yield counts
    finally:
        for name, function in originals.items():
            setattr(torch.Tensor, name, function)
        for name, function in factories.items():
            setattr(torch, name, function)


def test_the_counter_sees_what_it_counts() -> None:
    with counting_host_calls() as counts:
        value = torch.ones(2)
        float(value.sum()), value.tolist(), torch.tensor([1.0])
    assert counts == Counter({"__float__": 1, "tolist": 1, "torch.tensor": 1})


@pytest.mark.parametrize("eta", [0.0, 0.3])
def test_the_inversion_hop_loop_makes_no_host_call(eta: float) -> None:
    model, z0 = LinearModel(), torch.randn(2, 4, 8, 8)
    conditioning = Conditioning(cond=torch.ones(2, 4, 8, 8))
    generator = torch.Generator().manual_seed(0)
    ddim_invert(model, z0, [-99, 1, 101], conditioning, -7.5, eta=eta, generator=generator)  # warm the tables
    with counting_host_calls() as counts:
        result = ddim_invert(
            model, z0, [-99, *range(1, 902, 100), 980], conditioning, -7.5, eta=eta, generator=generator
        )
    assert result.model_evaluations == 11 and counts == Counter()


@pytest.mark.parametrize("preset", ["paper", "official"])
@pytest.mark.parametrize("noise", ["inversion", "uncond-inversion", "random"])
def test_a_strategy_and_the_prediction_make_no_host_call_but_the_overshoot_draw(
    preset: str, noise: str
) -> None:
    """The strategy's one host call is δ's draw, ``float(torch.rand(...))`` on the CPU generator: it
    reads no device memory. Then the prediction makes none."""
    model, z0 = LinearModel(), torch.randn(2, 4, 8, 8)
    config = GuidanceConfig(preset=preset, noise=noise)
    conditioning = Conditioning(cond=torch.ones(2, 4, 8, 8))
    step = step_context(model, z0, 900, conditioning, config, generator=torch.Generator().manual_seed(0))
    config.strategy(step), step.schedule.table(z0)  # warm the tables
    with counting_host_calls() as counts:
        estimate = config.strategy(step)
        x_noisy = step.schedule.alpha_bar(estimate.t_prime, like=z0).sqrt() * z0
        guided_epsilon(model, x_noisy, 900, conditioning, 7.5, config.resolved_cfg_mode, step.schedule)
    assert counts == (Counter({"__float__": 1}) if noise != "random" else Counter())


def test_a_whole_step_makes_the_same_boundary_calls_at_any_number_of_hops() -> None:
    """z0 checked on entry (one ``bool``), δ drawn (one ``float`` on the CPU generator), the non-finite
    guard read back once (``cpu`` + ``tolist``): the same for 3 hops as for 11."""
    model, z0 = LinearModel(), torch.randn(2, 4, 8, 8)
    conditioning = Conditioning(cond=torch.ones(2, 4, 8, 8))
    counted = {}
    for n in (2, 10):
        config = GuidanceConfig(preset="official", inversion=InversionConfig(n_steps=n))
        guidance_step(model, z0, 980, conditioning, config, generator=torch.Generator().manual_seed(0))
        model.calls = 0
        with counting_host_calls() as counts:
            out = guidance_step(
                model, z0, 980, conditioning, config, generator=torch.Generator().manual_seed(0)
            )
        assert out.model_evaluations == n + 2 and model.calls == 2 * (n + 2)
        counted[n] = counts
    assert counted[2] == counted[10] == Counter({"__bool__": 1, "__float__": 1, "cpu": 1, "tolist": 1})


def test_the_schedule_table_is_made_once_per_device_and_dtype() -> None:
    schedule, like = NoiseSchedule.stable_diffusion(), torch.zeros(1)
    first = schedule.table(like)
    assert schedule.table(like) is first and schedule.table(like.double()) is not first
    for t in (-99, 0, 1, 500, 999):
        assert torch.equal(schedule.alpha_bar(t, like=like), schedule.alpha_bar(t).to(like))
    with pytest.raises(ValueError, match="timestep 1000 is outside"):
        schedule.alpha_bar(1000, like=like)


# ------------------------------------------------------------------ CUDA
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@contextlib.contextmanager
def sync_debug(mode: str) -> Iterator[None]:
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


@cuda
@pytest.mark.parametrize("preset", ["paper", "official"])
def test_on_cuda_the_inversion_and_the_prediction_never_synchronise(preset: str) -> None:
    model, z0 = LinearModel(), torch.randn(2, 4, 64, 64, device="cuda")
    conditioning = Conditioning(cond=torch.ones(2, 4, 64, 64, device="cuda"))
    config = GuidanceConfig(preset=preset)
    step = step_context(model, z0, 980, conditioning, config, generator=torch.Generator().manual_seed(0))
    config.strategy(step), step.schedule.table(z0)  # tables on the device
    with sync_debug("error"):
        estimate = config.strategy(step)
        x_noisy = step.schedule.alpha_bar(estimate.t_prime, like=z0).sqrt() * z0
        guided_epsilon(model, x_noisy, 980, conditioning, 7.5, config.resolved_cfg_mode, step.schedule)
    torch.cuda.synchronize()


@cuda
def test_on_cuda_a_whole_step_synchronises_twice_at_its_boundary() -> None:
    model, z0 = LinearModel(), torch.randn(2, 4, 64, 64, device="cuda")
    conditioning = Conditioning(cond=torch.ones(2, 4, 64, 64, device="cuda"))
    config = GuidanceConfig(preset="official")
    guidance_step(model, z0, 980, conditioning, config)
    with warnings.catch_warnings(record=True) as caught, sync_debug("warn"):
        warnings.simplefilter("always")
        guidance_step(model, z0, 980, conditioning, config)
    synchronising = [w for w in caught if "synchronizing" in str(w.message)]
    assert len(synchronising) == 2, [str(w.message) for w in synchronising]


class RecordingUNet(torch.nn.Module):
    """A stand-in UNet (called as diffusers' is) that records the timestep it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.timesteps: list[Any] = []

    def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor) -> tuple:
        self.timesteps.append(timestep)
        return (sample * self.weight,)


def test_the_unet_receives_the_timestep_as_a_tensor_on_its_device_made_there() -> None:
    """A Python int would recompile a ``torch.compile(dynamic=False)`` UNet per value, and a CPU tensor
    would be copied at every hop: the UNet gets a long tensor filled on its own device (no copy)."""
    from threestudio_sdi.models.diffusers_model import DiffusersModel
    from threestudio_sdi.schedule import STABLE_DIFFUSION_SCHEDULER_CONFIG

    unet = RecordingUNet()
    model = DiffusersModel(unet, STABLE_DIFFUSION_SCHEDULER_CONFIG, torch.zeros(1, 3, 8))
    conditioning = Conditioning(cond=torch.ones(1, 3, 8), uncond=None)
    ddim_invert(model, torch.zeros(2, 4, 8, 8), [-99, 1, 101], conditioning, -7.5)
    with counting_host_calls() as counts:
        ddim_invert(model, torch.zeros(2, 4, 8, 8), [-99, 1, 101, 201], conditioning, -7.5)
    assert counts == Counter()
    for timestep in unet.timesteps:
        assert isinstance(timestep, torch.Tensor) and timestep.dtype == torch.long
        assert timestep.device == unet.weight.device and timestep.shape == (4,)  # 2 views × (uncond, cond)
    assert [int(t[0]) for t in unet.timesteps[-3:]] == [-99, 1, 101]
