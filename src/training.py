"""compose -> seed -> instantiate -> fit -> write the run's results. Used by src/train.py and the tests."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.models.base import DivergenceError
from src.utils import validate_config, write_json_atomic

log = logging.getLogger(__name__)


def _hydra_runtime() -> dict:
    """Overrides and group choices of this job (empty under the compose API)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        return {"overrides": list(hydra_cfg.overrides.task),
                "choices": {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra")}}
    except ValueError:
        return {"overrides": [], "choices": {}}


def _finite_floats(metrics: dict) -> dict:
    out = {}
    for key, value in metrics.items():
        value = float(value.detach().cpu()) if isinstance(value, torch.Tensor) else float(value)
        out[key] = value
    return out


def instantiate_all(cfg: DictConfig):
    """Build (datamodule, model, trainer) from a composed config, checking it first."""
    validate_config(cfg)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                          enable_checkpointing=any(isinstance(c, L.pytorch.callbacks.ModelCheckpoint) for c in callbacks),
                          enable_progress_bar=any(isinstance(c, L.pytorch.callbacks.ProgressBar) for c in callbacks))
    return datamodule, model, trainer


def train(cfg: DictConfig) -> dict:
    """Train one run and write ``<output_dir>/metrics.json``; returns what was written."""
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = instantiate_all(cfg)

    status, failure = "completed", None
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except DivergenceError as err:
        status, failure = "diverged", {"message": str(err), "loss": err.loss_name, "batch": err.batch,
                                       "epoch": err.epoch}
        log.error("run diverged: %s; the last checkpoint (if any) holds the last good weights", err)
    if status == "completed" and trainer.interrupted:
        status = "interrupted"

    result = {
        "status": status,
        "failure": failure,
        "wall_time_s": round(time.time() - started, 3),
        "epochs_completed": trainer.current_epoch,
        "optimizer_steps": trainer.global_step,
        "metrics": _finite_floats(trainer.callback_metrics),
        **_hydra_runtime(),
    }
    write_json_atomic(output_dir / "metrics.json", result)
    log.info("status %s after %.1f s; results in %s", status, result["wall_time_s"], output_dir / "metrics.json")
    return result
