"""The adversarial training step of a population: what AdversarialModel.training_step does for one
run (a D update on its real batch and a detached fake batch, then a G update with D frozen), done
for K members at once. The losses are the models' own functions from src/losses.py, run per member
with ``torch.func.vmap``; each member's total is summed, and since members share no parameters,
each gets exactly its own gradient.

A member whose loss turns NaN/inf is frozen (both its optimizers stop; its weights stay those of
its last good step) and reported; the others go on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import vmap

from src.losses import (
    ebgan_discriminator_loss,
    ebgan_generator_loss,
    pulling_away_term,
)
from src.models.base import frozen
from src.population.optim import MemberOptimizer, StackedOptimizer
from src.population.stacked import StackedMLP

#: model classes a population can train, by their class name (src/models)
SUPPORTED = ("GAN", "EBGAN", "EBGANPT")


@dataclass
class Divergence:
    member: int
    loss_name: str


class Population:
    """K runs of one model class (GAN, EBGAN or EBGAN-PT on the MLP nets) trained as one."""

    def __init__(self, models: list):
        kinds = {type(m).__name__ for m in models}
        if len(kinds) != 1 or not kinds <= set(SUPPORTED):
            raise ValueError(f"a population trains one of {SUPPORTED}, got {sorted(kinds)}")
        self.kind = kinds.pop()
        self.size = len(models)
        template = models[0]
        if any(m.d_steps_per_g_step != template.d_steps_per_g_step for m in models):
            raise ValueError("members must share d_steps_per_g_step (it sets the step schedule)")
        if any(m.latent_distribution != template.latent_distribution for m in models):
            raise ValueError("members must share the latent distribution")
        self.d_steps_per_g_step = template.d_steps_per_g_step
        self.latent_distribution = template.latent_distribution
        self.generator = StackedMLP([m.generator for m in models])
        self.discriminator = StackedMLP([m.discriminator for m in models])
        optimizers = [m.configure_optimizers() for m in models]  # (G, D) per member
        self.optimizer_g = StackedOptimizer(
            self.generator.parameters(), [MemberOptimizer.from_torch(o[0]) for o in optimizers]
        )
        self.optimizer_d = StackedOptimizer(
            self.discriminator.parameters(), [MemberOptimizer.from_torch(o[1]) for o in optimizers]
        )
        if self.kind == "GAN":
            self.discriminator_objective = self._same_callable(models, "discriminator_objective")
            self.generator_objective = self._same_callable(models, "generator_objective")
        else:
            self.energy = self._same_callable(models, "energy")
            self.margin = torch.tensor([m.margin for m in models])
            self.pt_weight = torch.tensor([getattr(m, "pt_weight", 0.0) for m in models])
        self.divergences: list[Divergence] = []

    @staticmethod
    def _same_callable(models, name: str):
        first = getattr(models[0], name)
        if any(repr(getattr(m, name)) != repr(first) for m in models):
            raise ValueError(f"members must share {name} (a loss option): split them by loss=")
        return first

    @property
    def active(self) -> torch.Tensor:
        return self.optimizer_d.active & self.optimizer_g.active

    # ------------------------------------------------------------------ per-member losses [K]
    def discriminator_losses(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        if self.kind == "GAN":
            real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
            return vmap(self.discriminator_objective)(real_logits, fake_logits)
        real_energy = vmap(self.energy)(real, self.discriminator(real)[0])
        fake_energy = vmap(self.energy)(fake, self.discriminator(fake)[0])
        return vmap(ebgan_discriminator_loss)(real_energy, fake_energy, self.margin)

    def generator_losses(self, fake: torch.Tensor) -> torch.Tensor:
        if self.kind == "GAN":
            return vmap(self.generator_objective)(self.discriminator(fake))
        reconstruction, embedding = self.discriminator(fake)
        losses = vmap(ebgan_generator_loss)(vmap(self.energy)(fake, reconstruction))
        if self.kind == "EBGANPT":
            losses = losses + self.pt_weight * vmap(pulling_away_term)(embedding)
        return losses

    # ------------------------------------------------------------------ the step
    def training_step(self, real: torch.Tensor, z: torch.Tensor, generator_step: bool) -> dict:
        """One batch for every member: real [K, B, ...] (each member's own batch), z [K, B, d].

        Returns the per-member losses ([K] tensors, detached)."""
        with torch.set_grad_enabled(generator_step):  # G's graph only when its step uses it
            fake = self.generator(z)
        loss_d = self.discriminator_losses(real, fake.detach())
        self._update(self.optimizer_d, loss_d, "discriminator loss")
        logs = {"loss_d": loss_d.detach()}
        if generator_step:
            with frozen(self.discriminator):
                loss_g = self.generator_losses(fake)
                self._update(self.optimizer_g, loss_g, "generator loss")
            logs["loss_g"] = loss_g.detach()
        return logs

    def _update(self, optimizer: StackedOptimizer, losses: torch.Tensor, name: str) -> None:
        finite = torch.isfinite(losses.detach())
        for member in torch.nonzero(~finite & self.active).flatten().tolist():
            self.optimizer_d.freeze(member)
            self.optimizer_g.freeze(member)
            self.divergences.append(Divergence(member, name))
        optimizer.zero_grad()
        # a diverged member's loss is left out: its parameters get no update (they are frozen)
        torch.where(finite & self.active, losses, torch.zeros_like(losses)).sum().backward()
        optimizer.step()
