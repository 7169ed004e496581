"""The VAE (Kingma & Welling 2014) and VAE-GAN (Larsen, Sønderby, Larochelle, Winther 2016).

Both have an encoder q(z|x) = N(mu, diag sigma^2) (``arch.encoder``) and the arch's generator as
the decoder p(x|z); sampling, scoring and the checkpoints work as for the other models (the
decoder is ``generator``, z ~ N(0, I) is the prior). VAE-GAN adds the arch's classifier D, whose
``feature_layer``-th hidden activation is the similarity metric of its reconstruction loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from src.losses import (
    PIXEL_LIKELIHOODS,
    feature_nll,
    kl_to_standard_normal,
    pixel_nll,
    reparameterize,
    vaegan_discriminator_loss,
)
from src.models.base import (
    VALIDATION_SEED,
    AdversarialModel,
    ManualLoop,
    OptimizerFactory,
    frozen,
)
from src.nets.batch_norm import batch_statistics
from src.utils.rules import choice, integer, number


class VAE(AdversarialModel):
    """L = kl_weight * L_prior + L_llike^pixel (Kingma & Welling 2014 Eq. 10; kl_weight 1 is the
    ELBO), one update of encoder and decoder per batch. ``discriminator`` is None."""

    display_name = "VAE"
    knob_rules = {"kl_weight": number(0), "pixel_likelihood": choice(*PIXEL_LIKELIHOODS)}

    discriminator_role = None
    loss_family = None
    needs_encoder = True
    population_refusal = ManualLoop.population_refusal  # its own step: encoder and decoder

    def __init__(
        self,
        generator: nn.Module,
        encoder: nn.Module,
        optimizer_g: OptimizerFactory,
        optimizer_e: OptimizerFactory,
        kl_weight: float = 1.0,
        pixel_likelihood: str = "bernoulli",
        optimizer_d: None = None,
        **loop_options,
    ):
        if pixel_likelihood not in PIXEL_LIKELIHOODS:
            raise ValueError(
                f"model.pixel_likelihood must be one of {PIXEL_LIKELIHOODS}, "
                f"got {pixel_likelihood!r}"
            )
        if kl_weight < 0:
            raise ValueError(f"model.kl_weight must be >= 0, got {kl_weight}")
        _check_encoder(encoder, generator)
        if optimizer_d is not None:
            raise ValueError("model=vae has no discriminator: model.optimizer_d must be null")
        if loop_options.get("latent_distribution", "normal") != "normal":
            raise ValueError("a VAE's prior is N(0, I): model.latent_distribution must be normal")
        super().__init__(generator, None, optimizer_g, None, **loop_options)
        self.encoder = encoder
        self.optimizer_e_factory = optimizer_e
        self.kl_weight = kl_weight
        self.pixel_likelihood = pixel_likelihood

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.compile_nets:
            for net in (self.generator, self.encoder, self.discriminator):
                if net is not None:
                    net.compile()

    # ----------------------------------------------------------------- what an encoder allows
    def encode(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """z for images x: the posterior mean (or a draw from q(z|x) with ``sample``)."""
        mu, logvar = self.encoder(x)
        return reparameterize(mu, logvar) if sample else mu

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Dec(mean of q(z|x)): the deterministic reconstruction that evaluation and grids show."""
        return self(self.encode(x))

    # ----------------------------------------------------------------- training
    def configure_optimizers(self):
        return [
            self.optimizer_g_factory(self.generator.parameters()),
            self.optimizer_e_factory(self.encoder.parameters()),
        ]

    def vae_losses(self, real: torch.Tensor) -> tuple[torch.Tensor, dict]:
        mu, logvar = self.encoder(real)
        reconstruction = self.generator(reparameterize(mu, logvar))
        prior = kl_to_standard_normal(mu, logvar)
        llike = pixel_nll(reconstruction, real, self.pixel_likelihood)
        loss = self.kl_weight * prior + llike
        return loss, {"loss": loss.detach(), "prior": prior.detach(), "llike": llike.detach()}

    def training_step(self, batch, batch_idx: int) -> None:
        real = batch[0]
        optimizer_g, optimizer_e = self.optimizers()
        self.train_batches_seen += 1
        check = self._check_now(batch_idx)
        loss, logs = self.vae_losses(real)
        if check:
            self._raise_if_not_finite(loss, "VAE loss")
        optimizer_g.zero_grad(set_to_none=True)
        optimizer_e.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer_g.step()
        optimizer_e.step()
        self.update_generator_ema()
        self._log_train(logs)

    def validation_step(self, batch, batch_idx: int) -> None:
        real = batch[0]
        # the same eps every epoch, and never from the training RNG
        with torch.random.fork_rng(devices=[real.device] if real.is_cuda else []):
            torch.manual_seed(VALIDATION_SEED + batch_idx)
            logs = self.validation_values(real)
        self._log_validation(logs, real.shape[0])

    def validation_values(self, real: torch.Tensor, *_) -> dict:
        """Held-out ELBO parts, and the deterministic reconstruction's pixel MSE."""
        _, logs = self.vae_losses(real)
        logs["reconstruction_mse"] = reconstruction_mse(self.reconstruct(real), real)
        return logs


