"""The fully connected nets of the EBGAN paper's MNIST grid (Zhao et al. 2016, Sec. 5.1, Table 1).

Conventions (the paper's, where it states them):
- ``n_layers`` counts weight layers. For the auto-encoder D the paper says "nLayerD is the total
  number of layers of Enc and Dec put together; only Enc's layer count varies, Dec is always a
  single layer": Enc = nLayerD - 1 layers of width sizeD, Dec = one linear layer back to the pixels.
  G and the classifier D follow the same count: n_layers - 1 hidden layers of width ``hidden`` + one
  output layer.
- Batch norm after every hidden weight layer except D's input layer (none on any output layer: G's
  image, D's logit or reconstruction); ReLU activations. A WGAN critic may use layer norm or none
  instead (``norm``). The auto-encoder's embedding S (for the pulling-away term) is the encoder's
  last hidden activation, after ReLU (and dropout when dropoutD).
- Weights ~ N(0, 0.02) in G and N(0, 0.002) in D, biases 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from src.nets.conditioning import append_label_vectors


def _init_normal(module: nn.Module, std: float) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, std)
            nn.init.zeros_(layer.bias)


NORMS = ("batch", "layer", "none")


def _norm_layer(norm: str, width: int) -> nn.Module | None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}[norm](width) if norm != "none" else None


def _hidden_stack(
    in_features: int,
    width: int,
    depth: int,
    batch_norm_first: bool,
    dropout: float,
    norm: str = "batch",
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(in_features if i == 0 else width, width))
        if i > 0 or batch_norm_first:
            normalisation = _norm_layer(norm, width)
            if normalisation is not None:
                layers.append(normalisation)
        layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def _check_depth(name: str, n_layers: int) -> None:
    if n_layers < 2:
        raise ValueError(
            f"{name} must be >= 2 (one hidden layer plus the output layer), got {n_layers}"
        )


class MLPGenerator(nn.Module):
    """z -> (n_layers - 1) x [Linear, BN, ReLU] -> Linear -> tanh image in [-1, 1].

    With ``num_classes`` > 0 it is G(z|y): the one-hot label is concatenated to z (Mirza & Osindero
    2014).
    """

    output_tanh = True  # the image is tanh of the last layer (src/nets/output_bias.py)

    def __init__(
        self,
        latent_dim: int,
        n_layers: int,
        hidden: int,
        image_shape,
        init_std: float = 0.02,
        num_classes: int = 0,
    ):
        super().__init__()
        _check_depth("arch.nLayerG", n_layers)
        self.latent_dim = latent_dim
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.body = _hidden_stack(
            latent_dim + num_classes, hidden, n_layers - 1, batch_norm_first=True, dropout=0.0
        )
        self.out = nn.Linear(hidden, math.prod(self.image_shape))
        _init_normal(self, init_std)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = append_label_vectors(z, labels, self.num_classes, type(self).__name__)
        return torch.tanh(self.out(self.body(z))).view(z.shape[0], *self.image_shape)


class MLPClassifier(nn.Module):
    """The GAN discriminator / WGAN critic: image -> (n_layers - 1) hidden layers -> one score.

    ``norm``: batch norm (the paper's GAN D), layer norm or none (a WGAN-GP critic: its penalty is
    per sample). With ``num_classes`` > 0 it is D(x|y): the one-hot label is concatenated to the
    pixels.
    """

    def __init__(
        self,
        n_layers: int,
        hidden: int,
        image_shape,
        dropout: bool = False,
        dropout_p: float = 0.5,
        init_std: float = 0.002,
        norm: str = "batch",
        num_classes: int = 0,
    ):
        super().__init__()
        _check_depth("arch.nLayerD", n_layers)
        p = dropout_p if dropout else 0.0
        self.num_classes = num_classes
        self.body = _hidden_stack(
            math.prod(image_shape) + num_classes,
            hidden,
            n_layers - 1,
            batch_norm_first=False,
            dropout=p,
            norm=norm,
        )
        self.out = nn.Linear(hidden, 1)
        self.n_feature_layers = n_layers - 1
        _init_normal(self, init_std)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = append_label_vectors(x.flatten(1), labels, self.num_classes, type(self).__name__)
        return self.out(self.body(h)).squeeze(1)

    def logits_and_features(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, layer: int = -1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logit, activation of hidden layer ``layer``: 1..n_layers - 1, -1 the last) in one
        pass (VAE-GAN's Dis_l)."""
        if layer == -1:
            layer = self.n_feature_layers
        if not 1 <= layer <= self.n_feature_layers:
            raise ValueError(
                f"feature layer must be 1..{self.n_feature_layers} or -1 (the last), got {layer}"
            )
        h = append_label_vectors(x.flatten(1), labels, self.num_classes, type(self).__name__)
        features = None
        seen = 0
        for module in self.body:
            h = module(h)
            # a hidden layer ends at its ReLU (its dropout, when on, follows and is kept out)
            if isinstance(module, nn.ReLU):
                seen += 1
                if seen == layer:
                    features = h
        return self.out(h).squeeze(1), features


class MLPEncoder(nn.Module):
    """The VAE encoder q(z|x) = N(mu, diag sigma^2): (n_layers - 1) hidden layers -> Linear -> (mu,
    log sigma^2)."""

    def __init__(self, n_layers: int, hidden: int, image_shape, latent_dim: int):
        super().__init__()
        _check_depth("arch.nLayerD", n_layers)
        self.latent_dim = latent_dim
        self.body = _hidden_stack(
            math.prod(image_shape), hidden, n_layers - 1, batch_norm_first=False, dropout=0.0
        )
        self.out = nn.Linear(hidden, 2 * latent_dim)
        _init_normal(self, 0.02)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.out(self.body(x.flatten(1))).chunk(2, dim=1)
        return mu, logvar


class MLPAutoEncoder(nn.Module):
    """The EBGAN D: Enc = (n_layers - 1) hidden layers, Dec = one linear layer to the pixels.

    ``forward`` returns (reconstruction, embedding); the embedding (Enc's output) feeds the
    pulling-away term.
    """

    def __init__(
        self,
        n_layers: int,
        hidden: int,
        image_shape,
        dropout: bool = False,
        dropout_p: float = 0.5,
        init_std: float = 0.002,
    ):
        super().__init__()
        _check_depth("arch.nLayerD", n_layers)
        p = dropout_p if dropout else 0.0
        self.image_shape = tuple(image_shape)
        self.encoder = _hidden_stack(
            math.prod(self.image_shape), hidden, n_layers - 1, batch_norm_first=False, dropout=p
        )
        self.decoder = nn.Linear(hidden, math.prod(self.image_shape))
        _init_normal(self, init_std)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.encoder(x.flatten(1))
        return self.decoder(embedding).view(x.shape[0], *self.image_shape), embedding
