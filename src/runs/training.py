"""compose -> seed -> instantiate -> fit -> write the run's results (src/train.py, the tests)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.config import check_paths, validate_config
from src.models.base import DivergenceError
from src.runs.checkpoints import AtomicCheckpointIO, check_resume_fits
from src.runs.loggers import build_loggers
from src.runs.sweep_jobs import LAUNCH_ONLY_KEYS
from src.utils import ConfigError, hydra_runtime, is_multirun, write_json_atomic
from src.utils.errors import UserError
from src.utils.printing import print_config_tree
from src.utils.signals import sigterm_as_interrupt

log = logging.getLogger(__name__)


def _floats(metrics: dict) -> dict:
    return {
        key: float(value.detach().cpu()) if isinstance(value, torch.Tensor) else float(value)
        for key, value in metrics.items()
    }


def instantiate_all(cfg: DictConfig):
    """Build (datamodule, model, trainer) from a composed config, checking it first."""
    validate_config(cfg)
    check_paths(cfg)
    datamodule = instantiate(cfg.data)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    # a partial: the run config reaches the model as a plain dict, not instantiated by Hydra
    build_model = instantiate(cfg.model, _partial_=True)
    try:
        model = build_model(run_config=run_config)
    except Exception as err:  # as Hydra reports a failing target: one line for bad values
        raise InstantiationException(f"Error in call to target '{cfg.model._target_}'") from err
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = build_loggers(cfg, hydra_runtime()["choices"])
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        enable_checkpointing=any(
            isinstance(c, L.pytorch.callbacks.ModelCheckpoint) for c in callbacks
        ),
        enable_progress_bar=any(isinstance(c, L.pytorch.callbacks.ProgressBar) for c in callbacks),
        plugins=[AtomicCheckpointIO()],  # checkpoints written beside their target and renamed
    )
    for logger in trainer.loggers:
        logger.log_hyperparams(run_config)
    return datamodule, model, trainer


def _run_defining(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in LAUNCH_ONLY_KEYS)


def completed_before(output_dir: Path, overrides: list[str]) -> dict | None:
    """The earlier result in ``output_dir`` if it completed with these overrides (sweep resume)."""
    path = output_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        previous = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if previous.get("status") == "completed" and _run_defining(
        previous.get("overrides", [])
    ) == _run_defining(overrides):
        return previous
    return None


def _close_wandb(trainer, failed: bool) -> None:
    """Each run closes its W&B run, also on failure, so runs of a multirun never merge."""
    if any(type(logger).__name__ == "WandbLogger" for logger in trainer.loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)


def batches_per_epoch(limit, available: int) -> int:
    """Training batches an epoch takes under Lightning's ``limit_train_batches`` (a count or a
    share of the ``available`` ones)."""
    if isinstance(limit, float) and limit <= 1.0:
        return available if limit == 1.0 else int(available * limit)
    return min(int(limit), available)


def check_training_batches(cfg: DictConfig, datamodule) -> int:
    """The batches an epoch trains on; a ConfigError naming the key when there are none (the run
    would otherwise "complete" without one optimizer step). Sets the data module up."""
    datamodule.setup("fit")
    available = len(datamodule.train_dataloader())
    limit = OmegaConf.select(cfg, "trainer.limit_train_batches", default=1.0)
    batches = batches_per_epoch(limit, available)
    if available == 0:
        split = datamodule.splits["train"]
        raise ConfigError(
            f"data.batch_size={datamodule.batch_size} is more than the {len(split[0])} training "
            "images of the split (what data.val_size leaves): an epoch would have no batch; "
            "lower data.batch_size"
        )
    if batches == 0:
        raise ConfigError(
            f"trainer.limit_train_batches={limit} leaves none of the {available} batches of an "
            f"epoch: use a count >= 1 or a share >= {1 / available:.2g}"
        )
    return batches


def train(cfg: DictConfig) -> dict:
    """Train one run and write ``<output_dir>/metrics.json``; returns what was written.

    A run that already completed in this folder with the same overrides is not trained again.
    Divergence (NaN/inf) and crashes are recorded as status ``diverged`` / ``failed``; a crash is
    re-raised outside a multirun, so a single run still shows its traceback. Ctrl-C / SIGTERM record
    ``interrupted`` (after a checkpoint is saved) and stop, a sweep too.
    """
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    runtime = hydra_runtime()
    previous = completed_before(output_dir, runtime["overrides"])
    if previous is not None:
        log.info("skipping: %s already completed with these overrides", output_dir)
        return previous
    validate_config(cfg)  # before threads and seed are set: a bad value of theirs is one clear line
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    torch.set_float32_matmul_precision(str(cfg.get("matmul_precision") or "highest"))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = instantiate_all(cfg)
    # missing/corrupt data, no batch to train on, a checkpoint of other nets: a clear error now,
    # not a traceback from inside fit
    datamodule.prepare_data()
    check_training_batches(cfg, datamodule)
    if cfg.get("ckpt_path"):
        check_resume_fits(model, cfg)
    # under DDP the other processes run this function too (Lightning starts them with the same
    # command): only global rank 0 writes the config tree and metrics.json
    if cfg.get("print_config", True) and rank_zero_only.rank == 0:
        print_config_tree(cfg, save_to=output_dir / "config_tree.log")

    status, failure, reraise = "completed", None, None
    try:
        with sigterm_as_interrupt():
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except DivergenceError as err:
        status, failure = (
            "diverged",
            {"message": str(err), "loss": err.loss_name, "batch": err.batch, "epoch": err.epoch},
        )
        log.error("run diverged: %s; the last checkpoint (if any) holds the last good weights", err)
    # Lightning turns Ctrl-C into sys.exit(1) after its teardown
    except (KeyboardInterrupt, SystemExit) as err:
        status, failure, reraise = "interrupted", {"message": f"{type(err).__name__}: {err}"}, err
    except UserError as err:  # bad input found during fit (a damaged file): its own line
        status, failure = "failed", {"message": str(err)}
        reraise = None if is_multirun() else err
    except Exception as err:  # recorded, then re-raised unless a sweep must go on
        status, failure = "failed", {"message": f"{type(err).__name__}: {err}"}
        reraise = None if is_multirun() else err
        log.exception("run failed")
    finally:
        _close_wandb(trainer, failed=status != "completed")

    if status == "completed" and trainer.global_step == 0:  # what check_training_batches missed
        status, failure = "failed", {"message": "the fit ended without a single optimizer step"}
    result = {
        "status": status,
        "failure": failure,
        "wall_time_s": round(time.time() - started, 3),
        "epochs_completed": trainer.current_epoch,
        "optimizer_steps": trainer.global_step,
        "metrics": _floats(trainer.callback_metrics),
        **runtime,
    }
    if trainer.world_size > 1:
        result["distributed"] = {
            "world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
            "replicas_identical": getattr(model, "replicas_identical", None),
        }
    if not trainer.is_global_zero:
        return result
    write_json_atomic(output_dir / "metrics.json", result)
    log.info(
        "status %s after %.1f s; results in %s",
        status,
        result["wall_time_s"],
        output_dir / "metrics.json",
    )
    if reraise is not None:
        raise reraise
    return result
