"""Every loss against numbers worked out by hand on small tensors."""

import math

import pytest
import torch

from src import losses
from src.losses import (
    ENERGY_NORMS,
    Energy,
    began_convergence,
    began_discriminator_loss,
    began_generator_loss,
    began_k_update,
    ebgan_discriminator_loss,
    ebgan_generator_loss,
    energy,
    gan_discriminator_loss,
    gan_generator_loss_minimax,
    gan_generator_loss_non_saturating,
    gradient_penalty,
    pulling_away_term,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_energy_norms_by_hand():
    x = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    reconstruction = torch.tensor(
        [[[[3.0, 4.0], [0.0, 0.0]]], [[[1.0, -1.0], [1.0, -1.0]]]], dtype=torch.float64
    )
    # residuals: (3, 4, 0, 0) and (1, -1, 1, -1)
    assert torch.allclose(energy(x, reconstruction, "l2"), t(5.0, 2.0))
    assert torch.allclose(energy(x, reconstruction, "mse"), t(25 / 4, 1.0))
    assert torch.allclose(energy(x, reconstruction, "l1"), t(7 / 4, 1.0))
    with pytest.raises(ValueError, match="allowed: l2, mse, l1"):
        energy(x, reconstruction, "l3")


def test_ebgan_hinge_by_hand():
    real, fake = t(1.0, 3.0), t(4.0, 12.0)
    # D(x) mean = 2; [10 - 4]^+ = 6, [10 - 12]^+ = 0 -> mean 3
    assert ebgan_discriminator_loss(real, fake, margin=10.0).item() == pytest.approx(5.0)
    # every fake beyond the margin: the hinge is zero and only D(x) remains
    assert ebgan_discriminator_loss(real, t(11.0, 20.0), margin=10.0).item() == pytest.approx(2.0)
    assert ebgan_generator_loss(fake).item() == pytest.approx(8.0)


def test_ebgan_hinge_gradient_stops_outside_margin():
    fake = t(4.0, 12.0).requires_grad_()
    ebgan_discriminator_loss(t(0.0, 0.0), fake, margin=10.0).backward()
    assert fake.grad.tolist() == [-0.5, 0.0]


def test_pulling_away_term_is_mean_squared_cosine_off_diagonal():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]], dtype=torch.float64)
    # cosines: (0,1) = 1/sqrt2, (0,2) = 0, (1,2) = 1/sqrt2 -> squared: 1/2, 0, 1/2; each pair twice
    expected = 2 * (0.5 + 0.0 + 0.5) / (3 * 2)
    assert pulling_away_term(s).item() == pytest.approx(expected)


def test_pulling_away_term_squares_the_cosine_and_excludes_the_diagonal():
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    # cos = -1: an unsquared term would give -1; the diagonal (cos = 1) would add 2 / (N(N-1))
    assert pulling_away_term(opposite).item() == pytest.approx(1.0)
    orthogonal = torch.eye(4)
    assert pulling_away_term(orthogonal).item() == pytest.approx(0.0, abs=1e-7)
    # scale-invariant, and computed on flattened embeddings
    s = torch.randn(5, 2, 3)
    assert pulling_away_term(3.0 * s).item() == pytest.approx(
        pulling_away_term(s.flatten(1)).item(), rel=1e-5
    )
    with pytest.raises(ValueError, match="at least 2"):
        pulling_away_term(torch.ones(1, 3))


def test_gan_losses_by_hand():
    real, fake = t(0.0, 2.0), t(-1.0, 0.0)
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    d = (softplus(-0.0) + softplus(-2.0)) / 2 + (softplus(-1.0) + softplus(0.0)) / 2
    assert gan_discriminator_loss(real, fake).item() == pytest.approx(d)
    # non-saturating: -log sigmoid(l); minimax: log(1 - sigmoid(l)) = -softplus(l)
    assert gan_generator_loss_non_saturating(fake).item() == pytest.approx(
        (softplus(1.0) + softplus(0.0)) / 2
    )
    assert gan_generator_loss_minimax(fake).item() == pytest.approx(
        -(softplus(-1.0) + softplus(0.0)) / 2
    )


