"""The adversarial training step of a population: for K members of one model at once, what
``AdversarialModel._adversarial_updates`` does for one run, calling the same methods of the model
in the same order (src/population/stack.py runs them per member): G's forward, D's loss and
update, ``after_discriminator_step``, then, for the members whose schedule (their own
``d_steps_per_g_step``) has a G step on this batch, G's loss with D frozen and G's update. Since
members share no parameters, the sum of their losses gives each exactly its own gradient.

A member whose loss turns NaN/inf is frozen (both its optimizers stop; its weights stay those of
its last good step) and reported; the others go on. No model is named here: whatever a model
computes, logs and keeps as state is its own code's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from src.config import accepted_keys
from src.models.cuda_graphs import CapturedStep
from src.nets.batch_norm import batch_statistics
from src.population.optim import MemberOptimizer, StackedOptimizer
from src.population.stack import ModelStack

#: the losses whose non-finite value freezes a member, in the order a step computes them
LOSS_NAMES = ("discriminator loss", "generator loss")

#: constructor arguments that members set apart without being ``member_hparams``: nets (their
#: widths are padded), optimizers (per member), their schedule, their run config
PER_MEMBER = {"generator", "discriminator", "optimizer_g", "optimizer_d", "d_steps_per_g_step"}


@dataclass
class Divergence:
    member: int
    loss_name: str
    #: the population's training batch (1-based) at which the loss was first non-finite
    batch: int


def refusal(models: list) -> str | None:
    """Why these models cannot train as one population, or None."""
    classes = sorted({type(m).__name__ for m in models})
    if len(classes) != 1:
        return f"a population trains one model class, got {classes}"
    model = models[0]
    if getattr(model, "population_refusal", "no population support"):
        return f"{classes[0]}: {model.population_refusal}"
    if any(getattr(m, "generator_ema", None) is not None for m in models):
        return "an EMA of G (model.ema_decay) is kept by single runs only"
    keys = accepted_keys(type(model)) or set()
    shared = keys - PER_MEMBER - set(type(model).member_hparams) - {"run_config"}
    for key in sorted(shared):
        if key not in vars(model):
            continue
        values = {repr(vars(m).get(key)) for m in models}
        if len(values) > 1:
            return f"members differ in model.{key} ({sorted(values)}), which they must share"
    return None


class Population:
    """K runs of one model class trained as one (``refusal`` says which sets of models can)."""

    def __init__(
        self,
        models: list,
        device: torch.device | str = "cpu",
        vectorized_optimizer: bool | None = None,
        cuda_graphs: bool = False,
    ):
        reason = refusal(models)
        if reason:
            raise ValueError(reason)
        self.kind = type(models[0]).__name__
        self.models = list(models)  # the members' own models (a refilled slot: its new one)
        self.size = len(models)
        self.device = torch.device(device)
        self.stack = ModelStack(models, self.device)
        self.model = self.stack.model  # the template every member's methods run on
        self.model.train()
        # a population computes its logged diagnostics every step (a log-step flag would double
        # its captured graphs); they never change what is trained
        self.model.log_this_step = True
        self.d_steps_per_g_step = [m.d_steps_per_g_step for m in models]
        # one mask for both optimizers: a divergence in either step freezes the whole member
        self.active = torch.ones(self.size, dtype=torch.bool, device=self.device)
        optimizers = [m.configure_optimizers() for m in models]  # (G, D) per member
        self.optimizer_g, self.optimizer_d = (
            StackedOptimizer(
                self.stack.net_params(net),
                [MemberOptimizer.from_torch(o[i]) for o in optimizers],
                active=self.active,
                vectorized=vectorized_optimizer,
            )
            for i, net in enumerate(("generator", "discriminator"))
        )
        # divergences are recorded on the device and read when asked (``divergences``), so a
        # step never waits for the GPU: the batch (1-based) of each member's first non-finite
        # loss (0: none yet) and which loss it was (an index into LOSS_NAMES)
        self.batches = torch.zeros((), dtype=torch.long, device=self.device)
        self.diverged_at = torch.zeros(self.size, dtype=torch.long, device=self.device)
        self.diverged_loss = torch.zeros(self.size, dtype=torch.long, device=self.device)
        # each member's values of its last G step, logged on batches without one too
        self.generator_values: dict[str, torch.Tensor] = {}
        self._masks: dict[tuple, torch.Tensor] = {}
        # the members' ``model.cuda_graphs``: each kind of batch (which members step G, the
        # learning rates) is replayed from a CUDA graph after a few eager ones
        # (src/models/cuda_graphs.py); the step never reads the device, so it captures as it is.
        # Elsewhere it runs uncaptured.
        self.cuda_graphs = bool(cuda_graphs)
        self._captured: dict = {}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything a resumed population needs: the stacked parameters and buffers, both
        optimizers, the batch counter, the divergence record and the last G values."""
        return {
            "stack": self.stack.state_dict(),
            "optimizer_g": self.optimizer_g.state_dict(),
            "optimizer_d": self.optimizer_d.state_dict(),
            "batches": self.batches,
            "diverged_at": self.diverged_at,
            "diverged_loss": self.diverged_loss,
            "generator_values": self.generator_values,
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self.stack.load_state_dict(state["stack"])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])
        for name in ("batches", "diverged_at", "diverged_loss"):
            getattr(self, name).copy_(state[name])
        self.generator_values = {k: v.to(self.device) for k, v in state["generator_values"].items()}

    # ------------------------------------------------------------------ slots (a search's refill)
    def misfit(self, k: int, model) -> str | None:
        """Why ``model`` cannot take slot k (another class or shared setting, other layers, a
        wider net, an optimizer kind the population holds no state for), or None."""
        reason = refusal([*self.models[:k], model, *self.models[k + 1 :]])
        reason = reason or self.stack.misfit(model)
        if reason:
            return reason
        for optimizer, built in zip(
            (self.optimizer_g, self.optimizer_d), model.configure_optimizers(), strict=True
        ):
            kind = MemberOptimizer.from_torch(built).kind
            if not getattr(optimizer, f"any_{kind}"):
                return f"its {kind} optimizer: the population holds no {kind} state"
        return None

    def free(self, k: int) -> None:
        """Slot k stops training (its member was pruned or finished): frozen as a diverged one."""
        self.active[k] = False

    @torch.no_grad()
    def replace_member(self, k: int, model) -> None:
        """A freshly built member into slot k, as if it had been built with the population: its
        weights, hyper-parameters, optimizers from step 0 and schedule; the other members' state
        is left exactly as it is. A ValueError (``misfit``) if it cannot join."""
        reason = self.misfit(k, model)
        if reason:
            raise ValueError(reason)
        self.stack.read_member(k, model)
        for optimizer, built in zip(
            (self.optimizer_g, self.optimizer_d), model.configure_optimizers(), strict=True
        ):
            optimizer.replace_member(k, MemberOptimizer.from_torch(built))
        self.models[k] = model
        self.d_steps_per_g_step[k] = model.d_steps_per_g_step
        self.diverged_at[k] = 0
        self.diverged_loss[k] = 0
        for value in self.generator_values.values():  # no G step of its own yet
            value[k] = float("nan") if value.is_floating_point() else 0
        self.active[k] = True
        self._captured.clear()  # graphs baked in the old member's learning rates

    @property
    def divergences(self) -> list[Divergence]:
        """The members that diverged so far, in the order they did (reads the device)."""
        at = self.diverged_at.tolist()
        losses = self.diverged_loss.tolist()
        found = [Divergence(k, LOSS_NAMES[losses[k]], at[k]) for k in range(self.size) if at[k]]
        return sorted(found, key=lambda d: (d.batch, LOSS_NAMES.index(d.loss_name), d.member))

    def generator_steps(self, batch_idx: int) -> tuple[bool, ...]:
        """Which members take a G step on batch ``batch_idx`` of an epoch (as a single run's
        ``training_step``: every ``d_steps_per_g_step``-th batch)."""
        return tuple((batch_idx + 1) % n == 0 for n in self.d_steps_per_g_step)

    def _mask(self, steps: tuple[bool, ...]) -> torch.Tensor:
        if steps not in self._masks:  # made on an eager call, before any graph capture
            self._masks[steps] = torch.tensor(steps, device=self.device)
        return self._masks[steps]

    # ------------------------------------------------------------------ the step
    def train_batch(
        self,
        real: torch.Tensor,
        z: torch.Tensor,
        generator_steps: tuple[bool, ...],
        labels: torch.Tensor | None = None,
        noise: dict | None = None,
    ) -> dict:
        """``training_step`` for one real batch [B, ...] (and its labels) shared by all members
        (a grid's runs read the same data order); z [K, B, d] and ``noise`` ({name: [K, B, ...]})
        are each member's own draws. Through a CUDA graph when ``cuda_graphs`` is set."""
        noise = noise or {}
        if not self.cuda_graphs:
            return self.training_step(real, z, generator_steps, labels, noise)
        key = (generator_steps, tuple(self.optimizer_g.lrs), tuple(self.optimizer_d.lrs))
        step = self._captured.get(key)
        if step is None:
            names = sorted(noise)

            def shared(real, z, labels, *drawn, steps=generator_steps):
                return self.training_step(
                    real, z, steps, labels, dict(zip(names, drawn, strict=True))
                )

            # an older graph of these members' steps baked in other learning rates: freed
            self._captured = {k: v for k, v in self._captured.items() if k[1:] == key[1:]}
            step = self._captured[key] = CapturedStep(shared, capture=self.device.type == "cuda")
        return step(real, z, labels, *(noise[n] for n in sorted(noise)))

    def training_step(
        self,
        real: torch.Tensor,
        z: torch.Tensor,
        generator_steps: tuple[bool, ...],
        labels: torch.Tensor | None = None,
        noise: dict | None = None,
        member_real: bool = False,
    ) -> dict:
        """One batch for every member: ``real`` shared [B, ...] (or each member's own [K, B, ...]
        with ``member_real``), z [K, B, d]. Returns the per-member values a single run logs ([K]
        tensors, detached): D's, and those of each member's last G step."""
        self.batches += 1
        inputs = {"z": z, **(noise or {})}
        stack = self.stack
        any_g = any(generator_steps)
        with torch.set_grad_enabled(any_g):  # G's graph only when a G step uses it
            fake = stack.call("forward", z, labels, member_args=(True, False))
        loss_d, logs = stack.call(
            "discriminator_loss",
            real,
            fake.detach(),
            labels,
            member_args=(member_real, True, False),
            step_inputs=inputs,
        )
        self._update(self.optimizer_d, loss_d, "discriminator loss")
        with torch.no_grad():
            logs = {k: v.detach() for k, v in logs.items()}
            logs.update(
                stack.call(
                    "after_discriminator_step", logs, member_args=(True,), step_inputs=inputs
                )
            )
        if any_g:
            mask = self._mask(generator_steps)
            # D's forward in G's loss moves its batch-norm statistics: only for the members that
            # take a G step (a single run without one never runs it)
            kept = None
            if not all(generator_steps):
                kept = {name: buffer.clone() for name, buffer in stack.buffers.items()}
            loss_g, logs_g = stack.call(
                "generator_loss",
                fake,
                labels,
                member_args=(True, False),
                step_inputs=inputs,
                detached="discriminator",  # D gets no gradient in G's step
            )
            self._update(self.optimizer_g, loss_g, "generator loss", mask)
            with torch.no_grad():
                if kept is not None:
                    for name, buffer in stack.buffers.items():
                        shape = (-1,) + (1,) * (buffer.dim() - 1)
                        buffer.copy_(torch.where(mask.view(shape), buffer, kept[name]))
                for name, value in logs_g.items():
                    value = value.detach()
                    previous = self.generator_values.get(name)
                    self.generator_values[name] = (
                        value if previous is None else torch.where(mask, value, previous)
                    )
        return {**logs, **self.generator_values}

    def _update(
        self,
        optimizer: StackedOptimizer,
        losses: torch.Tensor,
        name: str,
        members: torch.Tensor | None = None,
    ) -> None:
        stepping = self.active if members is None else self.active & members
        newly = stepping & ~torch.isfinite(losses.detach())
        self.diverged_at.copy_(torch.where(newly, self.batches, self.diverged_at))
        self.diverged_loss.masked_fill_(newly, LOSS_NAMES.index(name))
        # in place: both optimizers hold this mask; a frozen member's parameters stay as they are
        self.active &= ~newly
        optimizer.zero_grad()
        # a diverged or resting member's loss is left out: its parameters get no update
        torch.where(stepping & self.active, losses, torch.zeros_like(losses)).sum().backward()
        optimizer.step(members)

    # ------------------------------------------------------------------ between epochs
    @torch.no_grad()
    def end_epoch(self) -> dict[str, torch.Tensor]:
        """The model's ``epoch_end_update`` for every member: its learning-rate scale applied to
        that member's optimizers; returns the values to log as ``train/<name>`` ([K] each)."""
        values = dict(self.stack.call("epoch_end_update"))
        scale = values.pop("lr_scale", None)
        if scale is not None:
            for k, factor in enumerate(scale.tolist()):
                if factor != 1.0:
                    for optimizer in (self.optimizer_g, self.optimizer_d):
                        optimizer.set_lr(k, self.model.scaled_lr(optimizer.lrs[k], factor))
        return values

    # ------------------------------------------------------------------ sampling, validation
    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels=None, chunk: int = 1000) -> torch.Tensor:
        """Every member's G(z[, labels]) for the same z [n, d], in eval mode: [K, n, ...]."""
        z = z.to(self.device)
        labels = None if labels is None else labels.to(self.device)
        out = []
        with self.stack.mode(False):
            for start in range(0, z.shape[0], chunk):
                part = None if labels is None else labels[start : start + chunk]
                out.append(self.stack.call("forward", z[start : start + chunk], part))
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def validation_values(self, real, z, labels=None) -> dict[str, torch.Tensor]:
        """What a single run's ``validation_step`` logs for one held-out batch, per member: G in
        eval mode on the shared latents z, D on batch statistics; no state moves."""
        inputs = {"z": z.unsqueeze(0).expand(self.size, *z.shape)}
        with self.stack.buffers_kept(), self.stack.mode(False):
            fake = self.stack.call("forward", z, labels)
            with batch_statistics(self.model.discriminator):
                return self.stack.call(
                    "validation_values",
                    real,
                    fake,
                    labels,
                    member_args=(False, True, False),
                    step_inputs=inputs,
                )
