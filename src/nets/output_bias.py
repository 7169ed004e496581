"""Where a generator's samples start: its last layer's bias set so that an untrained G draws a
given pixel value (a tanh output: its inverse) instead of 0."""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def start_at_pixel_value(generator: nn.Module, value: float) -> None:
    """Set the bias of ``generator``'s last layer with one (in registration order: the layer
    that writes the image) to ``value`` as the image sees it (through tanh where the net's
    ``output_tanh`` says it squashes)."""
    last = [m for m in generator.modules() if getattr(m, "bias", None) is not None]
    if not last:
        raise ValueError(f"{type(generator).__name__} has no layer with a bias to set")
    if getattr(generator, "output_tanh", False):
        value = math.atanh(max(-0.999, min(0.999, float(value))))
    last[-1].bias.fill_(float(value))
