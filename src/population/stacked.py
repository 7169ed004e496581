"""K independent MLP nets of the EBGAN paper's grid as one "population" net: every parameter and
buffer gets a leading member dimension, inputs are [K, B, ...], and each layer runs as one batched
matmul (``torch.baddbmm``) for all members at once.

Members may differ in hidden width: narrower members are zero-padded to the widest. A padded unit
has zero weights in and out and a zero bias, so its pre-activation is 0, its batch-norm output is
its shift β = 0, and no gradient reaches it (the next layer's weights from it are zero): its
parameters stay exactly zero under Adam and SGD, and the member computes exactly what its own
unpadded net computes. Each member keeps its own batch-norm statistics and dropout rate.

``stack([...])`` builds the population from ordinary nets (src/nets/mlp.py) and ``unstack(k, net)``
writes member k back into an ordinary net of its own width, so a member's checkpoint is the one a
single run writes.
"""

from __future__ import annotations

import torch
from torch import nn

from src.nets.mlp import MLPAutoEncoder, MLPClassifier, MLPGenerator

MLP_NETS = (MLPGenerator, MLPClassifier, MLPAutoEncoder)


class StackedLinear(nn.Module):
    """K linear layers: [K, B, in] -> [K, B, out]. The weight is stored as [K, in, out], nn.Linear's
    transposed: baddbmm then needs no transposed operand (measured: 26 % less time per layer,
    forward and backward, than [K, out, in] on the 2-core CPU)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)


class StackedBatchNorm(nn.Module):
    """K BatchNorm1d layers, each normalising its member's batch with its own running statistics
    (the same arithmetic as nn.BatchNorm1d: biased variance to normalise, unbiased to track)."""

    tracks_batch_statistics = True  # src.nets.batch_norm.batch_statistics switches it too

    def __init__(self, weight, bias, running_mean, running_var, momentum: float, eps: float):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)
        self.register_buffer("running_mean", running_mean)
        self.register_buffer("running_var", running_var)
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.momentum = momentum
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean = x.mean(dim=1)
            var = x.var(dim=1, unbiased=False)
            with torch.no_grad():
                self.num_batches_tracked += 1
                n = x.shape[1]
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach() * n / max(n - 1, 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean.unsqueeze(1)) * torch.rsqrt(var.unsqueeze(1) + self.eps)
        return x_hat * self.weight.unsqueeze(1) + self.bias.unsqueeze(1)


class StackedDropout(nn.Module):
    """Dropout with a rate per member (0 for members without dropout); independent masks."""

    def __init__(self, rates: torch.Tensor):
        super().__init__()
        self.register_buffer("rates", rates)
        # known here, so a forward pass never reads the rates back from the GPU
        self.any_dropout = bool((rates > 0).any())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.any_dropout:
            return x
        keep = 1 - self.rates.view(-1, 1, 1)
        mask = torch.rand_like(x) < keep
        return x * mask / keep


def _padded(tensors: list[torch.Tensor], fill: float = 0.0) -> torch.Tensor:
    """Stack tensors of different sizes into [K, max sizes...], zero-padded at the end."""
    shape = [max(t.shape[d] for t in tensors) for d in range(tensors[0].dim())]
    out = torch.full((len(tensors), *shape), fill, dtype=tensors[0].dtype)
    for k, t in enumerate(tensors):
        out[(k, *(slice(0, s) for s in t.shape))] = t
    return out


def _layers(net: nn.Module) -> list[nn.Module]:
    """The net's layers in forward order: its hidden stack, then its output (decoder) layer."""
    if isinstance(net, MLPAutoEncoder):
        return [*net.encoder, net.decoder]
    return [*net.body, net.out]


def _check_stackable(nets: list[nn.Module]) -> None:
    kinds = {type(n) for n in nets}
    if len(kinds) != 1 or not issubclass(kinds.pop(), MLP_NETS):
        raise ValueError(
            f"a population stacks nets of one MLP class, got {sorted(map(str, kinds))}"
        )
    if any(getattr(n, "num_classes", 0) for n in nets):
        raise ValueError("class-conditional nets are not stacked (yet)")
    layouts = {
        tuple(type(layer).__name__ for layer in _layers(n) if not _is_dropout(layer)) for n in nets
    }
    if len(layouts) != 1:
        raise ValueError(f"members differ in depth or layer types: {sorted(layouts)}")


