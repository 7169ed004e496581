"""One optimizer for a population: each member steps its own slice of every stacked parameter with
its own optimizer kind (Adam, SGD or RMSprop: the GAN grid's optimD / optimG axes, WGAN's RMSprop)
and hyper-parameters, with exactly the update torch.optim.Adam / SGD / RMSprop would make for it.

A member can be frozen (it diverged): its parameters, moments and step count stay as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MemberOptimizer:
    """One member's optimizer, as its config builds it (conf/optimizer/*.yaml)."""

    kind: str  # "adam" | "sgd" | "rmsprop"
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.0
    alpha: float = 0.99  # RMSprop's smoothing constant

    @classmethod
    def from_torch(cls, optimizer: torch.optim.Optimizer) -> MemberOptimizer:
        """The settings of a built torch optimizer (Adam, SGD or RMSprop, one param group, no
        extras); a ValueError naming what a population does not step."""
        group = optimizer.param_groups[0]
        unsupported = [
            key
            for key in ("weight_decay", "amsgrad", "nesterov", "maximize", "dampening", "centered")
            if group.get(key)
        ]
        if isinstance(optimizer, torch.optim.RMSprop) and group.get("momentum"):
            unsupported.append("momentum")
        if unsupported:
            raise ValueError(
                f"a population steps {type(optimizer).__name__} without {unsupported} (set "
                "them to 0 / false, or train these jobs without hydra/launcher=population)"
            )
        if isinstance(optimizer, torch.optim.Adam):
            return cls("adam", group["lr"], tuple(group["betas"]), group["eps"])
        if isinstance(optimizer, torch.optim.SGD):
            return cls("sgd", group["lr"], momentum=group["momentum"])
        if isinstance(optimizer, torch.optim.RMSprop):
            return cls("rmsprop", group["lr"], eps=group["eps"], alpha=group["alpha"])
        raise ValueError(
            f"a population steps Adam, SGD and RMSprop, not {type(optimizer).__name__}"
        )


#: below this many weights a member, a GPU steps Adam faster vectorized (launch-bound); above,
#: through per-member fused kernels (bandwidth-bound). Measured on an H200: small cell (0.7 M
#: weights) K = 128: 16 208 vs 4 065 member-steps/s; medium (2.5 M): 7 759 vs 2 850; largest
#: (50 M, K = 32): 565 vs 1 057 (the per-member numbers before its views were made once).
VECTORIZED_BELOW = 8_000_000


def prefers_vectorized(params: list[torch.Tensor], device: torch.device) -> bool:
    """The faster Adam form for these stacked parameters: vectorized for narrow nets on a GPU,
    per-member fused kernels otherwise (on a CPU always: docs/sweeps.md)."""
    per_member = sum(p[0].numel() for p in params)
    return device.type == "cuda" and per_member < VECTORIZED_BELOW


def dense(t: torch.Tensor) -> torch.Tensor:
    """``t``, or its transpose where that is contiguous: a member's slice of a weight stored
    transposed (src/population/stack.py) goes through the fused kernels without a copy. The
    update is element-wise, so any layout shared by a parameter, its gradient and its moments
    gives the same result."""
    if t.dim() == 2 and not t.is_contiguous() and t.mT.is_contiguous():
        return t.mT
    return t


