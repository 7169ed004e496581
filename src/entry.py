"""Turns a run's outcome into what a user sees: clean one-line errors for bad input, the metric for sweepers."""

from __future__ import annotations

import logging
import sys

from hydra.errors import InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from src.data.idx import DatasetError
from src.utils import ConfigError

log = logging.getLogger("train")
USER_ERRORS = (ConfigError, DatasetError, InstantiationException, OmegaConfBaseException)


def _is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _root_cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {err}" if not isinstance(err, USER_ERRORS) else str(err)


def run_or_report(cfg: DictConfig) -> float | None:
    from src.training import train

    try:
        result = train(cfg)
    except (*USER_ERRORS, ValueError) as err:
        message = _root_cause(err)
        log.error("error: %s", message)
        if not _is_multirun():
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
        return None  # a sweep goes on with the next job
    metric = cfg.get("optimized_metric")
    if metric:
        return result["metrics"].get(metric)
    return None