def test_began_losses_and_convergence_by_hand():
    real_loss, fake_loss = torch.tensor(0.4), torch.tensor(0.3)
    assert began_discriminator_loss(real_loss, fake_loss, 0.5).item() == pytest.approx(0.25)
    assert began_generator_loss(fake_loss).item() == pytest.approx(0.3)
    # gamma 0.5: |0.2 - 0.3| = 0.1
    assert began_convergence(real_loss, fake_loss, 0.5).item() == pytest.approx(0.5)


def test_began_k_update_by_hand_and_clamped_at_both_ends():
    k = torch.tensor(0.2)
    # 0.2 + 0.001 * (0.5 * 0.4 - 0.1) = 0.2001
    assert began_k_update(
        k, torch.tensor(0.4), torch.tensor(0.1), 0.5, 0.001
    ).item() == pytest.approx(0.2001)
    assert (
        began_k_update(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(5.0), 0.5, 0.001).item()
        == 0.0
    )
    assert (
        began_k_update(
            torch.tensor(0.9995), torch.tensor(4.0), torch.tensor(0.0), 0.5, 0.001
        ).item()
        == 1.0
    )
    assert (
        began_k_update(torch.tensor(0.0), torch.tensor(-0.0), torch.tensor(0.0), 0.5, 0.001).item()
        == 0.0
    )


def test_wasserstein_losses_by_hand():
    real_scores, fake_scores = t(1.0, 3.0), t(0.5, -1.5)
    # E[c(G(z))] - E[c(x)] = -0.5 - 2 = -2.5; the generator's -E[c(G(z))] = 0.5
    assert wasserstein_critic_loss(real_scores, fake_scores).item() == pytest.approx(-2.5)
    assert wasserstein_generator_loss(fake_scores).item() == pytest.approx(0.5)


def test_gradient_penalty_of_a_linear_critic_is_known_for_any_interpolate():
    # c(x) = w.x + b has gradient w everywhere: penalty (||w|| - 1)^2 = (5 - 1)^2 = 16 at any x_hat
    critic = torch.nn.Linear(4, 1).double()
    with torch.no_grad():
        critic.weight.copy_(t(3.0, 0.0, 4.0, 0.0).view(1, 4))
        critic.bias.fill_(-7.0)
    real, fake = (
        torch.randn(5, 1, 2, 2, dtype=torch.float64),
        torch.randn(5, 1, 2, 2, dtype=torch.float64),
    )
    score = lambda x: critic(x.flatten(1)).squeeze(1)  # noqa: E731
    assert gradient_penalty(score, real, fake).item() == pytest.approx(16.0)
    assert gradient_penalty(
        score, real, fake, mixing=t(0, 0.25, 0.5, 0.75, 1)
    ).item() == pytest.approx(16.0)
    # its gradient reaches the critic: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| = 1.6 w
    gradient_penalty(score, real, fake).backward()
    assert torch.allclose(critic.weight.grad, 1.6 * critic.weight.detach())
    # a unit-norm linear critic pays nothing: the penalty is two-sided around 1
    with torch.no_grad():
        critic.weight.copy_(t(0.6, 0.0, 0.0, 0.8).view(1, 4))
    assert gradient_penalty(score, real, fake).item() == pytest.approx(0.0, abs=1e-12)


