"""STAND-IN: a BaseLift3DSystem without Lightning that records what it would log and save."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch.nn as nn

import threestudio

from ..utils.base import Updateable
from ..utils.config import parse_structured
from ..utils.misc import C


class BaseLift3DSystem(nn.Module, Updateable):
    @dataclass
    class Config:
        loggers: dict = field(default_factory=dict)
        loss: dict = field(default_factory=dict)
        optimizer: dict = field(default_factory=dict)
        scheduler: Optional[dict] = None  # noqa: UP045
        weights: Optional[str] = None  # noqa: UP045
        geometry_type: str = ""
        geometry: dict = field(default_factory=dict)
        material_type: str = ""
        material: dict = field(default_factory=dict)
        background_type: str = ""
        background: dict = field(default_factory=dict)
        renderer_type: str = ""
        renderer: dict = field(default_factory=dict)
        guidance_type: str = ""
        guidance: dict = field(default_factory=dict)
        prompt_processor_type: str = ""
        prompt_processor: dict = field(default_factory=dict)
        exporter_type: str = "mesh-exporter"
        exporter: dict = field(default_factory=dict)

    def __init__(self, cfg: Any, resumed: bool = False) -> None:
        super().__init__()
        self.cfg = parse_structured(self.Config, cfg)
        self.true_global_step = 0
        self.true_current_epoch = 0
        self.logged: dict[str, Any] = {}
        self.saved_grids: list[tuple[str, list]] = []
        self.saved_sequences: list[str] = []
        self.configure()

    def configure(self) -> None:
        if self.cfg.renderer_type:
            self.renderer = threestudio.find(self.cfg.renderer_type)(self.cfg.renderer)

    def on_fit_start(self) -> None:
        pass

    def on_save_checkpoint(self, checkpoint: dict) -> None:  # LightningModule's no-op hook
        pass

    def on_load_checkpoint(self, checkpoint: dict) -> None:  # LightningModule's no-op hook
        pass

    def C(self, value: Any) -> float:
        return C(value, self.true_current_epoch, self.true_global_step)

    def log(self, name: str, value: Any) -> None:
        self.logged[name] = value

    def save_image_grid(self, filename: str, imgs: list, name: str | None = None, step: int | None = None):
        self.saved_grids.append((filename, imgs))
        return filename

    def save_img_sequence(
        self, filename: str, img_dir: str, matcher: str, save_format: str = "mp4", **kwargs
    ):
        self.saved_sequences.append(f"{filename}.{save_format}")
        return filename
