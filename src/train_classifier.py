"""Retrain the pinned metrics classifier: `python src/train_classifier.py data=mnist`.

Writes src/metrics/weights/<dataset>_classifier.pt and its sha256 into
src/metrics/weights/manifest.json. Scores computed with different weights are not comparable:
retrain only when the classifier itself changes (its architecture, its training recipe, or a new
dataset), and commit both files together.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from src.utils import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train_classifier")
def main(cfg: DictConfig) -> float:
    from src.metrics.training import pin_classifier, train_classifier

    model, report = train_classifier(
        cfg.data.dataset, cfg.data.data_dir, download=cfg.data.download, **cfg.classifier
    )
    if report["test_accuracy"] < cfg.min_test_accuracy[cfg.data.dataset]:
        raise SystemExit(
            f"error: test accuracy {report['test_accuracy']:.4f} is below the bar "
            f"{cfg.min_test_accuracy[cfg.data.dataset]}; the pinned weights were left unchanged"
        )
    entry = pin_classifier(model, report)
    print(
        f"{cfg.data.dataset}: test accuracy {entry['test_accuracy']:.4f}, sha256 {entry['sha256']}"
    )
    return entry["test_accuracy"]


if __name__ == "__main__":
    main()
