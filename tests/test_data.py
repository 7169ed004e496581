"""The IDX reader, checksums, clear errors and the in-memory batches."""

import gzip
import shutil
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from src.data import DATASETS, DatasetError, ImageDataModule, load_split
from src.data import idx as idx_module

FILES = list(DATASETS["mnist"].md5)


def copy_mnist(src_root: str, dst_root: Path) -> Path:
    raw = dst_root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in (Path(src_root) / "MNIST" / "raw").iterdir():
        shutil.copy(path, raw / path.name)
    return raw


def test_mnist_loads_with_verified_checksums(data_dir):
    images, labels = load_split("mnist", data_dir, "test", allow_download=False)
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10000,) and set(labels.unique().tolist()) == set(range(10))
    # the first test digit of MNIST is a 7, the first training digit a 5
    assert labels[0].item() == 7
    assert load_split("mnist", data_dir, "train", allow_download=False)[1][0].item() == 5


def test_missing_folder_names_folder_files_and_data_dir(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_split("mnist", tmp_path, "train", allow_download=False)
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "DATA_DIR" in message
    assert all(name in message for name in FILES)


def test_failed_download_gives_the_same_clear_error(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(idx_module.urllib.request, "urlopen", no_network)
    with pytest.raises(DatasetError, match="download failed.*Name or service not known") as err:
        load_split("mnist", tmp_path, "train", allow_download=True)
    assert "DATA_DIR" in str(err.value)
    assert not list((tmp_path / "MNIST" / "raw").glob("*"))  # no partial files left


def test_truncated_file_is_named(tmp_path, data_dir):
    raw = copy_mnist(data_dir, tmp_path)
    target = raw / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz: cannot be read"):
        load_split("mnist", tmp_path, "test", allow_download=False)


def test_wrong_content_fails_the_checksum(tmp_path, data_dir):
    raw = copy_mnist(data_dir, tmp_path)
    target = raw / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(target.read_bytes()))
    content[100] = (content[100] + 1) % 10  # one flipped label: valid IDX, wrong data
    target.unlink()
    # uncompressed files are accepted too
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes(content))
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte: checksum mismatch"):
        load_split("mnist", tmp_path, "test", allow_download=False)


def test_batches_are_scaled_slices_and_the_split_is_fixed(data_dir):
    dm = ImageDataModule(
        data_dir=data_dir, batch_size=32, val_size=1000, image_size=32, download=False
    )
    dm.setup()
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 1, 32, 32) and images.dtype == torch.float32
    assert images.min().item() == -1.0 and images.max().item() == 1.0
    assert (images[:, :, :2, :] == -1).all()  # zero padding 28 -> 32 is background
    assert len(dm.train_dataloader()) == 59000 // 32
    assert dm.splits["test"][0].shape == (10000, 1, 32, 32)
    again = ImageDataModule(data_dir=data_dir, val_size=1000, download=False)
    again.setup()
    assert torch.equal(again.splits["val"][1], dm.splits["val"][1])


def test_train_batches_repeat_every_epoch_only_under_overfit_batches(data_dir):
    """debug=overfit (Lightning's overfit_batches) must see the same batches every epoch; normal
    training a new shuffle per epoch."""
    dm = ImageDataModule(data_dir=data_dir, batch_size=16, val_size=64, download=False)
    dm.setup()

    def first_batches(overfit_batches: int, epoch: int) -> torch.Tensor:
        dm.trainer = SimpleNamespace(overfit_batches=overfit_batches, current_epoch=epoch)
        return torch.stack([images for images, _ in islice(iter(dm.train_dataloader()), 3)])

    assert torch.equal(first_batches(3, epoch=0), first_batches(3, epoch=1))
    assert not torch.equal(first_batches(0, epoch=0), first_batches(0, epoch=1))


def test_fashion_mnist_found_in_the_system_location(tmp_path):
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist puts Fashion-MNIST there (.ci/run does)")
    images, labels = load_split("fashion_mnist", tmp_path, "test", allow_download=False)
    assert images.shape == (10000, 28, 28) and labels.max().item() == 9


def test_unknown_dataset_lists_the_allowed_ones(tmp_path):
    with pytest.raises(DatasetError, match="allowed: \\['fashion_mnist', 'mnist'\\]"):
        load_split("cifar", tmp_path, "train")
