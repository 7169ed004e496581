"""How the project writes and reads back its files.

Every file is written beside its target and renamed onto it once complete (``atomic_path``): a
SIGKILL, a crash or a full disk leaves the previous file whole, never a truncated one. Caches and
states (checkpoints, the real-features cache, population states, image-folder caches) also get a
sha256 beside them (``<file>.sha256``, in ``sha256sum``'s format, so ``sha256sum -c`` checks it by
hand) that ``verify`` checks on every read: flipped bytes are a named error, never a wrong number.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

CHECKSUM_SUFFIX = ".sha256"


class DamagedFileError(OSError):
    """A cache or state file whose bytes do not match the checksum written with it, or that cannot
    be read back; the message names the file and what is wrong."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform opens folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """A temporary path in ``path``'s folder to write to; when the block ends without an error it
    is flushed to disk and renamed onto ``path`` (an atomic replace on one filesystem). On any
    error, the full disk included, the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, payload: dict) -> None:
    """JSON, written atomically: readers never see a partial file."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checksum_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def write_bytes_checked(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """``data`` written atomically with its sha256 beside it (see ``checked_path``)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
    write_text_atomic(checksum_path(path), f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")


@contextmanager
def checked_path(path: str | os.PathLike) -> Iterator[Path]:
    """``atomic_path`` that also writes the file's sha256 beside it. The file is renamed first,
    then its checksum: a kill between the two (microseconds) leaves a pair that ``verify``
    reports as damaged, never one that passes with the wrong bytes."""
    path = Path(path)
    with atomic_path(path) as tmp:
        yield tmp
        digest = sha256_of(tmp)
    write_text_atomic(checksum_path(path), f"{digest}  {path.name}\n")


def verify(path: str | os.PathLike, required: bool = True) -> None:
    """Check ``path`` against its ``.sha256``; DamagedFileError if they differ, or if the checksum
    is missing and ``required`` (files from before checksums, or written by other tools, pass
    with ``required=False``)."""
    path = Path(path)
    sidecar = checksum_path(path)
    if not sidecar.is_file():
        if required:
            raise DamagedFileError(path, f"its checksum file {sidecar.name} is missing")
        return
    try:
        expected = sidecar.read_text().split()[0]
    except (OSError, IndexError, UnicodeDecodeError) as err:
        raise DamagedFileError(path, f"its checksum file {sidecar.name} is unreadable") from err
    actual = sha256_of(path)
    if actual != expected:
        raise DamagedFileError(
            path,
            f"its bytes do not match the sha256 written with it ({sidecar.name}): the file was "
            "damaged or changed after it was written",
        )


def set_aside(path: str | os.PathLike, reason: str) -> Path:
    """Move a damaged file (and its checksum) out of the way as ``<name>.damaged-<time>`` so that
    it is recomputed, and say so; returns where it went."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    try:
        os.replace(path, target)
        sidecar = checksum_path(path)
        if sidecar.exists():
            os.replace(sidecar, checksum_path(target))
    except OSError as err:  # a read-only folder: the file stays, and is recomputed every time
        log.warning("%s is damaged (%s) and could not be moved aside (%s)", path, reason, err)
        return path
    log.warning("%s is damaged (%s): moved aside to %s, computed again", path, reason, target.name)
    return target


def save_torch_checked(obj, path: str | os.PathLike) -> None:
    """``torch.save`` atomically, with its checksum. Serialised in memory first: torch's writer
    keeps its file open while an error (a full disk) is handled, so the space it took would not
    come back for metrics.json; a Python file is closed at once."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_checked(path, buffer.getbuffer())


def load_torch_checked(path: str | os.PathLike, required: bool = True, **load_kwargs):
    """``torch.load`` of a file written by ``save_torch_checked``, checksum verified first;
    DamagedFileError if the checksum fails or torch cannot read the file."""
    import torch

    verify(path, required=required)
    try:
        return torch.load(path, **load_kwargs)
    except Exception as err:  # truncated zip, foreign pickle, …
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0]
        raise DamagedFileError(path, f"not a readable PyTorch file ({reason})") from err


def unwritable_reason(path: str | os.PathLike, folder: bool = False) -> str | None:
    """Why a file (or with ``folder``, a folder) could not be written at ``path``: its nearest
    existing ancestor is a file, or is not writable; None if it can."""
    path = Path(path).absolute()
    for ancestor in (path, *path.parents):
        if not ancestor.exists():
            continue
        if (ancestor != path or folder) and not ancestor.is_dir():
            return f"{ancestor} is a file, not a folder"
        folder = ancestor if ancestor.is_dir() else ancestor.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"{folder} is not writable"
        return None
    return None


def headless_pyplot():
    """matplotlib.pyplot drawing to files only (the Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | os.PathLike, dpi: int) -> None:
    """A matplotlib figure, written atomically (its format from the file name)."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
