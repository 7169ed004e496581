"""Pure loss functions, one per paper equation: tensors in, tensors out; no state, no modules.

Shapes: ``real_logits``/``fake_logits`` and energies are per-sample vectors [N]; BEGAN's
``real_loss`` / ``fake_loss`` are batch means (scalars), as in the paper.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ENERGY_NORMS = ("l2", "mse", "l1")


def gan_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """GAN D loss, Goodfellow et al. 2014 Eq. 1: -E[log D(x)] - E[log(1 - D(G(z)))], from logits."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def gan_generator_loss_minimax(fake_logits: torch.Tensor) -> torch.Tensor:
    """GAN G loss, Goodfellow et al. 2014 Eq. 1 (minimax): E[log(1 - D(G(z)))], from logits."""
    return -F.softplus(fake_logits).mean()


def gan_generator_loss_non_saturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """GAN G loss, Goodfellow et al. 2014 Sec. 3 (non-saturating): -E[log D(G(z))], from logits."""
    return F.softplus(-fake_logits).mean()


def energy(x: torch.Tensor, reconstruction: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Auto-encoder energy, Zhao et al. 2016 Eq. 6: D(x) = ||Dec(Enc(x)) - x|| per sample.

    ``l2``: Euclidean norm of the residual (the paper's); ``mse``: mean squared residual per pixel;
    ``l1``: mean absolute residual per pixel (BEGAN's L(v), Berthelot et al. 2017 Eq. 1 with
    eta = 1).
    """
    residual = (reconstruction - x).flatten(1)
    if norm == "l2":
        return torch.linalg.vector_norm(residual, ord=2, dim=1)
    if norm == "mse":
        return residual.pow(2).mean(dim=1)
    if norm == "l1":
        return residual.abs().mean(dim=1)
    raise ValueError(f"unknown energy norm {norm!r}; allowed: {', '.join(ENERGY_NORMS)}")


class Energy:
    """:func:`energy` with its norm bound once: ``Energy("l2")(x, reconstruction)``.

    The ``loss`` configs build this object rather than a ``_partial_`` of :func:`energy`: Hydra
    re-checks its target policy on every call of a partial it made (~0.3 ms on a 2-core CPU), three
    times per EBGAN batch.
    """

    def __init__(self, norm: str = "l2"):
        if norm not in ENERGY_NORMS:
            raise ValueError(f"unknown energy norm {norm!r}; allowed: {', '.join(ENERGY_NORMS)}")
        self.norm = norm

    def __call__(self, x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        return energy(x, reconstruction, self.norm)

    def __repr__(self) -> str:
        return f"Energy(norm={self.norm!r})"


def ebgan_discriminator_loss(
    real_energy: torch.Tensor, fake_energy: torch.Tensor, margin: float
) -> torch.Tensor:
    """EBGAN D loss, Zhao et al. 2016 Eq. 1: D(x) + [m - D(G(z))]^+, averaged over the batch."""
    return real_energy.mean() + torch.clamp(margin - fake_energy, min=0).mean()


def ebgan_generator_loss(fake_energy: torch.Tensor) -> torch.Tensor:
    """EBGAN G loss, Zhao et al. 2016 Eq. 2: D(G(z)), averaged over the batch."""
    return fake_energy.mean()


def pulling_away_term(embeddings: torch.Tensor) -> torch.Tensor:
    """EBGAN-PT term, Zhao et al. 2016 Eq. 7: mean over pairs i != j of cos(S_i, S_j)^2."""
    n = embeddings.shape[0]
    if n < 2:
        raise ValueError(f"the pulling-away term needs a batch of at least 2 embeddings, got {n}")
    unit = F.normalize(embeddings.flatten(1), dim=1)
    squared_cosines = (unit @ unit.T).pow(2)
    return (squared_cosines.sum() - squared_cosines.diagonal().sum()) / (n * (n - 1))


def began_discriminator_loss(
    real_loss: torch.Tensor, fake_loss: torch.Tensor, k: torch.Tensor | float
) -> torch.Tensor:
    """BEGAN D loss, Berthelot et al. 2017 Eq. 4: L_D = L(x) - k_t * L(G(z_D))."""
    return real_loss - k * fake_loss


def began_generator_loss(fake_loss: torch.Tensor) -> torch.Tensor:
    """BEGAN G loss, Berthelot et al. 2017 Eq. 4: L_G = L(G(z_G))."""
    return fake_loss


def began_k_update(
    k: torch.Tensor | float,
    real_loss: torch.Tensor,
    fake_loss: torch.Tensor,
    gamma: float,
    lambda_k: float,
) -> torch.Tensor:
    """BEGAN, Berthelot et al. 2017 Eq. 4: k <- clip(k + lambda_k (gamma L(x) - L(G(z))), 0, 1)."""
    step = torch.as_tensor(gamma * real_loss - fake_loss).detach()
    return torch.clamp(k + lambda_k * step, 0.0, 1.0)


def began_convergence(
    real_loss: torch.Tensor, fake_loss: torch.Tensor, gamma: float
) -> torch.Tensor:
    """BEGAN M_global, Berthelot et al. 2017 Sec. 3.4.1: L(x) + |gamma L(x) - L(G(z_G))|."""
    return (real_loss + torch.abs(gamma * real_loss - fake_loss)).detach()


def wasserstein_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN critic loss, Arjovsky et al. 2017 Alg. 1 (minimised): E[c(G(z))] - E[c(x)]."""
    return fake_scores.mean() - real_scores.mean()


def wasserstein_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN generator loss, Arjovsky et al. 2017 Alg. 1: -E[c(G(z))]."""
    return -fake_scores.mean()


def gradient_penalty(
    critic, real: torch.Tensor, fake: torch.Tensor, mixing: torch.Tensor | None = None
) -> torch.Tensor:
    """WGAN-GP penalty, Gulrajani et al. 2017 Eq. 3: E[(||grad c(x_hat)||_2 - 1)^2].

    ``critic`` maps a batch to per-sample scores; ``mixing`` holds one e ~ U[0, 1] per sample (drawn
    here when None). The input gradient is taken with ``torch.func.grad``, which also runs inside
    ``torch.func.vmap`` (a population); its result keeps the graph to the critic's weights, so the
    penalty's gradient reaches them.
    """
    if mixing is None:
        mixing = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    e = mixing.view(-1, *([1] * (real.dim() - 1)))
    interpolates = e * real.detach() + (1 - e) * fake.detach()
    gradients = torch.func.grad(lambda x: critic(x).sum())(interpolates)
    return (torch.linalg.vector_norm(gradients.flatten(1), ord=2, dim=1) - 1).pow(2).mean()


# ----------------------------------------------------------------------------- VAE and VAE-GAN
PIXEL_LIKELIHOODS = ("bernoulli", "gaussian")


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """VAE prior loss, Kingma & Welling 2014 App. B: KL(N(mu, sigma^2) || N(0, I)) =
    -1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2), summed over z, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(dim=1).mean()


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Reparameterisation, Kingma & Welling 2014 Sec. 2.4: z = mu + sigma * eps, eps ~ N(0, I)."""
    return mu + torch.randn_like(mu) * (0.5 * logvar).exp()


def pixel_nll(reconstruction: torch.Tensor, x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """VAE L_llike^pixel = -log p(x|z), summed over pixels, averaged over the batch; images in
    [-1, 1]. ``bernoulli``: Kingma & Welling 2014 App. C.1 (their MNIST decoder), the pixels and
    the decoder's mean mapped to [0, 1]; ``gaussian``: N(x; x_tilde, I), 1/2 ||x - x_tilde||^2."""
    if likelihood == "bernoulli":
        p = ((reconstruction + 1) / 2).clamp(1e-6, 1 - 1e-6)
        target = (x + 1) / 2
        nll = -(target * p.log() + (1 - target) * (1 - p).log())
    elif likelihood == "gaussian":
        nll = 0.5 * (reconstruction - x).pow(2)
    else:
        raise ValueError(
            f"unknown pixel likelihood {likelihood!r}; allowed: {', '.join(PIXEL_LIKELIHOODS)}"
        )
    return nll.flatten(1).sum(dim=1).mean()


def feature_nll(reconstruction_features: torch.Tensor, real_features: torch.Tensor) -> torch.Tensor:
    """VAE-GAN L_llike^{Dis_l}, Larsen et al. 2016 Sec. 2.3: -log N(Dis_l(x); Dis_l(x_tilde), I) =
    1/2 ||Dis_l(x) - Dis_l(x_tilde)||^2 (+ const), summed over features, averaged over the batch."""
    difference = (reconstruction_features - real_features).flatten(1)
    return 0.5 * difference.pow(2).sum(dim=1).mean()


def vaegan_discriminator_loss(
    real_logits: torch.Tensor, reconstruction_logits: torch.Tensor, prior_logits: torch.Tensor
) -> torch.Tensor:
    """VAE-GAN Dis loss, Larsen et al. 2016 Sec. 2.3 / Alg. 1: -L_GAN = -[log Dis(x) +
    log(1 - Dis(x_tilde)) + log(1 - Dis(Dec(z_p)))], batch means, from logits."""
    return (
        F.softplus(-real_logits).mean()
        + F.softplus(reconstruction_logits).mean()
        + F.softplus(prior_logits).mean()
    )


# ----------------------------------------------------------------------------- image translation
def least_squares_discriminator_loss(
    real_scores: torch.Tensor, fake_scores: torch.Tensor
) -> torch.Tensor:
    """LSGAN D loss (Mao et al. 2017 Eq. 9, a = 0, b = 1; CycleGAN Sec. 4):
    E[(D(y) - 1)^2] + E[D(G(x))^2]."""
    return (real_scores - 1).pow(2).mean() + fake_scores.pow(2).mean()


def least_squares_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """LSGAN G loss (Mao et al. 2017 Eq. 9, c = 1; CycleGAN Sec. 4): E[(D(G(x)) - 1)^2]."""
    return (fake_scores - 1).pow(2).mean()


def l1_distance(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pix2pix Eq. 3: L_L1(G) = E[||y - G(x, z)||_1], as the mean absolute error per pixel."""
    return (output - target).abs().mean()


def cycle_consistency_loss(
    a: torch.Tensor, a_cycled: torch.Tensor, b: torch.Tensor, b_cycled: torch.Tensor
) -> torch.Tensor:
    """CycleGAN Eq. 2: E[||F(G(x)) - x||_1] + E[||G(F(y)) - y||_1] (per-pixel means)."""
    return l1_distance(a_cycled, a) + l1_distance(b_cycled, b)


def identity_loss(
    a: torch.Tensor, a_through_f: torch.Tensor, b: torch.Tensor, b_through_g: torch.Tensor
) -> torch.Tensor:
    """CycleGAN Sec. 5.2 (Taigman et al. 2017): E[||G(y) - y||_1] + E[||F(x) - x||_1], G: A -> B
    applied to B's images and F: B -> A to A's."""
    return l1_distance(b_through_g, b) + l1_distance(a_through_f, a)


def mutual_information_lower_bound(code_logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """InfoGAN Eq. 5 (Chen et al. 2016), c ~ Cat(K) uniform: L_I = E[log Q(c | G(z, c))] + H(c),
    H(c) = log K; at most H(c), reached when Q reads c off every image."""
    # a Python float, not a new device tensor: no host-to-device copy (none is allowed in a graph)
    entropy = math.log(code_logits.shape[1])
    return entropy - F.cross_entropy(code_logits, codes)
