"""Training the pinned classifier: deterministic given its seed, plain PyTorch (it is not a GAN)."""

from __future__ import annotations

import json
import logging
import math
import time

import torch
import torch.nn.functional as F

from src.data import load_split, to_signed_unit
from src.metrics.classifier import MANIFEST, WEIGHTS_DIR, DigitClassifier, read_manifest, sha256_of
from src.utils import write_json_atomic

log = logging.getLogger(__name__)


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift every image by its own integer offset in [-max_shift, max_shift] px (fill -1)."""
    n, _, h, w = images.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator).float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2.0 * shifts[:, 0] / w
    theta[:, 1, 2] = -2.0 * shifts[:, 1] / h
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return (
        F.grid_sample(images + 1.0, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        - 1.0
    )


@torch.no_grad()
def accuracy(
    model: DigitClassifier, images_uint8: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        batch = to_signed_unit(images_uint8[start : start + batch_size].unsqueeze(1))
        correct += (model(batch).argmax(1) == labels[start : start + batch_size]).sum().item()
    return correct / len(labels)


def train_classifier(
    dataset: str,
    data_dir: str,
    epochs: int = 6,
    batch_size: int = 128,
    lr: float = 2e-3,
    max_shift: int = 2,
    seed: int = 0,
    download: bool = True,
) -> tuple[DigitClassifier, dict]:
    """Adam, cosine schedule, all 60k training images; returns the net and its test accuracy."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_images, train_labels = load_split(dataset, data_dir, "train", download)
    test_images, test_labels = load_split(dataset, data_dir, "test", download)
    model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = len(train_labels) // batch_size
    total = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total))
    )
    started = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_labels), generator=generator)
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            images = random_shift(
                to_signed_unit(train_images[idx].unsqueeze(1)), max_shift, generator
            )
            loss = F.cross_entropy(model(images), train_labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        log.info(
            "epoch %d: loss %.4f, test accuracy %.4f (%.0f s)",
            epoch,
            loss.item(),
            accuracy(model, test_images, test_labels),
            time.time() - started,
        )
    report = {
        "dataset": dataset,
        "test_accuracy": accuracy(model, test_images, test_labels),
        "epochs": epochs,
        "seed": seed,
        "train_seconds": round(time.time() - started, 1),
        "feature_scale": feature_scale(model, test_images),
    }
    return model.eval(), report


@torch.no_grad()
def feature_scale(
    model: DigitClassifier, images_uint8: torch.Tensor, batch_size: int = 1000
) -> float:
    """RMS of the raw penultimate activations on real images (the divisor to unit RMS)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(images_uint8), batch_size):
        embedding = model.embedding(
            to_signed_unit(images_uint8[start : start + batch_size].unsqueeze(1))
        )
        total += embedding.double().pow(2).sum().item()
        count += embedding.numel()
    return (total / count) ** 0.5


def pin_classifier(model: DigitClassifier, report: dict) -> dict:
    """Save the weights in weights/; pin sha256, test accuracy, feature scale in the manifest."""
    dataset = report["dataset"]
    path = WEIGHTS_DIR / f"{dataset}_classifier.pt"
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    manifest = read_manifest()
    manifest[dataset] = {"file": path.name, "sha256": sha256_of(path), **report}
    write_json_atomic(MANIFEST, manifest)
    log.info("pinned %s (%s)", path, json.dumps(manifest[dataset]))
    return manifest[dataset]
