"""Every loss against numbers worked out by hand on small tensors."""

import math

import pytest
import torch

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
    pulling_away_term,
)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_energy_norms_by_hand():
    x = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    reconstruction = torch.tensor([[[[3.0, 4.0], [0.0, 0.0]]], [[[1.0, -1.0], [1.0, -1.0]]]], dtype=torch.float64)
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
    assert pulling_away_term(3.0 * s).item() == pytest.approx(pulling_away_term(s.flatten(1)).item(), rel=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        pulling_away_term(torch.ones(1, 3))


def test_gan_losses_by_hand():
    real, fake = t(0.0, 2.0), t(-1.0, 0.0)
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    d = (softplus(-0.0) + softplus(-2.0)) / 2 + (softplus(-1.0) + softplus(0.0)) / 2
    assert gan_discriminator_loss(real, fake).item() == pytest.approx(d)
    # non-saturating: -log sigmoid(l); minimax: log(1 - sigmoid(l)) = -softplus(l)
    assert gan_generator_loss_non_saturating(fake).item() == pytest.approx((softplus(1.0) + softplus(0.0)) / 2)
    assert gan_generator_loss_minimax(fake).item() == pytest.approx(-(softplus(-1.0) + softplus(0.0)) / 2)


def test_began_losses_and_convergence_by_hand():
    real_loss, fake_loss = torch.tensor(0.4), torch.tensor(0.3)
    assert began_discriminator_loss(real_loss, fake_loss, 0.5).item() == pytest.approx(0.25)
    assert began_generator_loss(fake_loss).item() == pytest.approx(0.3)
    # gamma 0.5: |0.2 - 0.3| = 0.1
    assert began_convergence(real_loss, fake_loss, 0.5).item() == pytest.approx(0.5)


def test_began_k_update_by_hand_and_clamped_at_both_ends():
    k = torch.tensor(0.2)
    # 0.2 + 0.001 * (0.5 * 0.4 - 0.1) = 0.2001
    assert began_k_update(k, torch.tensor(0.4), torch.tensor(0.1), 0.5, 0.001).item() == pytest.approx(0.2001)
    assert began_k_update(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(5.0), 0.5, 0.001).item() == 0.0
    assert began_k_update(torch.tensor(0.9995), torch.tensor(4.0), torch.tensor(0.0), 0.5, 0.001).item() == 1.0
    assert began_k_update(torch.tensor(0.0), torch.tensor(-0.0), torch.tensor(0.0), 0.5, 0.001).item() == 0.0


def test_energy_object_matches_the_function_and_rejects_unknown_norms():
    x, reconstruction = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    for norm in ENERGY_NORMS:
        assert torch.equal(Energy(norm)(x, reconstruction), energy(x, reconstruction, norm))
    with pytest.raises(ValueError, match="unknown energy norm 'l3'"):
        Energy("l3")
