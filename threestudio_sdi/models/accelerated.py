"""The GPU path of a diffusers UNet, same math: channels-last, SDPA, ``torch.compile``, CUDA graphs.

:class:`AcceleratedUNet` is a drop-in for a ``UNet2DConditionModel`` wherever it is called as
``unet(sample, timestep, encoder_hidden_states=...)`` and its ``.sample`` read — by
:class:`~threestudio_sdi.models.diffusers_model.DiffusersModel` (``model.unet = AcceleratedUNet(...)``)
and by threestudio's released guidance (``guidance.unet = ...``) alike, so both can get the same
treatment. Each option keeps the math (outputs equal the plain UNet's to floating-point reordering):

* ``channels_last``: the weights in NHWC layout (faster convolutions on tensor cores);
* ``sdpa``: diffusers' ``AttnProcessor2_0`` (``F.scaled_dot_product_attention``; the default of
  diffusers ≥ 0.19 on torch 2, set explicitly here);
* ``compile``: ``torch.compile(unet, dynamic=False)`` (one graph per input shape);
* ``cuda_graphs``: the call captured once per input signature (shapes, dtypes, device) into a CUDA
  graph with static input buffers; later calls copy their inputs in, replay, and return a copy of the
  static output. Every hop of an inversion and the final prediction have the same shapes (only the
  timestep's *value* changes), so one captured graph serves the whole guidance step, and every step
  after it. Captured only without autograd (the UNet runs under ``no_grad`` in a guidance step);
  other calls run uncaptured.

Float16 weights are chosen when the model is loaded (``load_stable_diffusion(half_precision=True)``,
the default on CUDA); this wrapper keeps the UNet's dtype. Options a device cannot run are skipped, and
:attr:`AcceleratedUNet.skipped` says why (e.g. CUDA graphs on a CPU).

The wrapper owns the module it is given: channels-last and the attention processor change it in place.
diffusers is imported only when ``sdpa`` is applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from ..errors import check_bool, check_int

Recorder = Callable[[Callable[[], Tensor]], tuple[Callable[[], None], Tensor]]
"""Records a zero-argument computation over static buffers: returns (replay, static output)."""


@dataclass(frozen=True)
class Acceleration:
    """Which same-math options :class:`AcceleratedUNet` applies (module docstring).

    Attributes:
        channels_last: NHWC weights.
        sdpa: ``AttnProcessor2_0`` attention.
        compile: ``torch.compile`` the UNet.
        compile_backend: the ``torch.compile`` backend (``inductor``; ``aot_eager`` traces without
            generating code).
        compile_mode: the ``torch.compile`` mode (None = default); ``reduce-overhead`` would capture
            CUDA graphs itself, so it excludes ``cuda_graphs``.
        cuda_graphs: capture the call into CUDA graphs (CUDA devices only).
        warmup_calls: uncaptured calls on a side stream before a capture (initialises cuBLAS, cuDNN
            and, with ``compile``, compiles).
    """

    channels_last: bool = True
    sdpa: bool = True
    compile: bool = True
    compile_backend: str = "inductor"
    compile_mode: Optional[str] = None  # noqa: UP045 (OmegaConf evaluates it on Python 3.9 in sdi-guidance)
    cuda_graphs: bool = True
    warmup_calls: int = 2

    def __post_init__(self) -> None:
        for name in ("channels_last", "sdpa", "compile", "cuda_graphs"):
            check_bool(f"acceleration.{name}", getattr(self, name))
        check_int("acceleration.warmup_calls", self.warmup_calls, low=1)
        if self.compile_mode == "reduce-overhead" and self.cuda_graphs:
            raise ValueError(
                "acceleration.compile_mode='reduce-overhead' captures CUDA graphs itself: set "
                "cuda_graphs=false with it, or keep cuda_graphs and another compile_mode"
            )


@dataclass(frozen=True)
class UNetOutput:
    """What a captured call returns: the UNet's output tensor as ``.sample`` (like diffusers')."""

    sample: Tensor


def cuda_graph_recorder(warmup_calls: int) -> Recorder:
    """A :data:`Recorder` that captures into a ``torch.cuda.CUDAGraph`` after ``warmup_calls`` side-stream runs."""

    def record(run: Callable[[], Tensor]) -> tuple[Callable[[], None], Tensor]:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup_calls):
                run()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = run()
        return graph.replay, output

    return record


def eager_recorder(run: Callable[[], Tensor]) -> tuple[Callable[[], None], Tensor]:
    """A :data:`Recorder` that "replays" by recomputing into the static output: the bookkeeping of a
    captured graph (static buffers, copies in and out) without a GPU, for tests and debugging."""
    output = run()

    def replay() -> None:
        output.copy_(run())

    return replay, output


def device_of(module: torch.nn.Module) -> torch.device:
    """The device of the module's first parameter (CPU for a module without parameters)."""
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def cuda_graphs_unavailable(device: torch.device) -> str | None:
    """Why CUDA graphs cannot run for a UNet on ``device``, or None when they can."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device; the UNet is on {device.type}"
    if not torch.cuda.is_available():
        return "torch reports no usable CUDA device"
    return None


def use_sdpa(unet: torch.nn.Module) -> str | None:
    """Give every attention layer of ``unet`` diffusers' ``AttnProcessor2_0``; None, or why not."""
    if not hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        return "this torch has no scaled_dot_product_attention"
    try:
        from diffusers.models.attention_processor import AttnProcessor2_0
    except ImportError:
        return "this diffusers has no AttnProcessor2_0"
    if not hasattr(unet, "set_attn_processor"):
        return f"{type(unet).__name__} has no set_attn_processor"
    unet.set_attn_processor(AttnProcessor2_0())
    return None


