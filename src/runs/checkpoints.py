"""Rebuilding a trained model from a checkpoint written by src/train.py."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.utils import ConfigError


def read_checkpoint(ckpt_path: str | Path) -> dict:
    """The dict of a checkpoint written by src/train.py, or a one-line ConfigError naming the path
    and what is wrong with it (missing, truncated, corrupt, or some other file)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={path}: no such file (a run keeps its checkpoint at "
            "<run>/checkpoints/last.ckpt)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch's messages for a truncated zip, a text file, random bytes …
        # the first sentence of torch's message is the informative part
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0]
        raise ConfigError(
            f"ckpt_path={path}: not a readable PyTorch checkpoint, truncated or corrupt ({reason})"
        ) from err
    if not isinstance(checkpoint, dict) or not {"state_dict", "run_config"} <= checkpoint.keys():
        is_dict = isinstance(checkpoint, dict)
        found = f"keys {list(checkpoint)[:5]}" if is_dict else f"a {type(checkpoint).__name__}"
        raise ConfigError(
            f"ckpt_path={path}: a PyTorch file, but not a checkpoint written by src/train.py (it "
            f"holds {found}; a run's checkpoint has state_dict and run_config)"
        )
    return checkpoint


def load_checkpoint(ckpt_path: str | Path):
    """(model in eval mode, the run's resolved config) of ``ckpt_path``; clear errors if bad."""
    checkpoint = read_checkpoint(ckpt_path)
    run_cfg = OmegaConf.create(checkpoint["run_config"])
    model = instantiate(run_cfg.model)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), run_cfg


def run_data(run_cfg, data_dir: str | Path):
    """The data module of the run a checkpoint came from (its dataset or translation task, image
    size and split), set up from ``data_dir``: the real images that scripts compare a
    checkpoint's samples or translations with."""
    data_cfg = OmegaConf.to_container(run_cfg.data, resolve=True)
    if "data_dir" in data_cfg:  # an image folder keeps its own path and cache
        data_cfg["data_dir"] = str(data_dir)
    data = instantiate(data_cfg)
    data.prepare_data()
    data.setup()
    return data


@functools.lru_cache(maxsize=16)  # a population's members share it: one Trainer built, not K
def lightning_resume_state(epochs: int, batches_per_epoch: int, optimizer_steps: int) -> dict:
    """The keys Lightning resumes a fit from (``trainer.fit(ckpt_path=…)``) for a run that has
    finished ``epochs`` epochs of ``batches_per_epoch`` batches and ``optimizer_steps`` optimizer
    steps: its loop counters, as its own checkpoint at the end of such a fit holds them. For
    checkpoints written outside a Trainer (a population's members)."""
    import lightning
    from lightning import Trainer

    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loop = trainer.fit_loop
    batches = epochs * batches_per_epoch
    for tracker, total, current in (
        (loop.epoch_progress, epochs, epochs),
        (loop.epoch_loop.batch_progress, batches, batches_per_epoch),
        (loop.epoch_loop.manual_optimization.optim_step_progress, optimizer_steps, optimizer_steps),
    ):
        for counts, value in ((tracker.total, total), (tracker.current, current)):
            for field in ("ready", "started", "processed", "completed"):
                if hasattr(counts, field):
                    setattr(counts, field, value)
    loop.epoch_loop.batch_progress.is_last_batch = True
    loop.epoch_loop._batches_that_stepped = batches
    return {
        "epoch": epochs,
        "global_step": optimizer_steps,
        "pytorch-lightning_version": lightning.__version__,
        "loops": {"fit_loop": loop.state_dict()},
        "lr_schedulers": [],
    }
