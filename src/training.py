"""compose -> seed -> instantiate -> fit -> write the run's results. Used by src/train.py and the tests."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.models.base import DivergenceError
from src.utils import is_multirun, validate_config, write_json_atomic

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


def completed_before(output_dir: Path, overrides: list[str]) -> dict | None:
    """The earlier result in ``output_dir`` if it completed with the same overrides (sweep resume)."""
    path = output_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        previous = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if previous.get("status") == "completed" and sorted(previous.get("overrides", [])) == sorted(overrides):
        return previous
    return None


def train(cfg: DictConfig) -> dict:
    """Train one run and write ``<output_dir>/metrics.json``; returns what was written.

    A run that already completed in this folder with the same overrides is not trained again.
    Divergence (NaN/inf) and crashes are recorded as status ``diverged`` / ``failed``; a crash is
    re-raised outside a multirun, so a single run still shows its traceback.
    """
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    runtime = _hydra_runtime()
    previous = completed_before(output_dir, runtime["overrides"])
    if previous is not None:
        log.info("skipping: %s already completed with these overrides", output_dir)
        return previous
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = instantiate_all(cfg)

    status, failure, crash = "completed", None, None
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except DivergenceError as err:
        status, failure = "diverged", {"message": str(err), "loss": err.loss_name, "batch": err.batch,
                                       "epoch": err.epoch}
        log.error("run diverged: %s; the last checkpoint (if any) holds the last good weights", err)
    except Exception as err:  # recorded, then re-raised unless a sweep must go on
        status, failure, crash = "failed", {"message": f"{type(err).__name__}: {err}"}, err
        log.exception("run failed")
    if status == "completed" and trainer.interrupted:
        status = "interrupted"

    result = {
        "status": status,
        "failure": failure,
        "wall_time_s": round(time.time() - started, 3),
        "epochs_completed": trainer.current_epoch,
        "optimizer_steps": trainer.global_step,
        "metrics": _finite_floats(trainer.callback_metrics),
        **runtime,
    }
    write_json_atomic(output_dir / "metrics.json", result)
    log.info("status %s after %.1f s; results in %s", status, result["wall_time_s"], output_dir / "metrics.json")
    if crash is not None and not is_multirun():
        raise crash
    return result
