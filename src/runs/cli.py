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


def user_message(err: BaseException) -> str:
    """The line to show: the innermost of this project's own errors in the chain (they name the key
    or file), else the root cause (a constructor's check under Hydra's InstantiationException)."""
    chain = [err]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    own = [e for e in chain if isinstance(e, (ConfigError, DatasetError, ClassifierError))]
    return str(own[-1] if own else chain[-1])


def report_user_errors(
    action: Callable[[DictConfig], object], cfg: DictConfig, key: str | None = None
):
    """Run ``action(cfg)``; on bad input log and print ``error: …`` and exit 2 (in a multirun:
    return None, so the sweep goes on). Returns ``result[key]`` when ``key`` is given (the sweepers'
    objective)."""
    try:
        result = action(cfg)
    except USER_ERRORS as err:
        message = user_message(err)
        log.error("error: %s", message)
        if is_multirun():
            return None
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    if key is None or not isinstance(result, dict):
        return None
    return result.get(key)
