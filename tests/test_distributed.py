"""Two CPU processes (gloo) through Lightning's DDP, end to end: the run completes, one metrics.json
is written (by rank 0), both ranks end with the same weights, and the run resumes from its
checkpoint under DDP."""

import json
import os
import subprocess
import sys

import pytest
import torch

from src.data.datamodule import InMemoryBatches
from src.utils import PROJECT_ROOT

pytestmark = pytest.mark.slow  # two processes each: end-to-end


def test_each_rank_walks_its_own_share_of_the_same_order():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    labels = torch.arange(10)
    shards = [
        InMemoryBatches(images, labels, 2, shuffle=True, drop_last=True, seed=3, shard=(r, 2))
        for r in range(2)
    ]
    seen = [torch.cat([y for _, y in shard]) for shard in shards]
    assert len(shards[0]) == len(shards[1]) == 2  # 5 images a rank, 2 full batches each
    assert not set(seen[0].tolist()) & set(seen[1].tolist())  # disjoint shares
    whole = InMemoryBatches(images, labels, 10, shuffle=True, drop_last=True, seed=3)
    order = next(iter(whole))[1]
    assert seen[0].tolist() == order[0::2][:4].tolist()  # every world-th of the one shuffle
    with pytest.raises(ValueError, match="shard rank 2"):
        InMemoryBatches(images, labels, 2, shuffle=False, drop_last=True, shard=(2, 2))


def ddp_run(tmp_path, data_dir, *extra):
    command = [
        sys.executable,
        str(PROJECT_ROOT / "src" / "train.py"),
        "model=ebgan_pt",
        "arch=mlp",
        "arch.sizeG=32",
        "arch.sizeD=16",
        "arch.nLayerG=2",
        "arch.nLayerD=2",
        "arch.latent_dim=8",
        "debug=fast",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.limit_train_batches=4",
        "torch_threads=1",
        "print_config=false",
        f"hydra.run.dir={tmp_path}",
        *extra,
    ]
    env = {**os.environ, "DATA_DIR": data_dir, "WANDB_MODE": "disabled"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / "metrics.json").read_text())


def test_two_cpu_processes_train_write_once_agree_and_resume(tmp_path, data_dir):
    result = ddp_run(tmp_path, data_dir)
    assert result["status"] == "completed"
    assert result["distributed"] == {
        "world_size": 2,
        "strategy": "DDPStrategy",
        "replicas_identical": True,
    }
    # 4 batches an epoch per rank: 4 D and 4 G steps
    assert result["optimizer_steps"] == 8
    assert "val/is" in result["metrics"] and "val/loss_d" in result["metrics"]
    assert len(list(tmp_path.rglob("metrics.json"))) == 1
    assert (tmp_path / "samples" / "last.png").is_file()
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    resumed = ddp_run(
        tmp_path / "resumed", data_dir, f"ckpt_path={checkpoint}", "trainer.max_epochs=2"
    )
    assert resumed["status"] == "completed" and resumed["epochs_completed"] == 2
    assert resumed["optimizer_steps"] == 16
    assert resumed["distributed"]["replicas_identical"] is True
