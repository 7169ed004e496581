"""Translate images with a pix2pix / CycleGAN checkpoint: `python src/translate.py
ckpt_path=<run>/checkpoints/last.ckpt [input_dir=<folder>] [direction=b2a]`.

Inputs: the first ``n`` test images of the run's task (domain A, or B with ``direction=b2a``), or
every image of ``input_dir`` (centre-cropped and resized to the run's size and channels). Writes
``<out_dir>/<name>.png`` - a grid of input | translation (| target, paired test data) triplets, or
input | translation pairs for a folder - and ``<out_dir>/<name>.npz`` with uint8 arrays ``inputs``
and ``outputs`` (N, C, H, W), ``targets`` where known and ``files`` for a folder. ``out_dir``
defaults to <run>/translations.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.config import check_schema
from src.utils import ConfigError, register_resolvers

register_resolvers()


def translate(cfg: DictConfig) -> Path:
    import numpy as np
    import torch
    from torchvision.utils import save_image

    from src.data.datamodule import to_signed_unit
    from src.data.images import to_uint8, with_channels
    from src.data.translation import image_files, read_images
    from src.runs.checkpoints import load_checkpoint, run_data
    from src.sampling import image_grid, is_translator, translate_images
    from src.utils.files import atomic_path

    check_schema(cfg)
    model, run_cfg = load_checkpoint(cfg.ckpt_path)
    if not is_translator(model):
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} holds a {type(model).__name__}, which samples from "
            "latents rather than translating images: use src/sample.py"
        )
    if cfg.direction == "b2a" and not hasattr(model, "translate_back"):
        raise ConfigError(
            f"direction=b2a: {type(model).__name__} translates A -> B only (direction=a2b)"
        )
    model.to(cfg.device)
    source = "a" if cfg.direction == "a2b" else "b"
    targets, files = None, None
    if cfg.input_dir:
        channels = run_cfg.data[f"channels_{source}"]
        paths = image_files(Path(cfg.input_dir))
        inputs = to_signed_unit(read_images(paths, run_cfg.data.image_size, channels))
        files, name = [p.name for p in paths], f"{Path(cfg.input_dir).name}_{cfg.direction}"
    else:
        data = run_data(run_cfg, cfg.paths.data_dir)
        test = data.splits["test"].head(cfg.n)
        inputs = to_signed_unit(getattr(test, source))
        if data.paired:
            targets = to_signed_unit(test.b if source == "a" else test.a)
        name = f"test_{cfg.direction}"
    # pix2pix's test-time dropout draws from the RNG: the same seed, the same translations
    torch.manual_seed(cfg.seed)
    outputs = translate_images(model, inputs, cfg.direction)
    run_dir = Path(cfg.ckpt_path).resolve().parent.parent
    out_dir = Path(cfg.out_dir) if cfg.out_dir else run_dir / "translations"
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = {"inputs": to_uint8(inputs).numpy(), "outputs": to_uint8(outputs).numpy()}
    shown = [inputs, outputs]
    if targets is not None:
        arrays["targets"] = to_uint8(targets).numpy()
        shown.append(targets)
    if files is not None:
        arrays["files"] = np.array(files)
    with atomic_path(out_dir / f"{name}.npz") as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    channels = max(x.shape[1] for x in shown)
    shown = [with_channels(x, channels) for x in shown]
    per_image = len(shown)
    rows = torch.stack(shown, dim=1).flatten(0, 1)[: cfg.grid_images * per_image]
    with atomic_path(out_dir / f"{name}.png") as tmp:
        save_image(image_grid(rows, per_image * 4), tmp, format="png")
    print(f"translated {inputs.shape[0]} images ({cfg.direction}); wrote {out_dir / name}.png/.npz")
    return out_dir / f"{name}.npz"


@hydra.main(version_base="1.3", config_path="../conf", config_name="translate")
def main(cfg: DictConfig) -> None:
    from src.runs.cli import report_user_errors

    report_user_errors(translate, cfg)


if __name__ == "__main__":
    main()
