"""Shared fixtures: the data location and a config factory that composes `conf/` into tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from src.utils import PROJECT_ROOT, register_resolvers

register_resolvers()
CONF_DIR = str(PROJECT_ROOT / "conf")
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def real_features_cache(tmp_path_factory):
    """The scores' cache of real features (src/metrics/real_cache.py) in a folder of this session:
    tests start cold and share it (subprocesses inherit it); the user's own cache is untouched."""
    from src.metrics.real_cache import CACHE_ENV

    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("real_cache"))
    yield os.environ[CACHE_ENV]
    if previous is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = previous


@pytest.fixture(scope="session")
def data_dir() -> str:
    """DATA_DIR if set (CI sets it), else ../shared/data; the MNIST files must be there."""
    root = Path(os.environ.get("DATA_DIR") or SHARED_DATA)
    if not (root / "MNIST" / "raw").is_dir():
        pytest.fail(
            f"MNIST not found under {root}/MNIST/raw: set DATA_DIR to a folder holding MNIST/raw"
        )
    return str(root)


# Tiny nets: the tests check wiring and numbers, not sample quality.
TINY = {
    "mlp": [
        "arch.sizeG=32",
        "arch.sizeD=16",
        "arch.nLayerG=2",
        "arch.nLayerD=2",
        "arch.latent_dim=8",
    ],
    "dcgan": ["arch.width=4", "arch.embedding_dim=8", "arch.latent_dim=8", "data.image_size=32"],
    "began": ["arch.filters=4", "arch.hidden_dim=8", "data.image_size=28"],
    "unet": ["arch.width=4", "arch.discriminator_width=4"],
    "resnet": ["arch.width=4", "arch.discriminator_width=4", "arch.blocks=1"],
}


def compose_script(name: str, *overrides: str, data_dir: str):
    """An entry point's config (conf/<name>.yaml) composed with ``overrides``, reading data_dir."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name=name, overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.data_dir = data_dir
    return cfg


def run_script(script: str, tmp_path, data_dir: str, *overrides: str):
    """``python src/<script> <overrides>`` in a subprocess reading data_dir; Hydra's own folder in
    tmp_path. The completed process (return code, stdout, stderr)."""
    import subprocess
    import sys

    return subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "src" / script),
            *overrides,
            f"hydra.run.dir={tmp_path / ('hydra_' + script)}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "DATA_DIR": data_dir},
    )


# A few batches on the CPU, no logger (conf/debug/fast.yaml, as users run it); a test's own
# overrides apply after it.
FAST = ["debug=fast", "print_config=false"]


def compose_train(
    overrides, output_dir, data_dir: str, tiny: bool = True, keep_metrics: bool = False
) -> DictConfig:
    """conf/train.yaml composed with ``overrides`` after FAST (and the TINY nets of the selected
    arch), writing into ``output_dir``; also used by the processes the fault tests start."""
    given = {o.split("=", 1)[0] for o in overrides}
    defaults = [o for o in FAST if o.split("=", 1)[0] not in given]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=defaults + list(overrides))
        if tiny:  # shrink the nets of whichever arch the overrides (or an experiment) selected
            arch = cfg.arch.generator._target_.split(".")[-1].replace("Generator", "").lower()
            defaults += [o for o in TINY[arch] if o.split("=", 1)[0] not in given]
            # InfoGAN's code takes num_codes of the tiny nets' 8 latent inputs
            if cfg.model._target_.endswith("InfoGAN") and "model.num_codes" not in given:
                defaults.append("model.num_codes=4")
            cfg = compose(config_name="train", overrides=defaults + list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir)
        cfg.paths.data_dir = data_dir
        if cfg.get("callbacks"):
            cfg.callbacks.pop("progress_bar", None)  # keep test logs readable
            if not keep_metrics:  # scoring 10k samples is for real runs, not unit tests
                cfg.callbacks.pop("generative_metrics", None)
    return cfg


@pytest.fixture
def make_cfg(tmp_path, data_dir):
    """compose(overrides) -> a config writing into tmp_path, with a few-batch CPU trainer."""

    def _make(*overrides: str, tiny: bool = True, keep_metrics: bool = False) -> DictConfig:
        return compose_train(overrides, tmp_path, data_dir, tiny=tiny, keep_metrics=keep_metrics)

    return _make


@pytest.fixture(scope="session")
def mnist_test_split(data_dir):
    """The first 300 MNIST test digits (uint8 [300, 28, 28]) and their labels."""
    from src.data import load_split

    images, labels = load_split("mnist", data_dir, "test", allow_download=False)
    return images[:300], labels[:300]


@pytest.fixture(scope="session")
def mnist_test_digits(mnist_test_split):
    return mnist_test_split[0]


@pytest.fixture(scope="session")
def mnist_test_labels(mnist_test_split):
    return mnist_test_split[1]
