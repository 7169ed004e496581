"""Short end-to-end runs: every model on its archs leaves a checkpoint, metrics.json, samples."""

import json
import os
import subprocess
import sys

import pytest

from src.runs.training import train
from src.utils import PROJECT_ROOT

RUNS = [
    ("gan", "mlp"),
    ("gan", "dcgan"),
    ("ebgan", "mlp"),
    ("ebgan", "dcgan"),
    ("ebgan_pt", "mlp"),
    ("ebgan_pt", "dcgan"),
    ("began", "began"),
    ("began", "dcgan"),
    ("wgan", "mlp"),
    ("wgan_gp", "dcgan"),
    ("cgan", "mlp"),
    ("cgan", "dcgan"),
    ("infogan", "mlp"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("model", "arch"), RUNS, ids=[f"{m}-{a}" for m, a in RUNS])
def test_short_run_leaves_checkpoint_metrics_and_samples(make_cfg, tmp_path, model, arch):
    # n_critic = 5 for the WGANs: 5 batches = 5 critic steps + 1 G step, the others' 3 x (1 + 1)
    batches = 5 if model.startswith("wgan") else 3
    cfg = make_cfg(
        f"model={model}", f"arch={arch}", "logger=csv", f"trainer.limit_train_batches={batches}"
    )
    result = train(cfg)
    assert result["status"] == "completed"
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "samples" / "epoch_000.png").is_file()
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["status"] == "completed" and written["epochs_completed"] == 1
    assert written["optimizer_steps"] == 6
    expected = {
        "gan": "train/d_real",
        "ebgan": "train/energy_real",
        "ebgan_pt": "train/pt",
        "began": "train/k",
        "wgan": "train/wasserstein_estimate",
        "wgan_gp": "train/gradient_penalty",
        "cgan": "train/d_fake",
        "infogan": "train/mutual_information",
    }
    assert expected[model] in written["metrics"]
    assert all(v == v for v in written["metrics"].values())  # no NaN
    assert (tmp_path / "csv" / "metrics.csv").is_file()


def test_debug_overfit_trains_the_same_few_batches_for_many_epochs(make_cfg, tmp_path):
    cfg = make_cfg("model=ebgan", "debug=overfit", "trainer.max_epochs=2", keep_metrics=True)
    assert cfg.trainer.overfit_batches == 3 and cfg.task_name == "debug" and not cfg.logger
    result = train(cfg)
    assert result["status"] == "completed" and result["epochs_completed"] == 2
    assert result["optimizer_steps"] == 2 * 3 * 2  # 3 batches an epoch, one D and one G step each
    assert "val/fid" not in result["metrics"]  # no scoring of a generator fitted to 3 batches


def run_cli(tmp_path, *overrides, env_extra=None):
    env = {**os.environ, "WANDB_MODE": "disabled", **(env_extra or {})}
    command = [
        sys.executable,
        str(PROJECT_ROOT / "src" / "train.py"),
        f"hydra.run.dir={tmp_path}",
        "trainer.accelerator=cpu",
        "logger=none",
        *overrides,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )


@pytest.mark.slow
def test_cli_trains_from_any_folder(tmp_path, data_dir):
    done = run_cli(
        tmp_path,
        "model=ebgan_pt",
        "arch.sizeG=32",
        "arch.sizeD=16",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "data.val_size=64",
        env_extra={"DATA_DIR": data_dir},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["status"] == "completed"
    assert "model=ebgan_pt" in written["overrides"] and written["choices"]["loss"] == "energy_l2"


@pytest.mark.slow
def test_cli_with_a_data_dir_that_does_not_exist_says_so(tmp_path):
    missing = tmp_path / "nowhere"
    done = run_cli(tmp_path, env_extra={"DATA_DIR": str(missing)})
    assert done.returncode == 2
    assert f"error: paths.data_dir={missing} does not exist; set DATA_DIR" in done.stderr
    assert "Traceback" not in done.stderr and not missing.exists()


@pytest.mark.slow
def test_cli_without_data_prints_one_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_cli(tmp_path, "data.download=false", env_extra={"DATA_DIR": str(empty)})
    assert done.returncode == 2
    assert f"error: mnist not found in {empty}/MNIST/raw" in done.stderr
    assert "DATA_DIR" in done.stderr and "train-images-idx3-ubyte[.gz]" in done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout


@pytest.mark.slow
def test_cli_rejects_a_model_arch_mismatch_before_training(tmp_path, data_dir):
    done = run_cli(tmp_path, "model=gan", "arch=began", env_extra={"DATA_DIR": data_dir})
    assert done.returncode == 2
    assert "arch=began has no classifier discriminator" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "checkpoints").exists()


def test_default_progress_bar_is_throttled_and_updates_on_the_epochs_last_batch():
    from unittest import mock

    from lightning.pytorch.callbacks import RichProgressBar

    from src.callbacks import ThrottledRichProgressBar

    bar = ThrottledRichProgressBar(every_n_batches=20)
    trainer = mock.Mock(num_training_batches=45)
    with mock.patch.object(RichProgressBar, "on_train_batch_end") as stock:
        for batch_idx in range(45):
            bar.on_train_batch_end(trainer, None, None, None, batch_idx)
    assert [c.args[-1] for c in stock.call_args_list] == [19, 39, 44]
    with pytest.raises(ValueError, match="every_n_batches must be >= 1"):
        ThrottledRichProgressBar(every_n_batches=0)