class CapturedCall:
    """One UNet call recorded at fixed input shapes: inputs are copied into static buffers, the
    recording is replayed, and a copy of the static output is returned (a later replay overwrites it)."""

    def __init__(
        self,
        forward: Callable[..., Any],
        sample: Tensor,
        timestep: Tensor,
        hidden: Tensor,
        recorder: Recorder,
    ) -> None:
        self.inputs = (sample.clone(), timestep.clone(), hidden.clone())

        def run() -> Tensor:
            static_sample, static_timestep, static_hidden = self.inputs
            return forward(static_sample, static_timestep, encoder_hidden_states=static_hidden).sample

        self.replay, self.output = recorder(run)

    def __call__(self, sample: Tensor, timestep: Tensor, hidden: Tensor) -> Tensor:
        for static, value in zip(self.inputs, (sample, timestep, hidden)):
            static.copy_(value)
        self.replay()
        return self.output.clone()


def _signature(*tensors: Tensor) -> tuple[Any, ...]:
    return tuple((tuple(t.shape), t.dtype, t.device) for t in tensors)


class AcceleratedUNet:
    """A UNet with the options of an :class:`Acceleration` applied (module docstring).

    Args:
        unet: a diffusers ``UNet2DConditionModel`` (changed in place by channels-last and SDPA).
        acceleration: the options; each one the device cannot run is skipped, with its reason in
            :attr:`skipped`.
        recorder: how a call is captured; default CUDA graphs (:func:`cuda_graph_recorder`). With
            :func:`eager_recorder` the capture bookkeeping also runs on a CPU.

    Attributes:
        inner: the wrapped module; ``config``, ``dtype`` and ``device`` are its.
        applied: the options in effect, by name.
        skipped: {option: why it was not applied}.
        captures: the captured calls by input signature.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        acceleration: Acceleration | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.inner = unet
        self.acceleration = acceleration = acceleration or Acceleration()
        self.skipped: dict[str, str] = {}
        self.applied: dict[str, bool] = {}
        device = device_of(unet)
        if acceleration.channels_last:
            unet.to(memory_format=torch.channels_last)
            self.applied["channels_last"] = True
        if acceleration.sdpa:
            self._apply("sdpa", use_sdpa(unet))
        self.forward: Callable[..., Any] = unet
        if acceleration.compile:
            self.forward = torch.compile(
                unet, backend=acceleration.compile_backend, mode=acceleration.compile_mode, dynamic=False
            )
            self.applied["compile"] = True
        self.recorder: Recorder | None = None
        if acceleration.cuda_graphs:
            reason = None if recorder is not None else cuda_graphs_unavailable(device)
            if self._apply("cuda_graphs", reason):
                self.recorder = recorder or cuda_graph_recorder(acceleration.warmup_calls)
        self.captures: dict[tuple[Any, ...], CapturedCall] = {}

    def _apply(self, name: str, reason: str | None) -> bool:
        """Record option ``name`` as applied (reason None) or skipped; True when applied."""
        if reason is None:
            self.applied[name] = True
            return True
        self.skipped[name] = reason
        return False

    @property
    def config(self) -> Any:
        return self.inner.config

    @property
    def dtype(self) -> torch.dtype:
        return next(self.inner.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return device_of(self.inner)

    def __call__(
        self, sample: Tensor, timestep: Tensor, encoder_hidden_states: Tensor | None = None, **kwargs: Any
    ) -> Any:
        """The UNet's output for these inputs: replayed from a capture where one applies, else run."""
        capturable = (
            self.recorder is not None
            and not kwargs
            and not torch.is_grad_enabled()
            and isinstance(timestep, Tensor)
            and isinstance(encoder_hidden_states, Tensor)
        )
        if not capturable:
            return self.forward(sample, timestep, encoder_hidden_states=encoder_hidden_states, **kwargs)
        assert self.recorder is not None and encoder_hidden_states is not None
        key = _signature(sample, timestep, encoder_hidden_states)
        captured = self.captures.get(key)
        if captured is None:
            captured = CapturedCall(self.forward, sample, timestep, encoder_hidden_states, self.recorder)
            self.captures[key] = captured
        return UNetOutput(captured(sample, timestep, encoder_hidden_states))


def accelerate(model: Any, acceleration: Acceleration | None = None) -> AcceleratedUNet:
    """Replace ``model.unet`` (a :class:`~threestudio_sdi.models.diffusers_model.DiffusersModel`'s, or
    threestudio's guidance's) by an :class:`AcceleratedUNet` of it; return the wrapper."""
    if isinstance(model.unet, AcceleratedUNet):
        raise ValueError("model.unet is accelerated already")
    wrapper = AcceleratedUNet(model.unet, acceleration)
    model.unet = wrapper
    return wrapper
