"""How sharp images are, against real ones: the mean absolute response to a 3x3 Laplacian.

Blur (a VAE's averaged digits) lowers it; noise raises it, so it is read next to FID / precision,
not alone. ``sharpness_ratio`` < 1: blurrier edges than the real digits, > 1: harsher ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


@torch.no_grad()
def laplacian_energy(images: torch.Tensor, batch_size: int = 1000) -> float:
    """Mean |Laplacian| per pixel of [N, C, H, W] images in [-1, 1] (uint8 0-255 is rescaled)."""
    total, count = 0.0, 0
    kernel = _LAPLACIAN.view(1, 1, 3, 3)
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size]
        if chunk.dtype == torch.uint8:
            chunk = chunk.float() / 127.5 - 1
        chunk = chunk.float().flatten(0, 1).unsqueeze(1)  # channels as images
        response = F.conv2d(chunk, kernel.to(chunk.device))
        total += response.abs().sum().item()
        count += response.numel()
    return total / count


def sharpness_ratio(images: torch.Tensor, real: torch.Tensor) -> float:
    """``laplacian_energy`` of ``images`` over that of ``real``."""
    return laplacian_energy(images) / laplacian_energy(real)


#: a sample whose pixels spread less than this (std, [-1, 1] scale) is near-constant: the faintest
#: of the first 2 000 MNIST test digits spreads 0.31, a collapsed BEGAN's near-blank samples 0.08
BLANK_STD = 0.1


@torch.no_grad()
def blank_share(images: torch.Tensor, threshold: float = BLANK_STD) -> float:
    """Share of near-constant images (blank or flat). The pinned classifier calls an all-black image
    "1" with p ~ 0.9999, so a collapse to blank samples reads as "every sample a 1" without this."""
    if images.dtype == torch.uint8:
        images = images.float() / 127.5 - 1
    spread = images.float().flatten(1).std(dim=1)
    return (spread < threshold).float().mean().item()
