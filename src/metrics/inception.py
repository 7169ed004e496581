"""FID / KID / IS of RGB image folders with the standard Inception-v3 features (torchmetrics, with
torch-fidelity's weights ``weights-inception-2015-12-05-6726825d.pth``): the numbers papers report
for CelebA / LSUN / ImageNet. The pinned MNIST classifiers cannot read natural images, so without
these weights (not on this machine, no network) an image folder run is not scored: one line says
so and training goes on."""

from __future__ import annotations

import torch
from torchmetrics.image import FrechetInceptionDistance, InceptionScore, KernelInceptionDistance

from src.data.images import to_uint8, with_channels

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"


class InceptionUnavailable(RuntimeError):
    """The Inception weights are neither in torch's hub cache nor downloadable."""


def _rgb_uint8(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8:  # floats in [-1, 1]
        images = to_uint8(images)
    return with_channels(images, 3)


class InceptionScores:
    """Scores generated batches against a fixed real set (uint8 or [-1, 1] floats, 1 or 3
    channels, any size: torchmetrics resizes to 299 px); real features computed once."""

    def __init__(
        self,
        real_images: torch.Tensor,
        device: torch.device | str = "cpu",
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
        batch_size: int = 200,
    ):
        self.device = torch.device(device)
        self.seed, self.batch_size, self.kid_subset_size = seed, batch_size, kid_subset_size
        local = {"sync_on_compute": False}  # one process scores (see src/metrics/scores.py)
        try:
            self.fid = FrechetInceptionDistance(feature=2048, reset_real_features=False, **local)
            self.kid = KernelInceptionDistance(
                reset_real_features=False, subsets=kid_subsets, subset_size=kid_subset_size, **local
            )
            self.inception = InceptionScore(**local)
        except Exception as err:  # torch.hub's download: URLError, HTTPError, a corrupt file ...
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise InceptionUnavailable(
                f"the Inception-v3 weights for FID / KID / IS of image folders are not in torch's "
                f"hub cache (~/.cache/torch/hub/checkpoints/{WEIGHTS_FILE}) and could not be "
                f"downloaded ({reason})"
            ) from err
        for metric in (self.fid, self.kid, self.inception):
            metric.to(self.device)
        self.num_real = real_images.shape[0]
        for batch in self._batches(real_images):
            self.fid.update(batch, real=True)
            self.kid.update(batch, real=True)

    def _batches(self, images: torch.Tensor):
        for start in range(0, images.shape[0], self.batch_size):
            yield _rgb_uint8(images[start : start + self.batch_size]).to(self.device)

    @torch.no_grad()
    def score(self, images: torch.Tensor) -> dict:
        for metric in (self.fid, self.kid, self.inception):
            metric.reset()
        for batch in self._batches(images):
            self.fid.update(batch, real=False)
            self.kid.update(batch, real=False)
            self.inception.update(batch)
        self.kid.subset_size = min(self.kid_subset_size, images.shape[0], self.num_real)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            is_mean, is_std = self.inception.compute()
            kid_mean, kid_std = self.kid.compute()
        return {
            "fid": self.fid.compute().item(),
            "kid": kid_mean.item(),
            "kid_std": kid_std.item(),
            "is": is_mean.item(),
            "is_std": is_std.item(),
        }
