"""Image conversions shared by sampling, scoring and the entry points: generator outputs and dataset
batches are float tensors in [-1, 1]; these turn them into bytes, colour, or the pinned classifier's
input. They sit with the data so that sampling and metrics both read them from below."""

from __future__ import annotations

import torch
import torch.nn.functional as F

CLASSIFIER_INPUT_SIZE = 28  # the pinned digit classifier reads 28 x 28 grey images


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> 0-255 uint8 on the CPU (round to nearest)."""
    return images.clamp(-1, 1).add(1).mul(127.5).round().to("cpu").byte()


def with_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey [N, 1, H, W] repeated to ``channels`` (to sit in one grid with colour images)."""
    return images.expand(-1, channels, -1, -1) if images.shape[1] == 1 else images


def to_classifier_input(images: torch.Tensor) -> torch.Tensor:
    """Any generator output or dataset batch -> float [-1, 1] at 28x28, one channel.

    uint8 images (0-255) are rescaled here, not cast: torchmetrics passes custom extractors whatever
    it is given when ``normalize=False``, so scores never depend on a uint8 round trip.
    """
    if images.dtype == torch.uint8:
        images = images.float().mul(2.0 / 255.0).sub(1.0)
    images = images.float()
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.shape[1] != 1:
        images = images.mean(dim=1, keepdim=True)
    size = images.shape[-1]
    if size == CLASSIFIER_INPUT_SIZE + 4:  # the conv nets' zero-padded 32 px -> crop the centre
        return images[..., 2:-2, 2:-2]
    if size != CLASSIFIER_INPUT_SIZE:
        side = (CLASSIFIER_INPUT_SIZE, CLASSIFIER_INPUT_SIZE)
        return F.interpolate(images, size=side, mode="bilinear", align_corners=False)
    return images
