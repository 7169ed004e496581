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


#: the losses whose non-finite value freezes a member, in the order a step computes them
LOSS_NAMES = ("discriminator loss", "generator loss")


@dataclass
class Divergence:
    member: int
    loss_name: str
    #: the population's training batch (1-based) at which the loss was first non-finite
    batch: int


class Population:
    """K runs of one model class (GAN, EBGAN or EBGAN-PT on the MLP nets) trained as one."""

    def __init__(
        self,
        models: list,  # ``vectorized_optimizer``: None chooses per net (optim.prefers_vectorized)
        device: torch.device | str = "cpu",
        vectorized_optimizer: bool | None = None,
        cuda_graphs: bool = False,
    ):
        kinds = {type(m).__name__ for m in models}
        if len(kinds) != 1 or not kinds <= set(SUPPORTED):
            raise ValueError(f"a population trains one of {SUPPORTED}, got {sorted(kinds)}")
        self.kind = kinds.pop()
        self.size = len(models)
        self.device = torch.device(device)
        template = models[0]
        if any(m.d_steps_per_g_step != template.d_steps_per_g_step for m in models):
            raise ValueError("members must share d_steps_per_g_step (it sets the step schedule)")
        if any(m.latent_distribution != template.latent_distribution for m in models):
            raise ValueError("members must share the latent distribution")
        self.d_steps_per_g_step = template.d_steps_per_g_step
        self.latent_distribution = template.latent_distribution
        self.generator = StackedMLP([m.generator for m in models]).to(self.device)
        self.discriminator = StackedMLP([m.discriminator for m in models]).to(self.device)
        # one mask for both optimizers: a divergence in either step freezes the whole member
        self.active = torch.ones(self.size, dtype=torch.bool, device=self.device)
        optimizers = [m.configure_optimizers() for m in models]  # (G, D) per member
        self.optimizer_g = StackedOptimizer(
            self.generator.parameters(),
            [MemberOptimizer.from_torch(o[0]) for o in optimizers],
            active=self.active,
            vectorized=vectorized_optimizer,
        )
        self.optimizer_d = StackedOptimizer(
            self.discriminator.parameters(),
            [MemberOptimizer.from_torch(o[1]) for o in optimizers],
            active=self.active,
            vectorized=vectorized_optimizer,
        )
        if self.kind == "GAN":
            self.discriminator_objective = self._same_callable(models, "discriminator_objective")
            self.generator_objective = self._same_callable(models, "generator_objective")
        else:
            self.energy = self._same_callable(models, "energy")
            self.margin = torch.tensor([m.margin for m in models], device=self.device)
            self.pt_weight = torch.tensor(
                [getattr(m, "pt_weight", 0.0) for m in models], device=self.device
            )
        # divergences are recorded on the device and read when asked (``divergences``), so a
        # step never waits for the GPU: the batch (1-based) of each member's first non-finite
        # loss (0: none yet) and which loss it was (an index into LOSS_NAMES)
        self.batches = torch.zeros((), dtype=torch.long, device=self.device)
        # the members' ``model.cuda_graphs``: each kind of batch (with / without a G step) is
        # replayed from a CUDA graph after a few eager ones (src/models/cuda_graphs.py); the step
        # never reads the device, so it captures as it is. Elsewhere it runs uncaptured.
        self.cuda_graphs = bool(cuda_graphs)
        self._captured: dict = {}
        self.diverged_at = torch.zeros(self.size, dtype=torch.long, device=self.device)
        self.diverged_loss = torch.zeros(self.size, dtype=torch.long, device=self.device)

    def state_dict(self) -> dict:
        """Everything a resumed population needs: both stacks (weights, batch-norm statistics),
        both optimizers, the batch counter and the divergence record."""
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "optimizer_g": self.optimizer_g.state_dict(),
            "optimizer_d": self.optimizer_d.state_dict(),
            "batches": self.batches,
            "diverged_at": self.diverged_at,
            "diverged_loss": self.diverged_loss,
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])
        for name in ("batches", "diverged_at", "diverged_loss"):
            getattr(self, name).copy_(state[name])

    @staticmethod
    def _same_callable(models, name: str):
        first = getattr(models[0], name)
        if any(repr(getattr(m, name)) != repr(first) for m in models):
            raise ValueError(f"members must share {name} (a loss option): split them by loss=")
        return first

    @property
    def divergences(self) -> list[Divergence]:
        """The members that diverged so far, in the order they did (reads the device)."""
        at = self.diverged_at.tolist()
        losses = self.diverged_loss.tolist()
        found = [Divergence(k, LOSS_NAMES[losses[k]], at[k]) for k in range(self.size) if at[k]]
        return sorted(found, key=lambda d: (d.batch, LOSS_NAMES.index(d.loss_name), d.member))

    # ------------------------------------------------------------------ per-member losses [K]
    def discriminator_losses(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return self.discriminator_terms(real, fake)[0]

    def generator_losses(self, fake: torch.Tensor) -> torch.Tensor:
        return self.generator_terms(fake)[0]

    def discriminator_terms(self, real: torch.Tensor, fake: torch.Tensor) -> tuple:
        """(D losses [K], {name: [K]}): the values the model's ``discriminator_loss`` logs, per
        member (src/models/gan.py, ebgan.py)."""
        if self.kind == "GAN":
            real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
            losses = vmap(self.discriminator_objective)(real_logits, fake_logits)
            return losses, {
                "loss_d": losses.detach(),
                "d_real": torch.sigmoid(real_logits.detach()).flatten(1).mean(1),
                "d_fake": torch.sigmoid(fake_logits.detach()).flatten(1).mean(1),
            }
        real_energy = vmap(self.energy)(real, self.discriminator(real)[0])
        fake_energy = vmap(self.energy)(fake, self.discriminator(fake)[0])
        losses = vmap(ebgan_discriminator_loss)(real_energy, fake_energy, self.margin)
        fake_energy = fake_energy.detach()
        return losses, {
            "loss_d": losses.detach(),
            "energy_real": real_energy.detach().mean(1),
            "energy_fake": fake_energy.mean(1),
            "fake_inside_margin": (fake_energy < self.margin[:, None]).float().mean(1),
        }

    def generator_terms(self, fake: torch.Tensor) -> tuple:
        """(G losses [K], {name: [K]}), as the model's ``generator_loss`` logs them (plain EBGAN's
        ``pt`` is its collapse diagnostic, never in its loss)."""
        if self.kind == "GAN":
            losses = vmap(self.generator_objective)(self.discriminator(fake))
            return losses, {"loss_g": losses.detach()}
        reconstruction, embedding = self.discriminator(fake)
        energy_losses = vmap(ebgan_generator_loss)(vmap(self.energy)(fake, reconstruction))
        if self.kind == "EBGAN":
            pt = vmap(pulling_away_term)(embedding.detach())
            return energy_losses, {"loss_g": energy_losses.detach(), "pt": pt}
        pt = vmap(pulling_away_term)(embedding)
        losses = energy_losses + self.pt_weight * pt
        return losses, {
            "loss_g": losses.detach(),
            "loss_g_energy": energy_losses.detach(),
            "pt": pt.detach(),
        }

    # ------------------------------------------------------------------ the step
    def train_batch(self, real: torch.Tensor, z: torch.Tensor, generator_step: bool) -> dict:
        """``training_step`` with one real batch [B, ...] shared by all members (a grid's runs
        read the same data order), through a CUDA graph when ``cuda_graphs`` is set."""
        if not self.cuda_graphs:
            return self._shared_batch_step(real, z, generator_step)
        from src.models.cuda_graphs import CapturedStep

        step = self._captured.get(generator_step)
        if step is None:

            def shared(real, z, generator_step=generator_step):
                return self._shared_batch_step(real, z, generator_step)

            step = self._captured[generator_step] = CapturedStep(
                shared, capture=self.device.type == "cuda"
            )
        return step(real, z)

    def _shared_batch_step(self, real, z, generator_step: bool) -> dict:
        shared = real.unsqueeze(0).expand(self.size, *real.shape)
        return self.training_step(shared, z, generator_step)

    def training_step(self, real: torch.Tensor, z: torch.Tensor, generator_step: bool) -> dict:
        """One batch for every member: real [K, B, ...] (each member's own batch), z [K, B, d].

        Returns the per-member values a single run logs ([K] tensors, detached): D's, and G's
        on a batch with a G step."""
        self.batches += 1
        with torch.set_grad_enabled(generator_step):  # G's graph only when its step uses it
            fake = self.generator(z)
        loss_d, logs = self.discriminator_terms(real, fake.detach())
        self._update(self.optimizer_d, loss_d, "discriminator loss")
        if generator_step:
            with frozen(self.discriminator):
                loss_g, logs_g = self.generator_terms(fake)
                self._update(self.optimizer_g, loss_g, "generator loss")
            logs.update(logs_g)
        return logs

    def _update(self, optimizer: StackedOptimizer, losses: torch.Tensor, name: str) -> None:
        finite = torch.isfinite(losses.detach())
        newly = self.active & ~finite
        self.diverged_at.copy_(torch.where(newly, self.batches, self.diverged_at))
        self.diverged_loss.masked_fill_(newly, LOSS_NAMES.index(name))
        # in place: both optimizers hold this mask; a frozen member's parameters stay as they are
        self.active &= finite
        optimizer.zero_grad()
        # a diverged member's loss is left out: its parameters get no update (they are frozen)
        torch.where(self.active, losses, torch.zeros_like(losses)).sum().backward()
        optimizer.step()