class VAEGAN(VAE):
    """Larsen et al. 2016 Alg. 1: three parameter sets, three updates per batch.

    Enc by L_prior + L_llike^{Dis_l}; Dec by gamma * L_llike^{Dis_l} - L_GAN (its adversarial part
    is the ``loss`` group's generator objective, applied to Dis(x_tilde) and Dis(Dec(z_p)):
    ``bce_minimax`` is the paper's -L_GAN, ``bce_ns`` the non-saturating form); Dis by L_GAN only
    (src.losses.vaegan_discriminator_loss; it is never trained on L_llike). gamma is
    ``reconstruction_weight``; ``kl_weight`` scales L_prior as in the VAE.
    """

    display_name = "VAE-GAN"
    knob_rules = {"reconstruction_weight": number(0), "feature_layer": integer(-1)}

    discriminator_role = "classifier"
    loss_family = "classifier"

    def __init__(
        self,
        generator: nn.Module,
        encoder: nn.Module,
        discriminator: nn.Module,
        optimizer_g: OptimizerFactory,
        optimizer_e: OptimizerFactory,
        optimizer_d: OptimizerFactory,
        generator_objective: Callable,
        reconstruction_weight: float = 1e-3,
        feature_layer: int = -1,
        kl_weight: float = 1.0,
        **loop_options,
    ):
        if reconstruction_weight < 0:
            raise ValueError(
                f"model.reconstruction_weight must be >= 0, got {reconstruction_weight}"
            )
        if not hasattr(discriminator, "logits_and_features"):
            raise ValueError(
                f"model=vaegan needs a classifier D that exposes its hidden features; "
                f"{type(discriminator).__name__} does not"
            )
        super().__init__(
            generator, encoder, optimizer_g, optimizer_e, kl_weight, "bernoulli", **loop_options
        )
        self.discriminator = discriminator
        self.optimizer_d_factory = optimizer_d
        self.generator_objective = generator_objective
        self.reconstruction_weight = reconstruction_weight
        self.feature_layer = feature_layer
        available = discriminator.n_feature_layers
        if feature_layer != -1 and not 1 <= feature_layer <= available:
            raise ValueError(
                f"model.feature_layer must be 1..{available} (D's hidden layers) or -1 (the last), "
                f"got {feature_layer}"
            )

    def configure_optimizers(self):
        return [
            self.optimizer_g_factory(self.generator.parameters()),
            self.optimizer_e_factory(self.encoder.parameters()),
            self.optimizer_d_factory(self.discriminator.parameters()),
        ]

    def _dis(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.discriminator.logits_and_features(images, layer=self.feature_layer)

    def training_step(self, batch, batch_idx: int) -> None:
        real = batch[0]
        optimizer_g, optimizer_e, optimizer_d = self.optimizers()
        self.train_batches_seen += 1
        check = self._check_now(batch_idx)

        mu, logvar = self.encoder(real)
        reconstruction = self.generator(reparameterize(mu, logvar))
        prior_samples = self.generator(self.sample_latent(real.shape[0]))

        # Dis: L_GAN on x, x_tilde and Dec(z_p), the fakes detached
        real_logits = self._dis(real)[0]
        loss_d = vaegan_discriminator_loss(
            real_logits,
            self._dis(reconstruction.detach())[0],
            self._dis(prior_samples.detach())[0],
        )
        self._update(optimizer_d, loss_d, "discriminator loss", check)

        with frozen(self.discriminator):
            with torch.no_grad():
                real_features = self._dis(real)[1]
            reconstruction_logits, reconstruction_features = self._dis(reconstruction)
            prior_logits = self._dis(prior_samples)[0]
            llike = feature_nll(reconstruction_features, real_features)
            prior = kl_to_standard_normal(mu, logvar)
            adversarial = self.generator_objective(
                reconstruction_logits
            ) + self.generator_objective(prior_logits)
            loss_e = self.kl_weight * prior + llike
            loss_g = self.reconstruction_weight * llike + adversarial
            if check:
                self._raise_if_not_finite(loss_e, "encoder loss")
                self._raise_if_not_finite(loss_g, "decoder loss")
            # each loss reaches only its own parameter set (Alg. 1): Enc's loss also depends on
            # Dec, and Dec's on Enc, through x_tilde
            encoder_params = list(self.encoder.parameters())
            decoder_params = list(self.generator.parameters())
            encoder_grads = torch.autograd.grad(loss_e, encoder_params, retain_graph=True)
            decoder_grads = torch.autograd.grad(loss_g, decoder_params)
            for params, grads, optimizer in (
                (encoder_params, encoder_grads, optimizer_e),
                (decoder_params, decoder_grads, optimizer_g),
            ):
                optimizer.zero_grad(set_to_none=True)
                for param, grad in zip(params, grads, strict=True):
                    param.grad = grad
                optimizer.step()
        self.update_generator_ema()

        self._log_train(
            {
                "loss_d": loss_d.detach(),
                "loss_e": loss_e.detach(),
                "loss_g": loss_g.detach(),
                "prior": prior.detach(),
                "llike": llike.detach(),
                "d_real": torch.sigmoid(real_logits.detach()).mean(),
                "d_reconstruction": torch.sigmoid(reconstruction_logits.detach()).mean(),
                "d_prior": torch.sigmoid(prior_logits.detach()).mean(),
            }
        )

    def validation_values(self, real: torch.Tensor, *_) -> dict:
        mu, logvar = self.encoder(real)
        reconstruction = self.generator(reparameterize(mu, logvar))
        with batch_statistics(self.discriminator):
            real_logits, real_features = self._dis(real)
            reconstruction_logits, reconstruction_features = self._dis(reconstruction)
        return {
            "prior": kl_to_standard_normal(mu, logvar),
            "llike": feature_nll(reconstruction_features, real_features),
            "d_real": torch.sigmoid(real_logits).mean(),
            "d_reconstruction": torch.sigmoid(reconstruction_logits).mean(),
            "reconstruction_mse": reconstruction_mse(self.reconstruct(real), real),
        }


def reconstruction_mse(reconstruction: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error per pixel on the [0, 1] pixel scale (images come in [-1, 1])."""
    return (reconstruction - x).pow(2).mean() / 4


def _check_encoder(encoder: nn.Module, generator: nn.Module) -> None:
    if getattr(encoder, "latent_dim", None) != generator.latent_dim:
        raise ValueError(
            f"the encoder's latent_dim ({getattr(encoder, 'latent_dim', None)}) must equal the "
            f"generator's ({generator.latent_dim})"
        )
