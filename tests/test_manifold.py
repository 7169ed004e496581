"""Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020):
hand-computed k-NN cases, the known edge cases, and agreement with torch-fidelity's P / R."""

import pytest
import torch
from torch_fidelity.metric_prc import prc_features_to_metric

from src.metrics.manifold import ManifoldScores, kth_neighbour_radii


def column(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(-1, 1)


def test_radii_are_the_distance_to_the_kth_other_point():
    points = column(0, 1, 3, 7)
    assert kth_neighbour_radii(points, k=1).tolist() == [1, 1, 2, 4]
    assert kth_neighbour_radii(points, k=2).tolist() == [3, 2, 3, 6]
    with pytest.raises(ValueError, match="k-NN radii need"):
        kth_neighbour_radii(points, k=4)


def test_a_small_case_computed_by_hand():
    # real 0, 1, 2, 3 (k = 1: every real radius is 1); fakes 0.5, 1.5, 10 (radii 1, 1, 8.5)
    scores = ManifoldScores(column(0, 1, 2, 3), k=1).score(column(0.5, 1.5, 10))
    # 0.5 lies in the balls of 0 and 1, 1.5 in those of 1 and 2, 10 in none
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["density"] == pytest.approx((2 + 2 + 0) / (1 * 3))
    assert scores["coverage"] == pytest.approx(3 / 4)  # balls of 0, 1, 2 hold a fake; 3's does not
    # real 0, 1, 2 lie within 1 of 0.5 or 1.5; real 3 within 8.5 of 10
    assert scores["recall"] == pytest.approx(1.0)
    # without the far fake, real 3 is 1.5 from 1.5 (radius 1): outside the generated manifold
    assert ManifoldScores(column(0, 1, 2, 3), k=1).score(column(0.5, 1.5))["recall"] == 0.75


def test_identical_sets_have_full_precision_recall_and_coverage():
    real = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    scores = ManifoldScores(real, k=5).score(real.clone())
    assert scores["precision"] == scores["recall"] == scores["coverage"] == 1.0
    # each real ball holds its own centre and its k neighbours: density (k + 1) / k without ties
    assert scores["density"] == pytest.approx(6 / 5)


def test_copying_one_real_sample_is_precise_but_has_no_recall():
    real = torch.randn(500, 8, generator=torch.Generator().manual_seed(1))
    scores = ManifoldScores(real, k=5).score(real[:1].repeat(400, 1))
    assert scores["precision"] == 1.0
    assert scores["recall"] == pytest.approx(1 / 500)  # only the copied sample itself
    assert scores["coverage"] <= 10 / 500  # the balls that contain that one point


def test_precision_and_recall_equal_torch_fidelitys():
    generator = torch.Generator().manual_seed(2)
    real = torch.randn(700, 16, generator=generator)
    fake = 0.9 * torch.randn(600, 16, generator=generator) + 0.5
    ours = ManifoldScores(real, k=5, batch_size=256).score(fake)
    reference = prc_features_to_metric(
        fake, real, prc_neighborhood=5, prc_batch_size=10000, save_cpu_ram=False, verbose=False
    )
    assert ours["precision"] == pytest.approx(reference["precision"], abs=1 / 600)
    assert ours["recall"] == pytest.approx(reference["recall"], abs=1 / 700)
    assert 0.05 < ours["precision"] < 0.95 and 0.05 < ours["recall"] < 0.95  # not a trivial case
