"""The pinned digit classifier: the feature extractor of IS / FID / KID on MNIST-like data.

The EBGAN paper scored its MNIST grid with a digit classifier instead of Inception; so do we. The
weights are a small committed file whose sha256 is checked at load (``weights/manifest.json``), so
every run on every machine scores with the same network. ``python src/train_classifier.py data=…``
retrains it and rewrites the manifest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from src.utils.errors import UserError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = WEIGHTS_DIR / "manifest.json"
NUM_FEATURES = 128


class ClassifierError(UserError, RuntimeError):
    """The pinned classifier's weights are missing or are not the pinned ones."""


def conv_stage(cin: int, cout: int) -> list[nn.Module]:
    """3x3 conv (no bias: batch norm follows), batch norm, ReLU, 2x2 max-pool: half the size."""
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    ]


class DigitClassifier(nn.Module):
    """28x28 grey image in [-1, 1] -> 10 logits; ``features``: the 128-d penultimate layer.

    Three 3x3 conv stages (32, 64, 128 channels, batch norm, ReLU, 2x2 max-pool) and two linear
    layers: ~15 MFLOP an image, so 10 000 samples are scored in about a second on a 2-core CPU.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.feature_scale = 1.0  # set from the manifest at load (see load_classifier)
        self.channels_last = False  # inputs made channels-last too (load_classifier sets it)

        # 28 -> 14 -> 7 -> 3
        self.conv = nn.Sequential(*conv_stage(1, 32), *conv_stage(32, 64), *conv_stage(64, 128))
        self.embed = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * 3 * 3, NUM_FEATURES), nn.ReLU(inplace=True)
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(NUM_FEATURES, num_classes)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The raw penultimate activations (what the head reads)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.embed(self.conv(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate activations at unit RMS on real data: the FID/KID feature space."""
        return self.embedding(x) / self.feature_scale

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features * self.feature_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embedding(x)))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}


def load_classifier(dataset: str, device: torch.device | str = "cpu") -> DigitClassifier:
    """The pinned classifier for ``dataset`` in eval mode, after checking its file's sha256.

    ``feature_scale`` (from the manifest) divides the penultimate features so that they have unit
    RMS on the real test split: KID's polynomial kernel (gamma = 1/d) and FID then sit on the scale
    they were designed for, whatever the magnitude of this network's activations.
    """
    entry = read_manifest().get(dataset)
    if entry is None:
        raise ClassifierError(
            f"no pinned classifier for dataset {dataset!r} in {MANIFEST} (have: "
            f"{sorted(read_manifest())}); "
            f"train one with: python src/train_classifier.py data={dataset}"
        )
    path = WEIGHTS_DIR / entry["file"]
    if not path.is_file():
        raise ClassifierError(
            f"{path} is missing; restore it from git or run python src/train_classifier.py "
            f"data={dataset}"
        )
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise ClassifierError(
            f"{path}: sha256 {digest} differs from the pinned {entry['sha256']} in {MANIFEST}; "
            "scores would not be "
            "comparable. Restore the file from git, or retrain with python "
            f"src/train_classifier.py data={dataset}"
        )
    model = DigitClassifier()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.feature_scale = float(entry.get("feature_scale", 1.0))
    model.weights_sha256 = digest  # what cached real features were computed with
    # channels-last: the CPU's convolutions and max-pools run faster on it (the pass over 1 000
    # images: 0.39 -> 0.22 s on 1 thread; features equal to within 4e-6)
    model = model.to(memory_format=torch.channels_last)
    model.channels_last = True
    return model.eval().requires_grad_(False).to(device)