def _is_dropout(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Dropout)


class StackedMLP(nn.Module):
    """A population of one MLP net class (generator, classifier D or auto-encoder D)."""

    def __init__(self, nets: list[nn.Module]):
        super().__init__()
        _check_stackable(nets)
        self.kind = type(nets[0]).__name__
        self.size = len(nets)
        self.image_shape = tuple(getattr(nets[0], "image_shape", (1, 28, 28)))
        per_member = [[layer for layer in _layers(n) if not _is_dropout(layer)] for n in nets]
        dropout_rates = torch.tensor(
            [next((m.p for m in _layers(n) if _is_dropout(m)), 0.0) for n in nets]
        )
        layers: list[nn.Module] = []
        for position, template in enumerate(per_member[0]):
            group = [member[position] for member in per_member]
            if isinstance(template, nn.Linear):
                layers.append(
                    StackedLinear(
                        _padded([m.weight.detach().T for m in group]),
                        _padded([m.bias.detach() for m in group]),
                    )
                )
            elif isinstance(template, nn.BatchNorm1d):
                layers.append(
                    StackedBatchNorm(
                        _padded([m.weight.detach() for m in group]),
                        _padded([m.bias.detach() for m in group]),
                        _padded([m.running_mean for m in group]),
                        _padded([m.running_var for m in group], fill=1.0),
                        template.momentum,
                        template.eps,
                    )
                )
            elif isinstance(template, nn.ReLU):
                layers.append(nn.ReLU())
                if (dropout_rates > 0).any():
                    layers.append(StackedDropout(dropout_rates.clone()))
            else:
                raise ValueError(f"cannot stack a {type(template).__name__} layer")
        self.hidden = nn.Sequential(*layers[:-1])
        self.head = layers[-1]

    def forward(self, x: torch.Tensor):
        """[K, B, ...] -> the outputs of each member's own net, stacked (see the MLP classes)."""
        flat = x.flatten(2)
        hidden = self.hidden(flat)
        out = self.head(hidden)
        if self.kind == "MLPGenerator":
            return torch.tanh(out).view(*x.shape[:2], *self.image_shape)
        if self.kind == "MLPClassifier":
            return out.squeeze(2)
        return out.view(*x.shape[:2], *self.image_shape), hidden  # auto-encoder: (recon, S)

    def member_pairs(self, k: int, net: nn.Module) -> list[tuple]:
        """(stacked parameter, ``net``'s parameter, ``take``) for every parameter of member k:
        ``take(t)`` cuts member k's part out of a tensor shaped like the stacked parameter (the
        parameter itself, or an optimizer moment of it) in the layout of ``net``'s parameter."""
        stacked = [
            m for m in [*self.hidden, self.head] if isinstance(m, (StackedLinear, StackedBatchNorm))
        ]
        own = [layer for layer in _layers(net) if isinstance(layer, (nn.Linear, nn.BatchNorm1d))]
        if len(stacked) != len(own):
            raise ValueError(f"member {k} does not fit a {type(net).__name__} of this depth")
        pairs = []
        for source, target in zip(stacked, own, strict=True):
            for name in ("weight", "bias"):
                mine = getattr(target, name)
                transpose = name == "weight" and isinstance(target, nn.Linear)  # stored [in, out]
                cut = tuple(slice(0, s) for s in mine.shape)

                def take(t, transpose=transpose, cut=cut):
                    member = t[k].T if transpose else t[k]
                    return member[cut]

                pairs.append((getattr(source, name), mine, take))
        return pairs

    @torch.no_grad()
    def unstack(self, k: int, net: nn.Module) -> nn.Module:
        """Copy member k's parameters and buffers into ``net`` (an ordinary net of its width)."""
        for stacked, mine, take in self.member_pairs(k, net):
            mine.copy_(take(stacked))
        stacked = [m for m in [*self.hidden, self.head] if isinstance(m, StackedBatchNorm)]
        own = [layer for layer in _layers(net) if isinstance(layer, nn.BatchNorm1d)]
        for source, target in zip(stacked, own, strict=True):
            target.num_batches_tracked.copy_(source.num_batches_tracked)
            for name in ("running_mean", "running_var"):
                mine = getattr(target, name)
                mine.copy_(getattr(source, name)[k][: mine.shape[0]])
        return net
