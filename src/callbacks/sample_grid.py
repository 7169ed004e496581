"""Saves a grid of samples from a fixed latent batch after every training epoch."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning import Callback
from torchvision.utils import save_image

from src.sampling import image_grid, render, requested_labels


class SampleGrid(Callback):
    """Writes ``<dirpath>/epoch_XXX.png`` (and ``last.png``) from the same latents every epoch, so
    grids from one run are comparable frame by frame; hands the grid to loggers that take images
    (W&B). For a class-conditional model each column is one class (n_samples rounded up to rows)."""

    def __init__(self, dirpath: str, n_samples: int = 64, every_n_epochs: int = 1, seed: int = 0):
        if n_samples < 1 or every_n_epochs < 1:
            raise ValueError("callbacks.sample_grid: n_samples and every_n_epochs must be >= 1")
        self.dirpath = Path(dirpath)
        self.n_samples = n_samples
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.fixed_latent: torch.Tensor | None = None
        self.fixed_labels: torch.Tensor | None = None
        self.columns = int(n_samples**0.5)

    def on_fit_start(self, trainer, pl_module) -> None:
        # on the CPU: the same latents on every device
        seeded = torch.Generator().manual_seed(self.seed)
        n = self.n_samples
        if pl_module.num_classes:  # one column per class, so each column shows one requested class
            self.columns = pl_module.num_classes
            n = -(-n // self.columns) * self.columns
        self.fixed_latent = pl_module.sample_latent(n, generator=seeded, device="cpu")
        self.fixed_labels = requested_labels(pl_module, n)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs or trainer.sanity_checking:
            return
        images = render(pl_module, self.fixed_latent, self.fixed_labels)
        grid = image_grid(images, self.columns)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"epoch_{trainer.current_epoch:03d}.png"
        save_image(grid, path)
        save_image(grid, self.dirpath / "last.png")
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="samples", images=[str(path)])  # at the logger's current step
