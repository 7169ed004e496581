"""The GAN baseline (Goodfellow et al. 2014) with a classifier discriminator."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from src.losses import mutual_information_lower_bound
from src.models.base import AdversarialModel
from src.utils.rules import integer, number


class GAN(AdversarialModel):
    """D outputs a logit; the ``loss`` group picks G's objective (non-saturating or minimax)."""

    display_name = "GAN"

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

    display_name = "cGAN"
    knob_rules = {"num_classes": integer(2)}

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
        check_conditioned(generator, discriminator, num_classes, "model=cgan", "classes")
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


def check_conditioned(generator, discriminator, count: int, model: str, what: str) -> None:
    """Both nets must take ``count`` one-hot condition slots (their ``num_classes``)."""
    for name, net in (("generator", generator), ("discriminator", discriminator)):
        if getattr(net, "num_classes", 0) != count:
            raise ValueError(
                f"{model} needs a {name} conditioned on {count} {what}; "
                f"{type(net).__name__} takes num_classes={getattr(net, 'num_classes', 0)}"
            )


class CodeReadingDiscriminator(nn.Module):
    """InfoGAN's D and Q in one module: Q shares D's body up to its last hidden layer and adds
    FC 128 - BN - LeakyReLU(0.1) - FC K (the paper's MNIST head, Table 1). One module, so that D's
    optimiser trains both, ``frozen`` freezes both in G's step and checkpoints hold both."""

    def __init__(self, body: nn.Module, num_codes: int, feature_dim: int):
        super().__init__()
        self.body = body
        self.code_head = nn.Sequential(
            nn.Linear(feature_dim, 128),
            nn.BatchNorm1d(128),
            nn.LeakyReLU(0.1),
            nn.Linear(128, num_codes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def logits_and_code_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(D's logit, Q's logits over the K codes) from one pass through the shared body."""
        logits, features = self.body.logits_and_features(x)
        return logits, self.code_head(features.flatten(1))


class InfoGAN(GAN):
    """InfoGAN (Chen et al. 2016 Eq. 6): min_{G,Q} max_D V(D, G) - lambda L_I(G, Q), with one
    categorical code c ~ Cat(K) uniform and lambda = 1 (the paper's choice for discrete codes).

    Unconditional: no labels are read. The last K of G's ``latent_dim`` inputs carry c as a one-hot
    vector, the others the noise; sampling draws c with the noise, so every caller (scores, EMA,
    ``sample.py``) sees one latent vector. On MNIST c tends to pick the digit class, and its uniform
    prior the class shares.
    """

    display_name = "InfoGAN"
    knob_rules = {"num_codes": integer(2), "code_weight": number(0)}

    member_hparams = ("code_weight",)

    def __init__(
        self,
        generator,
        discriminator,
        optimizer_g,
        optimizer_d,
        discriminator_objective,
        generator_objective,
        num_codes: int = 10,
        code_weight: float = 1.0,
        **loop_options,
    ):
        if not 2 <= num_codes < generator.latent_dim:
            raise ValueError(
                f"model.num_codes must be in [2, latent_dim = {generator.latent_dim}): the code "
                f"takes num_codes of G's latent inputs, got {num_codes}"
            )
        if code_weight < 0:
            raise ValueError(f"model.code_weight must be >= 0, got {code_weight}")
        if not hasattr(discriminator, "logits_and_features"):
            raise ValueError(
                "model=infogan reads codes off D's last hidden layer; "
                f"{type(discriminator).__name__} has no logits_and_features"
            )
        feature_dim = _feature_dim(discriminator, generator)
        super().__init__(
            generator,
            CodeReadingDiscriminator(discriminator, num_codes, feature_dim),
            optimizer_g,
            optimizer_d,
            discriminator_objective,
            generator_objective,
            **loop_options,
        )
        self.num_codes = num_codes
        self.code_weight = code_weight

    def sample_latent(self, n, generator=None, device=None):
        z = super().sample_latent(n, generator=generator, device=device)
        codes = torch.randint(self.num_codes, (n,), device=z.device, generator=generator)
        z[:, -self.num_codes :] = F.one_hot(codes, self.num_codes).to(z.dtype)
        return z

    def codes(self) -> torch.Tensor:
        """c of the fakes the losses score, read back off the step's latents (argmax: an
        interpolated latent keeps its dominant code)."""
        return self.step_inputs["z"][:, -self.num_codes :].argmax(1)

    def discriminator_loss(self, real, fake, labels=None):
        real_logits = self.discriminator(real)
        fake_logits, code_logits = self.discriminator.logits_and_code_logits(fake)
        codes = self.codes()
        information = mutual_information_lower_bound(code_logits, codes)
        adversarial = self.discriminator_objective(real_logits, fake_logits)
        loss = adversarial - self.code_weight * information
        return loss, {
            "loss_d": adversarial.detach(),
            "d_real": torch.sigmoid(real_logits.detach()).mean(),
            "d_fake": torch.sigmoid(fake_logits.detach()).mean(),
            "mutual_information": information.detach(),
            "code_accuracy": (code_logits.detach().argmax(1) == codes).float().mean(),
        }

    def generator_loss(self, fake, labels=None):
        fake_logits, code_logits = self.discriminator.logits_and_code_logits(fake)
        adversarial = self.generator_objective(fake_logits)
        loss = adversarial - self.code_weight * mutual_information_lower_bound(
            code_logits, self.codes()
        )
        return loss, {"loss_g": adversarial.detach()}


@torch.no_grad()
def _feature_dim(discriminator: nn.Module, generator: nn.Module) -> int:
    """Size of D's last hidden layer, read from one forward of a G sample in eval mode (no
    running statistics move, no RNG drawn beyond the latent's)."""
    modes = [m.training for m in (generator, discriminator)]
    generator.eval(), discriminator.eval()
    try:
        image = generator(torch.zeros(1, generator.latent_dim))
        return discriminator.logits_and_features(image)[1].flatten(1).shape[1]
    finally:
        generator.train(modes[0]), discriminator.train(modes[1])
