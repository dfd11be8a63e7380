"""A shim for the ``"cuda"`` that threestudio-3dgs hard-codes, so that its unmodified code runs on a CPU.

threestudio-3dgs creates tensors with ``device="cuda"`` and calls ``.cuda()`` in about 40 places (and
threestudio's ``get_cam_info_gaussian`` / ``get_projection_matrix_gaussian``, which it calls, do too).
:func:`install` (test harness only, never in their trees):

* gives each module named in ``modules`` a ``torch`` of its own, :class:`CpuTorch`, whose functions take
  ``device="cuda"`` (or ``cuda:<n>``, or ``torch.device("cuda")``) to mean the CPU; every other name is
  the real ``torch`` (classes, submodules, ``torch.cuda``, ``torch.nn``, ...);
* makes ``Tensor.cuda()`` return the tensor on the CPU, only while CUDA is unavailable (there it would
  raise), for the whole process: a tensor method cannot be patched per module.

:meth:`Shim.uninstall` puts everything back. Rewritten calls are counted in :attr:`CpuTorch.rewrites`.
"""

from __future__ import annotations

import sys
import types
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch


def is_cuda(device: Any) -> bool:
    """True for ``"cuda"``, ``"cuda:<n>"`` and ``torch.device("cuda...")``."""
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return isinstance(device, str) and (device == "cuda" or device.startswith("cuda:"))


class CpuTorch(types.ModuleType):
    """``torch`` with ``device="cuda"`` meaning the CPU in every function call (module docstring)."""

    def __init__(self) -> None:
        super().__init__("torch")
        self.rewrites: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        value = getattr(torch, name)
        if isinstance(value, (types.BuiltinFunctionType, types.FunctionType)):
            return self._on_cpu(name, value)
        return value

    def _on_cpu(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if is_cuda(kwargs.get("device")):
                kwargs["device"] = "cpu"
                self.rewrites[name] += 1
            return function(*args, **kwargs)

        return call


def _tensor_cuda_on_cpu(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return self.to("cpu")


@dataclass
class Shim:
    """What :func:`install` changed, to undo it."""

    torch_proxy: CpuTorch
    modules: dict[str, Any] = field(default_factory=dict)
    tensor_cuda: Any = None

    def uninstall(self) -> None:
        for name, original in self.modules.items():
            module = sys.modules.get(name)
            if module is not None:
                module.torch = original
        if self.tensor_cuda is not None:
            torch.Tensor.cuda = self.tensor_cuda
        self.modules.clear()
        self.tensor_cuda = None


def install(modules: Iterable[str]) -> Shim:
    """Give the loaded ``modules`` (by name) a :class:`CpuTorch` and make ``Tensor.cuda`` a CPU no-op.

    ValueError naming a module that is not loaded or has no ``torch`` global; RuntimeError if CUDA is
    available (the shim is for machines without it).
    """
    if torch.cuda.is_available():
        raise RuntimeError("the cuda shim is for machines without CUDA; this one has it")
    shim = Shim(CpuTorch())
    for name in modules:
        module = sys.modules.get(name)
        if module is None or getattr(module, "torch", None) is None:
            shim.uninstall()
            raise ValueError(f"cannot shim {name!r}: not loaded, or it has no module-level torch")
        shim.modules[name] = module.torch
        module.torch = shim.torch_proxy
    shim.tensor_cuda = torch.Tensor.cuda
    torch.Tensor.cuda = _tensor_cuda_on_cpu
    return shim
