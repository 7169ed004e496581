"""Image-to-image translation data: paired tasks (pix2pix) and unpaired domains (CycleGAN) built
from MNIST / Fashion-MNIST by pure, seeded functions of the images, or read from folders laid out
as the two papers ship their datasets.

A task is code plus a seed, never files: ``digit_edges``, ``mask_region`` and ``colourize`` map a
uint8 batch [N, 1, H, W] to another; the same seed gives the same images on every machine.
Batches are ``(a, b, labels_a, labels_b)``: float images in [-1, 1] of domains A and B and their
source labels (-1 where none is known, e.g. folders). Paired tasks give matching (a, b); unpaired
ones shuffle A and B independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning import LightningDataModule

from src.data.datamodule import InMemoryBatches, resize_uint8
from src.data.idx import load_split
from src.utils.errors import ConfigError, UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
NO_LABEL = -1
#: ITU-R BT.601 luma weights: the grey value the pinned classifier reads from a colour image
LUMA = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------- the task functions
def digit_edges(images: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of uint8 [N, 1, H, W] images, as uint8 (pix2pix's edges -> photo,
    with a fixed filter in place of HED): a stroke becomes its two outlines."""
    x = images.float() / 255.0
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([sobel_x, sobel_x.T]).unsqueeze(1)  # [2, 1, 3, 3]
    gradients = F.conv2d(x, kernels, padding=1)
    # a full-contrast step has magnitude 4: mapped to 255
    magnitude = gradients.pow(2).sum(1, keepdim=True).sqrt() / 4.0
    return magnitude.mul(255.0).round().clamp(0, 255).to(torch.uint8)


def mask_region(
    images: torch.Tensor, seed: int, size: int | None = None, fill: int = 128
) -> torch.Tensor:
    """Each image with one square of side ``size`` (default 3/8 of the image) set to ``fill``
    (mid-grey, unlike any MNIST pixel area); the i-th square's position depends only on
    (seed, i)."""
    n, _, height, width = images.shape
    size = size or max(1, height * 3 // 8)
    if not 0 < size <= min(height, width):
        raise ValueError(f"mask size must be in 1..{min(height, width)}, got {size}")
    generator = torch.Generator().manual_seed(seed)
    # (top, left) drawn image by image: image i's square depends on (seed, i), not on n
    corner = torch.randint(0, min(height, width) - size + 1, (n, 2), generator=generator)
    top, left = corner[:, 0], corner[:, 1]
    rows = torch.arange(height).view(1, height, 1)
    cols = torch.arange(width).view(1, 1, width)
    inside = (
        (rows >= top.view(n, 1, 1))
        & (rows < (top + size).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1))
        & (cols < (left + size).view(n, 1, 1))
    )
    masked = images.clone()
    masked[inside.unsqueeze(1).expand_as(images)] = fill
    return masked


def colourize(images: torch.Tensor, seed: int) -> torch.Tensor:
    """uint8 [N, 1, H, W] -> [N, 3, H, W]: image i's ink in a bright colour fg_i ~ U[0.5, 1]^3 on a
    dark background bg_i ~ U[0, 0.35]^3, pixel = bg + (fg - bg) * intensity, drawn from
    (seed, i). Every channel of fg exceeds bg's, so the luma (``to_grey``) keeps the digit's
    shape exactly up to a linear map."""
    n = images.shape[0]
    generator = torch.Generator().manual_seed(seed)
    foreground = 0.5 + 0.5 * torch.rand(n, 3, 1, 1, generator=generator)
    background = 0.35 * torch.rand(n, 3, 1, 1, generator=generator)
    intensity = images.float() / 255.0
    rgb = background + (foreground - background) * intensity
    return rgb.mul(255.0).round().clamp(0, 255).to(torch.uint8)


