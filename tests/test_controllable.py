"""Conditional sampling, latent interpolation, class walks: maths by hand, CLIs end to end."""

import json
import math

import numpy as np
import pytest
import torch

from src.data import load_split
from src.metrics.classifier import load_classifier
from src.runs.training import train
from src.sampling.interpolation import interpolation_latents, lerp, slerp, walk
from tests.conftest import run_script


def test_lerp_and_slerp_by_hand():
    z0, z1 = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    half = torch.tensor([0.5])
    assert torch.allclose(lerp(z0, z1, half), torch.tensor([[1.0, 1.0]]))
    # on the great circle: 45 degrees at radius 2 -> (sqrt 2, sqrt 2); lerp's midpoint: norm sqrt 2
    assert torch.allclose(slerp(z0, z1, half), torch.tensor([[math.sqrt(2), math.sqrt(2)]]))
    for t in (0.0, 1.0):
        assert torch.allclose(slerp(z0, z1, torch.tensor([t])), z0 if t == 0 else z1, atol=1e-6)
    # (nearly) parallel latents: no division by sin 0, the linear path
    assert torch.allclose(slerp(z0, 3 * z0, half), torch.tensor([[4.0, 0.0]]))


class Twins(torch.nn.Module):
    """A stand-in G with a known answer: a real test "1" when z[0] < 0, else a real "7"."""

    num_classes = 0
    latent_dim = 4

    def __init__(self, one, seven):
        super().__init__()
        self.register_buffer("one", one)
        self.register_buffer("seven", seven)

    @property
    def device(self):
        return self.one.device

    def sample_latent(self, n, generator=None, device=None):
        return torch.randn(n, self.latent_dim, generator=generator)

    def forward(self, z, labels=None):
        pick = (z[:, :1] >= 0).float().view(-1, 1, 1, 1)
        return pick * self.seven + (1 - pick) * self.one


@pytest.fixture(scope="module")
def twins(data_dir):
    images, labels = load_split("mnist", data_dir, "test", allow_download=False)
    as_float = images.float().unsqueeze(1) / 127.5 - 1
    return Twins(as_float[labels == 1][0], as_float[labels == 7][0])


def test_latent_direction_walk_moves_the_prediction_from_one_class_to_the_other(twins):
    classifier = load_classifier("mnist")
    images, info = walk(
        twins, classifier, from_class=1, to_class=7, rows=6, steps=5, scale=1.5, n=2000
    )
    assert images.shape == (30, 1, 28, 28)
    # mean(z | 7) - mean(z | 1) is 2 E|z0| = 2 sqrt(2 / pi) = 1.60 along z0 and ~0 elsewhere
    assert info["direction_norm"] == pytest.approx(1.6, abs=0.15)
    assert (
        info["share_predicted_to_class"][0] == 0.0 and info["share_predicted_to_class"][-1] >= 0.8
    )
    assert info["p_to_class"] == sorted(info["p_to_class"])  # monotone along the walk
    with pytest.raises(ValueError, match=r"only 0 of 2000 generated samples are classified as 3"):
        walk(twins, classifier, from_class=3, to_class=7, rows=2, steps=3, scale=1.0, n=2000)


def test_interpolation_rows_start_and_end_on_two_random_latents(twins):
    z = interpolation_latents(twins, pairs=3, steps=4, mode="spherical", seed=1).view(3, 4, -1)
    again = interpolation_latents(twins, pairs=3, steps=4, mode="linear", seed=1).view(3, 4, -1)
    assert torch.allclose(z[:, 0], again[:, 0]) and torch.allclose(
        z[:, -1], again[:, -1], atol=1e-6
    )
    assert not torch.allclose(z[:, 1], again[:, 1])  # the paths differ in between


@pytest.mark.slow
def test_cgan_run_logs_class_match_and_the_clis_draw_classes_and_walks(
    make_cfg, tmp_path, data_dir
):
    cfg = make_cfg(
        "model=cgan",
        "callbacks.generative_metrics.n_samples=200",
        "callbacks.generative_metrics.n_real=500",
        "callbacks.generative_metrics.kid_subset_size=100",
        "callbacks.generative_metrics.kid_subsets=5",
        keep_metrics=True,
    )
    metrics = train(cfg)["metrics"]
    assert 0.0 <= metrics["val/class_match"] <= 1.0
    assert all(f"val/class_match_{c}" in metrics for c in range(10))
    ckpt = tmp_path / "checkpoints" / "last.ckpt"

    done = run_script(
        "sample.py",
        tmp_path,
        data_dir,
        f"ckpt_path={ckpt}",
        "n=12",
        "class=7",
        f"out={tmp_path / 's.npz'}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    drawn = np.load(tmp_path / "s.npz")
    assert drawn["images"].shape == (12, 1, 28, 28) and drawn["labels"].tolist() == [7] * 12
    refused = run_script(
        "sample.py",
        tmp_path,
        data_dir,
        f"ckpt_path={ckpt}",
        "n=4",
        "class=10",
        f"out={tmp_path / 'x.npz'}",
    )
    assert refused.returncode == 2 and "class=10: must be an integer in 0..9" in refused.stderr

    done = run_script(
        "interpolate.py",
        tmp_path,
        data_dir,
        f"ckpt_path={ckpt}",
        "pairs=3",
        "steps=4",
        "walk_rows=2",
        "walk_steps=3",
        "from_class=2",
        "to_class=5",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "interpolations"
    for name in ("linear.png", "spherical.png", "walk_2_to_5.png"):
        assert (out / name).stat().st_size > 0
    info = json.loads((out / "walk.json").read_text())
    assert info["method"].startswith("label vector") and len(info["p_to_class"]) == 3


@pytest.mark.slow
def test_unconditional_checkpoint_refuses_a_class_and_names_missing_classes(
    make_cfg, tmp_path, data_dir
):
    train(make_cfg("model=ebgan"))
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    refused = run_script(
        "sample.py",
        tmp_path,
        data_dir,
        f"ckpt_path={ckpt}",
        "n=4",
        "class=7",
        f"out={tmp_path / 'x.npz'}",
    )
    assert (
        refused.returncode == 2 and "is not class-conditional; train model=cgan" in refused.stderr
    )
    # 5 samples cannot hold 10 of each class: the walk is refused with the per-class counts
    walked = run_script(
        "interpolate.py",
        tmp_path,
        data_dir,
        f"ckpt_path={ckpt}",
        "walk_samples=5",
        "pairs=2",
        "steps=3",
    )
    assert walked.returncode == 2
    assert (
        "of 5 generated samples are classified as 1 (need 10); samples per class: ["
        in walked.stderr
    )
    # the interpolations were written before
    assert (tmp_path / "interpolations" / "linear.png").is_file()
