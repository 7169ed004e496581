"""Saves last.ckpt when a run is interrupted (Ctrl-C, or SIGTERM, turned into Ctrl-C)."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning import Callback

log = logging.getLogger(__name__)


class CheckpointOnInterrupt(Callback):
    """On KeyboardInterrupt only: a diverged or crashed run never overwrites its last good one."""

    def __init__(self, dirpath: str, filename: str = "last.ckpt"):
        self.path = Path(dirpath) / filename

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(self.path)
            log.warning(
                "interrupted: checkpoint saved to %s (resume with ckpt_path=%s)",
                self.path,
                self.path,
            )
