"""Reading, verifying and downloading the standard IDX files of MNIST and Fashion-MNIST."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from src.utils.errors import UserError

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's four IDX files live and what their *uncompressed* bytes hash to."""

    name: str
    folder: str  # torchvision layout: <root>/<folder>/raw
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # uncompressed file name -> md5 of its bytes
    system_dirs: tuple[str, ...] = ()  # known read-only install locations, searched after the root


DATASETS = {
    "mnist": DatasetSpec(
        name="mnist",
        folder="MNIST",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        folder="FashionMNIST",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
}


class DatasetError(UserError, RuntimeError):
    """A dataset file is missing, unreadable or not the expected content."""


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate_raw_dir(spec: DatasetSpec, root: str | os.PathLike) -> Path | None:
    """The first folder holding all four files: <root>/<folder>/raw, then the system locations."""
    names = [n for pair in SPLIT_FILES.values() for n in pair]
    for directory in (Path(root) / spec.folder / "raw", *map(Path, spec.system_dirs)):
        if all(_find(directory, n) for n in names):
            return directory
    return None


def read_idx(path: Path, expected_md5: str | None) -> torch.Tensor:
    """Decode one IDX file (gzip'ed or not) into a uint8 tensor, checking the uncompressed md5."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DatasetError(
            f"{path}: cannot be read or decompressed ({err}); delete it and retry."
        ) from err
    if expected_md5 is not None:
        digest = hashlib.md5(raw).hexdigest()
        if digest != expected_md5:
            raise DatasetError(
                f"{path}: checksum mismatch (md5 of the uncompressed bytes is {digest}, expected "
                f"{expected_md5}); the file is truncated, corrupted or not the standard one. "
                "Delete it and retry."
            )
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (bad magic number).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise DatasetError(
            f"{path}: size {len(raw)} bytes does not match its header shape {shape}."
        )
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy())


def download(spec: DatasetSpec, raw_dir: Path, timeout: float = 20.0) -> None:
    """Fetch the four .gz files from the first mirror that answers; no partial file stays."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name in spec.md5:
        target = raw_dir / f"{name}.gz"
        if _find(raw_dir, name):
            continue
        errors = []
        for mirror in spec.mirrors:
            partial = None
            try:
                with (
                    urllib.request.urlopen(mirror + target.name, timeout=timeout) as response,
                    tempfile.NamedTemporaryFile(dir=raw_dir, suffix=".part", delete=False) as tmp,
                ):
                    partial = tmp.name
                    shutil.copyfileobj(response, tmp)
                os.replace(partial, target)
                break
            except Exception as err:  # any network failure means: try the next mirror
                errors.append(f"{mirror}: {err}")
                if partial and os.path.exists(partial):
                    os.unlink(partial)
        else:
            raise DatasetError("; ".join(errors))


def load_split(dataset: str, root: str | os.PathLike, split: str, allow_download: bool = True):
    """(images uint8 [N, H, W], labels int64 [N]) of one split, downloaded if needed and allowed."""
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}; allowed: {sorted(DATASETS)}")
    spec = DATASETS[dataset]
    raw_dir = locate_raw_dir(spec, root)
    if raw_dir is None:
        expected = Path(root) / spec.folder / "raw"
        reason = "downloading is disabled (data.download=false)"
        if allow_download:
            try:
                download(spec, expected)
                raw_dir = expected
            except (DatasetError, OSError) as err:
                reason = f"the download failed ({err})"
        if raw_dir is None:
            names = ", ".join(f"{n}[.gz]" for n in spec.md5)
            raise DatasetError(
                f"{spec.name} not found in {expected} and {reason}. Put the four files "
                f"{names} there, or point the DATA_DIR environment variable (config key "
                f"paths.data_dir) at a folder holding {spec.folder}/raw/."
            )
    images_name, labels_name = SPLIT_FILES[split]
    images = read_idx(_find(raw_dir, images_name), spec.md5[images_name])
    labels = read_idx(_find(raw_dir, labels_name), spec.md5[labels_name]).long()
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{raw_dir}: {images.shape[0]} images but {labels.shape[0]} labels in the "
            f"{split} split."
        )
    return images, labels
