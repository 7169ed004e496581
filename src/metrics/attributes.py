"""Differentiable readers of the morphometrics: a small CNN regressing Morpho-MNIST's attributes.

Morphometry (src/metrics/morphometry.py) thins and thresholds, so it has no gradient; latent
control needs one. The regressor is trained on real MNIST to predict the measured attributes and is
pinned like the scorer's classifier: a committed file whose sha256 is checked at load
(``weights/attribute_regressors.json``, which also records its R^2 on the test split). Retrain with
``python src/train_attribute_regressor.py``.
"""

from __future__ import annotations

import json
import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from src.metrics.classifier import WEIGHTS_DIR, ClassifierError, conv_stage, sha256_of
from src.metrics.morphometry import CONTROLLABLE, as_matrix, measure

log = logging.getLogger(__name__)

REGRESSOR_MANIFEST = WEIGHTS_DIR / "attribute_regressors.json"


class AttributeRegressor(nn.Module):
    """28x28 grey image in [-1, 1] -> the ``CONTROLLABLE`` attributes in their units (px, rad).

    The net predicts standardised values; ``mean`` / ``std`` (real training digits) map them back.
    Three 3x3 conv stages (32, 64, 64 channels, batch norm, ReLU, 2x2 max-pool), two linear layers.
    """

    def __init__(self, attributes: tuple[str, ...] = CONTROLLABLE):
        super().__init__()
        self.attributes = tuple(attributes)

        self.net = nn.Sequential(
            *conv_stage(1, 32),
            *conv_stage(32, 64),
            *conv_stage(64, 64),
            nn.Flatten(),
            nn.Linear(64 * 3 * 3, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, len(self.attributes)),
        )
        self.register_buffer("mean", torch.zeros(len(self.attributes)))
        self.register_buffer("std", torch.ones(len(self.attributes)))

    def standardised(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[N, len(attributes)] in attribute units."""
        return self.net(images) * self.std + self.mean

    def index(self, attribute: str) -> int:
        return self.attributes.index(attribute)


def r_squared(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Per column: 1 - SS_res / SS_tot (rows with a NaN measurement left out)."""
    keep = np.isfinite(measured).all(1)
    predicted, measured = predicted[keep], measured[keep]
    residual = ((predicted - measured) ** 2).sum(0)
    total = ((measured - measured.mean(0)) ** 2).sum(0)
    return 1.0 - residual / total


def measured_targets(images_uint8: torch.Tensor) -> np.ndarray:
    """[N, len(CONTROLLABLE)] morphometrics of uint8 [N, 28, 28] images."""
    return as_matrix(measure(images_uint8), CONTROLLABLE)


@torch.no_grad()
def predict(model: AttributeRegressor, images: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """[N, attributes] of float [-1, 1] images [N, 1, 28, 28]."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat(
        [
            model(images[i : i + batch_size].to(device)).cpu()
            for i in range(0, len(images), batch_size)
        ]
    ).numpy()


def class_statistics(measured: np.ndarray, labels: torch.Tensor) -> dict:
    """Per class and attribute: [mean, std] of the measurements (NaN rows left out)."""
    labels = labels.numpy()
    table = {}
    for digit in np.unique(labels):
        rows = measured[(labels == digit) & np.isfinite(measured).all(1)]
        table[str(int(digit))] = {
            name: [round(float(rows[:, i].mean()), 3), round(float(rows[:, i].std()), 3)]
            for i, name in enumerate(CONTROLLABLE)
        }
    return table


def train_attribute_regressor(
    train_images: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    epochs: int = 6,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
) -> tuple[AttributeRegressor, dict]:
    """Adam with a cosine schedule on MSE of standardised attributes; returns the net and its report
    (R^2 per attribute on ``test_images``, the test digits' measurements per class). Images: uint8
    [N, 28, 28]."""
    from src.data import to_signed_unit

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    started = time.time()
    targets = measured_targets(train_images)
    keep = torch.from_numpy(np.isfinite(targets).all(1))
    images = to_signed_unit(train_images[keep].unsqueeze(1))
    targets = torch.from_numpy(targets[keep.numpy()]).float()
    measure_seconds = time.time() - started
    model = AttributeRegressor()
    model.mean.copy_(targets.mean(0))
    model.std.copy_(targets.std(0))
    standard = (targets - model.mean) / model.std
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = len(images) // batch_size
    total = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total))
    )
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            loss = F.mse_loss(model.standardised(images[idx]), standard[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        log.info("epoch %d: loss %.4f (%.0f s)", epoch, loss.item(), time.time() - started)
    model.eval()
    test_targets = measured_targets(test_images)
    r2 = r_squared(predict(model, to_signed_unit(test_images.unsqueeze(1))), test_targets)
    report = {
        "attributes": list(CONTROLLABLE),
        "train_images": int(len(images)),
        "test_images": int(len(test_images)),
        "test_r2": {name: round(float(v), 4) for name, v in zip(CONTROLLABLE, r2, strict=True)},
        "train_mean": {
            n: round(float(v), 4) for n, v in zip(CONTROLLABLE, model.mean, strict=True)
        },
        "train_std": {n: round(float(v), 4) for n, v in zip(CONTROLLABLE, model.std, strict=True)},
        "test_per_class": class_statistics(test_targets, test_labels),
        "epochs": epochs,
        "seed": seed,
        "measure_seconds": round(measure_seconds, 1),
        "train_seconds": round(time.time() - started, 1),
    }
    return model, report


def read_regressor_manifest() -> dict:
    return json.loads(REGRESSOR_MANIFEST.read_text()) if REGRESSOR_MANIFEST.is_file() else {}


def pin_attribute_regressor(model: AttributeRegressor, dataset: str, report: dict) -> dict:
    """Write the weights atomically into weights/ and pin their sha256 and report."""
    from src.utils import write_json_atomic
    from src.utils.files import atomic_path

    path = WEIGHTS_DIR / f"{dataset}_attribute_regressor.pt"
    with atomic_path(path) as temporary:
        torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, temporary)
    manifest = read_regressor_manifest()
    manifest[dataset] = {"file": path.name, "sha256": sha256_of(path), "dataset": dataset, **report}
    write_json_atomic(REGRESSOR_MANIFEST, manifest)
    return manifest[dataset]


def load_attribute_regressor(
    dataset: str, device: torch.device | str = "cpu"
) -> AttributeRegressor:
    """The pinned regressor for ``dataset``, in eval mode and frozen, after checking its sha256."""
    manifest = read_regressor_manifest()
    entry = manifest.get(dataset)
    if entry is None:
        raise ClassifierError(
            f"no pinned attribute regressor for dataset {dataset!r} in {REGRESSOR_MANIFEST} "
            f"(have: {sorted(manifest)}); train one with: python src/train_attribute_regressor.py"
        )
    path = WEIGHTS_DIR / entry["file"]
    if not path.is_file():
        raise ClassifierError(f"{path} is missing; restore it from git")
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise ClassifierError(
            f"{path}: sha256 {digest} differs from the pinned {entry['sha256']} in "
            f"{REGRESSOR_MANIFEST}; restore the file from git or retrain with "
            "python src/train_attribute_regressor.py"
        )
    model = AttributeRegressor(tuple(entry["attributes"]))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.weights_sha256 = digest
    return model.eval().requires_grad_(False).to(device)