class StackedOptimizer:
    """Steps every stacked parameter [K, ...] with per-member Adam, SGD or RMSprop.

    Adam members, two implementations of the same update (``prefers_vectorized`` picks one per
    stacked net unless told):

    - per member (CPU; GPU for wide nets): member k's slices of all parameters go through torch's
      own fused Adam kernel (the one ``torch.optim.Adam(fused=True)``, the project's default,
      runs) with that member's hyper-parameters: K kernel launches a step, one pass over memory
      each. A frozen member's call is skipped inside the kernel (its ``found_inf`` flag, as AMP's
      skipped steps), so nothing is read back to the host.
    - vectorized (GPU, nets under VECTORIZED_BELOW weights a member): one set of element-wise
      kernels per stacked parameter for all members at once, each member's lr / betas / eps /
      step count as [K] tensors: fewer launches (K = 128 small nets are launch-bound on a GPU)
      but ~4x the memory traffic of the fused kernel (wide nets are bandwidth-bound there).

    SGD members (with or without momentum): on a CPU in the per-member form unless told
    vectorized (each member's own slices, as torch.optim.SGD updates them; the active mask is read
    on the host there), on a GPU in the vectorized form, masked per member.
    The members' step counts and the ``active`` mask live on the parameters' device; a member
    that is not active (it diverged) keeps its parameters, moments and step count as they are.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        members: list[MemberOptimizer],
        active: torch.Tensor | None = None,
        vectorized: bool | None = None,
    ):
        self.params = list(params)
        self.members = members
        size = len(members)
        if any(p.shape[0] != size for p in self.params):
            raise ValueError(f"every stacked parameter needs a leading dimension of {size}")
        device = self.params[0].device
        if vectorized is None:
            vectorized = prefers_vectorized(self.params, device)
        self.vectorized = vectorized
        self.steps = torch.zeros(size, dtype=torch.long, device=device)
        # shared with the other optimizer of the population (a divergence freezes both)
        if active is None:
            active = torch.ones(size, dtype=torch.bool, device=device)
        self.active = active
        self.any_adam = any(m.kind == "adam" for m in members)
        self.any_sgd = any(m.kind == "sgd" for m in members)
        self.any_rmsprop = any(m.kind == "rmsprop" for m in members)
        # state only for the kinds present (the largest grid cell's G has 44 M weights a member)
        self.exp_avg = [torch.zeros_like(p) for p in self.params] if self.any_adam else []
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params] if self.any_adam else []
        self.momentum_buffer = [torch.zeros_like(p) for p in self.params] if self.any_sgd else []
        self.square_avg = [torch.zeros_like(p) for p in self.params] if self.any_rmsprop else []
        # Adam's step count t per member, float32 as the fused kernel reads it
        self.adam_steps = torch.zeros(size, dtype=torch.float32, device=device)
        self.adam_members = [k for k, m in enumerate(members) if m.kind == "adam"]
        # each member's slices of the persistent tensors, made once (making ~4 x 14 views a
        # member every step cost ~100 us a member on the GPU machine's CPU)
        self.member_views = {
            k: (
                [dense(p[k]) for p in self.params],
                [dense(m[k]) for m in self.exp_avg],
                [dense(v[k]) for v in self.exp_avg_sq],
            )
            for k in self.adam_members
        }

        def column(values) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        self.is_adam = torch.tensor([m.kind == "adam" for m in members], device=device)
        self.is_sgd = torch.tensor([m.kind == "sgd" for m in members], device=device)
        self.is_rmsprop = torch.tensor([m.kind == "rmsprop" for m in members], device=device)
        # the learning rates: a tensor for the vectorized forms, a host copy for the per-member
        # ones (changed between epochs by ``set_lr``: BEGAN's decay)
        self.lrs = [m.lr for m in members]
        self.lr = column(self.lrs)
        self.alpha = column([m.alpha for m in members])
        self.beta1 = column([m.betas[0] for m in members])
        self.beta2 = column([m.betas[1] for m in members])
        self.eps = column([m.eps for m in members])
        self.momentum = column([m.momentum for m in members])

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    _TENSORS = ("steps", "active", "adam_steps")
    _LISTS = ("exp_avg", "exp_avg_sq", "momentum_buffer", "square_avg")

    def set_lr(self, k: int, lr: float) -> None:
        self.lrs[k] = float(lr)
        self.lr[k] = float(lr)

    def state_dict(self) -> dict:
        """Step counts, the active mask, the learning rates and every moment / buffer (for a
        population checkpoint)."""
        state = {name: getattr(self, name) for name in (*self._TENSORS, *self._LISTS)}
        return {**state, "lrs": list(self.lrs)}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Copy ``state`` in place (the active mask stays the tensor both optimizers share)."""
        for name in self._TENSORS:
            getattr(self, name).copy_(state[name])
        for name in self._LISTS:
            for mine, saved in zip(getattr(self, name), state.get(name, []), strict=True):
                mine.copy_(saved)
        for k, lr in enumerate(state.get("lrs", self.lrs)):
            self.set_lr(k, lr)

    @torch.no_grad()
    def export_member(self, k: int, pairs, optimizer: torch.optim.Optimizer) -> None:
        """Fill ``optimizer`` (torch's own, built over member k's unstacked net) with member k's
        state as torch would hold it after the same steps: Adam's step count and moments, SGD's
        momentum buffers (none before the first step, none for plain SGD). ``pairs``:
        ModelStack.member_pairs of the net."""
        member = self.members[k]
        if int(self.steps[k]) == 0:
            return
        index = {id(p): i for i, p in enumerate(self.params)}
        adam_steps = float(self.adam_steps[k])
        for stacked, mine, take in pairs:
            i = index[id(stacked)]
            # on the net's device (a member's checkpoint is written from a host copy of its net)
            if member.kind == "adam":
                optimizer.state[mine] = {
                    "step": torch.tensor(adam_steps, dtype=torch.float32),
                    "exp_avg": take(self.exp_avg[i]).to(mine.device, copy=True),
                    "exp_avg_sq": take(self.exp_avg_sq[i]).to(mine.device, copy=True),
                }
            elif member.kind == "rmsprop":
                optimizer.state[mine] = {
                    "step": torch.tensor(float(self.steps[k]), dtype=torch.float32),
                    "square_avg": take(self.square_avg[i]).to(mine.device, copy=True),
                }
            elif member.momentum:
                buffer = take(self.momentum_buffer[i]).to(mine.device, copy=True)
                optimizer.state[mine] = {"momentum_buffer": buffer}
        for group in optimizer.param_groups:  # a decayed learning rate travels too
            group["lr"] = self.lrs[k]

    @torch.no_grad()
    def replace_member(self, k: int, member: MemberOptimizer) -> None:
        """A new member in slot k (a search refills a pruned member's slot): its settings, and
        step counts and moments from zero, as a fresh torch optimizer starts. Its kind must be
        one the population holds state for (a ValueError otherwise)."""
        held = {"adam": self.any_adam, "sgd": self.any_sgd, "rmsprop": self.any_rmsprop}
        if not held[member.kind]:
            kinds = sorted(kind for kind, present in held.items() if present)
            raise ValueError(f"a {member.kind} member cannot join a population stepping {kinds}")
        self.members[k] = member
        self.steps[k] = 0
        self.adam_steps[k] = 0.0
        for name in self._LISTS:
            for tensor in getattr(self, name):
                tensor[k].zero_()
        self.set_lr(k, member.lr)
        for column, value in (
            (self.alpha, member.alpha),
            (self.beta1, member.betas[0]),
            (self.beta2, member.betas[1]),
            (self.eps, member.eps),
            (self.momentum, member.momentum),
        ):
            column[k] = float(value)
        for kind in ("adam", "sgd", "rmsprop"):
            getattr(self, f"is_{kind}")[k] = member.kind == kind
        self.adam_members = [i for i, m in enumerate(self.members) if m.kind == "adam"]
        if member.kind == "adam" and k not in self.member_views:
            self.member_views[k] = (
                [dense(p[k]) for p in self.params],
                [dense(m[k]) for m in self.exp_avg],
                [dense(v[k]) for v in self.exp_avg_sq],
            )

    def freeze(self, member: int) -> None:
        """Stop updating ``member`` (its state stays as it was at its last good step)."""
        self.active[member] = False

    @torch.no_grad()
    def step(self, members: torch.Tensor | None = None) -> None:
        """One step of the active members (and of ``members`` only, when given: the members
        whose schedule has a step on this batch)."""
        active = self.active if members is None else self.active & members
        first_step = self.steps == 0
        self.steps += active.long()
        with_grad = [i for i, p in enumerate(self.params) if p.grad is not None]
        # on a GPU a step never reads the device (nor may it, in a CUDA graph)
        vectorized = self.vectorized or self.params[0].device.type != "cpu"
        if self.any_adam:
            self.adam_steps += (active & self.is_adam).float()
            if self.vectorized:
                self._adam_vectorized(with_grad, active)
            else:
                self._adam_per_member(with_grad, active)
        if self.any_sgd:
            if vectorized:
                self._sgd_vectorized(with_grad, first_step, active)
            else:
                self._sgd_per_member(with_grad, first_step, active)
        if self.any_rmsprop:
            if vectorized:
                self._rmsprop_vectorized(with_grad, active)
            else:
                self._rmsprop_per_member(with_grad, active)

    @staticmethod
    def _member_view(p: torch.Tensor) -> tuple:
        return (-1,) + (1,) * (p.dim() - 1)

    def _adam_per_member(self, with_grad: list[int], active: torch.Tensor) -> None:
        # 1.0 where a member must not move: the kernel then returns without touching anything
        skip = (~active).float()
        every = len(with_grad) == len(self.params)
        for k in self.adam_members:
            member = self.members[k]
            params, exp_avg, exp_avg_sq = self.member_views[k]
            if not every:
                params, exp_avg, exp_avg_sq = (
                    [views[i] for i in with_grad] for views in (params, exp_avg, exp_avg_sq)
                )
            torch._fused_adam_(
                params,
                [dense(self.params[i].grad[k]) for i in with_grad],
                exp_avg,
                exp_avg_sq,
                [],
                [self.adam_steps[k]] * len(with_grad),
                amsgrad=False,
                lr=self.lrs[k],
                beta1=member.betas[0],
                beta2=member.betas[1],
                weight_decay=0.0,
                eps=member.eps,
                maximize=False,
                grad_scale=None,
                found_inf=skip[k],
            )

    def _adam_vectorized(self, with_grad: list[int], active: torch.Tensor) -> None:
        adam = self.is_adam & active
        # torch.optim.Adam's arithmetic with each member's own step count t
        t = self.adam_steps.clamp_min(1)
        step_size = torch.where(adam, self.lr / (1 - self.beta1**t), 0.0)
        sqrt_bias2 = (1 - self.beta2**t).sqrt()
        # weights that leave a frozen member's (or an SGD member's) moments where they are
        weight1 = torch.where(adam, 1 - self.beta1, 0.0)
        decay2 = torch.where(adam, self.beta2, 1.0)
        weight2 = torch.where(adam, 1 - self.beta2, 0.0)
        for i in with_grad:
            p = self.params[i]
            view = self._member_view(p)
            # a frozen member's gradient can be NaN (0 * inf in its backward): never let it in
            grad = torch.where(adam.view(view), p.grad, 0.0)
            exp_avg, exp_avg_sq = self.exp_avg[i], self.exp_avg_sq[i]
            exp_avg.lerp_(grad, weight1.view(view))
            exp_avg_sq.mul_(decay2.view(view)).addcmul_(grad * weight2.view(view), grad)
            denom = (exp_avg_sq.sqrt() / sqrt_bias2.view(view)).add_(self.eps.view(view))
            p.addcdiv_(exp_avg * step_size.view(view), denom, value=-1.0)

    def _sgd_per_member(
        self, with_grad: list[int], first_step: torch.Tensor, active: torch.Tensor
    ) -> None:
        """The CPU's SGD: each active SGD member's own slices, updated as torch.optim.SGD does it
        (buffer = grad at the first step, then momentum * buffer + grad; p -= lr * buffer). One
        pass over a member's weights, where the masked form makes ~7 over every member's: on a
        memory-bound CPU the reduced GAN grid's populations of 8 stepped 1.9x slower with it."""
        active, first = active.tolist(), first_step.tolist()
        for k, member in enumerate(self.members):
            if member.kind != "sgd" or not active[k]:
                continue
            params = [dense(self.params[i][k]) for i in with_grad]
            grads = [dense(self.params[i].grad[k]) for i in with_grad]
            if member.momentum:
                buffers = [dense(self.momentum_buffer[i][k]) for i in with_grad]
                if first[k]:
                    for buffer, grad in zip(buffers, grads, strict=True):
                        buffer.copy_(grad)
                else:
                    torch._foreach_mul_(buffers, member.momentum)
                    torch._foreach_add_(buffers, grads)
                grads = buffers
            torch._foreach_add_(params, grads, alpha=-self.lrs[k])

    def _sgd_vectorized(
        self, with_grad: list[int], first_step: torch.Tensor, active: torch.Tensor
    ) -> None:
        sgd = self.is_sgd & active
        lr = torch.where(sgd, self.lr, 0.0)
        # torch.optim.SGD's buffer: the gradient at the first step, then momentum * buffer + grad
        keep = torch.where(first_step, 0.0, self.momentum)
        for i in with_grad:
            p = self.params[i]
            view = self._member_view(p)
            buffer = self.momentum_buffer[i]
            grad = torch.where(sgd.view(view), p.grad, 0.0)
            buffer.copy_(torch.where(sgd.view(view), buffer * keep.view(view) + grad, buffer))
            p.sub_(buffer * lr.view(view))

    def _rmsprop_per_member(self, with_grad: list[int], active: torch.Tensor) -> None:
        """torch.optim.RMSprop's update (not centered, no momentum) of each active RMSprop
        member's own slices: square_avg = alpha * square_avg + (1 - alpha) * grad^2;
        p -= lr * grad / (sqrt(square_avg) + eps)."""
        active = active.tolist()
        for k, member in enumerate(self.members):
            if member.kind != "rmsprop" or not active[k]:
                continue
            grads = [dense(self.params[i].grad[k]) for i in with_grad]
            averages = [dense(self.square_avg[i][k]) for i in with_grad]
            torch._foreach_mul_(averages, member.alpha)
            torch._foreach_addcmul_(averages, grads, grads, value=1 - member.alpha)
            denominators = torch._foreach_sqrt(averages)
            torch._foreach_add_(denominators, member.eps)
            params = [dense(self.params[i][k]) for i in with_grad]
            torch._foreach_addcdiv_(params, grads, denominators, value=-self.lrs[k])

    def _rmsprop_vectorized(self, with_grad: list[int], active: torch.Tensor) -> None:
        rmsprop = self.is_rmsprop & active
        decay = torch.where(rmsprop, self.alpha, 1.0)
        weight = torch.where(rmsprop, 1 - self.alpha, 0.0)
        lr = torch.where(rmsprop, self.lr, 0.0)
        for i in with_grad:
            p = self.params[i]
            view = self._member_view(p)
            grad = torch.where(rmsprop.view(view), p.grad, 0.0)
            average = self.square_avg[i]
            average.mul_(decay.view(view)).addcmul_(grad * weight.view(view), grad)
            denominator = average.sqrt().add_(self.eps.view(view))
            p.addcdiv_(grad * lr.view(view), denominator, value=-1.0)
