"""Controllable generation: the latent terms by hand, both methods on a generator with known
attributes (measured by morphometry), the attribute regressor's pin, the CLI end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from src.metrics.attributes import load_attribute_regressor, r_squared, read_regressor_manifest
from src.metrics.entanglement import measure_edit
from src.metrics.morphometry import CONTROLLABLE, measure
from src.sampling.control import (
    direction_edit,
    fit_direction,
    gradient_edit,
    noise_width,
    prior_penalty,
    project,
    typicality,
)
from tests.conftest import compose_script, run_script


class StrokeGenerator(torch.nn.Module):
    """A differentiable stand-in G whose attributes are known: one stroke through the centre,
    thickness 3 + z[0] px, slant 0.3 z[1] rad, 16 px tall; z[2:] draw nothing."""

    num_classes = 0
    latent_dim = 6
    latent_distribution = "normal"

    def __init__(self):
        super().__init__()
        self.register_buffer("anchor", torch.zeros(()))  # a device to report

    @property
    def device(self):
        return self.anchor.device

    def sample_latent(self, n, generator=None, device=None):
        return torch.randn(n, self.latent_dim, generator=generator)

    def forward(self, z, labels=None):
        centres = torch.arange(28, dtype=torch.float32) + 0.5
        y, x = centres.view(1, 28, 1), centres.view(1, 1, 28)
        thickness = (3.0 + z[:, 0]).clamp(1.0, 6.0).view(-1, 1, 1)
        slant = (0.3 * z[:, 1]).view(-1, 1, 1)
        across = (x - (14.0 - torch.tan(slant) * (y - 14.0))).abs() * torch.cos(slant)
        ink = torch.sigmoid(4 * (thickness / 2 - across)) * torch.sigmoid(
            4 * (8 - (y - 14.0).abs())
        )
        return (ink * 2 - 1).unsqueeze(1)


def thickness_of(images):
    return measure(images)["thickness"]


class InkClassifier(torch.nn.Module):
    """Reads "1" below 60 px of ink and "7" above: a class flip has a known threshold."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, images):
        ink = ((images + 1) / 2).flatten(1).sum(1) * self.scale
        logits = torch.full((images.shape[0], 10), -10.0)
        logits[:, 1] = (60.0 - ink) / 5
        logits[:, 7] = (ink - 60.0) / 5
        return logits


def test_prior_penalty_typicality_and_projection_by_hand():
    model = StrokeGenerator()
    on_shell = torch.ones(1, 6)  # ||z|| = sqrt 6: typical
    assert typicality(on_shell, model).item() == pytest.approx(1.0)
    assert prior_penalty(on_shell, model).item() == pytest.approx(0.0)
    assert prior_penalty(torch.zeros(1, 6), model).item() == pytest.approx(1.0)
    assert prior_penalty(2 * on_shell, model).item() == pytest.approx(1.0)
    model.latent_distribution = "uniform"
    assert prior_penalty(2 * on_shell, model).item() == 0.0
    assert torch.equal(
        project(torch.tensor([[2.0, -3.0, 0.5, 0, 0, 0]]), model)[0, :3],
        torch.tensor([1.0, -1.0, 0.5]),
    )
    model.num_clusters = 2  # a cluster GAN's one-hot tail is not noise
    assert noise_width(model) == 4


