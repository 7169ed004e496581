"""Draw samples from a checkpoint: `python src/sample.py ckpt_path=… n=10000 out=samples.npz`.

``out=*.npz``: an array ``images``, uint8, shape (N, 1, H, W), values 0-255, for any outside scorer.
``out=*.png``: a square-ish grid of the N samples.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from src.utils import ConfigError, register_resolvers  # noqa: E402

register_resolvers()


def to_uint8(images):
    """[-1, 1] floats -> 0-255 uint8 (round to nearest)."""
    return images.clamp(-1, 1).add(1).mul(127.5).round().to("cpu").byte()


def sample(cfg: DictConfig) -> str:
    import numpy as np
    from torchvision.utils import save_image

    from src.callbacks.generative_metrics import generate
    from src.checkpoints import load_checkpoint

    out = Path(cfg.out)
    if out.suffix not in (".npz", ".png"):
        raise ConfigError(f"out={cfg.out}: the file name must end in .npz (arrays) or .png (a grid)")
    if cfg.n < 1:
        raise ConfigError(f"n={cfg.n}: must be >= 1")
    model, _ = load_checkpoint(cfg.ckpt_path)
    images = generate(model.to(cfg.device), cfg.n, seed=cfg.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        np.savez_compressed(out, images=to_uint8(images).numpy())
    else:
        save_image(images, out, nrow=max(1, int(cfg.n**0.5)), normalize=True, value_range=(-1, 1), pad_value=1.0)
    print(f"wrote {cfg.n} samples to {out.resolve()}")
    return str(out)


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    from src.entry import report_user_errors

    report_user_errors(sample, cfg)


if __name__ == "__main__":
    main()
