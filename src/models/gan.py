"""The GAN baseline (Goodfellow et al. 2014) with a classifier discriminator."""

from __future__ import annotations

from typing import Callable

import torch

from src.models.base import AdversarialModel


class GAN(AdversarialModel):
    """D outputs a logit; the ``loss`` group picks the generator objective (non-saturating or minimax)."""

    discriminator_role = "classifier"
    loss_family = "classifier"

    def __init__(self, generator, discriminator, optimizer_g, optimizer_d,
                 discriminator_objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 generator_objective: Callable[[torch.Tensor], torch.Tensor], **loop_options):
        super().__init__(generator, discriminator, optimizer_g, optimizer_d, **loop_options)
        self.discriminator_objective, self.generator_objective = discriminator_objective, generator_objective

    def discriminator_loss(self, real, fake):
        real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
        loss = self.discriminator_objective(real_logits, fake_logits)
        return loss, {
            "loss_d": loss.detach(),
            "d_real": torch.sigmoid(real_logits.detach()).mean(),  # D's mean P(real) on real data
            "d_fake": torch.sigmoid(fake_logits.detach()).mean(),
        }

    def generator_loss(self, fake):
        loss = self.generator_objective(self.discriminator(fake))
        return loss, {"loss_g": loss.detach()}
