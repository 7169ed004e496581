"""Small DCGAN-style convolutional nets (Radford et al. 2015) sized for 28 or 32 px digits on a CPU.

Two stride-2 stages: the feature maps are image_size / 4 (7 for 28 px, 8 for 32 px).
"""

from __future__ import annotations

import torch
from torch import nn

from src.nets.conditioning import append_label_vectors, check_unconditional, label_vectors
from src.nets.spectral import spectral_norm


def _base_size(image_size: int) -> int:
    if image_size % 4:
        raise ValueError(
            f"arch=dcgan needs data.image_size divisible by 4 (28 or 32), got {image_size}"
        )
    return image_size // 4


def init_dcgan(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


def _up_path(in_channels: int, width: int, out_channels: int) -> nn.Sequential:
    """(2w, s, s) -> (out, 4s, 4s) through two transposed convs."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, width, 4, 2, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.ConvTranspose2d(width, out_channels, 4, 2, 1),
    )


NORMS = ("batch", "layer", "spectral", "none")


def _norm2d(norm: str, channels: int) -> nn.Module:
    """Batch norm (DCGAN), layer norm over (C, H, W) (WGAN-GP: per-sample statistics), or none
    (also for ``spectral``, which normalises the weights instead: see ``DCGANClassifier``)."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "layer":
        # one group = layer norm over (C, H, W), with a per-channel affine
        return nn.GroupNorm(1, channels)
    if norm in ("spectral", "none"):
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _down_path(in_channels: int, width: int, norm: str = "batch") -> nn.Sequential:
    """(c, 4s, 4s) -> (2w, s, s) through two stride-2 convs."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 4, 2, 1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(width, 2 * width, 4, 2, 1, bias=norm in ("spectral", "none")),
        _norm2d(norm, 2 * width),
        nn.LeakyReLU(0.2, inplace=True),
    )


class DCGANGenerator(nn.Module):
    """z -> Linear -> (2w, s, s) -> two transposed convs -> tanh image.

    With ``num_classes`` > 0 it is G(z|y): the one-hot label is concatenated to z.
    """

    output_tanh = True  # the image is tanh of the last layer (src/nets/output_bias.py)

    def __init__(self, latent_dim: int, image_shape, width: int = 64, num_classes: int = 0):
        super().__init__()
        channels, size, _ = image_shape
        self.latent_dim = latent_dim
        self.base = _base_size(size)
        self.num_classes = num_classes
        self.project = nn.Sequential(
            nn.Linear(latent_dim + num_classes, 2 * width * self.base**2, bias=False),
            nn.BatchNorm1d(2 * width * self.base**2),
            nn.ReLU(inplace=True),
        )
        self.up = _up_path(2 * width, width, channels)
        init_dcgan(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = append_label_vectors(z, labels, self.num_classes, type(self).__name__)
        h = self.project(z).view(z.shape[0], -1, self.base, self.base)
        return torch.tanh(self.up(h))


class DCGANClassifier(nn.Module):
    """image -> two stride-2 convs -> a logit (GAN) or a score (WGAN critic; ``norm`` any).

    ``norm="spectral"``: no normalisation layer; every conv and linear weight is divided by its
    largest singular value, estimated by one power iteration per training forward (Miyato et al.
    2018, SN-GAN Eq. 8), which keeps D 1-Lipschitz per layer.
    With ``num_classes`` > 0 it is D(x|y): the one-hot label enters as C constant image channels.
    """

    def __init__(self, image_shape, width: int = 64, norm: str = "batch", num_classes: int = 0):
        super().__init__()
        channels, size, _ = image_shape
        self.num_classes = num_classes
        self.down = _down_path(channels + num_classes, width, norm)
        self.out = nn.Linear(2 * width * _base_size(size) ** 2, 1)
        init_dcgan(self)
        if norm == "spectral":
            for layer in self.modules():
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    spectral_norm(layer)

    #: hidden layers ``logits_and_features`` can read: the two conv stages
    n_feature_layers = 2

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits_and_features(x, labels)[0]

    def logits_and_features(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, layer: int = -1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logit, activation of conv stage ``layer``: 1 or 2, -1 the last) in one pass (VAE-GAN's
        Dis_l)."""
        if self.num_classes:
            planes = label_vectors(labels, self.num_classes, x.shape[0])[:, :, None, None]
            x = torch.cat([x, planes.expand(-1, -1, x.shape[2], x.shape[3])], dim=1)
        else:
            check_unconditional(labels, type(self).__name__)
        layer = _feature_layer(layer, self.n_feature_layers)
        first = self.down[:2](x)  # conv + LeakyReLU
        last = self.down[2:](first)  # conv + norm + LeakyReLU
        return self.out(last.flatten(1)).squeeze(1), (first if layer == 1 else last)


def _feature_layer(layer: int, available: int) -> int:
    if layer == -1:
        return available
    if not 1 <= layer <= available:
        raise ValueError(f"feature layer must be 1..{available} or -1 (the last), got {layer}")
    return layer


class DCGANEncoder(nn.Module):
    """The VAE encoder q(z|x) = N(mu, diag sigma^2): D's two conv stages -> Linear -> (mu, log
    sigma^2)."""

    def __init__(self, image_shape, latent_dim: int, width: int = 64):
        super().__init__()
        channels, size, _ = image_shape
        self.latent_dim = latent_dim
        self.down = _down_path(channels, width)
        self.out = nn.Linear(2 * width * _base_size(size) ** 2, 2 * latent_dim)
        init_dcgan(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.out(self.down(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar


class DCGANAutoEncoder(nn.Module):
    """Conv auto-encoder D for EBGAN: conv encoder -> linear embedding -> transposed-conv decoder.

    The bottleneck (``embedding_dim``) keeps D from learning the identity; its output is the
    embedding S of the pulling-away term. ``forward`` returns (reconstruction, embedding).
    """

    def __init__(self, image_shape, width: int = 64, embedding_dim: int = 64):
        super().__init__()
        channels, size, _ = image_shape
        self.base = _base_size(size)
        flat = 2 * width * self.base**2
        self.encoder = nn.Sequential(
            _down_path(channels, width), nn.Flatten(), nn.Linear(flat, embedding_dim)
        )
        self.expand = nn.Sequential(
            nn.Linear(embedding_dim, flat), nn.BatchNorm1d(flat), nn.ReLU(inplace=True)
        )
        self.up = _up_path(2 * width, width, channels)
        init_dcgan(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.encoder(x)
        h = self.expand(embedding).view(x.shape[0], -1, self.base, self.base)
        return self.up(h), embedding
