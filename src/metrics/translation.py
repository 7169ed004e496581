"""Scores of a translator on a task's test split (pix2pix, CycleGAN, or the identity baseline).

- ``fid`` / ``kid`` / ``is``: translations A -> B against the real test images of B, in the
  pinned classifier's feature space of B's dataset (colour images read through their grey luma,
  src.data.translation.to_grey; colour itself is not scored).
- ``label_preservation``: the classifier's accuracy on the translations against the source
  images' labels, when A and B share a label space (digits -> digits) - did the translation keep
  the content? ``source_accuracy`` is the same classifier on the inputs, ``target_accuracy``
  (paired) on the real targets: the ceiling.
- paired tasks: ``l1`` (mean |T(a) - b|), ``psnr`` and ``ssim`` (torchmetrics), pixels in [0, 1].
- colour domains: ``colour_fd``, the Frechet distance between the translations' and B's real
  images' colour statistics (mean RGB of each image's ink - its brightest fifth by luma - and of
  its background - its darkest half): the grey-read scores above cannot tell a grey digit from a
  coloured one, this can.
- two-way models: ``cycle_l1`` (A -> B -> A) and ``cycle_label_preservation`` (A's classifier on
  the cycled images against A's labels).
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from src.data.datamodule import to_signed_unit
from src.data.images import to_classifier_input
from src.data.translation import LUMA, NO_LABEL, TaskSpec, TranslationSplit, to_grey
from src.metrics.classifier import load_classifier
from src.metrics.scores import GenerativeScores
from src.sampling.translation import translate_images


def colour_statistics(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1] -> [N, 6]: mean RGB of the brightest fifth of the pixels by luma
    (the ink) and of the darkest half (the background)."""
    images = images.float().flatten(2)  # [N, 3, P]
    weights = torch.tensor(LUMA, device=images.device).view(1, 3, 1)
    order = (images * weights).sum(1).argsort(dim=1)  # [N, P], darkest first
    pixels = images.shape[2]
    dark, bright = order[:, : pixels // 2], order[:, -max(1, pixels // 5) :]

    def mean_at(index):
        return images.gather(2, index.unsqueeze(1).expand(-1, 3, -1)).mean(2)

    return torch.cat([mean_at(bright), mean_at(dark)], dim=1)


def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """|mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x^1/2 S_y S_x^1/2)^1/2) of two [N, D] samples
    (Gaussians fitted to each; Dowson & Landau 1982, the formula of FID)."""

    def sqrtm(matrix):
        values, vectors = torch.linalg.eigh(matrix)
        return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T

    x, y = x.double(), y.double()
    mean_x, mean_y = x.mean(0), y.mean(0)
    cov_x, cov_y = torch.cov(x.T), torch.cov(y.T)
    root_x = sqrtm(cov_x)
    cross = sqrtm(root_x @ cov_y @ root_x)
    distance = (mean_x - mean_y).square().sum() + torch.trace(cov_x + cov_y - 2 * cross)
    return distance.item()


@torch.no_grad()
def predict(classifier, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Class predictions of the pinned classifier for float images (any channels) in [-1, 1]."""
    device = next(classifier.parameters()).device
    out = []
    for start in range(0, images.shape[0], batch_size):
        batch = to_grey(images[start : start + batch_size]).to(device)
        out.append(classifier(to_classifier_input(batch)).argmax(1).cpu())
    return torch.cat(out)


def _accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    return (predicted == labels).float().mean().item()


def _unit(images: torch.Tensor) -> torch.Tensor:
    return images.float().add(1).div(2).clamp(0, 1)


class TranslationScores:
    """Translates the first ``n`` test images of A and scores them (module docstring); the real
    features of B are computed once."""

    def __init__(
        self,
        spec: TaskSpec,
        test: TranslationSplit,
        device: torch.device | str = "cpu",
        n: int = 10000,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
    ):
        self.spec = spec
        self.test = test.head(n)
        self.device = torch.device(device)
        self.seed = seed
        self.inputs = to_signed_unit(self.test.a)
        self.scores_b = None
        if spec.b.classifier is not None:
            self.scores_b = GenerativeScores(
                spec.b.classifier,
                to_grey(to_signed_unit(self.test.b)),
                self.device,
                kid_subsets=kid_subsets,
                kid_subset_size=kid_subset_size,
                seed=seed,
            )
        self.classifier_a = (
            load_classifier(spec.a.classifier, self.device) if spec.a.classifier else None
        )
        self.labels_known = bool((self.test.labels_a != NO_LABEL).all())

    @torch.no_grad()
    def score(self, model) -> dict:
        # pix2pix's test-time dropout draws from the RNG: seeded, training's RNG untouched
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            translated = translate_images(model, self.inputs)
            cycled = (
                translate_images(model, translated, "b2a")
                if hasattr(model, "translate_back")
                else None
            )
        result: dict = {"n_translated": int(translated.shape[0])}
        if self.scores_b is not None:
            scores = self.scores_b.score(to_grey(translated))
            result.update(
                {k: scores[k] for k in ("fid", "kid", "kid_std", "is", "is_std", "blank_share")}
            )
        if self.spec.b.colour:
            real_b = to_signed_unit(self.test.b)
            result["colour_fd"] = frechet_distance(
                colour_statistics(translated), colour_statistics(real_b)
            )
        same_labels = self.spec.a.classifier == self.spec.b.classifier
        if self.classifier_a is not None and self.labels_known:
            labels = self.test.labels_a
            result["source_accuracy"] = _accuracy(predict(self.classifier_a, self.inputs), labels)
            if same_labels:
                predicted = predict(self.classifier_a, translated)
                result["label_preservation"] = _accuracy(predicted, labels)
                if self.spec.paired:  # the ceiling: the classifier on the real targets
                    targets = to_signed_unit(self.test.b)
                    result["target_accuracy"] = _accuracy(
                        predict(self.classifier_a, targets), labels
                    )
            if cycled is not None:
                predicted = predict(self.classifier_a, cycled)
                result["cycle_label_preservation"] = _accuracy(predicted, labels)
        if self.spec.paired:
            output, target = _unit(translated), _unit(to_signed_unit(self.test.b))
            result["l1"] = (output - target).abs().mean().item()
            result["psnr"] = peak_signal_noise_ratio(output, target, data_range=1.0).item()
            result["ssim"] = structural_similarity_index_measure(
                output, target, data_range=1.0
            ).item()
        if cycled is not None:
            result["cycle_l1"] = (_unit(cycled) - _unit(self.inputs)).abs().mean().item()
        return result
