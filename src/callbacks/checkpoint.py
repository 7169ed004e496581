"""``last.ckpt`` after every epoch, so a killed run (SIGKILL, the OOM killer, a segfault) loses at
most the epoch it was in."""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint


def flush_loggers(trainer) -> None:
    """Write what the loggers hold in memory (the CSV logger keeps rows until it saves)."""
    for logger in trainer.loggers:
        logger.save()


class EpochCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, plus ``last.ckpt`` after every ``every_n_epochs``-th training
    epoch when no top-k checkpoint is kept: with ``save_top_k=0`` Lightning writes ``last.ckpt``
    only beside a top-k one, i.e. at the end of the fit. Being a ModelCheckpoint, it runs after the
    model's own epoch-end hook (BEGAN's lr decay), so a resume continues exactly. The loggers are
    flushed before each checkpoint, so the curves on disk reach at least as far as it does."""

    def __init__(self, *args, save_on_train_epoch_end: bool = True, **kwargs):
        super().__init__(*args, save_on_train_epoch_end=save_on_train_epoch_end, **kwargs)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # the epoch-level values of the last epoch are logged after its checkpoint
        flush_loggers(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        flush_loggers(trainer)
        super().on_train_epoch_end(trainer, pl_module)
        every = self._every_n_epochs  # 0: no epoch checkpoints, as ModelCheckpoint's
        due = every >= 1 and (trainer.current_epoch + 1) % every == 0
        if (
            self.save_top_k == 0
            and self.save_last
            and due
            and self._should_save_on_train_epoch_end(trainer)
            and not self._should_skip_saving_checkpoint(trainer)
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer, pl_module) -> None:
        flush_loggers(trainer)
        super().on_train_end(trainer, pl_module)
