"""Translation nets: the U-Net generator and PatchGAN discriminator of pix2pix (Isola et al. 2017,
appendix 6.1) and the ResNet-block generator CycleGAN uses (Zhu et al. 2017, appendix 7.2, after
Johnson et al. 2016). Images in [-1, 1], any power-of-2 size; widths scale with ``width``."""

from __future__ import annotations

import math

import torch
from torch import nn

from src.nets.dcgan import init_dcgan

NORMS = ("batch", "instance")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":  # CycleGAN's: per image, no affine parameters
        return nn.InstanceNorm2d(channels)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class UNetGenerator(nn.Module):
    """Encoder C64-C128-C256-C512-... down to 1 x 1, decoder mirrored with a skip connection from
    every encoder layer to its mirror (pix2pix Fig. 3); dropout (0.5) in the innermost
    ``dropout_layers`` decoder blocks is the generator's only noise (the paper's z)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: int,
        width: int = 64,
        max_width_multiple: int = 8,
        dropout: float = 0.5,
        dropout_layers: int = 3,
        norm: str = "batch",
    ):
        super().__init__()
        depth = int(math.log2(image_size))
        if 2**depth != image_size or depth < 3:
            raise ValueError(f"the U-Net needs a power-of-2 image size >= 8, got {image_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        widths = [width * min(2**i, max_width_multiple) for i in range(depth)]
        self.down = nn.ModuleList()
        for i in range(depth):
            inner, outermost = i == depth - 1, i == 0
            layers = [] if outermost else [nn.LeakyReLU(0.2, inplace=True)]
            # no norm at the input layer and at the 1 x 1 bottleneck (as the authors' code)
            plain = outermost or inner
            layers.append(
                nn.Conv2d(
                    in_channels if outermost else widths[i - 1], widths[i], 4, 2, 1, bias=plain
                )
            )
            if not plain:
                layers.append(_norm(norm, widths[i]))
            self.down.append(nn.Sequential(*layers))
        self.up = nn.ModuleList()
        for j in range(depth):
            level = depth - 1 - j  # this block returns to the resolution of encoder layer level-1
            in_width = widths[-1] if j == 0 else 2 * widths[level]  # + the skip connection
            last = level == 0
            layers = [
                nn.ReLU(inplace=True),
                nn.ConvTranspose2d(
                    in_width, out_channels if last else widths[level - 1], 4, 2, 1, bias=last
                ),
            ]
            if last:
                layers.append(nn.Tanh())
            else:
                layers.append(_norm(norm, widths[level - 1]))
                if j < dropout_layers and dropout > 0:
                    layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))
        self.in_channels, self.out_channels = in_channels, out_channels
        init_dcgan(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.up[0](skips[-1])
        for j, block in enumerate(self.up[1:], start=1):
            x = block(torch.cat([x, skips[-1 - j]], dim=1))
        return x


class ResidualBlock(nn.Module):
    """R_k: two reflection-padded 3 x 3 convs with norm, ReLU between, added to the input."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            _norm(norm, channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            _norm(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """c7s1-64, d128, d256, R256 x ``blocks``, u128, u64, c7s1-out with tanh (CycleGAN appendix
    7.2: 6 blocks at 128 px, 9 at 256)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 64,
        blocks: int = 6,
        norm: str = "instance",
        downsamplings: int = 2,
    ):
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, width, 7, bias=False),
            _norm(norm, width),
            nn.ReLU(inplace=True),
        ]
        for i in range(downsamplings):
            channels = width * 2**i
            layers += [
                nn.Conv2d(channels, 2 * channels, 3, 2, 1, bias=False),
                _norm(norm, 2 * channels),
                nn.ReLU(inplace=True),
            ]
        inner = width * 2**downsamplings
        layers += [ResidualBlock(inner, norm) for _ in range(blocks)]
        for i in reversed(range(downsamplings)):
            channels = width * 2 ** (i + 1)
            layers += [
                nn.ConvTranspose2d(channels, channels // 2, 3, 2, 1, output_padding=1, bias=False),
                _norm(norm, channels // 2),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.in_channels, self.out_channels = in_channels, out_channels
        init_dcgan(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: C64-C128-... (``layers`` stride-2 stages, the first without norm), one stride-1
    stage, then a 1-channel conv: one logit per overlapping patch, [N, 1, h, w]. Receptive field
    16 px at ``layers`` = 1, 34 at 2, 70 at 3 (the paper's 70 x 70 at 256 px)."""

    def __init__(
        self,
        in_channels: int,
        width: int = 64,
        layers: int = 3,
        norm: str = "batch",
        max_width_multiple: int = 8,
    ):
        super().__init__()
        if layers < 1:
            raise ValueError(f"a PatchGAN needs layers >= 1, got {layers}")
        modules: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = width
        for n in range(1, layers + 1):
            stride = 2 if n < layers else 1
            out = width * min(2**n, max_width_multiple)
            modules += [
                nn.Conv2d(channels, out, 4, stride, 1, bias=False),
                _norm(norm, out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = out
        modules.append(nn.Conv2d(channels, 1, 4, 1, 1))
        self.net = nn.Sequential(*modules)
        self.in_channels = in_channels
        init_dcgan(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def receptive_field(layers: int) -> int:
    """Input pixels one PatchGAN logit sees: the two stride-1 4 x 4 convs see 7, and each of the
    ``layers`` stride-2 convs (first included) grows that to 2 f + 2."""
    field = 7
    for _ in range(layers):
        field = 2 * field + 2
    return field