def disjoint_halves(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint index sets of n // 2 each, from a seeded shuffle of 0..n-1: the images of an
    unpaired task's A and B (no image is in both, so no pair exists)."""
    shuffled = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    half = n // 2
    return shuffled[:half], shuffled[half : 2 * half]


def grey_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """[N, 1, H, W] -> [N, 3, H, W]: a grey domain next to a colour one (CycleGAN's identity loss
    needs both domains with the same channels)."""
    return images.expand(-1, 3, -1, -1).contiguous()


def to_grey(images: torch.Tensor) -> torch.Tensor:
    """Float [-1, 1] images, any channels -> [N, 1, H, W] in [-1, 1] for the pinned classifier:
    one channel passes through; colour takes the luma, stretched per image from its darkest to its
    brightest pixel (undoes ``colourize``'s colours; the contrast is floored at 0.1 so a flat image
    stays flat)."""
    images = images.float()
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(LUMA, device=images.device).view(1, 3, 1, 1)
    luma = (images * weights).sum(1, keepdim=True)
    low = luma.amin(dim=(2, 3), keepdim=True)
    high = luma.amax(dim=(2, 3), keepdim=True)
    return ((luma - low) / (high - low).clamp_min(0.2)).mul(2).sub(1).clamp(-1, 1)


# ----------------------------------------------------------------------------- task registry
@dataclass(frozen=True)
class Domain:
    """One side of a translation: its name, channels and the pinned classifier that reads it."""

    name: str
    channels: int
    classifier: str | None  # "mnist" / "fashion_mnist", or None (a folder: no classifier)

    @property
    def colour(self) -> bool:
        return self.channels == 3


@dataclass(frozen=True)
class TaskSpec:
    description: str
    paired: bool
    a: Domain
    b: Domain


DIGIT = Domain("digit", 1, "mnist")
TASKS = {
    "edges2digit": TaskSpec("digit edges -> digit", True, Domain("digit edges", 1, "mnist"), DIGIT),
    "inpaint": TaskSpec("masked digit -> digit", True, Domain("masked digit", 1, "mnist"), DIGIT),
    "grey2colour": TaskSpec(
        "grey digit -> coloured digit",
        True,
        Domain("grey digit", 3, "mnist"),
        Domain("coloured digit", 3, "mnist"),
    ),
    "mnist2colour": TaskSpec(
        "MNIST <-> coloured MNIST, disjoint halves",
        False,
        Domain("grey digit", 3, "mnist"),
        Domain("coloured digit", 3, "mnist"),
    ),
    "mnist2fashion": TaskSpec(
        "MNIST <-> Fashion-MNIST", False, DIGIT, Domain("fashion", 1, "fashion_mnist")
    ),
    "paired_folder": TaskSpec("<path>/A/<split> -> <path>/B/<split>", True, None, None),
    "unpaired_folder": TaskSpec("<path>/<split>A <-> <path>/<split>B", False, None, None),
}
FOLDER_TASKS = ("paired_folder", "unpaired_folder")
PAIRED_TASKS = tuple(name for name, spec in TASKS.items() if spec.paired)


@dataclass
class TranslationSplit:
    """uint8 images [N, C, H, W] of both domains and their source labels (NO_LABEL if unknown)."""

    a: torch.Tensor
    b: torch.Tensor
    labels_a: torch.Tensor
    labels_b: torch.Tensor

    def __len__(self) -> int:
        return min(self.a.shape[0], self.b.shape[0])

    def head(self, n: int) -> TranslationSplit:
        return TranslationSplit(self.a[:n], self.b[:n], self.labels_a[:n], self.labels_b[:n])


class TranslationBatches:
    """(a, b, labels_a, labels_b) batches in [-1, 1]: paired from one shuffle, unpaired from two
    independent ones (A and B never meet as a pair by index)."""

    def __init__(self, split: TranslationSplit, paired: bool, **batch_options):
        self.paired = paired
        if paired:
            # both domains in one tensor: one index slice per batch keeps the pairs together
            self.channels_a = split.a.shape[1]
            joined = torch.cat([split.a, split.b], dim=1)
            self.batches = (InMemoryBatches(joined, split.labels_a, **batch_options),)
        else:
            seed = batch_options.pop("seed", 0)
            self.batches = (
                InMemoryBatches(split.a, split.labels_a, seed=seed, **batch_options),
                InMemoryBatches(split.b, split.labels_b, seed=seed + 7919, **batch_options),
            )

    def __len__(self) -> int:
        return min(len(b) for b in self.batches)

    def __iter__(self):
        if self.paired:
            for joined, labels in self.batches[0]:
                yield joined[:, : self.channels_a], joined[:, self.channels_a :], labels, labels
        else:
            for (a, labels_a), (b, labels_b) in zip(*self.batches, strict=False):
                yield a, b, labels_a, labels_b


# ----------------------------------------------------------------------------- folders
class FolderError(UserError, ValueError):
    """A translation folder that cannot be read: names the folder or file and what is wrong."""


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FolderError(f"data.path: folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FolderError(f"data.path: folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def read_image(path: Path, image_size: int, channels: int) -> torch.Tensor:
    """uint8 [channels, S, S] of one file: centre-cropped to a square, resized (bicubic,
    antialiased); an unreadable file is a FolderError naming it."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise FolderError(f"data.path: cannot read image {path}: {err}") from err
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.uint8).reshape(image_size, image_size, channels)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def read_images(files: list[Path], image_size: int, channels: int) -> torch.Tensor:
    """uint8 [N, channels, S, S] of ``files`` (``read_image`` each)."""
    out = torch.empty(len(files), channels, image_size, image_size, dtype=torch.uint8)
    for i, path in enumerate(files):
        out[i] = read_image(path, image_size, channels)
    return out


def no_labels(n: int) -> torch.Tensor:
    return torch.full((n,), NO_LABEL, dtype=torch.long)


# ----------------------------------------------------------------------------- the data module
class TranslationDataModule(LightningDataModule):
    """A translation task's train / val / test splits in memory as uint8 (``splits[name]`` is a
    ``TranslationSplit``). ``task`` is a key of ``TASKS``; ``task_seed`` fixes its random parts
    (mask positions, colours); ``path`` is the folder of the folder tasks."""

    def __init__(
        self,
        task: str = "edges2digit",
        data_dir: str = "data",
        path: str | None = None,
        batch_size: int = 64,
        val_size: int = 5000,
        image_size: int = 32,
        channels_a: int = 1,
        channels_b: int = 1,
        split_seed: int = 12345,
        task_seed: int = 0,
        download: bool = True,
    ):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"data.task must be one of {sorted(TASKS)}, got {task!r}")
        if batch_size < 2:
            raise ValueError(f"data.batch_size must be >= 2, got {batch_size}")
        if image_size < 8 or image_size & (image_size - 1):
            # the U-Net halves the image down to 1 px and PatchGAN strides by 2
            raise ValueError(f"data.image_size must be a power of 2 >= 8, got {image_size}")
        spec = TASKS[task]
        if task in FOLDER_TASKS:
            if not path:
                raise ValueError(f"data.task={task} reads images from a folder: set data.path")
            spec = TaskSpec(
                spec.description,
                spec.paired,
                Domain("A", channels_a, None),
                Domain("B", channels_b, None),
            )
        elif (channels_a, channels_b) != (spec.a.channels, spec.b.channels):
            raise ValueError(
                f"data.task={task} has {spec.a.channels} and {spec.b.channels} channels; "
                f"data.channels_a / channels_b are {channels_a} / {channels_b}"
            )
        self.task = task
        self.spec = spec
        self.data_dir = str(data_dir)
        self.path = Path(path) if path else None
        self.batch_size = batch_size
        self.val_size = val_size
        self.image_size = image_size
        self.split_seed = split_seed
        self.task_seed = task_seed
        self.allow_download = download
        self.splits: dict[str, TranslationSplit] = {}
        self.prepared = False

    @property
    def paired(self) -> bool:
        return self.spec.paired

    def prepare_data(self) -> None:
        # a missing dataset or an unreadable folder is one clear line before any training
        if self.prepared:
            return
        if self.task in FOLDER_TASKS:
            for folder in self._folders("train") + self._folders("test"):
                image_files(folder)
        else:
            for dataset in {self.spec.a.classifier, self.spec.b.classifier}:
                load_split(dataset, self.data_dir, "test", self.allow_download)
        self.prepared = True

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.task in FOLDER_TASKS:
            train, test = self._folder_split("train"), self._folder_split("test")
        else:
            train, test = self._built_split("train"), self._built_split("test")
        self.splits["val"], self.splits["train"] = self._hold_out(train)
        self.splits["test"] = test
        if len(self.splits["train"]) < self.batch_size:  # else an epoch would have no batch
            raise ConfigError(
                f"data.batch_size={self.batch_size} is more than the {len(self.splits['train'])} "
                f"training pairs / images of data.task={self.task}: lower data.batch_size"
            )

    def _hold_out(self, train: TranslationSplit) -> tuple[TranslationSplit, TranslationSplit]:
        """(val, train): ``val_size`` images (at most a tenth: a folder of 100 keeps 90 to train)
        drawn with ``split_seed``; pairs stay together, unpaired domains are drawn apart."""
        generator = torch.Generator().manual_seed(self.split_seed)
        sizes = [train.a.shape[0]] if self.paired else [train.a.shape[0], train.b.shape[0]]
        held, kept = [], []
        for n in sizes:
            order = torch.randperm(n, generator=generator)
            n_val = min(self.val_size, n // 10)
            held.append(order[:n_val])
            kept.append(order[n_val:])

        def take(index_a, index_b):
            return TranslationSplit(
                train.a[index_a].contiguous(),
                train.b[index_b].contiguous(),
                train.labels_a[index_a].contiguous(),
                train.labels_b[index_b].contiguous(),
            )

        return take(held[0], held[-1]), take(kept[0], kept[-1])

    def _source(self, dataset: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = load_split(dataset, self.data_dir, split, self.allow_download)
        return resize_uint8(images, self.image_size), labels

    def _built_split(self, split: str) -> TranslationSplit:
        """The task applied to a dataset split; its seed differs per split (train 0, test 1)."""
        seed = self.task_seed * 2 + (split == "test")
        images, labels = self._source("mnist", split)
        if self.task == "edges2digit":
            return TranslationSplit(digit_edges(images), images, labels, labels)
        if self.task == "inpaint":
            return TranslationSplit(mask_region(images, seed), images, labels, labels)
        if self.task == "grey2colour":
            return TranslationSplit(grey_to_rgb(images), colourize(images, seed), labels, labels)
        if self.task == "mnist2colour":
            # A from one half of the split, B (coloured) from the other: no image is in both
            first, second = disjoint_halves(images.shape[0], seed)
            return TranslationSplit(
                grey_to_rgb(images[first]),
                colourize(images[second], seed),
                labels[first],
                labels[second],
            )
        if self.task == "mnist2fashion":
            fashion, fashion_labels = self._source("fashion_mnist", split)
            return TranslationSplit(images, fashion, labels, fashion_labels)
        raise AssertionError(self.task)

    def _folders(self, split: str) -> list[Path]:
        if self.task == "paired_folder":
            return [self.path / "A" / split, self.path / "B" / split]
        return [self.path / f"{split}A", self.path / f"{split}B"]

    def _folder_split(self, split: str) -> TranslationSplit:
        folder_a, folder_b = self._folders(split)
        files_a, files_b = image_files(folder_a), image_files(folder_b)
        if self.task == "paired_folder":
            names_a, names_b = [p.name for p in files_a], [p.name for p in files_b]
            if names_a != names_b:
                only = sorted(set(names_a) ^ set(names_b))[0]
                where = folder_b if only in names_a else folder_a
                raise FolderError(
                    f"data.path: paired folders need matching file names; {only} has no "
                    f"counterpart in {where}"
                )
        a = read_images(files_a, self.image_size, self.spec.a.channels)
        b = read_images(files_b, self.image_size, self.spec.b.channels)
        return TranslationSplit(a, b, no_labels(a.shape[0]), no_labels(b.shape[0]))

    # ------------------------------------------------------------------------- loaders
    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _shard(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return getattr(self.trainer, "global_rank", 0), getattr(self.trainer, "world_size", 1)

    def _batches(self, name: str, train: bool) -> TranslationBatches:
        shuffle = train and not (self.trainer is not None and self.trainer.overfit_batches)
        return TranslationBatches(
            self.splits[name],
            self.paired,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=train,
            seed=self.split_seed + 1,
            epoch_fn=self._current_epoch if train else None,
            shard=self._shard() if name != "test" else (0, 1),
        )

    def train_dataloader(self) -> TranslationBatches:
        return self._batches("train", train=True)

    def val_dataloader(self) -> TranslationBatches:
        return self._batches("val", train=False)

    def test_dataloader(self) -> TranslationBatches:
        return self._batches("test", train=False)


def fixed_test_images(datamodule: TranslationDataModule, n: int) -> TranslationSplit:
    """The first ``n`` test images of both domains: what grids and scripts show every time."""
    return datamodule.splits["test"].head(n)
