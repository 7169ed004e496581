"""What a user sees when an entry point fails on bad input: one clear line, no stack trace."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.utils import is_multirun
from src.utils.errors import UserError
from src.utils.files import unwritable_reason

log = logging.getLogger("entry")
# ValueErrors from the models' and data module's argument checks arrive wrapped in
# InstantiationException; any other exception is a bug and keeps its traceback.
USER_ERRORS = (UserError, InstantiationException, OmegaConfBaseException)


def user_message(err: BaseException) -> str:
    """The line to show: the innermost of this project's own errors in the chain (they name the key
    or file), else the root cause (a constructor's check under Hydra's InstantiationException)."""
    chain = [err]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    own = [e for e in chain if isinstance(e, UserError)]
    return str(own[-1] if own else chain[-1])


def fail(message: str) -> None:
    """Log and print ``error: <message>``, exit 2."""
    log.error("error: %s", message)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


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
        if is_multirun():
            log.error("error: %s", message)
            return None
        fail(message)
    if key is None or not isinstance(result, dict):
        return None
    return result.get(key)


def check_writable(path: str | Path, key: str) -> None:
    """A UserError naming ``key`` when ``path`` (a file or folder to be written) cannot be."""
    reason = unwritable_reason(Path(path))
    if reason:
        raise UserError(
            f"{key}={path}: cannot write there ({reason}); choose a folder you can write to"
        )


class CheckOutputFolder(Callback):
    """Hydra callback (conf/hydra/default.yaml): the run's or sweep's folder must be writable
    before Hydra makes it, else one line naming the key (not Hydra's stack trace)."""

    def _check(self, config: DictConfig, key: str) -> None:
        try:
            folder = OmegaConf.select(config, key)
        except OmegaConfBaseException:  # an interpolation only Hydra's job can resolve
            return
        if folder is None:
            return
        reason = unwritable_reason(Path(str(folder)), folder=True)
        if reason:
            fail(
                f"{key}={folder}: cannot write the run's folder there ({reason}); run from a "
                "folder you can write to, or set paths.log_dir (or EBGAN_LAB_ROOT) to one"
            )

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, "hydra.sweep.dir")
