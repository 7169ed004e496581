"""Draw samples from a checkpoint: `python src/sample.py ckpt_path=… n=10000 out=samples.npz`.

``out=*.npz``: an array ``images``, uint8, shape (N, 1, H, W), values 0-255, for any outside scorer,
and ``labels`` (the requested classes) for a class-conditional model. ``out=*.png``: a square-ish
grid of the N samples (one column per class for a conditional model). ``class=7``: a
class-conditional model (model=cgan) draws only that class.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.config import check_schema
from src.utils import ConfigError, register_resolvers

register_resolvers()


def labels_and_columns(model, n: int, wanted_class, ckpt_path) -> tuple:
    """(labels, grid columns): ``class=`` for a conditional model, else every class in turn."""
    import torch

    from src.sampling import balanced_labels

    if not model.num_classes:
        if wanted_class is not None:
            raise ConfigError(
                f"class={wanted_class}: the model in {ckpt_path} ({type(model).__name__}) is not "
                "class-conditional; train model=cgan to choose the class"
            )
        return None, max(1, int(n**0.5))
    if wanted_class is None:
        return balanced_labels(n, model.num_classes), model.num_classes
    if not isinstance(wanted_class, int) or not 0 <= wanted_class < model.num_classes:
        raise ConfigError(f"class={wanted_class}: must be an integer in 0..{model.num_classes - 1}")
    return torch.full((n,), wanted_class, dtype=torch.long), max(1, int(n**0.5))


def sample(cfg: DictConfig) -> str:
    import numpy as np

    from src.data.images import to_uint8
    from src.runs.checkpoints import load_checkpoint
    from src.runs.cli import check_writable
    from src.sampling import generate, is_translator, save_grid
    from src.utils.files import atomic_path

    check_schema(cfg)  # types and ranges of every key (src/config/schema.py)
    out = Path(cfg.out)
    if out.suffix not in (".npz", ".png"):
        raise ConfigError(
            f"out={cfg.out}: the file name must end in .npz (arrays) or .png (a grid)"
        )
    if cfg.n < 1:
        raise ConfigError(f"n={cfg.n}: must be >= 1")
    check_writable(out, "out")  # before the sampling, not after it
    model, _ = load_checkpoint(cfg.ckpt_path)
    if is_translator(model):
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} holds a {type(model).__name__}, which translates images "
            "rather than sampling them: use src/translate.py"
        )
    labels, columns = labels_and_columns(model, cfg.n, cfg.get("class"), cfg.ckpt_path)
    images = generate(model.to(cfg.device), cfg.n, seed=cfg.seed, labels=labels)
    if out.suffix == ".npz":
        arrays = {"images": to_uint8(images).numpy()}
        if labels is not None:
            arrays["labels"] = labels.numpy()
        with atomic_path(out) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    else:
        save_grid(images, out, columns)
    what = "" if cfg.get("class") is None else f" of class {cfg['class']}"
    print(f"wrote {cfg.n} samples{what} to {out.resolve()}")
    return str(out)


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    from src.runs.cli import report_user_errors

    report_user_errors(sample, cfg)


if __name__ == "__main__":
    main()
