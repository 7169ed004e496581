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
    """Steps every stacked parameter [K, ...] with per-member Adam or SGD.

    Member k's slices of all parameters go through torch's own fused Adam kernel (the one
    ``torch.optim.Adam(fused=True)``, the project's default, runs) or through SGD's foreach
    arithmetic, with that member's hyper-parameters: K kernel calls per step, not K optimizers.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], members: list[MemberOptimizer]):
        self.params = list(params)
        self.members = members
        size = len(members)
        if any(p.shape[0] != size for p in self.params):
            raise ValueError(f"every stacked parameter needs a leading dimension of {size}")
        self.steps = torch.zeros(size, dtype=torch.long)
        self.active = torch.ones(size, dtype=torch.bool)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.momentum_buffer = [torch.zeros_like(p) for p in self.params]
        # Adam's per-tensor step counts, as torch keeps them (float32 scalars for the fused kernel)
        self.adam_steps = [[torch.zeros(()) for _ in self.params] for _ in members]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def freeze(self, member: int) -> None:
        """Stop updating ``member`` (its state stays as it was at its last good step)."""
        self.active[member] = False

    @torch.no_grad()
    def step(self) -> None:
        with_grad = [i for i, p in enumerate(self.params) if p.grad is not None]
        for k in torch.nonzero(self.active).flatten().tolist():
            member = self.members[k]
            self.steps[k] += 1
            params = [self.params[i][k] for i in with_grad]
            grads = [self.params[i].grad[k] for i in with_grad]
            if member.kind == "adam":
                steps = [self.adam_steps[k][i] for i in with_grad]
                torch._foreach_add_(steps, 1)
                torch._fused_adam_(
                    params,
                    grads,
                    [self.exp_avg[i][k] for i in with_grad],
                    [self.exp_avg_sq[i][k] for i in with_grad],
                    [],
                    steps,
                    amsgrad=False,
                    lr=member.lr,
                    beta1=member.betas[0],
                    beta2=member.betas[1],
                    weight_decay=0.0,
                    eps=member.eps,
                    maximize=False,
                    grad_scale=None,
                    found_inf=None,
                )
            elif member.momentum:
                # torch.optim.SGD: the first step's buffer is the gradient, then mu * buffer + grad
                buffers = [self.momentum_buffer[i][k] for i in with_grad]
                if int(self.steps[k]) == 1:
                    torch._foreach_copy_(buffers, grads)
                else:
                    torch._foreach_mul_(buffers, member.momentum)
                    torch._foreach_add_(buffers, grads)
                torch._foreach_add_(params, buffers, alpha=-member.lr)
            else:
                torch._foreach_add_(params, grads, alpha=-member.lr)
