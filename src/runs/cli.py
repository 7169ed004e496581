"""What a user sees when an entry point fails on bad input: one clear line, no stack trace."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from hydra.errors import InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from src.data.idx import DatasetError
from src.metrics.classifier import ClassifierError
from src.utils import ConfigError, is_multirun

log = logging.getLogger("entry")
# ValueErrors from the models' and data module's argument checks arrive wrapped in
# InstantiationException; any other exception is a bug and keeps its traceback.
USER_ERRORS = (
    ConfigError,
    DatasetError,
    ClassifierError,
    InstantiationException,
    OmegaConfBaseException,
)


def _root_cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return str(err)


def report_user_errors(
    action: Callable[[DictConfig], object], cfg: DictConfig, key: str | None = None
):
    """Run ``action(cfg)``; on bad input log and print ``error: …`` and exit 2 (in a multirun:
    return None, so the sweep goes on). Returns ``result[key]`` when ``key`` is given (the sweepers'
    objective)."""
    try:
        result = action(cfg)
    except USER_ERRORS as err:
        message = _root_cause(err)
        log.error("error: %s", message)
        if is_multirun():
            return None
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    if key is None or not isinstance(result, dict):
        return None
    return result.get(key)
