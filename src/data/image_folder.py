"""Unlabelled image folders (a CelebA, LSUN or ImageNet export: any tree of .png / .jpg files) at
64-128 px for the generative models, as the EBGAN and BEGAN papers trained on them.

Every image is centre-cropped to a square and resized once into a uint8 cache file
(``<cache_dir>/<key>.npy``, with a progress bar, and its sha256 checked on every load: a damaged
cache is moved aside and built again; the key hashes the folder's file list, sizes and
times, the image size, channels and split seed, so a changed folder gets a new cache). The rows are
stored in a seeded shuffled order, so the test / val / train splits are contiguous slices: the
file is loaded into memory when it fits in half the available RAM, else memory-mapped and read
batch by batch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from src.data.datamodule import ImageDataModule
from src.data.translation import IMAGE_SUFFIXES, FolderError, read_image
from src.utils.files import DamagedFileError, checked_path, set_aside, verify

log = logging.getLogger(__name__)
IN_MEMORY = ("auto", "always", "never")


def folder_image_files(root: Path) -> list[Path]:
    """Every image file under ``root`` (sub-folders too), sorted; a clear error if none."""
    if not root.is_dir():
        raise FolderError(f"data.path: folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FolderError(
            f"data.path: folder {root} has no images ({', '.join(IMAGE_SUFFIXES)}, sub-folders "
            "included)"
        )
    return files


def cache_key(root: Path, files: list[Path], image_size: int, channels: int, seed: int) -> str:
    digest = hashlib.sha1(f"{root.resolve()}|{image_size}|{channels}|{seed}".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"|{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def build_cache(
    files: list[Path], order: np.ndarray, image_size: int, channels: int, out: Path
) -> None:
    """Write files[order] as uint8 [N, C, S, S] to ``out`` (.npy) with its sha256, through a
    temporary file: an interrupted build or an unreadable image leaves nothing behind."""
    from tqdm import tqdm

    shape = (len(files), channels, image_size, image_size)
    with checked_path(out) as partial:
        array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
        try:
            for row, index in enumerate(tqdm(order, desc=f"caching {out.name}", unit="img")):
                array[row] = read_image(files[index], image_size, channels).numpy()
            array.flush()
        finally:
            del array


def available_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume it does not fit
        return 0


class ImageFolderDataModule(ImageDataModule):
    """A folder of images as train / val / test splits of uint8 [N, C, S, S] (module docstring);
    batches and their sharding are ImageDataModule's. No labels (all 0): unconditional models."""

    def __init__(
        self,
        path: str,
        cache_dir: str,
        image_size: int = 64,
        channels: int = 3,
        batch_size: int = 64,
        val_size: int = 1000,
        test_size: int = 1000,
        split_seed: int = 12345,
        in_memory: str = "auto",
        dataset: str = "image_folder",
        num_classes: int = 1,
        on_device: bool = False,
    ):
        super().__init__(
            dataset=dataset,
            batch_size=batch_size,
            val_size=0,
            image_size=image_size,
            split_seed=split_seed,
            download=False,
            num_classes=num_classes,
            on_device=on_device,
        )
        if channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3, got {channels}")
        if in_memory not in IN_MEMORY:
            raise ValueError(f"data.in_memory must be one of {IN_MEMORY}, got {in_memory!r}")
        if val_size < 0 or test_size < 1:
            raise ValueError(
                f"data.val_size >= 0 and data.test_size >= 1 needed, got {val_size}, {test_size}"
            )
        self.root = Path(path)
        self.cache_dir = Path(cache_dir)
        self.channels = channels
        self.val_size = val_size
        self.test_size = test_size
        self.in_memory = in_memory
        self.cache_path: Path | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def prepare_data(self) -> None:
        """Find the images (a clear error if none) and build the cache if it is missing."""
        if self.prepared:
            return
        files = folder_image_files(self.root)
        needed = self.test_size + self.val_size + self.batch_size
        if len(files) < needed:
            raise FolderError(
                f"data.path: {self.root} has {len(files)} images; data.test_size + data.val_size "
                f"+ one batch (data.batch_size) need {needed}"
            )
        key = cache_key(self.root, files, self.image_size, self.channels, self.split_seed)
        self.cache_path = self.cache_dir / f"{self.root.name}_{self.image_size}px_{key}.npy"
        if self.cache_path.is_file():
            try:  # a cache damaged since it was built is built again, never read
                verify(self.cache_path)
            except DamagedFileError as err:
                set_aside(self.cache_path, err.reason)
        if not self.cache_path.is_file():
            order = torch.randperm(
                len(files), generator=torch.Generator().manual_seed(self.split_seed)
            ).numpy()
            log.info("building the image cache %s from %d files", self.cache_path, len(files))
            build_cache(files, order, self.image_size, self.channels, self.cache_path)
        self.prepared = True

    def _load(self) -> torch.Tensor:
        size = self.cache_path.stat().st_size
        fits = size < available_memory() // 2
        mapped = self.in_memory == "never" or (self.in_memory == "auto" and not fits)
        array = np.load(self.cache_path, mmap_mode="r" if mapped else None)
        if mapped:
            log.info("memory-mapping %s (%.1f GB)", self.cache_path, size / 1e9)
            with warnings.catch_warnings():  # read-only map: batches are copied out, never written
                warnings.simplefilter("ignore", UserWarning)
                return torch.from_numpy(array)
        return torch.from_numpy(array)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.prepare_data()
        images = self._load()
        # rows are already in the seeded shuffled order: the splits are views, nothing is copied
        test_end, val_end = self.test_size, self.test_size + self.val_size
        for name, part in (
            ("test", images[:test_end]),
            ("val", images[test_end:val_end]),
            ("train", images[val_end:]),
        ):
            self.splits[name] = (part, torch.zeros(part.shape[0], dtype=torch.long))
