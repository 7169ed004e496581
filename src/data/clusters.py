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
        _refill_empty_clusters(new, distances.gather(1, new[:, None]).squeeze(1), k)
        if torch.equal(new, assignments):
            break
        assignments = new
        counts = torch.bincount(assignments, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assignments, points)
        centroids = sums / counts.clamp_min(1)[:, None].to(points.dtype)
    return centroids, assignments


def _refill_empty_clusters(assignments: torch.Tensor, cost: torch.Tensor, k: int) -> None:
    """Moves into each empty cluster the worst-fitting point (largest ``cost``) among those whose
    cluster keeps another member, each point moved at most once: all k clusters stay in use
    whenever there are k or more points."""
    counts = torch.bincount(assignments, minlength=k)
    cost = cost.clone()
    for empty in (counts == 0).nonzero().flatten().tolist():
        movable = counts[assignments] > 1
        candidates = torch.where(movable, cost, torch.full_like(cost, -float("inf")))
        point = int(candidates.argmax())
        if candidates[point] == -float("inf"):
            return  # fewer points than clusters: nothing left to move
        counts[assignments[point]] -= 1
        assignments[point] = empty
        counts[empty] = 1
        cost[point] = -float("inf")  # never taken back by the next empty cluster


def nearest_centroid(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of each point's nearest centroid, in float64 outside any autocast: a bf16 / TF32
    matmul would assign near-ties differently from the k-means that made the centroids."""
    with torch.autocast(points.device.type, enabled=False):
        return _squared_distances(points.double(), centroids.double(), chunk=8192).argmin(1)


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
