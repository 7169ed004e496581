"""BEGAN (Berthelot, Schumm, Metz 2017): an auto-encoder D with an L1 loss, balanced by k_t."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from src.losses import (
    began_convergence,
    began_discriminator_loss,
    began_generator_loss,
    began_k_update,
)
from src.models.base import AdversarialModel
from src.nets.output_bias import start_at_pixel_value
from src.utils.rules import choice, integer, number, positive


class BEGAN(AdversarialModel):
    """Berthelot et al. 2017 Eq. 4: L_D = L(x) - k_t L(G(z)), L_G = L(G(z)),
    k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1).

    L(v) = mean |v - D(v)| comes from the ``loss`` group (``energy_l1``). k_t and the learning-rate
    decay state are buffers, so they are saved in checkpoints and restored on resume. The learning
    rates are halved (``lr_decay_factor``, not below ``lr_min``) when the epoch mean of M_global has
    not improved for ``lr_decay_patience`` epochs; the optimizers' param groups are edited in place.
    """

    display_name = "BEGAN"
    knob_rules = {
        "gamma": number(0, 1, low_open=True),
        "lambda_k": positive(),
        "k_init": number(0, 1),
        "lr_decay_factor": number(0, 1, low_open=True),
        "lr_decay_patience": integer(1),
        "lr_min": number(0),
        "output_bias": choice("zero", "data_mean"),
    }

    discriminator_role = "autoencoder"
    loss_family = "energy"
    member_hparams = ("gamma", "lambda_k", "lr_decay_factor")

    def __init__(
        self,
        generator,
        discriminator,
        optimizer_g,
        optimizer_d,
        energy: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        gamma: float = 0.5,
        lambda_k: float = 0.001,
        k_init: float = 0.0,
        lr_decay_factor: float = 0.5,
        lr_decay_patience: int = 2,
        lr_min: float = 1e-6,
        output_bias: str = "zero",
        **loop_options,
    ):
        super().__init__(generator, discriminator, optimizer_g, optimizer_d, **loop_options)
        if not 0 < gamma <= 1:
            raise ValueError(f"model.gamma must be in (0, 1], got {gamma}")
        if not lambda_k > 0:
            raise ValueError(f"model.lambda_k must be > 0, got {lambda_k}")
        if not 0 <= k_init <= 1:
            raise ValueError(f"model.k_init must be in [0, 1], got {k_init}")
        if not 0 < lr_decay_factor <= 1:
            raise ValueError(f"model.lr_decay_factor must be in (0, 1], got {lr_decay_factor}")
        if lr_decay_patience < 1:
            raise ValueError(f"model.lr_decay_patience must be >= 1, got {lr_decay_patience}")
        if output_bias not in ("zero", "data_mean"):
            raise ValueError(f"model.output_bias must be zero or data_mean, got {output_bias!r}")
        self.output_bias = output_bias
        self.energy = energy
        self.gamma = float(gamma)
        self.lambda_k = float(lambda_k)
        self.lr_decay_factor = lr_decay_factor
        self.lr_decay_patience = lr_decay_patience
        self.lr_min = lr_min
        self.register_buffer("k", torch.tensor(float(k_init)))
        self.register_buffer("best_convergence", torch.tensor(math.inf))
        self.register_buffer("epochs_without_improvement", torch.tensor(0))
        # this epoch's running sum of M_global
        self.register_buffer("convergence_sum", torch.tensor(0.0))
        self.register_buffer("convergence_count", torch.tensor(0))

    def reconstruction_loss(self, images: torch.Tensor) -> torch.Tensor:
        """L(v) averaged over the batch."""
        return self.energy(images, self.discriminator(images)[0]).mean()

    def discriminator_loss(self, real, fake, labels=None):
        real_loss, fake_loss = self.reconstruction_loss(real), self.reconstruction_loss(fake)
        loss = began_discriminator_loss(real_loss, fake_loss, self.k)
        return loss, {
            "loss_d": loss.detach(),
            "loss_real": real_loss.detach(),
            "loss_fake": fake_loss.detach(),
        }

    def after_discriminator_step(self, logs: dict) -> dict:
        real_loss, fake_loss = logs["loss_real"], logs["loss_fake"]
        convergence = began_convergence(real_loss, fake_loss, self.gamma)
        used_k = self.k.clone()  # the k_t of this step's L_D
        self.k.copy_(began_k_update(self.k, real_loss, fake_loss, self.gamma, self.lambda_k))
        self.convergence_sum.add_(convergence)
        self.convergence_count.add_(1)
        return {"convergence": convergence, "k": used_k}

    def generator_loss(self, fake, labels=None):
        loss = began_generator_loss(self.reconstruction_loss(fake))
        return loss, {"loss_g": loss.detach()}

    def validation_values(self, real, fake, labels=None):
        real_loss, fake_loss = self.reconstruction_loss(real), self.reconstruction_loss(fake)
        return {
            "loss_real": real_loss,
            "loss_fake": fake_loss,
            "convergence": began_convergence(real_loss, fake_loss, self.gamma),
        }

    def prepare_fit(self, datamodule) -> None:
        """``output_bias=data_mean``: G starts drawing the training images' mean pixel value
        instead of grey (MNIST in [-1, 1]: -0.74), which D reconstructs as well as a digit."""
        super().prepare_fit(datamodule)
        if self.output_bias == "data_mean":
            if not getattr(datamodule, "splits", None):
                datamodule.setup("fit")
            images = datamodule.splits["train"][0]
            mean = float(images.float().mean()) * 2.0 / 255.0 - 1.0  # uint8 -> [-1, 1]
            start_at_pixel_value(self.generator, mean)

    def epoch_end_update(self) -> dict:
        """The epoch's mean M_global; after ``lr_decay_patience`` epochs without a new best, both
        learning rates are scaled by ``lr_decay_factor`` (``lr_scale``; ``scaled_lr`` keeps them
        at or above ``lr_min``). Branch-free, for populations."""
        count = self.convergence_count
        epoch_convergence = self.convergence_sum / count.clamp_min(1)
        improved = (count > 0) & (epoch_convergence < self.best_convergence)
        self.best_convergence.copy_(torch.where(improved, epoch_convergence, self.best_convergence))
        waited = torch.where(improved, 0, self.epochs_without_improvement + (count > 0).long())
        decay = waited >= self.lr_decay_patience
        self.epochs_without_improvement.copy_(torch.where(decay, 0, waited))
        self.convergence_sum.zero_()
        self.convergence_count.zero_()
        ones = torch.ones_like(epoch_convergence)
        scale = torch.where(decay, self.lr_decay_factor * ones, ones)
        return {"convergence_epoch": epoch_convergence, "lr_scale": scale}

    def scaled_lr(self, lr: float, scale: float) -> float:
        return max(lr * scale, self.lr_min)
