"""The BEGAN networks (Berthelot, Schumm, Metz 2017, Sec. 3.5, Fig. 1).

3x3 convolutions with ELU, two per block; down-sampling by stride-2 convolution with the channel
count growing by n at each scale; up-sampling by nearest neighbour; an embedding h reached and left
through fully connected layers with no nonlinearity; no batch norm. G has the decoder's shape with
its own weights. The smallest feature map is 7 px for 28 px images, 8 px for 32/64/128 px images.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def scales_for(image_size: int) -> tuple[int, int]:
    """(base feature-map size, number of 2x scale changes) for an image size."""
    for base in (8, 7):
        ratio = image_size / base
        if ratio >= 2 and ratio == 2 ** round(math.log2(ratio)):
            return base, round(math.log2(ratio))
    raise ValueError(
        f"arch=began supports image sizes 7*2^k or 8*2^k (28, 32, 64, 128), got {image_size}"
    )


#: weight initialisations: ``xavier`` (Glorot uniform, zero biases: the reference implementation's,
#: TensorFlow's conv/dense default) or ``default`` (PyTorch's); docs/models.md has what it changes
INITS = ("xavier", "default")


def initialise(module: nn.Module, init: str) -> None:
    if init not in INITS:
        raise ValueError(f"arch.init must be one of {INITS}, got {init!r}")
    if init == "default":
        return
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


def _conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, 1, 1),
        nn.ELU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, 1, 1),
        nn.ELU(inplace=True),
    ]


class BEGANDecoder(nn.Module):
    """h -> FC -> (n, base, base) -> [2 conv, upsample] x scales -> 2 conv -> 3x3 conv to image."""

    def __init__(self, hidden_dim: int, image_shape, filters: int = 32, init: str = "xavier"):
        super().__init__()
        channels, size, _ = image_shape
        self.base, scales = scales_for(size)
        self.filters = filters
        self.latent_dim = hidden_dim
        self.fc = nn.Linear(hidden_dim, filters * self.base**2)
        layers: list[nn.Module] = []
        for _ in range(scales):
            layers += _conv_block(filters, filters) + [nn.Upsample(scale_factor=2, mode="nearest")]
        layers += _conv_block(filters, filters) + [nn.Conv2d(filters, channels, 3, 1, 1)]
        self.body = nn.Sequential(*layers)
        initialise(self, init)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.body(self.fc(h).view(h.shape[0], self.filters, self.base, self.base))


class BEGANEncoder(nn.Module):
    """image -> 3x3 conv -> [2 conv, stride-2 conv (+n channels)] x scales -> 2 conv -> FC -> h."""

    def __init__(self, hidden_dim: int, image_shape, filters: int = 32, init: str = "xavier"):
        super().__init__()
        channels, size, _ = image_shape
        base, scales = scales_for(size)
        layers: list[nn.Module] = [nn.Conv2d(channels, filters, 3, 1, 1), nn.ELU(inplace=True)]
        width = filters
        for scale in range(scales):
            layers += _conv_block(width, width)
            layers += [nn.Conv2d(width, filters * (scale + 2), 3, 2, 1), nn.ELU(inplace=True)]
            width = filters * (scale + 2)
        layers += _conv_block(width, width)
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(width * base**2, hidden_dim)
        initialise(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


class BEGANGenerator(BEGANDecoder):
    """G: the decoder's architecture with its own weights, fed z directly in place of h."""


class BEGANAutoEncoder(nn.Module):
    """BEGAN's D: encoder -> embedding h -> decoder. ``forward`` returns (reconstruction, h)."""

    def __init__(self, hidden_dim: int, image_shape, filters: int = 32, init: str = "xavier"):
        super().__init__()
        self.encoder = BEGANEncoder(hidden_dim, image_shape, filters, init)
        self.decoder = BEGANDecoder(hidden_dim, image_shape, filters, init)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.decoder(h), h
