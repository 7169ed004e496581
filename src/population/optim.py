"""One optimizer for a population: each member steps its own slice of every stacked parameter with
its own optimizer kind (Adam or SGD, as the GAN grid's optimD / optimG axes ask) and
hyper-parameters, with exactly the update torch.optim.Adam / torch.optim.SGD would make for it.

A member can be frozen (it diverged): its parameters, moments and step count stay as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MemberOptimizer:
    """One member's optimizer, as its config builds it (conf/optimizer/*.yaml)."""

    kind: str  # "adam" | "sgd"
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.0

    @classmethod
    def from_torch(cls, optimizer: torch.optim.Optimizer) -> MemberOptimizer:
        """The settings of a built torch optimizer (Adam or SGD, one param group, no extras)."""
        group = optimizer.param_groups[0]
        if group.get("weight_decay", 0) or group.get("amsgrad") or group.get("nesterov"):
            raise ValueError("a population supports Adam and SGD without weight decay / variants")
        if group.get("maximize") or group.get("dampening", 0):
            raise ValueError("a population supports Adam and SGD without maximize / dampening")
        if isinstance(optimizer, torch.optim.Adam):
            return cls("adam", group["lr"], tuple(group["betas"]), group["eps"])
        if isinstance(optimizer, torch.optim.SGD):
            return cls("sgd", group["lr"], momentum=group["momentum"])
        raise ValueError(f"a population supports Adam and SGD, not {type(optimizer).__name__}")


class StackedOptimizer:
    """Steps every stacked parameter [K, ...] with per-member Adam or SGD."""

    def __init__(self, params: Iterable[torch.nn.Parameter], members: list[MemberOptimizer]):
        self.params = list(params)
        self.members = members
        size = len(members)
        if any(p.shape[0] != size for p in self.params):
            raise ValueError(f"every stacked parameter needs a leading dimension of {size}")

        def column(values) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float64)

        self.is_adam = torch.tensor([m.kind == "adam" for m in members])
        self.lr = column([m.lr for m in members])
        self.beta1 = column([m.betas[0] for m in members])
        self.beta2 = column([m.betas[1] for m in members])
        self.eps = column([m.eps for m in members])
        self.momentum = column([m.momentum for m in members])
        self.steps = torch.zeros(size, dtype=torch.long)
        self.active = torch.ones(size, dtype=torch.bool)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.momentum_buffer = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def freeze(self, member: int) -> None:
        """Stop updating ``member`` (its state stays as it was at its last good step)."""
        self.active[member] = False

    @torch.no_grad()
    def step(self) -> None:
        active = self.active
        self.steps += active.long()
        # per-member scalars in float64, as torch computes them in Python floats
        step = self.steps.clamp_min(1).double()
        bias1 = 1 - self.beta1**step
        bias2 = 1 - self.beta2**step
        adam_step_size = self.lr / bias1
        sqrt_bias2 = bias2.sqrt()
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            grad = p.grad

            def per_member(values: torch.Tensor, p=p) -> torch.Tensor:
                """[K] -> [K, 1, ...]: broadcast over member k's slice of p, in p's dtype."""
                return values.to(p.dtype).view(-1, *([1] * (p.dim() - 1)))

            keep = per_member(active.double()).bool()
            # Adam (torch.optim.Adam's arithmetic)
            exp_avg = torch.lerp(self.exp_avg[i], grad, per_member(1 - self.beta1))
            exp_avg_sq = self.exp_avg_sq[i] * per_member(self.beta2) + grad * grad * per_member(
                1 - self.beta2
            )
            denom = exp_avg_sq.sqrt() / per_member(sqrt_bias2) + per_member(self.eps)
            adam = p - per_member(adam_step_size) * exp_avg / denom
            # SGD (torch.optim.SGD's: the first step's buffer is the gradient itself)
            first = per_member((self.steps == 1).double()).bool()
            buffer = torch.where(
                first, grad, self.momentum_buffer[i] * per_member(self.momentum) + grad
            )
            uses_momentum = per_member((self.momentum > 0).double()).bool()
            sgd = p - per_member(self.lr) * torch.where(uses_momentum, buffer, grad)
            is_adam = per_member(self.is_adam.double()).bool()
            p.copy_(torch.where(keep, torch.where(is_adam, adam, sgd), p))
            self.exp_avg[i] = torch.where(keep & is_adam, exp_avg, self.exp_avg[i])
            self.exp_avg_sq[i] = torch.where(keep & is_adam, exp_avg_sq, self.exp_avg_sq[i])
            self.momentum_buffer[i] = torch.where(keep & ~is_adam, buffer, self.momentum_buffer[i])
