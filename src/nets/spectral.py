"""Spectral normalisation (Miyato et al. 2018, SN-GAN Eq. 8) as a parametrization that also runs
under ``torch.func.vmap``: torch's own writes its power-iteration vectors with ``out=`` arguments,
which vmap cannot batch, so a population could not stack an SN critic. Same buffers (``_u``,
``_v``), same initial draws and the same arithmetic as ``torch.nn.utils.parametrizations``."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


def _normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """F.normalize(x, dim=0, eps=eps) of a vector."""
    return x / torch.linalg.vector_norm(x, dim=0, keepdim=True).clamp_min(eps)


class SpectralNorm(nn.Module):
    """W / sigma(W), sigma estimated by ``n_power_iterations`` power iterations per training
    forward, the vectors kept in place between forwards."""

    def __init__(
        self, weight: torch.Tensor, n_power_iterations: int = 1, dim: int = 0, eps: float = 1e-12
    ):
        super().__init__()
        self.dim = dim if dim >= 0 else dim + weight.ndim
        self.eps = eps
        self.n_power_iterations = n_power_iterations
        matrix = self._matrix(weight)
        h, w = matrix.shape
        u = matrix.new_empty(h).normal_(0, 1)
        v = matrix.new_empty(w).normal_(0, 1)
        self.register_buffer("_u", _normalize(u, eps))
        self.register_buffer("_v", _normalize(v, eps))
        self._power_method(matrix, 15)

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        if self.dim != 0:
            weight = weight.permute(self.dim, *(d for d in range(weight.dim()) if d != self.dim))
        return weight.flatten(1)

    @torch.no_grad()
    def _power_method(self, matrix: torch.Tensor, iterations: int) -> None:
        for _ in range(iterations):
            self._u.copy_(_normalize(torch.mv(matrix, self._v), self.eps))
            self._v.copy_(_normalize(torch.mv(matrix.mT, self._u), self.eps))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        matrix = self._matrix(weight)
        if self.training:
            self._power_method(matrix, self.n_power_iterations)
        u, v = self._u.clone(), self._v.clone()
        sigma = torch.vdot(u, torch.mv(matrix, v))
        return weight / sigma

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value


def spectral_norm(module: nn.Module, name: str = "weight") -> nn.Module:
    """``torch.nn.utils.parametrizations.spectral_norm`` with the vmap-able SpectralNorm."""
    weight = getattr(module, name)
    transposed = isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
    parametrize.register_parametrization(
        module, name, SpectralNorm(weight, dim=1 if transposed else 0)
    )
    return module
