"""WGAN (Arjovsky, Chintala, Bottou 2017) and WGAN-GP (Gulrajani et al. 2017): a critic scores
images, and the gap of its mean scores on real and fake data estimates the Wasserstein-1
distance."""

from __future__ import annotations

import torch
from torch import nn

from src.losses import gradient_penalty, wasserstein_critic_loss, wasserstein_generator_loss
from src.models.base import AdversarialModel
from src.utils.rules import number, positive

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class WGAN(AdversarialModel):
    """L_critic = E[c(G(z))] - E[c(x)], L_G = -E[c(G(z))]; after every critic step its weights are
    clipped to [-clip_value, clip_value] (the Lipschitz constraint of Arjovsky et al. 2017, Alg.
    1)."""

    display_name = "WGAN"
    knob_rules = {"clip_value": positive()}

    discriminator_role = "critic"
    loss_family = "wasserstein"
    member_hparams = ("clip_value",)

    def __init__(
        self,
        generator,
        discriminator,
        optimizer_g,
        optimizer_d,
        clip_value: float | None = 0.01,
        **loop_options,
    ):
        super().__init__(generator, discriminator, optimizer_g, optimizer_d, **loop_options)
        if clip_value is not None and not clip_value > 0:
            raise ValueError(
                f"model.clip_value must be > 0 (or null for no clipping), got {clip_value}"
            )
        self.clip_value = clip_value

    def discriminator_loss(self, real, fake, labels=None):
        real_scores, fake_scores = self.discriminate(real, labels), self.discriminate(fake, labels)
        loss = wasserstein_critic_loss(real_scores, fake_scores)
        return loss, self._critic_logs(loss, real_scores, fake_scores)

    def validation_values(self, real, fake, labels=None):
        # without WGAN-GP's penalty: validation runs in inference mode, with no input gradient
        return WGAN.discriminator_loss(self, real, fake, labels)[1]

    @staticmethod
    def _critic_logs(loss, real_scores, fake_scores) -> dict:
        return {
            "loss_d": loss.detach(),
            "critic_real": real_scores.detach().mean(),
            "critic_fake": fake_scores.detach().mean(),
            # the critic's estimate of W(P_r, P_g) (up to a Lipschitz constant): the curve to watch
            "wasserstein_estimate": (real_scores.detach().mean() - fake_scores.detach().mean()),
        }

    def after_discriminator_step(self, logs: dict) -> dict:
        if self.clip_value is None:
            return {}
        with torch.no_grad():
            for parameter in self.discriminator.parameters():
                parameter.copy_(parameter.clamp(-self.clip_value, self.clip_value))
        return {}

    def generator_loss(self, fake, labels=None):
        loss = wasserstein_generator_loss(self.discriminate(fake, labels))
        return loss, {"loss_g": loss.detach()}


class WGANGP(WGAN):
    """WGAN-GP, Gulrajani et al. 2017 Eq. 3:
    L_c = E[c(G(z))] - E[c(x)] + lambda E[(||grad c(x_hat)|| - 1)^2].

    No weight clipping. The penalty is per sample, so the critic must not normalise across the
    batch: a critic with batch norm is refused (the paper uses layer norm or none). Each step's
    interpolation weights e ~ U[0, 1] are drawn with its latents (``sample_step_noise``).
    """

    display_name = "WGAN-GP"
    knob_rules = {"penalty_weight": number(0)}

    member_hparams = ("penalty_weight",)

    def __init__(
        self,
        generator,
        discriminator,
        optimizer_g,
        optimizer_d,
        penalty_weight: float = 10.0,
        **loop_options,
    ):
        batch_norms = [
            name for name, m in discriminator.named_modules() if isinstance(m, BATCH_NORMS)
        ]
        if batch_norms:
            raise ValueError(
                f"model=wgan_gp needs a critic without batch norm (found it at {batch_norms}); "
                "set arch.critic_norm=layer or arch.critic_norm=none"
            )
        if not penalty_weight >= 0:
            raise ValueError(f"model.penalty_weight must be >= 0, got {penalty_weight}")
        super().__init__(
            generator, discriminator, optimizer_g, optimizer_d, clip_value=None, **loop_options
        )
        self.penalty_weight = float(penalty_weight)

    def sample_step_noise(self, n, generator=None, device=None):
        device = self.device if device is None else device
        return {"mixing": torch.rand(n, device=device, generator=generator)}

    def discriminator_loss(self, real, fake, labels=None):
        real_scores, fake_scores = self.discriminate(real, labels), self.discriminate(fake, labels)
        wasserstein = wasserstein_critic_loss(real_scores, fake_scores)
        mixing = self.step_inputs.get("mixing")  # absent outside a training step: drawn there
        penalty = gradient_penalty(lambda x: self.discriminate(x, labels), real, fake, mixing)
        loss = wasserstein + self.penalty_weight * penalty
        return loss, {
            **self._critic_logs(loss, real_scores, fake_scores),
            "gradient_penalty": penalty.detach(),
        }
