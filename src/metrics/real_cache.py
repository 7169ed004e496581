"""The real side of the scores, computed once per machine: the pinned classifier's features of a
real set and their k-NN radii, saved on disk and read back by every later run that scores against
the same set (~6 s of a 1-thread run, ~3 s on 2 threads, for 10 000 MNIST test images).

An entry is keyed by everything its values depend on: the classifier file's sha256 and feature
scale, the real images' bytes, shape and dtype, the device (type, GPU model), the torch version
and the TF32 settings (kernels round differently). Entries are written atomically with a sha256
(src/utils/files.py), so runs of a sweep may share the folder. An entry is used only if its
checksum holds, it names its own key, and the caller's ``check`` finds it right (shapes, finite
values, a recomputed sample of rows: src/metrics/scores.py); otherwise it is named in a warning,
moved aside (``real_<key>.pt.damaged-<time>``) and computed again, so a damaged cache can cost
time but never change a score.
``EBGAN_LAB_CACHE`` names the folder (default ``$XDG_CACHE_HOME/ebgan_lab`` or
``~/.cache/ebgan_lab``); ``EBGAN_LAB_CACHE=off`` turns the cache off.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from src.utils.files import DamagedFileError, load_torch_checked, save_torch_checked, set_aside

log = logging.getLogger(__name__)

CACHE_ENV = "EBGAN_LAB_CACHE"
#: bumped when what an entry holds, or how it is computed, changes
FORMAT = 3  # 2: the classifier in channels-last memory format; 3: checksummed, key inside


def cache_dir() -> Path | None:
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "false") else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ebgan_lab"


def real_set_key(classifier, images: torch.Tensor, device: torch.device) -> str:
    """What the real features of ``images`` depend on, hashed."""
    digest = hashlib.sha256()
    device = torch.device(device)
    identity = (
        FORMAT,
        getattr(classifier, "weights_sha256", None),
        float(classifier.feature_scale),
        tuple(images.shape),
        str(images.dtype),
        device.type,
        torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        torch.__version__,
        # TF32 matmuls / convolutions round the features differently
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.allow_tf32,
    )
    digest.update(repr(identity).encode())
    digest.update(images.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def entry_path(key: str) -> Path | None:
    folder = cache_dir()
    return None if folder is None else folder / f"real_{key}.pt"


def load(key: str, check: Callable[[dict], str | None] | None = None) -> dict | None:
    """The entry cached under ``key``, or None (absent, cache off, or damaged: then set aside).
    ``check(entry)`` returns what is wrong with an entry that reads fine, or None."""
    path = entry_path(key)
    if path is None or not path.is_file():
        return None
    try:
        entry = load_torch_checked(path, map_location="cpu", weights_only=True)
        if not isinstance(entry, dict) or entry.get("key") != key:
            raise DamagedFileError(path, "it is not the entry of this real set (another key)")
        problem = check(entry) if check is not None else None
        if problem:
            raise DamagedFileError(path, problem)
    except DamagedFileError as err:
        set_aside(path, err.reason)
        return None
    return entry


def save(key: str, entry: dict) -> None:
    path = entry_path(key)
    if path is None:
        return
    try:
        save_torch_checked({**entry, "key": key}, path)
    except Exception as err:  # a read-only home, a full disk: scoring goes on, uncached
        log.warning("could not cache the real features in %s (%s)", path.parent, err)
