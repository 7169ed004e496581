"""Saves a grid of samples from a fixed latent batch after every training epoch."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning import Callback
from torchvision.utils import save_image

from src.data.datamodule import to_signed_unit
from src.sampling import (
    grid_layout,
    has_encoder,
    image_grid,
    is_translator,
    reconstruction_pairs,
    render,
    requested_labels,
    translation_triplets,
)
from src.utils.files import atomic_path

#: a translator's grid shows this many (input | output | target) triplets a row
TRIPLETS_PER_ROW = 4


class SampleGrid(Callback):
    """Writes ``<dirpath>/epoch_XXX.png`` (and ``last.png``) from the same latents every epoch, so
    grids from one run are comparable frame by frame; hands the grid to loggers that take images
    (W&B). For a class-conditional model each column is one class (n_samples rounded up to rows).
    A model with an encoder (VAE, VAE-GAN) gets, beside its prior samples, the first test images
    each followed by its reconstruction (as many rows as the samples). A translator (pix2pix,
    CycleGAN) shows n_samples / 4 fixed test images as input | output | target (paired data) or
    A | A->B | A->B->A, four triplets a row."""

    def __init__(self, dirpath: str, n_samples: int = 64, every_n_epochs: int = 1, seed: int = 0):
        if n_samples < 1 or every_n_epochs < 1:
            raise ValueError("callbacks.sample_grid: n_samples and every_n_epochs must be >= 1")
        self.dirpath = Path(dirpath)
        self.n_samples = n_samples
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.fixed_latent: torch.Tensor | None = None
        self.fixed_labels: torch.Tensor | None = None
        self.fixed_images: torch.Tensor | None = None
        self.fixed_targets: torch.Tensor | None = None
        self.columns = int(n_samples**0.5)

    def on_fit_start(self, trainer, pl_module) -> None:
        if is_translator(pl_module):
            test = trainer.datamodule.splits["test"].head(max(1, self.n_samples // 4))
            self.fixed_images = to_signed_unit(test.a)
            self.fixed_targets = to_signed_unit(test.b) if trainer.datamodule.paired else None
            self.columns = 3 * TRIPLETS_PER_ROW
            return
        # on the CPU: the same latents on every device
        seeded = torch.Generator().manual_seed(self.seed)
        n, self.columns = grid_layout(pl_module, self.n_samples)
        self.fixed_latent = pl_module.sample_latent(n, generator=seeded, device="cpu")
        self.fixed_labels = requested_labels(pl_module, n)
        self.fixed_images = None
        datamodule = getattr(trainer, "datamodule", None)
        if has_encoder(pl_module) and getattr(datamodule, "splits", None):
            rows = -(-n // self.columns)
            test_images = datamodule.splits["test"][0][: rows * (self.columns // 2)]
            self.fixed_images = to_signed_unit(test_images)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs or trainer.sanity_checking:
            return
        if not trainer.is_global_zero:  # one writer under DDP
            return
        if is_translator(pl_module):
            triplets = translation_triplets(pl_module, self.fixed_images, self.fixed_targets)
            grid = image_grid(triplets, self.columns)
        else:
            grid = image_grid(render(pl_module, self.fixed_latent, self.fixed_labels), self.columns)
        if self.fixed_images is not None and not is_translator(pl_module):
            pairs = image_grid(reconstruction_pairs(pl_module, self.fixed_images), self.columns)
            height = max(grid.shape[1], pairs.shape[1])
            grid, pairs = (
                torch.nn.functional.pad(g, (0, 0, 0, height - g.shape[1]), value=1.0)
                for g in (grid, pairs)
            )
            # samples | a white gap | test image, reconstruction, test image, ...
            gap = torch.ones(grid.shape[0], height, 8)
            grid = torch.cat([grid, gap, pairs], dim=2)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"epoch_{trainer.current_epoch:03d}.png"
        for target in (path, self.dirpath / "last.png"):
            with atomic_path(target) as tmp:
                save_image(grid, tmp, format="png")
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="samples", images=[str(path)])  # at the logger's current step
