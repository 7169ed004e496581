"""K models of one class as one: every parameter and buffer gets a leading member dimension, and
any method of the model (its losses, hooks, forward) runs for all members at once with
``torch.func.vmap`` over ``torch.func.functional_call`` on one template copy of the model. Nothing
here knows a model or a net: the losses are the models' own (src/models), called per member.

Members may differ in width where the net allows it: narrower members are zero-padded to the
widest (every tensor padded at the end of each dimension). A padded unit has zero weights in and
out, so it computes 0 and no gradient reaches it; whether that holds for a net (it does not for
layer norm over a padded dimension) is checked when the stack is built, by comparing each
member's outputs through the padded stack with its own net's.

Each member's value of the model's ``member_hparams`` (margin, gamma, clip value …) reaches its
methods as a tensor attribute during the call.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call, vmap


class _Method(nn.Module):
    """functional_call runs a module's forward: this forward runs one method of the model, with
    each member's hyper-parameters set as attributes and the step's inputs in its context."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, name: str, hparams: dict, step_inputs: dict | None, *args):
        model = self.model
        saved = {key: getattr(model, key) for key in hparams}
        try:
            for key, value in hparams.items():
                setattr(model, key, value)
            if step_inputs is None:
                return getattr(model, name)(*args)
            with model.step_context(**step_inputs):
                return getattr(model, name)(*args)
        finally:
            for key, value in saved.items():
                setattr(model, key, value)


def _padded(tensors: list[torch.Tensor], shape: tuple[int, ...], fill: float = 0.0):
    out = torch.full((len(tensors), *shape), fill, dtype=tensors[0].dtype)
    for k, t in enumerate(tensors):
        out[(k, *(slice(0, s) for s in t.shape))] = t.detach()
    return out