def test_probe_direction_recovers_the_thickness_axis_and_moves_thickness_as_asked():
    model = StrokeGenerator()
    direction, info = fit_direction(model, thickness_of, n=300, seed=1, fit="probe")
    # thickness grows with z0 alone (by less than 1 px a unit: thin strokes measure ~2 px, the
    # sigmoid edges soften it), so the direction is z0's axis, longer than one unit
    assert direction[0].item() > 1.0
    assert direction[1:].abs().max().item() < 0.05 * direction[0].item()
    assert info["probe_r2"] > 0.95
    z = model.sample_latent(64, torch.Generator().manual_seed(2)).clamp(-1, 1)
    path = direction_edit(model, z, direction, delta=1.0, columns=3)
    assert path.shape == (3, 64, 6)
    with torch.no_grad():
        before, after = model(path[0]), model(path[-1])
    result = measure_edit(
        before,
        after,
        "thickness",
        1.0,
        torch.ones(64, dtype=torch.long),
        InkClassifier(),
        {name: 1.0 for name in CONTROLLABLE},
    )
    assert result["achieved_mean"] == pytest.approx(1.0, abs=0.2)
    assert result["drift"]["slant"] < 0.02  # the slant axis was left alone
    # the mean-difference fit points the same way
    other, _ = fit_direction(model, thickness_of, n=300, seed=1, fit="mean_difference")
    assert torch.nn.functional.cosine_similarity(other[:2], direction[:2], dim=0) > 0.95


def test_measure_edit_counts_achieved_change_flips_and_drift_by_hand():
    model = StrokeGenerator()
    z = torch.zeros(4, 6)
    thicker = z.clone()
    thicker[:, 0] = 1.0  # 3 px -> 4 px; ink from 16 * 3 = 48 to 64 px: the stand-in reads "7"
    with torch.no_grad():
        before, after = model(z), model(thicker)
    result = measure_edit(
        before,
        after,
        "thickness",
        2.0,
        torch.ones(4, dtype=torch.long),
        InkClassifier(),
        {name: 0.5 for name in CONTROLLABLE},
    )
    assert result["achieved_mean"] == pytest.approx(1.0, abs=0.1)
    assert result["achieved_share"] == pytest.approx(0.5, abs=0.05)
    assert result["share_reaching_80pc"] == 0.0
    assert result["class_flip_rate"] == 1.0 and result["misread_before_rate"] == 0.0
    # a thicker stroke of the same height: height and slant do not move, width does
    assert result["drift"]["slant"] < 0.01 and result["drift"]["height"] < 0.2
    assert result["drift"]["width"] > 0.5  # width = stroke + bounding box: entangled by definition


def test_gradient_steps_through_the_pinned_regressor_reach_the_asked_thickness():
    model = StrokeGenerator()
    regressor = load_attribute_regressor("mnist")
    z = model.sample_latent(32, torch.Generator().manual_seed(3)).mul(0.5)
    path, info = gradient_edit(
        model,
        regressor,
        InkClassifier(),
        z,
        None,
        "thickness",
        1.0,
        columns=3,
        iterations=30,
        lr=0.05,
        keep_class=False,
    )
    assert path.shape == (3, 32, 6) and torch.equal(path[0], z)
    # the unused dims have no gradient but the prior's: they barely move
    with torch.no_grad():
        change = measure(model(path[-1]))["thickness"] - measure(model(path[0]))["thickness"]
    assert np.mean(change) > 0.8
    assert info["keep_class"] is False


def test_class_keeping_term_holds_the_start_class():
    model = StrokeGenerator()
    regressor = load_attribute_regressor("mnist")
    z = torch.zeros(8, 6)  # 3 px strokes, 48 px of ink: the stand-in reads "1" up to 60 px
    ink = {}
    for keep_class in (True, False):  # class weight 20 (unused without the term)
        path, _ = gradient_edit(
            model,
            regressor,
            InkClassifier(),
            z,
            None,
            "thickness",
            2.0,
            columns=2,
            iterations=40,
            lr=0.05,
            class_weight=20.0,
            keep_class=keep_class,
        )
        with torch.no_grad():
            ink[keep_class] = ((model(path[-1]) + 1) / 2).flatten(1).sum(1)
    ink_kept, ink_free = ink[True], ink[False]
    assert (ink_free > 60).all() and (ink_kept < ink_free).all()


def test_pinned_regressor_sha256_and_test_r2():
    entry = read_regressor_manifest()["mnist"]
    assert set(entry["attributes"]) == set(CONTROLLABLE)
    assert min(entry["test_r2"].values()) >= 0.8
    assert set(entry["test_per_class"]) == {str(d) for d in range(10)}
    model = load_attribute_regressor("mnist")
    assert model.weights_sha256 == entry["sha256"]


