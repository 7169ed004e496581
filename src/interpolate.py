"""Latent interpolations and a class walk: `python src/interpolate.py ckpt_path=…`.

Writes to <run>/interpolations/ (or ``out_dir=``): ``linear.png`` and ``spherical.png`` (each row
walks between two random latents), ``walk_<from>_to_<to>.png`` (each row moves the classifier's
prediction from ``from_class`` toward ``to_class``) and ``walk.json`` with the classifier's
probabilities along the walk. A model with an encoder (VAE, VAE-GAN) also gets what its encoder
allows: ``real_linear.png`` / ``real_spherical.png`` (each row: test image a, the walk from Enc(a)
to Enc(b) decoded, test image b) and ``attribute_<from>_to_<to>.png`` (real test images of
from_class moved along the mean-encoding difference of the two classes, Larsen et al. 2016's visual
attribute vectors), with the classifier's view in ``attribute.json``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.config import check_schema
from src.utils import ConfigError, register_resolvers

register_resolvers()


def _check(cfg: DictConfig) -> None:
    check_schema(cfg)  # types and ranges of every key (src/config/schema.py)
    if cfg.from_class == cfg.to_class:
        raise ConfigError(f"from_class and to_class must differ (both {cfg.from_class})")


def interpolate(cfg: DictConfig) -> dict:
    import json

    from src.metrics.classifier import load_classifier
    from src.runs.checkpoints import load_checkpoint
    from src.sampling import balanced_labels, has_encoder, is_translator, render, save_grid
    from src.sampling.interpolation import interpolation_latents, walk
    from src.utils import write_json_atomic

    _check(cfg)
    model, run_cfg = load_checkpoint(cfg.ckpt_path)
    if is_translator(model):
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} holds a {type(model).__name__}, which has no latent space "
            "to walk: use src/translate.py"
        )
    model.to(cfg.device)
    out_dir = (
        Path(cfg.out_dir)
        if cfg.out_dir
        else Path(cfg.ckpt_path).resolve().parent.parent / "interpolations"
    )
    out_dir.mkdir(parents=True, exist_ok=True)

    def save(images, name: str, columns: int) -> str:
        return str(save_grid(images, out_dir / name, columns))

    written = []
    for mode in ("linear", "spherical"):
        z = interpolation_latents(model, cfg.pairs, cfg.steps, mode, cfg.seed)
        # a conditional G keeps one class per row, so the row shows the latent's effect alone
        labels = (
            None
            if not model.num_classes
            else balanced_labels(cfg.pairs, model.num_classes).repeat_interleave(cfg.steps)
        )
        written.append(save(render(model, z, labels), f"{mode}.png", cfg.steps))

    try:
        images, info = walk(
            model,
            load_classifier(run_cfg.data.dataset, cfg.device),
            cfg.from_class,
            cfg.to_class,
            cfg.walk_rows,
            cfg.walk_steps,
            cfg.walk_scale,
            cfg.walk_samples,
            cfg.seed,
        )
    except ValueError as err:  # the model does not generate enough of a class: a user choice to fix
        if not has_encoder(model):
            raise ConfigError(str(err)) from err
        # an encoder model still walks from real images below
        images, info = None, {"skipped": str(err)}
    if images is not None:
        name = f"walk_{cfg.from_class}_to_{cfg.to_class}.png"
        written.append(save(images, name, cfg.walk_steps))
    info.update(
        {
            "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
            "model": run_cfg.model._target_,
            "files": written,
        }
    )
    write_json_atomic(out_dir / "walk.json", info)
    if has_encoder(model):
        info["attribute"] = _encoder_walks(model, run_cfg, cfg, out_dir, save)
        info["files"] += info["attribute"]["files"]
    print(json.dumps(info, indent=2))
    return info


def _encoder_walks(model, run_cfg, cfg, out_dir: Path, save) -> dict:
    """Interpolations between real test images and a class attribute vector from encoded data."""
    import torch

    from src.data.datamodule import to_signed_unit
    from src.metrics.classifier import load_classifier
    from src.runs.checkpoints import run_data
    from src.sampling import render
    from src.sampling.interpolation import encoded_class_walk, real_pair_latents
    from src.utils import write_json_atomic

    data = run_data(run_cfg, cfg.paths.data_dir)
    test_images, test_labels = data.splits["test"]
    images = to_signed_unit(test_images)
    files = []
    for mode in ("linear", "spherical"):
        z, ends = real_pair_latents(model, images, cfg.pairs, cfg.steps, mode, cfg.seed)
        walks = render(model, z).view(cfg.pairs, cfg.steps, *images.shape[1:])
        rows = torch.cat([ends[:, :1], walks, ends[:, 1:]], dim=1).flatten(0, 1)
        files.append(save(rows, f"real_{mode}.png", cfg.steps + 2))
    decoded, info = encoded_class_walk(
        model,
        load_classifier(run_cfg.data.dataset, cfg.device),
        images,
        test_labels,
        cfg.from_class,
        cfg.to_class,
        cfg.walk_rows,
        cfg.walk_steps,
        cfg.walk_scale,
    )
    name = f"attribute_{cfg.from_class}_to_{cfg.to_class}.png"
    files.append(save(decoded, name, cfg.walk_steps))
    info["files"] = files
    write_json_atomic(out_dir / "attribute.json", info)
    return info


@hydra.main(version_base="1.3", config_path="../conf", config_name="interpolate")
def main(cfg: DictConfig) -> None:
    from src.runs.cli import report_user_errors

    report_user_errors(interpolate, cfg)


if __name__ == "__main__":
    main()
