"""In-memory LightningDataModule for the IDX datasets: uint8 storage, batches as index slices."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from lightning import LightningDataModule

from src.data.idx import load_split
from src.utils.errors import ConfigError

NATIVE_SIZE = 28


class InMemoryBatches:
    """Iterates over (images in [-1, 1], labels) batches sliced from uint8 tensors kept in memory.

    Scaling happens per batch, so a whole split costs 1 byte per pixel; no per-sample Python work.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        epoch_fn=None,
        shard: tuple[int, int] = (0, 1),
    ):
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        # epoch e's shuffle depends only on (seed, e): a resumed run sees a straight run's batches
        self.epoch_fn = epoch_fn
        self.epochs_iterated = 0
        # (rank, world size) under DDP: every process walks the same order and takes every
        # world-th image from it, as Lightning's DistributedSampler would (a batch per process)
        self.rank, self.world_size = shard
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"shard rank {self.rank} is not in 0..{self.world_size - 1}")

    def _shard_size(self) -> int:
        # equal for every rank (the last n mod world images are left out), so no rank waits
        return self.images.shape[0] // self.world_size

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = self.images.shape[0]
        epoch = self.epoch_fn() if self.epoch_fn is not None else self.epochs_iterated
        self.epochs_iterated += 1
        order = None
        if self.shuffle:
            order = torch.randperm(
                n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            ).to(self.images.device)
        if self.world_size > 1:
            order = torch.arange(n, device=self.images.device) if order is None else order
            order = order[self.rank :: self.world_size][: self._shard_size()]
        for i in range(len(self)):
            if order is None:
                chunk = slice(i * self.batch_size, (i + 1) * self.batch_size)
            else:
                chunk = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield to_signed_unit(self.images[chunk]), self.labels[chunk]


def to_signed_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images_uint8.float().mul_(2.0 / 255.0).sub_(1.0)


def resize_uint8(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """[N, H, W] -> [N, 1, S, S] uint8: zero-pad 28->32 (the conv nets' size), else resample."""
    images = images.unsqueeze(1)
    size = images.shape[-1]
    if image_size == size:
        return images.contiguous()
    if image_size > size and (image_size - size) % 2 == 0 and image_size - size <= 4:
        pad = (image_size - size) // 2
        return F.pad(images, (pad, pad, pad, pad)).contiguous()
    resized = F.interpolate(
        images.float(), size=(image_size, image_size), mode="bilinear", align_corners=False
    )
    return resized.round_().clamp_(0, 255).to(torch.uint8)


class ImageDataModule(LightningDataModule):
    """MNIST / Fashion-MNIST in memory as uint8; a seeded train/val split; test kept for metrics."""

    def __init__(
        self,
        dataset: str = "mnist",
        data_dir: str = "data",
        batch_size: int = 64,
        val_size: int = 5000,
        image_size: int = NATIVE_SIZE,
        split_seed: int = 12345,
        download: bool = True,
        num_classes: int = 10,
        on_device: bool = False,
    ):
        super().__init__()
        if batch_size < 2:  # batch norm in training and the pulling-away term need at least a pair
            raise ValueError(f"data.batch_size must be >= 2, got {batch_size}")
        if not 0 <= val_size < 60000:
            raise ValueError(f"data.val_size must be in [0, 60000), got {val_size}")
        if image_size < 8:
            raise ValueError(f"data.image_size must be >= 8, got {image_size}")
        self.dataset = dataset
        self.data_dir = str(data_dir)
        self.batch_size = batch_size
        self.val_size = val_size
        self.image_size = image_size
        self.split_seed = split_seed
        self.allow_download = download
        self.num_classes = num_classes
        # the training split copied once to the run's device (uint8), batches sliced there
        self.on_device = bool(on_device)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.prepared = False

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, self.image_size, self.image_size)

    def prepare_data(self) -> None:
        # Downloads (if needed) and verifies. src/runs/training.py calls it before fit: data errors
        # are one clear line before anything is trained (Lightning's own call is then a no-op).
        if not self.prepared:
            load_split(self.dataset, self.data_dir, "test", self.allow_download)
            self.prepared = True

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        images, labels = load_split(self.dataset, self.data_dir, "train", self.allow_download)
        images = resize_uint8(images, self.image_size)
        order = torch.randperm(
            images.shape[0], generator=torch.Generator().manual_seed(self.split_seed)
        )
        val_idx, train_idx = order[: self.val_size], order[self.val_size :]
        self.splits["train"] = (images[train_idx].contiguous(), labels[train_idx].contiguous())
        self.splits["val"] = (images[val_idx].contiguous(), labels[val_idx].contiguous())
        test_images, test_labels = load_split(
            self.dataset, self.data_dir, "test", self.allow_download
        )
        self.splits["test"] = (resize_uint8(test_images, self.image_size), test_labels)
        top_label = int(max(labels.max(), test_labels.max()))
        # conditional nets one-hot encode labels into num_classes slots
        if top_label >= self.num_classes:
            raise ConfigError(
                f"data.num_classes={self.num_classes}, but {self.dataset} has label {top_label}"
            )

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_batches(self, epoch_fn, shuffle: bool = True, device=None) -> InMemoryBatches:
        """A run's training batches: shuffled per (split_seed + 1, the epoch ``epoch_fn`` gives);
        with ``device``, the split is copied there once and batches are sliced on it."""
        images, labels = self.splits["train"]
        return InMemoryBatches(
            images.to(device) if device is not None else images,
            labels.to(device) if device is not None else labels,
            self.batch_size,
            shuffle=shuffle,
            drop_last=True,
            seed=self.split_seed + 1,
            epoch_fn=epoch_fn,
            shard=self._shard(),
        )

    def train_dataloader(self) -> InMemoryBatches:
        # Lightning's own rule for its samplers: no shuffling under overfit_batches (debug=overfit)
        shuffle = not (self.trainer is not None and self.trainer.overfit_batches)
        device = None
        if self.on_device and self.trainer is not None:
            # no host-to-device copy per batch: the GPU slices the batches from its own copy
            device = self.trainer.strategy.root_device
        return self.train_batches(self._current_epoch, shuffle, device=device)

    def val_dataloader(self) -> InMemoryBatches:
        images, labels = self.splits["val"]
        return InMemoryBatches(
            images, labels, self.batch_size, shuffle=False, drop_last=False, shard=self._shard()
        )

    def _shard(self) -> tuple[int, int]:
        """(global rank, world size) of this process under a Trainer, else (0, 1)."""
        if self.trainer is None:
            return 0, 1
        return getattr(self.trainer, "global_rank", 0), getattr(self.trainer, "world_size", 1)

    def test_dataloader(self) -> InMemoryBatches:
        images, labels = self.splits["test"]
        return InMemoryBatches(images, labels, self.batch_size, shuffle=False, drop_last=False)
