"""Rebuilding a trained model from a checkpoint written by src/train.py."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.utils import ConfigError


def read_checkpoint(ckpt_path: str | Path) -> dict:
    """The checkpoint dict at ``ckpt_path``, or a ConfigError naming the path and the problem."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={path}: no such file (a run keeps its checkpoint at "
            "<run>/checkpoints/last.ckpt)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ConfigError(f"ckpt_path={path}: not a readable PyTorch checkpoint ({err})") from err


def load_checkpoint(ckpt_path: str | Path):
    """(model in eval mode, the run's resolved config) of ``ckpt_path``; clear errors if bad."""
    checkpoint = read_checkpoint(ckpt_path)
    if "run_config" not in checkpoint or "state_dict" not in checkpoint:
        raise ConfigError(
            f"ckpt_path={ckpt_path}: not a checkpoint written by src/train.py (no run_config "
            "inside)"
        )
    run_cfg = OmegaConf.create(checkpoint["run_config"])
    model = instantiate(run_cfg.model)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), run_cfg
