"""Where a run executes: the device it picks, and the provenance record every row it writes carries."""

from __future__ import annotations

import time
from importlib import metadata

import torch

from .. import __version__, plugins
from ..data.sources import source_hash as data_source_hash
from .config import TrainConfig
from ..models.catalog import MODELS


def select_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def provenance(config: TrainConfig, device: torch.device, num_workers: int = 0) -> dict:
    try:
        ray_version = metadata.version("ray")  # without importing it (seconds)
    except metadata.PackageNotFoundError:
        ray_version = None
    from .machine import environment

    return {
        "seed": config.seed, "config_hash": config.config_hash(), "deqlab_version": __version__,
        "torch_version": torch.__version__, "ray_version": ray_version, "device": str(device),
        "num_workers": num_workers, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **environment(),
        **code_hashes(config),
    }


def code_hashes(config: TrainConfig) -> dict:
    """The source hash of your own model's and data function's modules (the .npz file's bytes), beside
    `code_version` (deqlab's commit); None for built-in names."""
    target = plugins.target(config.model.name, plugins.MODELS_GROUP) if config.model.name not in MODELS else None
    return {"model_source_hash": plugins.source_hash(target) if target else None,
            "data_source_hash": data_source_hash(config.data.name, config.data.path)}