def test_gradient_penalty_interpolates_real_and_fake_by_the_mixing_weight():
    # c(x) = sum x^2 has gradient 2 x_hat, x_hat = e x + (1 - e) x_fake
    real, fake = t(1.0, 0.0, 2.0, 0.0).view(2, 2), t(0.0, 1.0, 0.0, 0.0).view(2, 2)
    # sample 1, e = 0.5: x_hat (0.5, 0.5), ||grad|| = sqrt 2 -> (sqrt 2 - 1)^2 = 3 - 2 sqrt 2
    # sample 2, e = 1:   x_hat (2, 0),     ||grad|| = 4      -> 9
    penalty = gradient_penalty(lambda x: x.pow(2).sum(1), real, fake, mixing=t(0.5, 1.0))
    assert penalty.item() == pytest.approx((3 - 2 * math.sqrt(2) + 9) / 2)


def test_energy_object_matches_the_function_and_rejects_unknown_norms():
    x, reconstruction = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    for norm in ENERGY_NORMS:
        assert torch.equal(Energy(norm)(x, reconstruction), energy(x, reconstruction, norm))
    with pytest.raises(ValueError, match="unknown energy norm 'l3'"):
        Energy("l3")


def test_vae_prior_loss_is_the_closed_form_kl_by_hand():
    # dim 1: mu 1, sigma^2 1 -> 1/2; dim 2: mu 0, sigma^2 4 -> -1/2 (1 + log 4 - 4) = 1.5 - log 2
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [0.0, 0.0]])
    expected = ((0.5 + 1.5 - math.log(2.0)) + 0.0) / 2  # the second sample is the prior: 0
    assert losses.kl_to_standard_normal(mu, logvar).item() == pytest.approx(expected, rel=1e-6)


def test_reparameterized_draws_have_the_posteriors_moments():
    torch.manual_seed(0)
    mu = torch.tensor([[2.0, -1.0]]).expand(200_000, 2)
    logvar = torch.tensor([[math.log(0.25), math.log(9.0)]]).expand(200_000, 2)
    z = losses.reparameterize(mu, logvar)
    assert z.mean(0).tolist() == pytest.approx([2.0, -1.0], abs=0.02)
    assert z.std(0).tolist() == pytest.approx([0.5, 3.0], rel=0.01)


def test_pixel_likelihoods_by_hand():
    x = torch.tensor([[1.0, -1.0]])
    reconstruction = torch.tensor([[0.0, 0.6]])
    # Bernoulli on [0, 1]: targets (1, 0), means (0.5, 0.8): -log 0.5 - log 0.2
    bernoulli = losses.pixel_nll(reconstruction, x, "bernoulli")
    assert bernoulli.item() == pytest.approx(-math.log(0.5) - math.log(0.2), rel=1e-5)
    # unit Gaussian: 1/2 (1 + 1.6^2)
    gaussian = losses.pixel_nll(reconstruction, x, "gaussian")
    assert gaussian.item() == pytest.approx(0.5 * (1.0 + 2.56), rel=1e-6)
    with pytest.raises(ValueError, match="allowed: bernoulli, gaussian"):
        losses.pixel_nll(reconstruction, x, "laplace")


def test_feature_likelihood_and_vaegan_discriminator_loss_by_hand():
    reconstruction_features = torch.tensor([[1.0, 2.0], [3.0, 3.0]])
    real_features = torch.tensor([[0.0, 0.0], [3.0, 3.0]])
    # 1/2 (1 + 4) for the first sample, 0 for the second, averaged
    assert losses.feature_nll(reconstruction_features, real_features).item() == pytest.approx(1.25)
    zero = torch.zeros(4)
    # Dis = 1/2 everywhere: -[log 1/2 + log 1/2 + log 1/2]
    assert losses.vaegan_discriminator_loss(zero, zero, zero).item() == pytest.approx(
        3 * math.log(2.0), rel=1e-6
    )
    # a confident, right Dis: -log sigmoid(10) - 2 log(1 - sigmoid(-10))
    right = losses.vaegan_discriminator_loss(
        torch.full((4,), 10.0), torch.full((4,), -10.0), torch.full((4,), -10.0)
    )
    assert right.item() == pytest.approx(3 * math.log1p(math.exp(-10.0)), rel=1e-5)