def _cut(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return tensor[tuple(slice(0, s) for s in shape)]


class PaddingError(ValueError):
    """Members differ in tensor shapes where their net cannot be zero-padded."""


class ModelStack:
    """The members' parameters ``params`` (leaf tensors [K, ...] that optimizers step) and
    buffers ``buffers`` ([K, ...], updated in place by the members' own code), by the model's
    own names (``generator.body.0.weight`` …), and a template model that runs them."""

    #: modules the population does not train (an EMA of G is kept by single runs only)
    SKIPPED = ("generator_ema",)

    def __init__(self, models: list[nn.Module], device: torch.device):
        self.size = len(models)
        self.device = torch.device(device)
        states = [self._state(m) for m in models]
        names = self.names = list(states[0])
        if any(list(s) != names for s in states):
            raise PaddingError("members differ in their nets' layers (depth or layer types)")
        if any(s[n].dim() != states[0][n].dim() for s in states for n in names):
            raise PaddingError("members differ in their nets' layers (tensor ranks)")
        shapes = {
            n: tuple(max(s[n].shape[d] for s in states) for d in range(states[0][n].dim()))
            for n in names
        }
        self.padded = any(s[n].shape != shapes[n] for s in states for n in names)
        self.model = self._template(models, states, shapes).to(self.device)
        for name in self.SKIPPED:
            if getattr(self.model, name, None) is not None:
                setattr(self.model, name, None)
        self.method = _Method(self.model)
        param_names = {n for n, _ in self._named(self.model, "parameters")}
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        for name in names:
            # a padded variance of 1: a padded unit normalises 0 to 0 in eval mode too
            fill = 1.0 if name.endswith("running_var") else 0.0
            stacked = _padded([s[name] for s in states], shapes[name], fill).to(self.device)
            if name in param_names:
                # a linear layer's [K, out, in] weights, stored as [K, in, out]: the batched
                # matmul's weight gradient comes out in that layout, so autograd keeps it as it
                # is instead of copying it into [K, out, in] every step
                if stacked.dim() == 3:
                    stacked = stacked.transpose(1, 2).contiguous().transpose(1, 2)
                self.params[name] = stacked.requires_grad_(True)
            else:
                self.buffers[name] = stacked
        self.hparams = {}
        for key in getattr(type(models[0]), "member_hparams", ()):
            values = [getattr(m, key) for m in models]
            if all(v is None for v in values):  # e.g. no clipping: the same for every member
                continue
            if any(v is None for v in values):
                raise ValueError(f"model.{key} is null for some members only: split them")
            self.hparams[key] = torch.tensor([float(v) for v in values], device=self.device)
        if self.padded:
            self._check_padding(dict(enumerate(models)))

    @staticmethod
    def _template(models, states, shapes) -> nn.Module:
        """A copy of the model whose every net (top-level submodule) is the widest member's:
        the one whose every tensor of that net has the widest shape."""
        template = copy.deepcopy(models[0])
        for child, _ in models[0].named_children():
            names = [n for n in shapes if n.startswith(child + ".")]
            widest = next(
                (
                    m
                    for m, s in zip(models, states, strict=True)
                    if all(tuple(s[n].shape) == shapes[n] for n in names)
                ),
                None,
            )
            if widest is None:
                raise PaddingError(
                    f"no member has the widest shape of every tensor of its {child}: members "
                    "that differ in width must differ in one width per net"
                )
            setattr(template, child, copy.deepcopy(getattr(widest, child)))
        return template

    @classmethod
    def _named(cls, model: nn.Module, what: str) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in getattr(model, f"named_{what}")():
            if name.split(".", 1)[0] not in cls.SKIPPED:
                yield name, tensor

    @classmethod
    def _state(cls, model: nn.Module) -> dict[str, torch.Tensor]:
        return {**dict(cls._named(model, "parameters")), **dict(cls._named(model, "buffers"))}

    def net_params(self, prefix: str) -> list[torch.Tensor]:
        """The stacked parameters of one net (``generator`` / ``discriminator``), in the order
        of the net's own ``parameters()`` (the order its optimizer holds them in)."""
        return [p for n, p in self.params.items() if n.startswith(prefix + ".")]

    # ------------------------------------------------------------------ running member methods
    def state(self, detached: str | None = None) -> dict[str, torch.Tensor]:
        """Parameters and buffers for a call, those of net ``detached`` cut from autograd (a net
        frozen in the other net's update: it gets no gradient)."""
        params = {
            n: p.detach() if detached and n.startswith(detached + ".") else p
            for n, p in self.params.items()
        }
        return {**params, **self.buffers}

    def call(
        self,
        method: str,
        *args,
        member_args: tuple[bool, ...] | None = None,
        step_inputs: dict | None = None,
        detached: str | None = None,
    ):
        """``model.<method>(*args)`` of every member, stacked on dim 0. ``member_args[i]``: args[i]
        holds one value per member (dim 0), else it is shared by all. ``step_inputs``: the
        members' own ([K, ...]) entries of ``model.step_inputs`` during the call."""
        member_args = member_args or (False,) * len(args)
        state = {f"model.{n}": t for n, t in self.state(detached).items()}

        def one(state, hparams, step_inputs, *args):
            return functional_call(self.method, state, (method, hparams, step_inputs, *args))

        in_dims = (0, 0, 0 if step_inputs is not None else None)
        in_dims += tuple(0 if own else None for own in member_args)
        # each member its own dropout masks (a single run's are drawn from its global RNG, so
        # dropout is the one draw a member does not share with its single run)
        return vmap(one, in_dims=in_dims, randomness="different")(
            state, self.hparams, step_inputs, *args
        )

    @contextmanager
    def buffers_kept(self) -> Iterator[None]:
        """Buffers as they were before the block (validation's batch statistics count batches)."""
        saved = {n: b.clone() for n, b in self.buffers.items()}
        try:
            yield
        finally:
            with torch.no_grad():
                for n, b in self.buffers.items():
                    b.copy_(saved[n])

    @contextmanager
    def mode(self, training: bool) -> Iterator[None]:
        previous = self.model.training
        self.model.train(training)
        try:
            yield
        finally:
            self.model.train(previous)

    # ------------------------------------------------------------------ members in and out
    @torch.no_grad()
    def write_member(self, k: int, model: nn.Module) -> nn.Module:
        """Member k's parameters and buffers into ``model`` (an ordinary model of its width)."""
        for name, mine in self._state(model).items():
            source = self.params.get(name, self.buffers.get(name))
            mine.copy_(_cut(source[k], mine.shape).to(mine.device))
        return model

    def member_pairs(self, k: int, model: nn.Module, prefix: str) -> list[tuple]:
        """(stacked parameter, ``model``'s parameter, ``take``) for net ``prefix`` of member k:
        ``take(t)`` cuts member k's part of a tensor shaped like the stacked parameter (the
        parameter itself, or an optimizer moment of it) to the shape of ``model``'s."""
        pairs = []
        for name, mine in self._named(model, "parameters"):
            if name.startswith(prefix + "."):
                shape = mine.shape

                def take(t, shape=shape):
                    return _cut(t[k], shape)

                pairs.append((self.params[name], mine, take))
        return pairs

    def misfit(self, model: nn.Module) -> str | None:
        """Why ``model`` cannot take a slot of this stack (other layers, a wider tensor, a
        ``member_hparams`` value null where the others' are not), or None."""
        state = self._state(model)
        if list(state) != self.names:
            return "its nets' layers differ from the population's (depth or layer types)"
        for name, tensor in state.items():
            stacked = self.params.get(name, self.buffers.get(name))
            if tensor.dim() != stacked.dim() - 1 or any(
                mine > theirs for mine, theirs in zip(tensor.shape, stacked.shape[1:], strict=True)
            ):
                return f"its {name} {tuple(tensor.shape)} exceeds the population's"
        for key in getattr(type(model), "member_hparams", ()):
            if (getattr(model, key) is None) != (key not in self.hparams):
                return f"model.{key} is null for some members only"
        return None

    @torch.no_grad()
    def read_member(self, k: int, model: nn.Module) -> None:
        """``model`` (a freshly built member) into slot k: its parameters and buffers zero-padded
        as the stack pads them, its ``member_hparams``; a PaddingError if it does not fit."""
        reason = self.misfit(model)
        if reason:
            raise PaddingError(reason)
        for name, mine in self._state(model).items():
            stacked = self.params.get(name, self.buffers.get(name))
            stacked[k].fill_(1.0 if name.endswith("running_var") else 0.0)
            stacked[k][tuple(slice(0, s) for s in mine.shape)] = mine.detach().to(self.device)
        for key, values in self.hparams.items():
            values[k] = float(getattr(model, key))
        self._check_padding({k: model})

    def load_state_dict(self, state: dict) -> None:
        """Copy a ``state_dict`` in; a ValueError, before anything is copied, if it is not one of
        a stack of these members (other names or shapes)."""
        for group in ("params", "buffers"):
            mine, saved = getattr(self, group), state[group]
            if list(mine) != list(saved) or any(mine[n].shape != saved[n].shape for n in mine):
                raise ValueError(f"the saved {group} are not those of this population")
        with torch.no_grad():
            for group in ("params", "buffers"):
                for name, tensor in getattr(self, group).items():
                    tensor.copy_(state[group][name])

    def state_dict(self) -> dict:
        return {"params": self.params, "buffers": self.buffers}

    # ------------------------------------------------------------------ padding check
    @torch.no_grad()
    def _check_padding(self, models: dict[int, nn.Module]) -> None:
        """Each member through the padded stack computes what its own model computes (eval mode:
        no dropout, no statistics moved): G's samples, and D's output on them."""

        def first(out):  # an auto-encoder D returns (reconstruction, embedding)
            return out[0] if isinstance(out, tuple) else out

        template = self.model
        z = template.sample_latent(4, generator=torch.Generator().manual_seed(0), device="cpu")
        z = z.to(self.device)
        labels = None
        if template.num_classes:
            labels = torch.arange(4, device=self.device) % template.num_classes
        with self.mode(False), self.buffers_kept():
            fakes = self.call("forward", z, labels)
            d_labels = template.batch_labels((fakes[0], labels))
            scores = first(self.call("discriminate", fakes, d_labels, member_args=(True, False)))
        for k, member in models.items():
            member = copy.deepcopy(member).to(self.device).eval()
            own_fake = member(z, labels)
            own_score = first(member.discriminate(own_fake, d_labels))
            for what, got, want in (("G", fakes[k], own_fake), ("D", scores[k], own_score)):
                scale = float(want.abs().max().clamp_min(1e-6))
                if not torch.allclose(got, want, atol=1e-4 * scale, rtol=1e-4):
                    raise PaddingError(
                        f"member {k}'s {what} computes otherwise when zero-padded to the widest "
                        "member (its net normalises over a padded dimension, e.g. layer norm): "
                        "members of this net must have equal widths"
                    )
