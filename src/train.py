"""Train one model: `python src/train.py model=ebgan_pt arch=dcgan trainer.max_epochs=5`."""

from __future__ import annotations

import logging

import hydra
import lightning  # noqa: F401  (imported first so its log handlers exist to be removed below)
from omegaconf import DictConfig

from src.utils import register_resolvers

register_resolvers()
log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from src.runs.cli import report_user_errors
    from src.runs.training import train

    # Hydra's handlers already print and file these
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()

    metrics = report_user_errors(train, cfg, key="metrics")
    metric = cfg.get("optimized_metric")  # the value returned to a Hydra sweeper
    return None if not metric or metrics is None else metrics.get(metric)


if __name__ == "__main__":
    main()
