"""The repository's config files, as tests read them (OmegaConf, without threestudio's resolvers)."""

from __future__ import annotations

import pathlib
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def load(name: str) -> DictConfig:
    return OmegaConf.load(CONFIGS / name)


def resolved(config: DictConfig, key: str) -> Any:
    """One subtree with its interpolations resolved (threestudio's own resolvers are not needed)."""
    return OmegaConf.to_container(OmegaConf.select(config, key), resolve=True)
