"""k-means on flattened images: the pseudo-labels of the cluster-conditioned GAN."""

from __future__ import annotations

import torch


def kmeans(
    points: torch.Tensor, k: int, iterations: int = 30, seed: int = 0, chunk: int = 8192
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii 2007) on [N, D] points:
    (centroids [k, D], assignments [N]). Seeded, deterministic; an emptied cluster is re-seeded at
    the point farthest from its centroid so that all k stay in use."""
    if not 1 <= k <= points.shape[0]:
        raise ValueError(f"k-means needs 1 <= k <= number of points ({points.shape[0]}), got {k}")
    points = points.float()
    rng = torch.Generator().manual_seed(seed)
    centroids = points[torch.randint(points.shape[0], (1,), generator=rng)]
    nearest = _squared_distances(points, centroids, chunk).squeeze(1)
    for _ in range(1, k):  # k-means++: the next centre drawn with probability ~ squared distance
        pick = torch.multinomial(nearest.clamp_min(0) + 1e-12, 1, generator=rng)
        centroids = torch.cat([centroids, points[pick]])
        nearest = torch.minimum(nearest, _squared_distances(points, points[pick], chunk).squeeze(1))
    assignments = torch.full((points.shape[0],), -1, dtype=torch.long)
    for _ in range(iterations):
        distances = _squared_distances(points, centroids, chunk)
        new = distances.argmin(1)
        counts = torch.bincount(new, minlength=k)
        for empty in (counts == 0).nonzero().flatten().tolist():
            far = distances.gather(1, new[:, None]).squeeze(1).argmax()
            new[far] = empty
            counts = torch.bincount(new, minlength=k)
        if torch.equal(new, assignments):
            break
        assignments = new
        sums = torch.zeros_like(centroids).index_add_(0, assignments, points)
        centroids = sums / counts[:, None].to(points.dtype)
    return centroids, assignments


def nearest_centroid(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of each point's nearest centroid."""
    return _squared_distances(points.float(), centroids, chunk=8192).argmin(1)


def _squared_distances(points: torch.Tensor, centroids: torch.Tensor, chunk: int) -> torch.Tensor:
    parts = []
    for start in range(0, points.shape[0], chunk):
        block = points[start : start + chunk]
        parts.append(
            block.pow(2).sum(1, keepdim=True)
            - 2 * block @ centroids.T
            + centroids.pow(2).sum(1)[None, :]
        )
    return torch.cat(parts)
