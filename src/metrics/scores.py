"""IS, FID, KID, precision / recall, density / coverage and mode coverage of generated images, all
on the pinned classifier.

The classifier's conv trunk runs once per image; its 128-d penultimate activations (scaled to unit
RMS on real data) are what FID and KID compare (torchmetrics, ``feature=`` an identity module), what
the inception score's ``feature=`` module (the classifier's last linear layer) turns into class
logits, and where the k-NN manifolds of precision / recall and density / coverage live
(``src.metrics.manifold``). One forward pass serves all the scores.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.image import FrechetInceptionDistance, InceptionScore, KernelInceptionDistance

from src.data.images import to_classifier_input
from src.metrics import real_cache
from src.metrics.classifier import NUM_FEATURES, load_classifier
from src.metrics.manifold import ManifoldScores
from src.metrics.sharpness import blank_share

#: rows of a cached real set recomputed on every read, to catch an entry with the wrong contents
CACHE_CHECK_ROWS = 16

# a class "is covered" when it gets at least this share of the samples (a tenth of uniform's 10 %)
COVERAGE_THRESHOLD = 0.01


class PenultimateFeatures(nn.Module):
    """FID/KID ``feature=`` module: the input already is the classifier's penultimate activation."""

    num_features = NUM_FEATURES

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class FeaturesToLogits(nn.Module):
    """IS ``feature=`` module: the classifier's head on (unit-RMS) penultimate features."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier.logits_from_features(features)


class GenerativeScores:
    """Scores generated batches against a fixed real set; the real features are computed once.

    ``score(images)`` takes float images in [-1, 1] or uint8 0-255, shape (N, 1, H, W), any H = W
    (32 px is centre-cropped, other sizes resampled to the classifier's 28 px).
    """

    def __init__(
        self,
        dataset: str,
        real_images: torch.Tensor,
        device: torch.device | str = "cpu",
        is_splits: int = 10,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        batch_size: int = 1000,
        seed: int = 0,
        nearest_k: int = 5,
    ):
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.seed = seed
        self.classifier = load_classifier(dataset, self.device)
        self.kid_subset_size = kid_subset_size
        # the scores are computed by one process (rank 0 under DDP) from samples it drew itself:
        # torchmetrics must not gather the other processes' states (they hold none, and would be
        # waiting in another collective: a deadlock)
        local = {"sync_on_compute": False}
        self.inception = InceptionScore(
            feature=FeaturesToLogits(self.classifier), splits=is_splits, normalize=False, **local
        )
        self.fid = FrechetInceptionDistance(
            feature=PenultimateFeatures(), reset_real_features=False, normalize=False, **local
        )
        self.kid = KernelInceptionDistance(
            feature=PenultimateFeatures(),
            reset_real_features=False,
            normalize=False,
            subsets=kid_subsets,
            subset_size=kid_subset_size,
            **local,
        )
        for metric in (self.inception, self.fid, self.kid):
            metric.to(self.device)
        self.num_real = real_images.shape[0]
        # the classifier's pass over the real set and its k-NN radii, from the on-disk cache when
        # an earlier run computed them for the same set (src/metrics/real_cache.py)
        key = real_cache.real_set_key(self.classifier, real_images, self.device)
        cached = (
            real_cache.load(key, check=lambda e: self._cache_problem(e, real_images, nearest_k))
            or {}
        )
        real_features = cached.get("features")
        if real_features is None:
            real_features = torch.cat(list(self._features(real_images)))
        real_features = real_features.to(self.device)
        for chunk in real_features.split(self.batch_size):
            self.fid.update(chunk, real=True)
            self.kid.update(chunk, real=True)
        radii = cached.get(f"radii_k{nearest_k}")
        self.manifold = ManifoldScores(
            real_features, k=nearest_k, real_radii=None if radii is None else radii.to(self.device)
        )
        if radii is None:
            cached.update(
                features=real_features.cpu(),
                **{f"radii_k{nearest_k}": self.manifold.real_radii.cpu()},
            )
            real_cache.save(key, cached)
        real_classes = self.classifier.logits_from_features(real_features).argmax(1)
        self.real_within_class_distances = within_class_distances(real_features, real_classes)

    @torch.no_grad()
    def _cache_problem(self, entry: dict, real_images: torch.Tensor, k: int) -> str | None:
        """What is wrong with a cached real-set entry that read back fine, or None: shapes, values,
        and a sample of rows recomputed (features by the classifier, radii from the features)."""
        features, radii = entry.get("features"), entry.get(f"radii_k{k}")
        n = real_images.shape[0]
        if not isinstance(features, torch.Tensor) or features.ndim != 2 or len(features) != n:
            shape = list(features.shape) if isinstance(features, torch.Tensor) else None
            return f"its features have shape {shape}, not [{n}, features]"
        if radii is not None and (not isinstance(radii, torch.Tensor) or radii.shape != (n,)):
            return f"its k-NN radii have shape {list(getattr(radii, 'shape', []))}, not [{n}]"
        values = [features] + ([radii] if radii is not None else [])
        if not all(torch.isfinite(v).all() for v in values):
            return "it holds NaN or infinite values"
        rows = torch.linspace(0, n - 1, min(n, CACHE_CHECK_ROWS)).long()
        fresh = torch.cat(list(self._features(real_images[rows]))).cpu()
        # batch composition changes the last bits of a convolution's result, not more
        if fresh.shape != features[rows].shape or not torch.allclose(
            fresh, features[rows].float(), rtol=1e-3, atol=1e-3 * float(fresh.abs().mean())
        ):
            return "its features are not the classifier's features of these real images"
        if radii is not None:
            distances = torch.cdist(features[rows].float(), features.float())
            kth = distances.topk(k + 1, dim=1, largest=False).values[:, -1]
            if not torch.allclose(kth, radii[rows].float(), rtol=1e-4, atol=1e-6):
                return f"its k={k} nearest-neighbour radii do not follow from its features"
        return None

    @torch.no_grad()
    def _features(self, images: torch.Tensor):
        for start in range(0, images.shape[0], self.batch_size):
            batch = images[start : start + self.batch_size].to(self.device, non_blocking=True)
            yield self.classifier.features(to_classifier_input(batch)).float()

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's features of ``images`` and its predicted classes, in one pass (several
        generators' samples can go through together, then be scored one by one)."""
        features = torch.cat(list(self._features(images)))
        return features, self.classifier.logits_from_features(features).argmax(1)

    @torch.no_grad()
    def score(self, images: torch.Tensor, requested_labels: torch.Tensor | None = None) -> dict:
        """IS, FID, KID, precision, recall, density, coverage, mode coverage and the share of blank
        (near-constant) samples; with
        ``requested_labels`` (the classes a conditional G was asked for) also ``class_match``, the
        share classified as requested, overall and per requested class."""
        if requested_labels is not None and requested_labels.shape != (images.shape[0],):
            raise ValueError(
                f"requested_labels must have shape ({images.shape[0]},), got "
                f"{tuple(requested_labels.shape)}"
            )
        result = self.score_features(*self.features(images), requested_labels)
        result["blank_share"] = blank_share(images)
        return result

    @torch.no_grad()
    def score_features(
        self,
        fake_features: torch.Tensor,
        predicted: torch.Tensor,
        requested_labels: torch.Tensor | None = None,
    ) -> dict:
        """``score`` from the features and predictions ``features`` returned for the samples."""
        for metric in (self.inception, self.fid, self.kid):
            metric.reset()  # real features survive (reset_real_features=False)
        fake_features = fake_features.to(self.device)
        for start in range(0, fake_features.shape[0], self.batch_size):
            chunk = fake_features[start : start + self.batch_size]
            self.inception.update(chunk)
            self.fid.update(chunk, real=False)
            self.kid.update(chunk, real=False)
        n = fake_features.shape[0]
        self.kid.subset_size = min(self.kid_subset_size, n, self.num_real)
        # IS and KID draw random subsets: seeded, and the training RNG left untouched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            is_mean, is_std = self.inception.compute()
            kid_mean, kid_std = self.kid.compute()
        fid = self.fid.compute()
        predicted = predicted.cpu()
        share = torch.bincount(predicted, minlength=10).double() / n
        result = {
            "is": is_mean.item(),
            "is_std": is_std.item(),
            "fid": fid.item(),
            "kid": kid_mean.item(),
            "kid_std": kid_std.item(),
            "modes_covered": int((share >= COVERAGE_THRESHOLD).sum()),
            "max_class_share": share.max().item(),
            "min_class_share": share.min().item(),
            "within_class_diversity": within_class_diversity(
                within_class_distances(fake_features, predicted.to(fake_features.device)),
                self.real_within_class_distances,
            ),
            "class_share": [round(s, 4) for s in share.tolist()],
            **self.manifold.score(fake_features),
        }
        if requested_labels is not None:
            result.update(class_match_scores(predicted, requested_labels.cpu()))
        return result


def loggable_scores(result: dict) -> dict:
    """A ``score`` result as logged values: its numbers, and the per-class list of class match
    as ``class_match_<c>`` (the other lists are kept in metrics.json only)."""
    values = {key: v for key, v in result.items() if not isinstance(v, list)}
    for c, share in enumerate(result.get("class_match_per_class", [])):
        values[f"class_match_{c}"] = share
    return values


def within_class_distances(
    features: torch.Tensor, classes: torch.Tensor, per_class_cap: int = 1000
) -> dict[int, float]:
    """{class: mean pairwise Euclidean distance between the features of two of its samples} for the
    classes holding >= COVERAGE_THRESHOLD of the samples (and >= 2 of them), each read on its first
    ``per_class_cap`` samples."""
    distances = {}
    for c in classes.unique().tolist():
        members = features[classes == c][:per_class_cap]
        n = members.shape[0]
        if n < 2 or n < COVERAGE_THRESHOLD * features.shape[0]:
            continue
        pairwise = torch.cdist(members.double(), members.double()).sum() / (n * (n - 1))
        distances[c] = float(pairwise)
    return distances


def within_class_diversity(fake: dict[int, float], real: dict[int, float]) -> float:
    """Mean over the samples' classes of (fake within-class distance / real within-class distance
    of that class): 1 = each class as varied as real digits of that class; 0 = one image per class,
    which IS and class coverage cannot see. Per class, so that which classes G favours (a "1" varies
    less than an "8") does not pass for diversity. NaN if no class can be compared."""
    ratios = [fake[c] / real[c] for c in fake if real.get(c, 0.0) > 0]
    return sum(ratios) / len(ratios) if ratios else float("nan")


def class_match_scores(
    predicted: torch.Tensor, requested: torch.Tensor, num_classes: int = 10
) -> dict:
    """Share of samples classified as the class they were generated for: overall, and per requested
    class (NaN for a class never requested)."""
    hits = (predicted == requested).double()
    per_class = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, requested.long(), hits)
    asked = torch.bincount(requested.long(), minlength=num_classes).double()
    return {
        "class_match": hits.mean().item(),
        "class_match_per_class": [round(v, 4) for v in (per_class / asked).tolist()],
    }
