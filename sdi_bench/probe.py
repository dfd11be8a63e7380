"""The Lightning callback that the launch wrapper injects into threestudio's ``Trainer``.

It measures, inside the training process: the prompt the system's prompt processor trains on, the
training loop's wall time and steps per second,
``torch.cuda.max_memory_allocated`` (peak over fit and test), non-finite losses, non-finite
parameters at the end of training, and how much of each test view the volume covers (the fraction
of pixels whose opacity is above 0.5, read from the system's ``forward`` outputs during test).

Imported by :mod:`.launcher` only after ``pytorch_lightning`` has been imported by ``launch.py``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

from .measurements import Measurements


class BenchProbe(pl.Callback):
    """Fills a :class:`Measurements` while threestudio trains and tests."""

    def __init__(self, record: Measurements) -> None:
        super().__init__()
        self.record = record
        self._original_forward: Any = None

    def _peak_memory(self) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            peak = int(torch.cuda.max_memory_allocated())
            self.record.peak_vram_bytes = max(self.record.peak_vram_bytes or 0, peak)
            self.record.gpu_name = torch.cuda.get_device_name()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After the system's ``on_fit_start``, where threestudio's systems build their prompt processor."""
        prompt = getattr(getattr(pl_module, "prompt_processor", None), "prompt", None)
        self.record.prompt = prompt if isinstance(prompt, str) else None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.record.first_step_at is None:
            self.record.first_step_at = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.record.steps += 1
        self.record.last_step_at = time.perf_counter()
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            self.record.nonfinite_losses += 1
            self.record.last_loss_finite = False
        elif isinstance(loss, torch.Tensor):
            self.record.last_loss_finite = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with torch.no_grad():
            self.record.params_finite = all(bool(torch.isfinite(p).all()) for p in pl_module.parameters())
        self._peak_memory()

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        original = pl_module.forward
        record = self.record

        def forward(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            opacity = out.get("opacity") if isinstance(out, Mapping) else None
            if isinstance(opacity, torch.Tensor) and opacity.ndim >= 3:
                covered = (opacity.detach().float() > 0.5).flatten(1).float().mean(dim=1)
                record.opacity_coverage.extend(float(value) for value in covered.cpu())
            return out

        self._original_forward = original
        pl_module.forward = forward  # an instance attribute: Module.__call__ finds it first

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._original_forward is not None:
            del pl_module.forward
            self._original_forward = None
        self._peak_memory()
