"""EBGAN and EBGAN-PT (Zhao, Mathieu, LeCun 2016): an auto-encoder discriminator whose energy is its
reconstruction error, trained with a margin hinge."""

from __future__ import annotations

from collections.abc import Callable

import torch

from src.losses import ebgan_discriminator_loss, ebgan_generator_loss, pulling_away_term
from src.models.base import AdversarialModel
from src.utils.rules import number, positive

EnergyFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class EBGAN(AdversarialModel):
    """L_D = D(x) + [m - D(G(z))]^+, L_G = D(G(z)), with D(x) = energy(x, Dec(Enc(x)))."""

    display_name = "EBGAN"
    knob_rules = {"margin": positive()}

    discriminator_role = "autoencoder"
    loss_family = "energy"
    member_hparams = ("margin",)

    def __init__(
        self,
        generator,
        discriminator,
        optimizer_g,
        optimizer_d,
        energy: EnergyFn,
        margin: float = 10.0,
        **loop_options,
    ):
        super().__init__(generator, discriminator, optimizer_g, optimizer_d, **loop_options)
        if not margin > 0:
            raise ValueError(f"model.margin must be > 0, got {margin}")
        self.energy = energy
        self.margin = float(margin)

    def energies(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample energies, encoder embeddings) of a batch."""
        reconstruction, embedding = self.discriminator(images)
        return self.energy(images, reconstruction), embedding

    def discriminator_loss(self, real, fake, labels=None):
        real_energy, _ = self.energies(real)
        fake_energy, _ = self.energies(fake)
        loss = ebgan_discriminator_loss(real_energy, fake_energy, self.margin)
        fake_energy = fake_energy.detach()
        return loss, {
            "loss_d": loss.detach(),
            "energy_real": real_energy.detach().mean(),
            "energy_fake": fake_energy.mean(),
            "fake_inside_margin": (fake_energy < self.margin).float().mean(),
        }

    def generator_loss(self, fake, labels=None):
        fake_energy, embedding = self.energies(fake)
        loss = ebgan_generator_loss(fake_energy)
        logs = {"loss_g": loss.detach()}
        # a mode-collapse diagnostic only: the PT never enters plain EBGAN's loss
        if self.log_this_step:
            logs["pt"] = pulling_away_term(embedding.detach())
        return loss, logs


class EBGANPT(EBGAN):
    """EBGAN-PT: L_G = D(G(z)) + w * f_PT(S), S = Enc(G(z)) (Zhao et al. 2016 Eq. 7; w = 0.1)."""

    display_name = "EBGAN-PT"
    knob_rules = {"pt_weight": number(0)}

    member_hparams = ("margin", "pt_weight")

    def __init__(
        self,
        generator,
        discriminator,
        optimizer_g,
        optimizer_d,
        energy: EnergyFn,
        margin: float = 10.0,
        pt_weight: float = 0.1,
        **loop_options,
    ):
        super().__init__(
            generator, discriminator, optimizer_g, optimizer_d, energy, margin, **loop_options
        )
        if not pt_weight >= 0:
            raise ValueError(f"model.pt_weight must be >= 0, got {pt_weight}")
        self.pt_weight = float(pt_weight)

    def generator_loss(self, fake, labels=None):
        fake_energy, embedding = self.energies(fake)
        energy_loss = ebgan_generator_loss(fake_energy)
        pt = pulling_away_term(embedding)
        loss = energy_loss + self.pt_weight * pt
        return loss, {
            "loss_g": loss.detach(),
            "loss_g_energy": energy_loss.detach(),
            "pt": pt.detach(),
        }
