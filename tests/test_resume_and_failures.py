"""Exact resume, training untouched by validation and scoring, preemption, W&B offline logging, and
bad input refused before training."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from src.config import check_paths
from src.runs.training import train
from src.utils import PROJECT_ROOT, ConfigError


def final_weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


# per model: a knob that makes 4 batches an epoch exercise its state (BEGAN lr decay, WGAN G step)
RESUME_KNOBS = {
    "ebgan_pt": "model.margin=10",
    "began": "model.lr_decay_patience=1",
    "wgan": "model.d_steps_per_g_step=3",
    # three optimizers, and G's moving average with its warm-up count
    "vaegan": "model.ema_decay=0.9",
    "pix2pix": "model.l1_weight=10",
    # a pool of 8 fills in the first batch, then swaps; lr constant 2 epochs, then decaying
    "cyclegan": "model.pool_size=8",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "arch"),
    [
        ("ebgan_pt", "mlp"),
        ("began", "began"),
        ("wgan", "dcgan"),
        ("vaegan", "mlp"),
        ("pix2pix", "unet"),
        ("cyclegan", "resnet"),
    ],
)
def test_resume_gives_the_same_weights_as_a_straight_run(make_cfg, tmp_path_factory, model, arch):
    steps = [
        f"model={model}",
        f"arch={arch}",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=1",
        "trainer.deterministic=true",
        RESUME_KNOBS[model],
    ]
    straight_dir, half_dir, resumed_dir = (
        tmp_path_factory.mktemp(n) for n in ("straight", "half", "resumed")
    )

    def run(folder, epochs, *extra):
        cfg = make_cfg(*steps, f"trainer.max_epochs={epochs}", *extra)
        cfg.paths.output_dir = str(folder)
        assert train(cfg)["status"] == "completed"
        return folder / "checkpoints" / "last.ckpt"

    straight = final_weights(run(straight_dir, 4))
    # CycleGAN's lr schedule follows max_epochs: its first half is stopped by steps instead (2
    # epochs of 4 batches, 2 updates each)
    stop = ("4", "+trainer.max_steps=16") if model == "cyclegan" else ("2",)
    half = run(half_dir, int(stop[0]), *stop[1:])
    resumed = final_weights(run(resumed_dir, 4, f"ckpt_path={half}"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    if model == "began":
        assert straight["k"].item() > 0 and torch.equal(straight["k"], resumed["k"])
    if model == "cyclegan":  # the history pools travel in the checkpoint
        assert straight["pool_b.stored"].item() == 8
        assert torch.equal(straight["pool_b.images"], resumed["pool_b.images"])
    if model == "vaegan":
        assert straight["ema_updates"].item() == 16
        assert any(key.startswith("generator_ema.") for key in straight)


def test_validation_scoring_and_sample_grids_do_not_change_what_is_trained(make_cfg, tmp_path):
    """Validation, the metrics and the sample-grid callbacks (classifier built, samples drawn,
    IS/KID subsets) leave the training RNG alone: how often they run never changes the trained
    weights."""

    def run(*extra, keep_metrics):
        folder = tmp_path / f"metrics_{keep_metrics}_{len(extra)}"
        cfg = make_cfg(
            "model=ebgan",
            "trainer.max_epochs=2",
            "callbacks.generative_metrics.n_samples=200",
            "callbacks.generative_metrics.n_real=200",
            "callbacks.generative_metrics.kid_subset_size=50",
            "callbacks.generative_metrics.kid_subsets=2",
            *extra,
            keep_metrics=keep_metrics,
        )
        cfg.paths.output_dir = str(folder)
        assert train(cfg)["status"] == "completed"
        return final_weights(folder / "checkpoints" / "last.ckpt")

    scored, unscored = run(keep_metrics=True), run(keep_metrics=False)
    bare = run("callbacks.sample_grid=null", "trainer.limit_val_batches=0", keep_metrics=False)
    for key in scored:
        assert torch.equal(scored[key], unscored[key]) and torch.equal(scored[key], bare[key]), key


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_records_interrupted(tmp_path, data_dir):
    command = [
        sys.executable,
        str(PROJECT_ROOT / "src" / "train.py"),
        f"hydra.run.dir={tmp_path}",
        "logger=csv",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=50",
        "callbacks.progress_bar=null",
        "callbacks.generative_metrics=null",
        "arch.sizeG=64",
        "arch.sizeD=32",
        "model=ebgan",
        "trainer.log_every_n_steps=1",
        "print_config=false",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "DATA_DIR": data_dir, "WANDB_MODE": "disabled"},
    )
    metrics_csv = tmp_path / "csv" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (
        metrics_csv.is_file() or (tmp_path / "csv" / "hparams.yaml").is_file()
    ):
        time.sleep(0.5)
    time.sleep(3)  # well inside the first epochs
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["status"] == "interrupted", output[-2000:]
    checkpoint = torch.load(
        tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert checkpoint["global_step"] > 0 and "rng_state" in checkpoint


def read_wandb_records(path):
    """Records of an offline .wandb file: LevelDB-style log (32 KiB blocks, 7-byte headers)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, pending, records = path.read_bytes(), 7, b"", []
    while pos < len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if length == 0 and kind == 0:
            pos += left - 7
            continue
        chunk, pos = data[pos : pos + length], pos + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def test_wandb_offline_writes_its_run_files(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg("model=ebgan", "logger=wandb", "tags=[smoke]", "task_name=my_sweep")
    assert train(cfg)["status"] == "completed"
    import wandb

    assert wandb.run is None  # closed, so the next run of a multirun starts its own
    runs = list((tmp_path / "wandb").glob("offline-run-*/*.wandb"))
    assert len(runs) == 1
    records = read_wandb_records(runs[0])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_group == "my_sweep" and run.job_type == "train"
    assert list(run.tags) == ["smoke", "ebgan", "mlp", "mnist"]
    keys = {kind: set() for kind in ("history", "config")}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            keys[kind] |= {item.key or "/".join(item.nested_key) for item in record.history.item}
        elif kind == "config":
            keys[kind] |= {item.key or "/".join(item.nested_key) for item in record.config.update}
    assert {"model", "arch", "loss", "data", "trainer"} <= keys["config"]
    assert {
        "train/energy_real",
        "train/energy_fake",
        "train/loss_d",
        "train/loss_g",
        "train/fake_inside_margin",
        "val/energy_real",
        "samples/filenames",
    } <= keys["history"]
    assert any(r.WhichOneof("record_type") == "exit" and r.exit.exit_code == 0 for r in records)


def test_csv_and_tensorboard_loggers_combine(make_cfg, tmp_path):
    cfg = make_cfg("model=gan", "logger=[csv,tensorboard]")
    assert train(cfg)["status"] == "completed"
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_checkpoint_path_that_does_not_exist(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="ckpt_path=.*missing.ckpt: no such file"):
        check_paths(make_cfg(f"ckpt_path={tmp_path / 'missing.ckpt'}"))


def test_checkpoint_of_another_model_is_refused(make_cfg, tmp_path):
    assert train(make_cfg("model=ebgan"))["status"] == "completed"
    with pytest.raises(
        ConfigError, match="holds a src.models.EBGAN model, but this run configures src.models.GAN"
    ):
        check_paths(make_cfg("model=gan", f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=nosuchmodel"], "Could not find 'model/nosuchmodel'"),
        (["model=ebgan", "model.margin=-1"], "error: model.margin=-1: must be a number > 0"),
        (
            ["model=began", "arch=began", "model.gamma=2"],
            "error: model.gamma=2: must be a number in (0, 1]",
        ),
        # a constructor's own check (no schema rule spans two keys like this): one line too
        (
            ["model=wgan_gp", "arch.critic_norm=batch"],
            "error: model=wgan_gp needs a critic without batch norm",
        ),
        (["model=ebgan", "loss=bce_ns"], "needs a 'energy' loss: choose loss= one of"),
    ],
)
@pytest.mark.slow
def test_bad_input_stops_before_training_with_a_message(tmp_path, data_dir, overrides, message):
    done = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "src" / "train.py"),
            f"hydra.run.dir={tmp_path}",
            "logger=none",
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DATA_DIR": data_dir},
    )
    assert done.returncode != 0 and message in done.stderr
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.json").exists()
    if "nosuchmodel" in overrides[0]:
        assert "Available options in 'model'" in done.stderr and "ebgan_pt" in done.stderr


def test_a_run_relaunched_into_its_folder_overwrites_the_stale_checkpoint(make_cfg, tmp_path):
    # a sweep relaunch re-runs an interrupted member in its own folder: evaluate.py and resume read
    # checkpoints/last.ckpt, so that must be the new run's, not a last-v1.ckpt beside the old one
    from src.runs.training import train

    train(make_cfg("model=ebgan", "trainer.limit_train_batches=2"))
    written = json.loads((tmp_path / "metrics.json").read_text())
    written["status"] = "interrupted"  # as a preempted member leaves it: the relaunch trains again
    (tmp_path / "metrics.json").write_text(json.dumps(written))
    train(make_cfg("model=ebgan", "trainer.limit_train_batches=3"))
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "last.ckpt.sha256"]
    saved = torch.load(checkpoints / "last.ckpt", weights_only=False, map_location="cpu")
    assert saved["global_step"] == 6  # the second run's 3 batches x (D + G step)
