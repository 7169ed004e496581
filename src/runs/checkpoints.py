"""Rebuilding a trained model from a checkpoint written by src/train.py."""

from __future__ import annotations

import functools
from pathlib import Path

from hydra.utils import instantiate
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import OmegaConf

from src.utils.checkpoint_file import read_checkpoint
from src.utils.errors import ConfigError
from src.utils.files import DamagedFileError, checksum_path, save_torch_checked, verify


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but written beside the target and renamed, with a sha256
    (Lightning's own goes through a temporary file in /tmp, then a copy: a full disk or a kill left
    a truncated ``last.ckpt`` in place of the last good one); verified when a fit resumes."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        save_torch_checked(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        try:
            verify(path, required=False)
        except DamagedFileError as err:
            raise ConfigError(f"ckpt_path={err}") from err
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path) -> None:
        super().remove_checkpoint(path)
        checksum_path(path).unlink(missing_ok=True)


def save_checkpoint_file(checkpoint: dict, path: str | Path) -> None:
    """A checkpoint written outside a Trainer (a population's members), as a Trainer writes it."""
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)


def _flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


#: the config groups whose values make a model's tensors what they are
SHAPE_GROUPS = ("arch", "model", "data")


def check_resume_fits(model, cfg) -> None:
    """``ckpt_path``'s weights have this run's model's tensor names and shapes; else a one-line
    ConfigError naming the tensors and the config keys that differ (Lightning's own message is a
    size-mismatch line per tensor, hundreds of lines)."""
    path = cfg.ckpt_path
    saved = read_checkpoint(path)
    theirs, own = saved["state_dict"], model.state_dict()
    differing = sorted(
        [f"{k} (only here)" for k in own.keys() - theirs.keys()]
        + [f"{k} (only in the checkpoint)" for k in theirs.keys() - own.keys()]
        + [
            f"{k} {list(theirs[k].shape)} there, {list(own[k].shape)} here"
            for k in own.keys() & theirs.keys()
            if theirs[k].shape != own[k].shape
        ]
    )
    if not differing:
        return
    mine = _flat({g: OmegaConf.to_container(cfg[g], resolve=True) for g in SHAPE_GROUPS})
    before = _flat({g: saved["run_config"].get(g) or {} for g in SHAPE_GROUPS})
    changed = [  # the shallowest first: arch.sizeG before the nets' copies of it
        f"{key}={before.get(key)!r} there, {mine.get(key)!r} here"
        for key in sorted(mine.keys() | before.keys(), key=lambda k: (k.count("."), k))
        if mine.get(key) != before.get(key) and not key.endswith("data_dir")
    ]
    raise ConfigError(
        f"ckpt_path={path} holds other nets than this run builds ({len(differing)} tensors "
        f"differ: {'; '.join(differing[:3])}{' …' if len(differing) > 3 else ''}). Settings that "
        f"differ: {'; '.join(changed[:4]) or 'none found'}. Resume with the checkpoint's settings, "
        "or train anew without ckpt_path"
    )


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
