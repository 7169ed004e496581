"""Reading a run's checkpoint file with one-line errors: low in the layers, because config
validation (resuming: is this the same model?) and the run builders both need it."""

from __future__ import annotations

from pathlib import Path

import torch

from src.utils.errors import ConfigError
from src.utils.files import DamagedFileError, verify


def read_checkpoint(ckpt_path: str | Path) -> dict:
    """The dict of a checkpoint written by src/train.py, or a one-line ConfigError naming the path
    and what is wrong with it (missing, truncated, corrupt, or some other file)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={path}: no such file (a run keeps its checkpoint at "
            "<run>/checkpoints/last.ckpt)"
        )
    try:  # checkpoints written since checksums were added carry one; older ones are read as is
        verify(path, required=False)
    except DamagedFileError as err:
        raise ConfigError(f"ckpt_path={err}") from err
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch's messages for a truncated zip, a text file, random bytes …
        # the first sentence of torch's message is the informative part
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0]
        raise ConfigError(
            f"ckpt_path={path}: not a readable PyTorch checkpoint, truncated or corrupt ({reason})"
        ) from err
    if not isinstance(checkpoint, dict) or not {"state_dict", "run_config"} <= checkpoint.keys():
        is_dict = isinstance(checkpoint, dict)
        found = f"keys {list(checkpoint)[:5]}" if is_dict else f"a {type(checkpoint).__name__}"
        raise ConfigError(
            f"ckpt_path={path}: a PyTorch file, but not a checkpoint written by src/train.py (it "
            f"holds {found}; a run's checkpoint has state_dict and run_config)"
        )
    return checkpoint
