"""What a single run logs, kept per member of a population: ``train/<name>`` on the trainer's
logging interval, ``val/<name>`` after each epoch (held-out D values and the sample scores), the
sample grids; into each member's metrics.json values and its own loggers (``cfg.logger``: W&B, CSV,
TensorBoard), at the steps a single run's Lightning loggers use.

Training values are snapshotted on the device at each logging step and read once an epoch, so a
step never waits for the GPU. A member's values stop at its divergence, as a single run's do.
"""

from __future__ import annotations

import logging

import torch

from src.models.base import VALIDATION_SEED
from src.runs.loggers import build_loggers

log = logging.getLogger(__name__)


class MemberLogs:
    def __init__(self, members, models, population, log_every_n_steps: int):
        self.size = len(members)
        self.log_every_n_steps = int(log_every_n_steps)  # 0: never, as Lightning
        self.population = population  # its optimizers' learning rates are logged
        self.loggers = [self._loggers(m, model) for m, model in zip(members, models, strict=True)]
        # a member that joined later (a search refills freed slots): the population's epoch and
        # batch count when it did; its own epochs and steps count from there
        self.first_epoch = [0] * self.size
        self.first_batch = [0] * self.size
        self._offsets = {0}  # the distinct first_batch values (checked every batch)
        # metrics.json: the last logged train values and the last epoch's val values
        self.train: list[dict] = [{} for _ in members]
        self.val: list[dict] = [{} for _ in members]
        self._pending: list[tuple[int, dict]] = []  # (batches seen, {name: [K] tensor})

    @staticmethod
    def _loggers(member, model) -> list:
        loggers = build_loggers(member.cfg, member.runtime.get("choices", {}), concurrent=True)
        for logger in loggers:
            logger.log_hyperparams(model.run_config)
        return loggers

    def replace(self, k: int, member, model, epoch: int, batches: int) -> None:
        """Slot k's new member, from population epoch ``epoch`` (``batches`` trained before it):
        its own loggers and values."""
        self.loggers[k] = self._loggers(member, model)
        self.train[k], self.val[k] = {}, {}
        self.first_epoch[k], self.first_batch[k] = epoch, batches
        self._offsets = set(self.first_batch)

    def is_log_step(self, batches_seen: int) -> bool:
        """Where a single run logs (src/models/base.py ``_is_log_step``): every n-th batch."""
        return self.log_every_n_steps > 0 and batches_seen % self.log_every_n_steps == 0

    def wants_snapshot(self, batches_seen: int) -> bool:
        """Whether some member logs at the population's batch ``batches_seen`` (its own count)."""
        return any(self.is_log_step(batches_seen - first) for first in self._offsets)

    def snapshot(self, batches_seen: int, values: dict) -> None:
        """The batch's values (D's, and G's of the last batch with a G step), kept on the device."""
        self._pending.append((batches_seen, {n: v.detach().clone() for n, v in values.items()}))

    def flush_train(self, epoch: int, diverged_at: list[int]) -> None:
        """Log the epoch's snapshots: member k's only before the batch it diverged at."""
        # float32, as a single run's logged values (Lightning keeps them as tensors); constant
        # within an epoch (a decay applies between epochs)
        lrs = {
            "lr_g": self.population.optimizer_g.lr.tolist(),
            "lr_d": self.population.optimizer_d.lr.tolist(),
        }
        for batches_seen, values in self._pending:
            host = {name: value.tolist() for name, value in values.items()}
            for k in range(self.size):
                own = batches_seen - self.first_batch[k]  # the member's own batch count
                if own <= 0 or not self.is_log_step(own) or not self.loggers[k]:
                    continue
                if diverged_at[k] and batches_seen >= diverged_at[k]:
                    continue
                row = {f"train/{name}": host[name][k] for name in host}
                row.update({f"train/{name}": v[k] for name, v in lrs.items()})
                self.train[k] = row
                # Lightning's step when the n-th batch logs: n - 1
                self._log(k, {**row, "epoch": epoch - self.first_epoch[k]}, own - 1)
        self._pending.clear()

    def own(self, k: int, epoch: int, step: int) -> tuple[int, int]:
        """Member k's own (epoch, step) at the population's (epoch, step)."""
        return epoch - self.first_epoch[k], step - self.first_batch[k]

    def log_val(self, k: int, values: dict, epoch: int, step: int) -> None:
        row = {f"val/{name}": float(v) for name, v in values.items()}
        self.val[k].update(row)
        epoch, step = self.own(k, epoch, step)
        self._log(k, {**row, "epoch": epoch}, step)

    def log_epoch_end(self, values: dict, alive: list[int], epoch: int, step: int) -> None:
        """The model's epoch-end values (``epoch_end_update``) as ``train/<name>``, where a
        single run's ``on_train_epoch_end`` logs them."""
        host = {name: value.tolist() for name, value in values.items()}
        for k in alive:
            row = {f"train/{name}": float(v[k]) for name, v in host.items()}
            self.train[k].update(row)
            own_epoch, own_step = self.own(k, epoch, step)
            self._log(k, {**row, "epoch": own_epoch}, own_step)

    def log_image(self, k: int, path, step: int) -> None:
        for logger in self.loggers[k]:
            if hasattr(logger, "log_image"):
                logger.log_image(key="samples", images=[str(path)], step=step)

    def _log(self, k: int, row: dict, step: int) -> None:
        for logger in self.loggers[k]:
            logger.log_metrics(row, step=step)

    def metrics(self, k: int) -> dict:
        return {**self.train[k], **self.val[k]}

    def state_dict(self) -> dict:
        return {"train": self.train, "val": self.val}

    def load_state_dict(self, state: dict) -> None:
        self.train, self.val = state["train"], state["val"]

    def flush(self) -> None:
        """Write what the members' loggers hold in memory (before the population's state is saved,
        so a member's curves on disk reach as far as the state a relaunch resumes from)."""
        for loggers in self.loggers:
            for logger in loggers:
                logger.save()

    def close(self, statuses: list[str]) -> None:
        """Finish every member's loggers once (W&B: exit code 1 unless it completed). A logger
        that fails to close is reported, never raised: the members' results are written."""
        for k, status in enumerate(statuses):
            self.close_member(k, status)

    def close_member(self, k: int, status: str) -> None:
        """Finish member k's loggers (once: a closed member's are gone)."""
        loggers, self.loggers[k] = self.loggers[k], []
        for logger in loggers:
            try:
                logger.finalize("success" if status == "completed" else "failed")
                run = getattr(logger, "_experiment", None)
                if run is not None and hasattr(run, "finish"):
                    run.finish(exit_code=0 if status == "completed" else 1)
            except Exception as err:
                log.warning("could not close %s: %s", type(logger).__name__, err)


@torch.no_grad()
def validation_values(population, val_batches, device) -> list[dict]:
    """Per member, the epoch means a single run's validation loop logs (src/models/base.py
    ``validation_step``): D's values on the held-out split and on G's samples for latents seeded
    per batch, G in eval mode, D on batch statistics; weighted by batch size as Lightning does."""
    template = population.model
    sums: dict[str, torch.Tensor] = {}
    count = 0
    for batch_idx, batch in enumerate(val_batches):
        real = batch[0].to(device)
        labels = template.batch_labels((real, batch[1].to(device)))
        size = real.shape[0]
        seeded = torch.Generator(device=device).manual_seed(VALIDATION_SEED + batch_idx)
        z = template.sample_latent(size, generator=seeded, device=device)
        logs = population.validation_values(real, z, labels)
        for name, value in logs.items():
            sums[name] = sums.get(name, 0) + value.double() * size
        count += size
    if not count:
        return [{} for _ in range(population.size)]
    host = {name: (total / count).tolist() for name, total in sums.items()}
    return [{name: host[name][k] for name in host} for k in range(population.size)]