def test_r_squared_by_hand():
    measured = np.array([[1.0], [2.0], [3.0], [np.nan]])
    assert r_squared(measured.copy(), measured)[0] == pytest.approx(1.0)
    assert r_squared(np.array([[2.0], [2.0], [2.0], [0.0]]), measured)[0] == pytest.approx(0.0)


@pytest.mark.parametrize(
    "override, message",
    [
        ("attribute=thicknes", "attribute='thicknes': must be one of ['thickness', 'slant'"),
        ("method=gradiant", "method='gradiant': must be one of ['gradient', 'direction', 'all']"),
        ("latent_direction.fit=pca", "latent_direction.fit='pca': must be one of ['probe'"),
        ("delta=0", "delta=0: ask for a change"),
    ],
)
def test_bad_names_are_one_line_errors_listing_the_choices(override, message, data_dir):
    from src.control import _check
    from src.utils import ConfigError

    cfg = compose_script("control", "ckpt_path=x.ckpt", override, data_dir=data_dir)
    with pytest.raises(ConfigError) as caught:
        _check(cfg)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow
def test_control_cli_writes_grids_measurements_and_the_table(make_cfg, tmp_path, data_dir):
    from src.runs.training import train

    train(make_cfg("model=cgan"))
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    done = run_script(
        "control.py",
        tmp_path,
        data_dir,
        f"ckpt_path={ckpt}",
        "attribute=thickness",
        "method=all",
        "delta=1.0",
        "rows=3",
        "columns=3",
        "measure_samples=20",
        "n_real=200",
        "gradient.iterations=2",
        "latent_direction.samples=60",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "control"
    for method in ("gradient", "direction"):
        result = json.loads((out / f"thickness_{method}.json").read_text())
        assert result["asked"] == 1.0 and result["measure_samples"] == 20
        assert len(result["achieved_per_column"]) == 3 and result["achieved_per_column"][0] == 0
        assert 0.0 <= result["class_flip_rate"] <= 1.0
        assert math.isfinite(result["fid_after"]) and set(result["drift"]) == {
            "slant",
            "width",
            "height",
            "length",
        }
        assert (out / f"thickness_{method}.png").stat().st_size > 0
    table = (out / "entanglement.md").read_text()
    assert "| thickness | gradient + class |" in table and "| thickness | direction |" in table

    refused = run_script("control.py", tmp_path, data_dir, f"ckpt_path={ckpt}", "method=pca")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("error: method='pca': must be one of")


def test_regressor_training_pins_and_a_changed_file_is_refused(
    mnist_test_digits, mnist_test_labels, tmp_path, monkeypatch
):
    from src.metrics import attributes
    from src.metrics.classifier import ClassifierError

    model, report = attributes.train_attribute_regressor(
        mnist_test_digits[:200], mnist_test_digits[200:], mnist_test_labels[200:], epochs=1
    )
    assert report["train_images"] == 200 and report["test_images"] == 100
    assert set(report["test_r2"]) == set(CONTROLLABLE)
    assert all(math.isfinite(v) for v in report["test_r2"].values())
    monkeypatch.setattr(attributes, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(attributes, "REGRESSOR_MANIFEST", tmp_path / "attribute_regressors.json")
    entry = attributes.pin_attribute_regressor(model, "mnist", report)
    loaded = attributes.load_attribute_regressor("mnist")
    assert loaded.weights_sha256 == entry["sha256"]
    assert torch.equal(loaded.mean, model.mean) and torch.equal(loaded.std, model.std)
    weights = tmp_path / entry["file"]
    weights.write_bytes(weights.read_bytes()[:-1] + b"x")
    with pytest.raises(ClassifierError, match="differs from the pinned"):
        attributes.load_attribute_regressor("mnist")
