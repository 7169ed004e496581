"""Scores the generator with IS / FID / KID / mode coverage every N epochs during training."""

from __future__ import annotations

import logging
import time

import torch
from lightning import Callback

from src.metrics.scores import GenerativeScores, loggable_scores
from src.sampling import generate, is_translator, requested_labels

log = logging.getLogger(__name__)


class GenerativeMetrics(Callback):
    """Logs ``val/is``, ``val/is_std``, ``val/fid``, ``val/kid``, ``val/kid_std``,
    ``val/precision``, ``val/recall``, ``val/density``, ``val/coverage`` (k-NN balls of
    ``nearest_k``), ``val/modes_covered``, ``val/max_class_share``, ``val/min_class_share``,
    ``val/within_class_diversity`` and ``val/blank_share`` after every ``every_n_epochs``-th
    training epoch and the last one; the real set is the first ``n_real`` images of the test
    split. A
    class-conditional model is asked for every class equally and also gets ``val/class_match`` (the
    share of samples the classifier assigns to the requested class), and per class
    ``val/class_match_<c>``. A translator gets src.metrics.translation's scores of its
    translations of the first ``n_real`` test images (``val/fid`` against domain B,
    ``val/label_preservation``, paired ``val/l1`` / ``val/psnr`` / ``val/ssim``, ``val/cycle_l1``).
    An RGB image folder (``data=image_folder``) gets the standard Inception-v3 ``val/fid``,
    ``val/kid``, ``val/is`` when those weights are present or downloadable; otherwise one warning
    line, no scores, and training goes on. Every scoring also logs ``val/metrics_seconds`` (its own
    cost) and ``val/elapsed_seconds``: wall time since this fit started (or resumed), scoring
    included, for quality-vs-wall-clock curves.
    """

    def __init__(
        self,
        dataset: str | None,
        every_n_epochs: int = 1,
        n_samples: int = 10000,
        n_real: int = 10000,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
        nearest_k: int = 5,
    ):
        if every_n_epochs < 1 or n_samples < 2 or n_real < 2 or not 1 <= nearest_k < n_samples:
            raise ValueError(
                "callbacks.generative_metrics: every_n_epochs >= 1, n_samples >= 2, n_real >= 2 "
                "and 1 <= nearest_k < n_samples needed"
            )
        self.dataset = dataset
        self.every_n_epochs = every_n_epochs
        self.n_samples = n_samples
        self.n_real = n_real
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.seed = seed
        self.nearest_k = nearest_k
        self.scores: GenerativeScores | None = None
        self.translation_scores = None
        self.inception_scores = None
        self.unavailable: str | None = None  # why an image folder run cannot be scored
        self.fit_started = time.perf_counter()

    def setup(self, trainer, pl_module, stage: str) -> None:
        # before the module's own setup (a cluster GAN's k-means counts as part of the run)
        if stage == "fit":
            self.fit_started = time.perf_counter()

    def _scores(self, trainer, pl_module) -> GenerativeScores:
        """Built on first use, on the module's device; real features are computed once per fit."""
        if self.scores is None or self.scores.device != pl_module.device:
            real = trainer.datamodule.splits["test"][0][: self.n_real]
            self.scores = GenerativeScores(
                self.dataset,
                real,
                pl_module.device,
                kid_subsets=self.kid_subsets,
                kid_subset_size=self.kid_subset_size,
                seed=self.seed,
                nearest_k=self.nearest_k,
            )
        return self.scores

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every_n_epochs and epoch != trainer.max_epochs:
            return
        # once for the whole process group: every rank holds the same G
        if not trainer.is_global_zero:
            return
        started = time.perf_counter()
        if self.dataset == "image_folder":
            self._log(pl_module, self._folder_values(trainer, pl_module), started)
            return
        if is_translator(pl_module):
            self._log(pl_module, self._translation_values(trainer, pl_module), started)
            return
        requested = requested_labels(pl_module, self.n_samples)
        device = pl_module.device
        # building the classifier draws initial weights from the global RNG: forked, so that scoring
        # (and how often it runs) never changes the latents and weights of the training that follows
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            images = generate(pl_module, self.n_samples, seed=self.seed, labels=requested)
            result = self._scores(trainer, pl_module).score(images, requested_labels=requested)
        values = {k: float(v) for k, v in loggable_scores(result).items()}
        self._log(pl_module, values, started)

    def _log(self, pl_module, values: dict | None, started: float) -> None:
        """``val/<name>`` for every value, how long scoring took and the run's wall time so far
        (nothing if not scored)."""
        if values is None:
            return
        now = time.perf_counter()
        values["metrics_seconds"] = now - started
        values["elapsed_seconds"] = now - self.fit_started
        pl_module.log_dict(
            {f"val/{k}": v for k, v in values.items()},
            on_epoch=True,
            on_step=False,
            rank_zero_only=True,
        )

    def _translation_values(self, trainer, pl_module) -> dict:
        from src.metrics.translation import TranslationScores

        device = pl_module.device
        if self.translation_scores is None or self.translation_scores.device != device:
            datamodule = trainer.datamodule
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                self.translation_scores = TranslationScores(
                    datamodule.spec,
                    datamodule.splits["test"],
                    device,
                    n=self.n_real,
                    kid_subsets=self.kid_subsets,
                    kid_subset_size=self.kid_subset_size,
                    seed=self.seed,
                )
        result = self.translation_scores.score(pl_module)
        return {k: float(v) for k, v in result.items() if k != "n_translated"}

    def _folder_values(self, trainer, pl_module) -> dict | None:
        from src.metrics.inception import InceptionScores, InceptionUnavailable

        if self.unavailable is not None:
            return None
        device = pl_module.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if self.inception_scores is None:
                real = trainer.datamodule.splits["test"][0][: self.n_real]
                try:
                    self.inception_scores = InceptionScores(
                        real,
                        device,
                        kid_subsets=self.kid_subsets,
                        kid_subset_size=self.kid_subset_size,
                        seed=self.seed,
                    )
                except InceptionUnavailable as err:
                    self.unavailable = str(err)
                    log.warning(
                        "generative metrics skipped for this run: %s; training goes on", err
                    )
                    return None
            images = generate(pl_module, self.n_samples, seed=self.seed)
            return self.inception_scores.score(images)
