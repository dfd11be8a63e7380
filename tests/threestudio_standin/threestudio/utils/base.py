"""STAND-IN: Updateable, BaseObject, BaseModule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch.nn as nn

from .config import parse_structured
from .misc import get_device


class Updateable:
    def do_update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        for attr in dir(self):
            if attr.startswith("_"):
                continue
            try:
                module = getattr(self, attr)
            except Exception:
                continue
            if isinstance(module, Updateable):
                module.do_update_step(epoch, global_step, on_load_weights=on_load_weights)
        self.update_step(epoch, global_step, on_load_weights=on_load_weights)

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        pass


class BaseObject(Updateable):
    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Any = None, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.cfg = parse_structured(self.Config, cfg)
        self.device = get_device()
        self.configure(*args, **kwargs)

    def configure(self, *args: Any, **kwargs: Any) -> None:
        pass


class BaseModule(nn.Module, Updateable):
    @dataclass
    class Config:
        weights: Optional[str] = None  # noqa: UP045

    def __init__(self, cfg: Any = None, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.cfg = parse_structured(self.Config, cfg)
        self.device = get_device()
        self.configure(*args, **kwargs)

    def configure(self, *args: Any, **kwargs: Any) -> None:
        pass
