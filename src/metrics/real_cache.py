"""The real side of the scores, computed once per machine: the pinned classifier's features of a
real set and their k-NN radii, saved on disk and read back by every later run that scores against
the same set (~6 s of a 1-thread run, ~3 s on 2 threads, for 10 000 MNIST test images).

An entry is keyed by everything its values depend on: the classifier file's sha256 and feature
scale, the real images' bytes, shape and dtype, the device (type, GPU model), the torch version
and the TF32 settings (kernels round differently). A missing or unreadable entry is computed
again; entries are written atomically, so runs of a sweep may share the folder.
``EBGAN_LAB_CACHE`` names the folder (default ``$XDG_CACHE_HOME/ebgan_lab`` or
``~/.cache/ebgan_lab``); ``EBGAN_LAB_CACHE=off`` turns the cache off.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CACHE_ENV = "EBGAN_LAB_CACHE"
#: bumped when what an entry holds, or how it is computed, changes
FORMAT = 2  # 2: the classifier in channels-last memory format


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


def load(key: str) -> dict | None:
    folder = cache_dir()
    path = None if folder is None else folder / f"real_{key}.pt"
    if path is None or not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: computed again, and rewritten
        log.warning("ignoring unreadable cache entry %s (%s)", path, err)
        return None


def save(key: str, entry: dict) -> None:
    folder = cache_dir()
    if folder is None:
        return
    partial = folder / f"real_{key}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(entry, partial)
        os.replace(partial, folder / f"real_{key}.pt")
    except Exception as err:  # a read-only home, a full disk: scoring goes on, uncached
        log.warning("could not cache the real features in %s (%s)", folder, err)
        partial.unlink(missing_ok=True)
