"""Latents -> images: seeded sampling, class labels for conditional models, grids and uint8 export.

Every function takes a model built by the project (``model(z, labels)``, ``model.sample_latent``,
``model.num_classes``, ``model.device``); images are float in [-1, 1] unless said otherwise.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from src.nets.batch_norm import batch_statistics
from src.utils.files import atomic_path


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """0, 1, ..., C-1, 0, 1, ...: every class requested n / C times (to within one)."""
    return torch.arange(n) % num_classes


def requested_labels(model, n: int) -> torch.Tensor | None:
    """The classes to ask a class-conditional model for (``balanced_labels``); None otherwise."""
    return balanced_labels(n, model.num_classes) if model.num_classes else None


#: how G's batch norms normalise when sampling: ``running`` statistics (eval mode, the default:
#: a sample does not depend on the others drawn with it) or ``batch`` statistics of each chunk of
#: ``batch_size`` samples (as in training); docs/models.md ("EMA of G") has both measured
BATCH_NORM_MODES = ("running", "batch")


@torch.no_grad()
def render(
    model,
    z: torch.Tensor,
    labels: torch.Tensor | None = None,
    batch_size: int = 1000,
    batch_norm: str = "running",
) -> torch.Tensor:
    """G(z[, labels]) in eval mode (mode restored after), in chunks; images on the CPU."""
    if batch_norm not in BATCH_NORM_MODES:
        raise ValueError(f"batch_norm must be one of {BATCH_NORM_MODES}, got {batch_norm!r}")
    was_training = model.training
    model.eval()
    generator = getattr(model, "sampling_generator", None)
    statistics = (
        batch_statistics(generator)
        if batch_norm == "batch" and generator is not None
        else contextlib.nullcontext()
    )
    chunks = []
    with statistics:
        for start in range(0, z.shape[0], batch_size):
            chunk_labels = (
                None if labels is None else labels[start : start + batch_size].to(model.device)
            )
            chunk = model(z[start : start + batch_size].to(model.device), chunk_labels)
            chunks.append(chunk.float().cpu())
    model.train(was_training)
    return torch.cat(chunks)


@torch.no_grad()
def generate(
    model,
    n: int,
    batch_size: int = 1000,
    seed: int = 0,
    labels: torch.Tensor | None = None,
    batch_norm: str = "running",
) -> torch.Tensor:
    """n samples of ``model``'s G in eval mode from seeded latents; the global RNG is untouched.

    A class-conditional model draws ``labels`` (default: ``requested_labels``); others take none.
    """
    if labels is None:
        labels = requested_labels(model, n)
    return render(model, seeded_latents(model, n, seed, batch_size), labels, batch_size, batch_norm)


def seeded_latents(model, n: int, seed: int = 0, batch_size: int = 1000) -> torch.Tensor:
    """The n latents ``generate`` samples for ``seed``, on the CPU; the global RNG is untouched.
    Drawn chunk by chunk, as always: a seed keeps giving the latents it gave before."""
    seeded = torch.Generator().manual_seed(seed)
    return torch.cat(
        [
            model.sample_latent(min(batch_size, n - start), generator=seeded, device="cpu")
            for start in range(0, n, batch_size)
        ]
    )


def grid_layout(model, n_samples: int) -> tuple[int, int]:
    """(samples, columns) of a sample grid of about ``n_samples``: a square, or for a
    class-conditional model one column per class (``n_samples`` rounded up to whole rows), so
    that each column shows one requested class (``requested_labels``)."""
    if not model.num_classes:
        return n_samples, int(n_samples**0.5)
    columns = model.num_classes
    return -(-n_samples // columns) * columns, columns


def has_encoder(model) -> bool:
    """Whether ``model`` maps images to latents (VAE, VAE-GAN: ``encode`` / ``reconstruct``)."""
    return hasattr(model, "reconstruct")


@torch.no_grad()
def encode(model, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The posterior means of q(z|x) for ``images`` in eval mode, in chunks; latents on the CPU."""
    was_training = model.training
    model.eval()
    chunks = [
        model.encode(images[start : start + batch_size].to(model.device)).float().cpu()
        for start in range(0, images.shape[0], batch_size)
    ]
    model.train(was_training)
    return torch.cat(chunks)


@torch.no_grad()
def reconstruct(model, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Dec(Enc(x)) (the posterior mean decoded) in eval mode, in chunks; images on the CPU."""
    return render(model, encode(model, images, batch_size), batch_size=batch_size)


def reconstruction_pairs(model, images: torch.Tensor) -> torch.Tensor:
    """[x_1, x~_1, x_2, x~_2, ...]: each image followed by its reconstruction."""
    return torch.stack([images.float(), reconstruct(model, images)], dim=1).flatten(0, 1)


def image_grid(images: torch.Tensor, columns: int) -> torch.Tensor:
    """[N, C, H, W] in [-1, 1] -> one [C', H', W'] grid in [0, 1], ``columns`` images a row."""
    return make_grid(images, nrow=columns, normalize=True, value_range=(-1, 1), pad_value=1.0)


def save_grid(images: torch.Tensor, path: str | Path, columns: int) -> Path:
    """Write ``images`` as one PNG grid (``image_grid``); returns the path."""
    with atomic_path(path) as tmp:
        save_image(image_grid(images, columns), tmp, format="png")
    return Path(path)
