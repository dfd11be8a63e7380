"""threestudio's own ``launch.py`` ``main()`` on a CPU: its Trainer forced to the CPU, a recorder added.

``launch.py`` builds ``Trainer(accelerator="gpu", devices=-1, ...)``; :func:`launch_on_cpu` swaps
``pytorch_lightning.Trainer`` for a subclass that takes ``accelerator="cpu", devices=1`` and adds a
recorder (:func:`make_recorder`), then calls ``main(args, extras)`` exactly as the command line would
(``--train`` / ``--validate`` / ``--test`` / ``--export``, ``resume=...``, ``key=value`` overrides).
Everything else — config loading, checkpoints, ``resume=``, test video, export — is threestudio's.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

MODES = ("train", "validate", "test", "export")
LOGGERS = ("pytorch_lightning", "threestudio")
"""Loggers whose warnings a run records (threestudio's ``warn`` logs to ``pytorch_lightning``)."""
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    found = {}
    for key, value in metrics.items():
        try:
            found[key] = float(value)
        except (TypeError, ValueError):
            continue
    return found


def make_recorder() -> Any:
    """A Lightning callback recording each training step: its loss and the scalars logged so far."""
    import pytorch_lightning as pl

    class Recorder(pl.Callback):
        def __init__(self) -> None:
            self.steps: list[dict[str, Any]] = []
            self.initial: dict[str, Any] = {}

        def on_train_start(self, trainer, module) -> None:
            self.initial = {key: value.detach().clone() for key, value in module.state_dict().items()}

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.steps.append(
                {
                    "global_step": int(trainer.global_step),
                    "loss": float(loss),
                    "logged": _floats(trainer.callback_metrics),
                }
            )

    return Recorder()


@dataclass
class LaunchRun:
    """What one ``launch.py`` run left: its trainer (``trainer.lightning_module`` is the system; None if
    the run stopped before building one), the recorded training steps, the initial weights, the
    warnings logged and, for a run that raised (``keep_error=True``), the error and when it came:
    ``start-up`` (config, system or data, before the Trainer), ``first step`` or ``later``."""

    trainer: Any
    steps: list[dict[str, Any]]
    initial: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    error: Exception | None = None
    phase: str | None = None

    @property
    def system(self) -> Any:
        return self.trainer.lightning_module

    def changed_parameters(self, prefix: str = "") -> list[str]:
        """Names of the system's weights under ``prefix`` that differ from their values at fit start."""
        import torch

        final = self.system.state_dict()
        return sorted(
            key
            for key, value in self.initial.items()
            if key.startswith(prefix) and not torch.equal(value, final[key])
        )


class _WarningCollector(logging.Handler):
    stream = None  # launch.py reads ``handler.stream`` of the Lightning logger's handlers

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(ANSI_ESCAPE.sub("", record.getMessage()))  # launch.py colours the records


@contextmanager
def cpu_trainer(recorder: Any, created: list[Any]) -> Iterator[None]:
    """``pytorch_lightning.Trainer`` is a CPU Trainer with ``recorder`` for the duration."""
    import pytorch_lightning as pl

    original = pl.Trainer

    class CPUTrainer(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.update(accelerator="cpu", devices=1)
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), recorder]
            super().__init__(*args, **kwargs)
            created.append(self)

    pl.Trainer = CPUTrainer
    try:
        yield
    finally:
        pl.Trainer = original


def launch_on_cpu(
    launch: ModuleType,
    config: str,
    mode: str = "train",
    overrides: Sequence[str] = (),
    keep_error: bool = False,
) -> LaunchRun:
    """``python launch.py --config CONFIG --MODE --gpu 0 OVERRIDES...`` in this process, on the CPU.

    An exception propagates, unless ``keep_error``: then it is returned in :attr:`LaunchRun.error`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    args = argparse.Namespace(
        config=str(config),
        gpu="0",
        gradio=False,
        verbose=False,
        typecheck=False,
        **{name: name == mode for name in MODES},
    )
    recorder, created = make_recorder(), []
    collector = _WarningCollector()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    for logger in loggers:
        logger.addHandler(collector)
    error: Exception | None = None
    try:
        with cpu_trainer(recorder, created):
            launch.main(args, list(overrides))
    except Exception as raised:
        if not keep_error:
            raise
        error = raised
    finally:
        for logger in loggers:
            logger.removeHandler(collector)
    phase = (
        None
        if error is None
        else "start-up"
        if not created
        else "first step"
        if not recorder.steps
        else "later"
    )
    trainer = created[-1] if created else None
    return LaunchRun(trainer, recorder.steps, recorder.initial, collector.messages, error, phase)
