"""The pinned classifier and its scores on real data, noise and a collapsed generator."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from src.data import load_split
from src.metrics import classifier as classifier_module
from src.metrics.classifier import ClassifierError, load_classifier, read_manifest
from src.metrics.scores import CACHE_CHECK_ROWS, GenerativeScores
from src.metrics.training import accuracy

BARS = {"mnist": 0.992, "fashion_mnist": 0.90}


@pytest.fixture(scope="module")
def mnist_test(data_dir):
    images, labels = load_split("mnist", data_dir, "test", allow_download=False)
    return images, labels


@pytest.fixture(scope="module")
def mnist_scores(mnist_test):
    return GenerativeScores("mnist", mnist_test[0].unsqueeze(1), kid_subsets=20)


@pytest.mark.parametrize("dataset", sorted(BARS))
def test_pinned_classifier_loads_verified_and_meets_its_bar(dataset, data_dir):
    if dataset not in read_manifest():
        pytest.fail(
            f"no pinned classifier for {dataset}: python src/train_classifier.py data={dataset}"
        )
    model = load_classifier(dataset)
    if dataset == "fashion_mnist" and not __import__("os").path.isdir(
        "/usr/share/datasets/fashion-mnist"
    ):
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    images, labels = load_split(dataset, data_dir, "test", allow_download=False)
    assert accuracy(model, images, labels) >= BARS[dataset]
    assert read_manifest()[dataset]["test_accuracy"] >= BARS[dataset]


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    shutil.copytree(classifier_module.WEIGHTS_DIR, tmp_path / "weights")
    monkeypatch.setattr(classifier_module, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(classifier_module, "MANIFEST", tmp_path / "weights" / "manifest.json")
    weights = tmp_path / "weights" / "mnist_classifier.pt"
    content = bytearray(weights.read_bytes())
    content[len(content) // 2] ^= 0xFF
    weights.write_bytes(bytes(content))
    with pytest.raises(ClassifierError, match="sha256 .* differs from the pinned"):
        load_classifier("mnist")
    weights.unlink()
    with pytest.raises(ClassifierError, match="is missing"):
        load_classifier("mnist")
    with pytest.raises(ClassifierError, match="no pinned classifier for dataset 'svhn'"):
        load_classifier("svhn")


def test_real_test_digits_score_high_and_match_themselves(mnist_scores, mnist_test):
    result = mnist_scores.score(mnist_test[0].unsqueeze(1))
    assert result["is"] >= 9.5
    assert result["fid"] == pytest.approx(0.0, abs=1e-3)
    assert result["modes_covered"] == 10 and result["max_class_share"] < 0.12
    assert 0.08 < result["min_class_share"] <= 0.1
    assert result["precision"] == result["recall"] == result["coverage"] == 1.0


def test_class_match_is_the_share_classified_as_requested(mnist_scores, mnist_test):
    from src.metrics.scores import class_match_scores

    by_hand = class_match_scores(torch.tensor([1, 1, 2, 3]), torch.tensor([1, 2, 2, 3]))
    assert by_hand["class_match"] == 0.75
    assert by_hand["class_match_per_class"][1:4] == [1.0, 0.5, 1.0]
    assert all(v != v for v in by_hand["class_match_per_class"][4:])  # never requested: NaN, not 0
    images, labels = mnist_test[0][:3000].unsqueeze(1), mnist_test[1][:3000]
    right = mnist_scores.score(images, requested_labels=labels)
    wrong = mnist_scores.score(images, requested_labels=(labels + 1) % 10)
    assert right["class_match"] > 0.99 and min(right["class_match_per_class"]) > 0.97
    assert wrong["class_match"] < 0.02
    assert right["fid"] == wrong["fid"]  # the request does not change the unconditional scores


def test_uint8_and_float_inputs_score_the_same(mnist_scores, mnist_test):
    uint8 = mnist_test[0][:2000].unsqueeze(1)
    as_float = uint8.float() / 127.5 - 1
    a, b = mnist_scores.score(uint8), mnist_scores.score(as_float)
    assert a["is"] == pytest.approx(b["is"], rel=1e-5) and a["fid"] == pytest.approx(
        b["fid"], rel=1e-5
    )


def test_noise_scores_near_one_with_a_huge_fid(mnist_scores, data_dir):
    noise = torch.rand(5000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    train_images = load_split("mnist", data_dir, "train", allow_download=False)[0][:5000].unsqueeze(
        1
    )
    noise_result, real_result = mnist_scores.score(noise), mnist_scores.score(train_images)
    assert noise_result["is"] < 1.5
    assert (
        noise_result["fid"] > 50 * real_result["fid"]
        and noise_result["kid"] > 50 * real_result["kid"]
    )
    # held-out digits lie on the test digits' manifold and cover it; noise does neither
    assert real_result["precision"] > 0.7 and real_result["recall"] > 0.7
    assert real_result["coverage"] > 0.7 and 0.7 < real_result["density"] < 1.3
    assert noise_result["precision"] == noise_result["coverage"] == noise_result["density"] == 0


def test_a_single_repeated_digit_is_caught_by_mode_coverage(mnist_scores, mnist_test):
    collapsed = mnist_test[0][:1].unsqueeze(1).expand(3000, -1, -1, -1)
    result = mnist_scores.score(collapsed)
    assert result["modes_covered"] == 1 and result["max_class_share"] == 1.0
    assert result["min_class_share"] == 0.0
    # one real digit, copied: perfectly "precise", no recall
    assert result["precision"] == 1.0 and result["recall"] < 0.001 and result["coverage"] < 0.01
    assert result["is"] == pytest.approx(1.0, abs=1e-3)


def test_samples_of_several_generators_scored_in_one_pass_score_as_alone(mnist_scores, mnist_test):
    """The population's batched scoring: one classifier pass over all members' samples, then
    per-member scores equal to scoring each member's samples on their own."""
    digits = mnist_test[0][:1500].unsqueeze(1).float() / 127.5 - 1
    noise = torch.rand(1500, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    features, predicted = mnist_scores.features(torch.cat([digits, noise]))
    for k, images in enumerate((digits, noise)):
        part = slice(k * 1500, (k + 1) * 1500)
        together = mnist_scores.score_features(features[part], predicted[part])
        alone = mnist_scores.score(images)
        assert together["class_share"] == alone["class_share"]
        for key in ("is", "fid", "kid", "precision", "recall", "density", "coverage"):
            assert together[key] == pytest.approx(alone[key], rel=1e-5, abs=1e-7), key


def test_scores_are_reproducible_and_accept_padded_images(mnist_scores, mnist_test):
    images = mnist_test[0][:3000].unsqueeze(1)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    first, again, from_padded = (
        mnist_scores.score(images),
        mnist_scores.score(images),
        mnist_scores.score(padded),
    )
    assert first == again
    assert from_padded["fid"] == pytest.approx(first["fid"], rel=1e-6)


@pytest.mark.slow
def test_training_logs_the_scores_and_the_clis_work_on_its_checkpoint(make_cfg, tmp_path, data_dir):
    import os
    import subprocess
    import sys

    from src.runs.training import train
    from src.utils import PROJECT_ROOT

    cfg = make_cfg(
        "model=ebgan",
        "callbacks.generative_metrics.n_samples=300",
        "callbacks.generative_metrics.n_real=500",
        "callbacks.generative_metrics.kid_subset_size=100",
        "callbacks.generative_metrics.kid_subsets=5",
        keep_metrics=True,
    )
    result = train(cfg)
    for key in ("val/is", "val/fid", "val/kid", "val/modes_covered", "val/max_class_share"):
        assert key in result["metrics"]
    # the run's clock includes its own scoring
    assert result["metrics"]["val/elapsed_seconds"] >= result["metrics"]["val/metrics_seconds"] > 0
    ckpt = tmp_path / "checkpoints" / "last.ckpt"

    def cli(script, *args):
        done = subprocess.run(
            [
                sys.executable,
                str(PROJECT_ROOT / "src" / script),
                f"ckpt_path={ckpt}",
                f"hydra.run.dir={tmp_path / script}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "DATA_DIR": data_dir},
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    cli("evaluate.py", "n_samples=300", "n_real=500", "kid_subset_size=100", "kid_subsets=5")
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    # same latents, same net
    assert evaluation["fid"] == pytest.approx(result["metrics"]["val/fid"], rel=1e-4)
    cli("sample.py", "n=50", f"out={tmp_path / 's.npz'}")
    images = np.load(tmp_path / "s.npz")["images"]
    assert images.shape == (50, 1, 28, 28) and images.dtype == np.uint8 and images.max() > 100
    cli("sample.py", "n=16", f"out={tmp_path / 'grid.png'}")
    assert (tmp_path / "grid.png").stat().st_size > 0


@pytest.mark.slow
def test_cli_refuses_a_missing_checkpoint(tmp_path):
    import subprocess
    import sys

    from src.utils import PROJECT_ROOT

    done = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "src" / "evaluate.py"),
            f"ckpt_path={tmp_path}/x.ckpt",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and f"ckpt_path={tmp_path}/x.ckpt: no such file" in done.stderr


def test_sharpness_ratio_sees_blur_and_noise(mnist_test):
    from src.metrics.sharpness import sharpness_ratio

    real = mnist_test[0][:500].unsqueeze(1)
    as_float = real.float() / 127.5 - 1
    blurred = torch.nn.functional.avg_pool2d(as_float, 3, stride=1, padding=1)
    noisy = (as_float + 0.3 * torch.randn_like(as_float)).clamp(-1, 1)
    assert sharpness_ratio(real, real) == pytest.approx(1.0)
    assert sharpness_ratio(as_float, real) == pytest.approx(1.0, rel=1e-5)
    assert sharpness_ratio(blurred, real) < 0.7 < 1.3 < sharpness_ratio(noisy, real)


def test_blank_share_counts_near_constant_samples_and_no_real_digit(mnist_scores, mnist_test):
    from src.metrics.sharpness import blank_share

    real = mnist_test[0][:2000].unsqueeze(1)
    assert blank_share(real) == 0.0
    blank = torch.full((30, 1, 28, 28), -1.0)
    blank[:, :, 14, 14] = 1.0  # one lit pixel: std 0.07, still near-constant
    mixed = torch.cat([real[:70].float() / 127.5 - 1, blank])
    assert blank_share(mixed) == pytest.approx(0.3)
    # the classifier alone calls such samples a confident "1": the scores carry the share too
    result = mnist_scores.score(blank.repeat(10, 1, 1, 1))
    assert result["blank_share"] == 1.0


def test_within_class_distance_and_diversity_by_hand():
    from src.metrics.scores import within_class_distances, within_class_diversity

    features = torch.tensor(
        [[0.0, 0.0], [3.0, 4.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [9.0, 9.0]]
    )
    classes = torch.tensor([0, 0, 0, 1, 1, 2])
    # class 0: pairs (a, b) 5, (a, c) 0, (b, c) 5 -> 10 / 3; class 1: two equal points -> 0;
    # class 2: one sample, no pair -> left out
    fake = within_class_distances(features, classes)
    assert fake == pytest.approx({0: 10 / 3, 1: 0.0})
    # per-class ratios against real spreads 5 and 2: (10/3 / 5 + 0 / 2) / 2
    assert within_class_diversity(fake, {0: 5.0, 1: 2.0}) == pytest.approx((2 / 3) / 2)
    # a class the real set cannot compare is left out; none at all gives NaN
    assert within_class_diversity(fake, {0: 5.0}) == pytest.approx(2 / 3)
    assert math.isnan(within_class_diversity(fake, {}))


def test_within_class_diversity_is_one_for_real_digits_and_zero_for_copies(
    mnist_scores, mnist_test
):
    images = mnist_test[0].unsqueeze(1)
    assert mnist_scores.score(images)["within_class_diversity"] == pytest.approx(1.0)
    # one image per class, repeated: every class covered, no diversity within any
    firsts = torch.stack([images[mnist_test[1] == c][0] for c in range(10)])
    copies = firsts.repeat_interleave(100, dim=0)
    result = mnist_scores.score(copies)
    assert result["modes_covered"] == 10 and result["within_class_diversity"] == pytest.approx(
        0.0, abs=1e-6
    )


def test_the_real_side_is_computed_once_and_read_back_exactly(mnist_test, tmp_path, monkeypatch):
    """A second scorer of the same real set reads the classifier's features and the k-NN radii
    from the cache (no classifier pass over the real set) and scores bit for bit as the first; a
    different real set or k misses; an unreadable entry is recomputed; ``off`` writes nothing."""
    from src.metrics import real_cache

    monkeypatch.setenv(real_cache.CACHE_ENV, str(tmp_path / "cache"))
    real, fake = mnist_test[0][:400].unsqueeze(1), mnist_test[0][400:600].unsqueeze(1)
    passes = []
    original = GenerativeScores._features

    def counted(self, images):
        passes.append(images.shape[0])
        return original(self, images)

    monkeypatch.setattr(GenerativeScores, "_features", counted)

    def scores(images, k=5):
        scorer = GenerativeScores("mnist", images, kid_subsets=3, kid_subset_size=50, nearest_k=k)
        return scorer.score(fake)

    cold = scores(real)
    assert passes == [400, 200] and len(list((tmp_path / "cache").glob("real_*.pt"))) == 1
    warm = scores(real)
    # only the fakes and the check's sample of real rows went through the classifier
    assert passes[2:] == [CACHE_CHECK_ROWS, 200]
    assert warm == cold
    scores(real[:300])  # another real set: its own entry
    assert passes[4:] == [300, 200]
    scores(real, k=3)  # the features cached, the radii for k = 3 computed and added
    assert passes[6:] == [CACHE_CHECK_ROWS, 200]
    entry = next(
        p
        for p in (tmp_path / "cache").glob("real_*.pt")
        if torch.load(p)["features"].shape[0] == 400
    )
    assert {"features", "radii_k5", "radii_k3"} <= set(torch.load(entry))
    entry.write_bytes(b"truncated")
    assert scores(real) == cold and passes[8:] == [400, 200]

    # a write that fails (a full disk) leaves scoring uncached and no partial file behind
    def disk_full(*args, **kwargs):
        raise RuntimeError("No space left on device")

    shutil.rmtree(tmp_path / "cache")
    monkeypatch.setattr(real_cache.torch, "save", disk_full)
    assert scores(real) == cold
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setattr(GenerativeScores, "_features", counted)
    monkeypatch.setenv(real_cache.CACHE_ENV, "off")
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
    assert scores(real) == cold and not (tmp_path / "cache").exists()
