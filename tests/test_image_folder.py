"""data=image_folder: any tree of RGB images, centre-cropped and resized once into a uint8 cache
(in memory or memory-mapped), bad folders named, and a model trains on it; without the Inception
weights (not on this machine) the scores are skipped with one line and training goes on."""

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from src.config import check_paths, validate_config
from src.data.image_folder import ImageFolderDataModule
from src.runs.training import train
from src.utils import ConfigError


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "faces"
    rng = np.random.default_rng(0)
    for i in range(30):  # nested, mixed sizes and formats, as an ImageNet-style export
        sub = root / f"class_{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        shape = (20 + i, 30, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
            sub / f"{i:02d}.{'png' if i % 2 else 'jpg'}"
        )
    return root


def module(folder, tmp_path, **options):
    defaults = {"image_size": 16, "batch_size": 4, "val_size": 4, "test_size": 6}
    return ImageFolderDataModule(str(folder), str(tmp_path / "cache"), **{**defaults, **options})


def test_cache_is_built_once_and_splits_are_slices(folder, tmp_path):
    data = module(folder, tmp_path)
    data.setup()
    assert [data.splits[s][0].shape[0] for s in ("test", "val", "train")] == [6, 4, 20]
    assert data.splits["train"][0].shape[1:] == (3, 16, 16)
    built = data.cache_path.stat().st_mtime_ns
    again = module(folder, tmp_path)
    again.setup()
    assert again.cache_path == data.cache_path and again.cache_path.stat().st_mtime_ns == built
    mapped = module(folder, tmp_path, in_memory="never")
    mapped.setup()
    for split in ("test", "train"):
        assert torch.equal(mapped.splits[split][0], data.splits[split][0])
    # the cache holds every image centre-cropped and resized: find 00.jpg (20 x 30 -> 20 x 20)
    with Image.open(folder / "class_0" / "00.jpg") as image:
        expected = torch.from_numpy(
            np.asarray(image.crop((5, 0, 25, 20)).resize((16, 16), Image.Resampling.BICUBIC)).copy()
        ).permute(2, 0, 1)
    everything = torch.cat([data.splits[s][0] for s in ("test", "val", "train")])
    assert (everything == expected).flatten(1).all(1).sum() == 1
    batch = next(iter(data.train_dataloader()))
    assert batch[0].shape == (4, 3, 16, 16) and batch[0].min() >= -1 and batch[0].max() <= 1
    # a changed folder gets a new cache
    os.utime(folder / "class_0" / "00.jpg", ns=(1, 1))
    changed = module(folder, tmp_path)
    changed.prepare_data()
    assert changed.cache_path != data.cache_path


def test_bad_folders_are_named(folder, tmp_path):
    with pytest.raises(ValueError, match="has 30 images; .* need 34"):
        module(folder, tmp_path, test_size=26).prepare_data()
    (folder / "class_1" / "broken.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        module(folder, tmp_path).prepare_data()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="has no images"):
        module(empty, tmp_path).prepare_data()


def test_a_model_trains_on_a_folder_and_the_missing_inception_weights_are_one_line(
    make_cfg, tmp_path, folder, caplog
):
    from src.metrics.inception import WEIGHTS_FILE

    cfg = make_cfg(
        "model=began",
        "arch=began",
        "data=image_folder",
        f"data.path={folder}",
        "data.image_size=32",
        "data.batch_size=4",
        "data.val_size=4",
        "data.test_size=6",
        "callbacks.generative_metrics.n_samples=8",
        "callbacks.generative_metrics.n_real=6",
        keep_metrics=True,
    )
    cfg.paths.output_dir = str(tmp_path / "run")
    with caplog.at_level(logging.WARNING):
        result = train(cfg)
    assert result["status"] == "completed"
    weights = torch.hub.get_dir() + "/checkpoints/" + WEIGHTS_FILE
    if not os.path.isfile(weights):  # this machine: no weights, no network
        skipped = [r.message for r in caplog.records if "generative metrics skipped" in r.message]
        assert len(skipped) == 1 and "Inception-v3 weights" in skipped[0]
        assert "training goes on" in skipped[0] and "val/fid" not in result["metrics"]
    else:
        assert result["metrics"]["val/fid"] >= 0


def test_folder_configs_are_checked(make_cfg, tmp_path, folder):
    with pytest.raises(ConfigError, match="data.path=\\?\\?\\?: data=image_folder reads"):
        check_paths(make_cfg("data=image_folder"))
    with pytest.raises(ConfigError, match="class-conditional, and data=image_folder has no labels"):
        validate_config(make_cfg("model=cgan", "data=image_folder", f"data.path={folder}"))
    for size in (64, 128):  # the BEGAN paper's settings compose
        cfg = make_cfg(f"experiment=began_{size}px", f"data.path={folder}", tiny=False)
        validate_config(cfg)
        assert (cfg.data.image_size, cfg.data.batch_size, cfg.arch.hidden_dim) == (size, 16, 64)
