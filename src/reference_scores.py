"""Reference scores of the pinned classifier's metrics: `python src/reference_scores.py data=mnist`.

Real test images (IS), 10 000 training images vs the test split (FID/KID floor), pure noise, and one
digit repeated (what mode collapse looks like). The README and docs/metrics.md quote its output.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.utils import register_resolvers

register_resolvers()


def reference_scores(cfg: DictConfig) -> dict:

    import torch

    from src.data import load_split
    from src.metrics.scores import GenerativeScores
    from src.utils import write_json_atomic

    dataset, n = cfg.data.dataset, cfg.n_samples
    train_images, _ = load_split(dataset, cfg.data.data_dir, "train", cfg.data.download)
    test_images, _ = load_split(dataset, cfg.data.data_dir, "test", cfg.data.download)
    test_images = test_images.unsqueeze(1)
    scores = GenerativeScores(dataset, test_images[:n], seed=cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    cases = {
        "test split (real)": test_images[:n],
        f"{n} training images": train_images[
            torch.randperm(len(train_images), generator=generator)[:n]
        ].unsqueeze(1),
        "uniform noise": torch.rand(n, 1, 28, 28, generator=generator) * 2 - 1,
        "one test digit repeated": test_images[:1].expand(n, -1, -1, -1),
    }
    results = {name: scores.score(images) for name, images in cases.items()}
    manifold = ("precision", "recall", "density", "coverage")
    print(
        f"{'':26} {'IS':>14} {'FID':>9} {'KID':>9} {'modes':>5} "
        + " ".join(f"{k:>9}" for k in manifold)
    )
    for name, r in results.items():
        print(
            f"{name:26} {r['is']:7.3f} ± {r['is_std']:.3f} {r['fid']:9.3f} {r['kid']:9.4f} "
            f"{r['modes_covered']:5d} " + " ".join(f"{r[k]:9.4f}" for k in manifold)
        )
    out = Path(cfg.paths.output_dir) / f"reference_{dataset}.json"
    write_json_atomic(out, results)
    print(f"written to {out}")
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="reference_scores")
def main(cfg: DictConfig) -> None:
    from src.runs.cli import report_user_errors

    report_user_errors(reference_scores, cfg)


if __name__ == "__main__":
    main()
