"""Cluster-conditioned GAN: k-means by hand, clusters as labels, sampling by cluster frequency."""

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from src.data.clusters import kmeans, nearest_centroid


def test_kmeans_finds_separated_blobs_and_is_seeded():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(30, 2) for c in centres])
    found, assignments = kmeans(points, 3, seed=1)
    # every blob is one cluster, and each centroid is its blob's mean
    for blob in range(3):
        members = assignments[blob * 30 : (blob + 1) * 30]
        assert (members == members[0]).all()
        mean = points[blob * 30 : (blob + 1) * 30].mean(0)
        assert torch.allclose(found[members[0]], mean, atol=1e-5)
    assert len(assignments.unique()) == 3
    again, _ = kmeans(points, 3, seed=1)
    assert torch.equal(found, again)
    assert torch.equal(nearest_centroid(centres, found), assignments[[0, 30, 60]])
    # as many clusters as distinct points: none left empty
    _, each = kmeans(points[::10], 9, seed=0)
    assert sorted(each.tolist()) == list(range(9))
    # duplicates: several clusters empty at once are each refilled, none left empty or NaN
    duplicated = torch.cat([torch.zeros(10, 2), torch.ones(1, 2)])
    centroids, assigned = kmeans(duplicated, 4)
    assert torch.isfinite(centroids).all() and sorted(assigned.unique().tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="k-means needs 1 <= k"):
        kmeans(points[:2], 3)


def test_a_trained_model_keeps_its_clusters_and_samples_them_by_frequency(make_cfg, tmp_path):
    from src.runs.checkpoints import load_checkpoint
    from src.runs.training import train
    from src.sampling import generate

    cfg = make_cfg(
        "model=cluster_gan", "arch=mlp", "model.num_clusters=4", "model.cluster_iterations=5"
    )
    assert cfg.arch.num_classes == 4 and cfg.model.get("num_classes") is None
    assert train(cfg)["status"] == "completed"
    model, _ = load_checkpoint(str(tmp_path / "checkpoints" / "last.ckpt"))
    assert model.num_classes == 0  # unconditional to every caller
    frequencies = model.cluster_frequencies
    assert frequencies.sum().item() == pytest.approx(1.0) and (frequencies > 0).all()
    # a real batch's clusters are its images' nearest centroids
    images = torch.rand(6, 1, 28, 28) * 2 - 1
    assert torch.equal(
        model.batch_labels((images, None)), nearest_centroid(images.flatten(1), model.centroids)
    )
    z = model.sample_latent(40000, generator=torch.Generator().manual_seed(0))
    shares = z[:, -4:].mean(0)
    assert torch.allclose(shares, frequencies, atol=0.01)
    assert torch.equal(generate(model, 8, seed=3), generate(model, 8, seed=3))
    # the tail picks G's condition: the same noise under two clusters gives two images
    model.eval()
    z = model.sample_latent(2, generator=torch.Generator().manual_seed(1))
    z[1, :-4] = z[0, :-4]
    z[:, -4:] = torch.eye(4)[:2]
    out = model(z)
    assert not torch.allclose(out[0], out[1])


def test_nets_without_the_cluster_conditioning_are_refused(make_cfg):
    cfg = make_cfg("model=cluster_gan", "arch=mlp", "arch.num_classes=0")
    with pytest.raises(
        InstantiationException, match="needs a generator conditioned on 50 clusters"
    ):
        instantiate(cfg.model)


def test_a_model_without_clusters_says_so_when_asked_to_sample(make_cfg):
    from src.sampling import generate

    model = instantiate(make_cfg("model=cluster_gan", "arch=mlp", "model.num_clusters=4").model)
    with pytest.raises(RuntimeError, match="no clusters yet"):
        generate(model, 4, seed=0)
