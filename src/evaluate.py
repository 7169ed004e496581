"""Score a checkpoint: `python src/evaluate.py ckpt_path=<run>/checkpoints/last.ckpt`.

Prints IS, FID, KID and mode coverage as JSON and writes them to <run>/evaluation.json (or
``out=``); a class-conditional model is asked for every class equally and also gets ``class_match``
(overall, per class). ``sharpness_ratio``: the samples' mean |Laplacian| over the real test
images' (src/metrics/sharpness.py; < 1 blurrier). A model with an encoder (VAE, VAE-GAN) also
gets, on the first ``n_real`` test images: ``reconstruction_mse`` (per pixel, [0, 1] scale) and
``reconstruction_accuracy``, the pinned classifier's accuracy on the reconstructions against the
images' labels (does a reconstruction keep its digit?), next to ``test_accuracy`` on the images.

A translator (pix2pix, CycleGAN) is scored on its task's first ``n_real`` test images instead
(src/metrics/translation.py: FID against domain B, label preservation, paired L1 / PSNR / SSIM,
cycle L1); ``baseline=identity`` scores the identity map on the same images
(evaluation_identity.json).

A checkpoint that keeps an EMA of G samples with the average; ``use_ema=false`` scores its trained G
instead (evaluation_trained_g.json), so one run gives both.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.utils import register_resolvers

register_resolvers()


def evaluate(cfg: DictConfig) -> dict:
    import time

    from src.config import check_schema
    from src.runs.checkpoints import load_checkpoint, run_data
    from src.runs.cli import check_writable
    from src.sampling import is_translator
    from src.utils import ConfigError, write_json_atomic

    check_schema(cfg)  # types and ranges of every key (src/config/schema.py)
    model, run_cfg = load_checkpoint(cfg.ckpt_path)
    trained_g_instead = not cfg.use_ema and getattr(model, "generator_ema", None) is not None
    name = "evaluation.json" if cfg.baseline is None else f"evaluation_{cfg.baseline}.json"
    if trained_g_instead:
        name = "evaluation_trained_g.json"  # never over the EMA's evaluation.json
    out = Path(cfg.out) if cfg.out else Path(cfg.ckpt_path).resolve().parent.parent / name
    check_writable(out, "out" if cfg.out else "out (the checkpoint's run folder)")
    if trained_g_instead:
        model.generator_ema = None  # sampling_generator falls back to the trained G
    model.to(cfg.device)
    data = run_data(run_cfg, cfg.paths.data_dir)
    started = time.perf_counter()
    if is_translator(model):
        result = evaluate_translation(cfg, model, data)
    else:
        if cfg.baseline is not None:
            raise ConfigError(
                f"baseline={cfg.baseline} scores a translation task; {run_cfg.model._target_} "
                "is not a translator (set baseline=null)"
            )
        result = evaluate_samples(cfg, model, data)
    result.update(
        {
            "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
            "model": run_cfg.model._target_,
            "dataset": run_cfg.data.get("dataset") or run_cfg.data.get("task"),
            "n_real": cfg.n_real,
            "seconds": round(time.perf_counter() - started, 2),
        }
    )
    write_json_atomic(out, result)
    print(json.dumps(result, indent=2))
    return result


def evaluate_translation(cfg: DictConfig, model, data) -> dict:
    """src.metrics.translation's scores of the first ``n_real`` test images of A translated by the
    model, or by the ``baseline`` (identity: each image its own translation)."""
    from src.metrics.translation import TranslationScores
    from src.sampling import IdentityTranslator

    scores = TranslationScores(
        data.spec,
        data.splits["test"],
        cfg.device,
        n=cfg.n_real,
        kid_subsets=cfg.kid_subsets,
        kid_subset_size=cfg.kid_subset_size,
        seed=cfg.seed,
    )
    if cfg.baseline == "identity":
        model = IdentityTranslator(data.spec.b.channels, data.spec.a.channels)
    result = scores.score(model)
    result.update({"task": data.task, "baseline": cfg.baseline})
    return result


def evaluate_samples(cfg: DictConfig, model, data) -> dict:
    """IS / FID / KID / ... of ``n_samples`` samples, and reconstructions for encoder models."""
    from src.metrics.scores import GenerativeScores
    from src.metrics.sharpness import sharpness_ratio
    from src.sampling import generate, has_encoder, requested_labels

    if data.dataset == "image_folder":
        return inception_scores(cfg, model, data)
    scores = GenerativeScores(
        data.dataset,
        data.splits["test"][0][: cfg.n_real],
        cfg.device,
        kid_subsets=cfg.kid_subsets,
        kid_subset_size=cfg.kid_subset_size,
        seed=cfg.seed,
        nearest_k=cfg.nearest_k,
    )
    requested = requested_labels(model, cfg.n_samples)
    samples = generate(
        model, cfg.n_samples, seed=cfg.seed, labels=requested, batch_norm=cfg.batch_norm
    )
    result = scores.score(samples, requested_labels=requested)
    result["sharpness_ratio"] = sharpness_ratio(samples, data.splits["test"][0][: cfg.n_real])
    if has_encoder(model):
        test_images, test_labels = (part[: cfg.n_real] for part in data.splits["test"])
        result.update(reconstruction_scores(model, scores, test_images, test_labels))
    result.update(
        {
            "n_samples": cfg.n_samples,
            "batch_norm": cfg.batch_norm,
            "ema": getattr(model, "generator_ema", None) is not None,
        }
    )
    return result


def inception_scores(cfg: DictConfig, model, data) -> dict:
    """Inception-v3 FID / KID / IS of an image-folder model (src/metrics/inception.py)."""
    from src.metrics.inception import InceptionScores, InceptionUnavailable
    from src.sampling import generate
    from src.utils import ConfigError

    try:
        scores = InceptionScores(
            data.splits["test"][0][: cfg.n_real],
            cfg.device,
            kid_subsets=cfg.kid_subsets,
            kid_subset_size=cfg.kid_subset_size,
            seed=cfg.seed,
        )
    except InceptionUnavailable as err:
        raise ConfigError(f"cannot score an image-folder model: {err}") from err
    result = scores.score(generate(model, cfg.n_samples, seed=cfg.seed, batch_norm=cfg.batch_norm))
    return {**result, "n_samples": cfg.n_samples, "batch_norm": cfg.batch_norm}


def reconstruction_scores(model, scores, images_uint8, labels) -> dict:
    """Pixel MSE of Dec(Enc(x)) and whether the pinned classifier still sees x's digit in it."""
    from src.data.datamodule import to_signed_unit
    from src.models.vae import reconstruction_mse
    from src.sampling import reconstruct

    images = to_signed_unit(images_uint8)
    reconstructions = reconstruct(model, images)
    predicted_reconstruction = scores.features(reconstructions)[1].cpu()
    predicted_test = scores.features(images)[1].cpu()
    return {
        "reconstruction_mse": reconstruction_mse(reconstructions, images).item(),
        "reconstruction_accuracy": (predicted_reconstruction == labels).float().mean().item(),
        "test_accuracy": (predicted_test == labels).float().mean().item(),
        "n_reconstructed": int(images.shape[0]),
    }


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    from src.runs.cli import report_user_errors

    return report_user_errors(evaluate, cfg, key="fid")


if __name__ == "__main__":
    main()
