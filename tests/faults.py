"""What the fault tests (tests/test_fault_injection.py) run inside the processes they kill.

``SigkillAt``: a callback a run is given on the command line (``+callbacks.sigkill._target_=…``)
that SIGKILLs its own process at a chosen batch: no handler, no cleanup, as the OOM killer does.

``python -m tests.faults population <folder> <data_dir> <threads>``: the population of
``population_members`` trained until its state after epoch 0 is written, then SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from lightning import Callback


class SigkillAt(Callback):
    """SIGKILL this process when training batch ``batch`` of epoch ``epoch`` starts."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


class FillDiskAt(Callback):
    """When epoch ``epoch`` starts, fill the disk of ``folder`` up to ``leave`` free bytes (other
    files growing between two checkpoints): the next checkpoint then does not fit."""

    def __init__(self, epoch: int, folder: str, leave: int):
        self.epoch, self.folder, self.leave = epoch, Path(folder), leave

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch != self.epoch:
            return
        stats = os.statvfs(self.folder)
        free = stats.f_bavail * stats.f_frsize
        with open(self.folder / "filler", "wb") as handle:
            handle.write(b"\0" * max(0, free - self.leave))


def population_members(folder: Path, data_dir: str, threads: int) -> list:
    """Two EBGAN members of different widths, 3 epochs of 3 batches, CSV logs every batch."""
    from src.population.run import Member
    from tests.conftest import compose_train

    members = []
    for k, width in enumerate((16, 24)):
        output_dir = Path(folder) / f"member{k}"
        overrides = [
            "model=ebgan",
            f"arch.sizeD={width}",
            f"seed={k + 1}",
            "logger=csv",
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=3",
            "callbacks.sample_grid=null",
            f"torch_threads={threads}",
        ]
        members.append(Member(compose_train(overrides, output_dir, data_dir), output_dir))
    return members


def _kill_after_first_state(folder: str, data_dir: str, threads: str) -> None:
    import src.population.run as run
    from src.utils import register_resolvers

    register_resolvers()
    save = run._save_population

    def save_then_die(path, state):
        save(path, state)
        os.kill(os.getpid(), signal.SIGKILL)

    run._save_population = save_then_die
    run.train_population(population_members(Path(folder), data_dir, int(threads)))


if __name__ == "__main__":
    if sys.argv[1] == "population":
        _kill_after_first_state(*sys.argv[2:5])
