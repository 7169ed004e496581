"""The GAN baseline (Goodfellow et al. 2014) with a classifier discriminator."""

from __future__ import annotations

from collections.abc import Callable

import torch

from src.models.base import AdversarialModel


class GAN(AdversarialModel):
    """D outputs a logit; the ``loss`` group picks G's objective (non-saturating or minimax)."""

    discriminator_role = "classifier"
    loss_family = "classifier"

    def __init__(
        self,
        generator,
        discriminator,
        optimizer_g,
        optimizer_d,
        discriminator_objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        generator_objective: Callable[[torch.Tensor], torch.Tensor],
        **loop_options,
    ):
        super().__init__(generator, discriminator, optimizer_g, optimizer_d, **loop_options)
        self.discriminator_objective = discriminator_objective
        self.generator_objective = generator_objective

    def discriminator_loss(self, real, fake, labels=None):
        real_logits, fake_logits = self.discriminate(real, labels), self.discriminate(fake, labels)
        loss = self.discriminator_objective(real_logits, fake_logits)
        return loss, {
            "loss_d": loss.detach(),
            "d_real": torch.sigmoid(real_logits.detach()).mean(),  # D's mean P(real) on real data
            "d_fake": torch.sigmoid(fake_logits.detach()).mean(),
        }

    def generator_loss(self, fake, labels=None):
        loss = self.generator_objective(self.discriminate(fake, labels))
        return loss, {"loss_g": loss.detach()}


class CGAN(GAN):
    """Conditional GAN (Mirza & Osindero 2014 Eq. 2): the GAN objectives with G(z|y) and D(x|y).

    y is the real batch's labels; the fakes of a batch are drawn for the same labels, so D sees real
    and fake images of every class in equal numbers.
    """

    def __init__(
        self,
        generator,
        discriminator,
        optimizer_g,
        optimizer_d,
        discriminator_objective,
        generator_objective,
        num_classes: int,
        **loop_options,
    ):
        if num_classes < 2:
            raise ValueError(
                f"model.num_classes must be >= 2 for a class-conditional GAN, got {num_classes}"
            )
        for name, net in (("generator", generator), ("discriminator", discriminator)):
            if getattr(net, "num_classes", 0) != num_classes:
                raise ValueError(
                    f"model=cgan needs a {name} conditioned on {num_classes} classes; "
                    f"{type(net).__name__} takes num_classes={getattr(net, 'num_classes', 0)}"
                )
        super().__init__(
            generator,
            discriminator,
            optimizer_g,
            optimizer_d,
            discriminator_objective,
            generator_objective,
            **loop_options,
        )
        self.num_classes = num_classes
