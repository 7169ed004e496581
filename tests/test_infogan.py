"""InfoGAN: the mutual-information bound by hand, the code in the latent, Q trained with D and G."""

import math

import pytest
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from src.losses import (
    gan_discriminator_loss,
    gan_generator_loss_non_saturating,
    mutual_information_lower_bound,
)


def test_mutual_information_bound_by_hand():
    codes = torch.tensor([0, 1])
    # Q uniform over K = 2: log Q(c|x) = log 1/2 = -H(c), the bound is 0
    assert mutual_information_lower_bound(torch.zeros(2, 2), codes).item() == pytest.approx(0.0)
    # Q(c|x) = 3/4 for the true code of both images: log 2 + log 3/4 = log 1.5
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, math.log(3.0)]])
    assert mutual_information_lower_bound(logits, codes).item() == pytest.approx(math.log(1.5))
    # Q certain and right: the bound reaches H(c) = log K
    sure = torch.tensor([[50.0, 0.0, 0.0], [0.0, 50.0, 0.0]])
    assert mutual_information_lower_bound(sure, codes).item() == pytest.approx(math.log(3.0))


@pytest.fixture
def infogan(make_cfg):
    return instantiate(make_cfg("model=infogan", "arch=dcgan").model)


def test_the_code_is_a_uniform_one_hot_tail_of_the_latent(infogan):
    k = infogan.num_codes
    z = infogan.sample_latent(20000, generator=torch.Generator().manual_seed(0))
    code_part = z[:, -k:]
    assert torch.equal(code_part.sum(1), torch.ones(len(z))) and set(
        code_part.unique().tolist()
    ) == {0.0, 1.0}
    shares = code_part.mean(0)
    assert shares.min() > 0.24 and shares.max() < 0.26
    assert z[:, :-k].std().item() == pytest.approx(1.0, abs=0.02)  # the noise stays N(0, I)
    again = infogan.sample_latent(20000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, again)  # seeded sampling (scores, sample.py) is reproducible


def test_losses_are_the_gan_objectives_minus_the_bound(infogan):
    torch.manual_seed(0)
    z = infogan.sample_latent(8)
    fake = infogan(z)
    real = torch.rand_like(fake) * 2 - 1
    codes = z[:, -infogan.num_codes :].argmax(1)
    with infogan.step_context(z=z):  # the losses read the codes off the step's latents
        loss_d, logs = infogan.discriminator_loss(real, fake.detach())
        loss_g, _ = infogan.generator_loss(fake)
    # by hand with the same nets (batch norm in train mode sees the same batches)
    real_logits = infogan.discriminator.body(real)
    fake_logits, features = infogan.discriminator.body.logits_and_features(fake.detach())
    code_logits = infogan.discriminator.code_head(features.flatten(1))
    bound = math.log(infogan.num_codes) - F.cross_entropy(code_logits, codes)
    expected = gan_discriminator_loss(real_logits, fake_logits) - bound
    assert loss_d.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["mutual_information"].item() == pytest.approx(bound.item(), rel=1e-5)
    assert loss_g.item() == pytest.approx(
        (gan_generator_loss_non_saturating(fake_logits) - bound).item(), rel=1e-5
    )


def test_q_learns_with_d_and_g_writes_the_code_into_the_image(make_cfg):
    from src.runs.training import instantiate_all

    cfg = make_cfg(
        "model=infogan", "arch=mlp", "trainer.limit_train_batches=1", "trainer.limit_val_batches=0"
    )
    datamodule, model, trainer = instantiate_all(cfg)
    grads = []
    original_backward = model.manual_backward

    def spy(loss, *args, **kwargs):
        model.zero_grad(set_to_none=True)
        original_backward(loss, *args, **kwargs)
        grads.append(
            (
                any(p.grad is not None for p in model.discriminator.code_head.parameters()),
                any(p.grad is not None for p in model.generator.parameters()),
            )
        )

    model.manual_backward = spy
    trainer.fit(model, datamodule=datamodule)
    # D step: Q's head learns (in D's optimiser); G step: G gets the code term, Q is frozen
    assert grads == [(True, False), (False, True)]
    head = {id(p) for p in model.discriminator.code_head.parameters()}
    d_params = {id(p) for group in model.optimizers()[1].param_groups for p in group["params"]}
    assert head <= d_params


def test_a_code_that_leaves_no_noise_is_refused(make_cfg):
    cfg = make_cfg("model=infogan", "arch=mlp", "model.num_codes=8")
    with pytest.raises(
        InstantiationException, match=r"model.num_codes must be in \[2, latent_dim = 8\)"
    ):
        instantiate(cfg.model)
