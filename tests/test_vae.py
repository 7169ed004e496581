"""VAE and VAE-GAN: each update reaches exactly the parameters Larsen et al. 2016's Algorithm 1
sends it to, the models train from the config, and what an encoder allows (reconstruction scores,
real-image interpolation, attribute vectors, reconstruction grids) works on their checkpoints."""

import copy
import json

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from src.config import validate_config
from src.losses import (
    feature_nll,
    kl_to_standard_normal,
    pixel_nll,
    reparameterize,
    vaegan_discriminator_loss,
)
from src.models.base import frozen
from src.runs.training import train
from src.utils import ConfigError
from tests.conftest import compose_script

SGD_LR_1 = [f"optimizer@model.optimizer_{net}=sgd" for net in "ged"] + [
    f"model.optimizer_{net}.lr=1.0" for net in "ged"
]


def sgd_model(make_cfg, model: str):
    """The model with plain SGD at lr 1 on every net: a step moves each parameter by -its grad."""
    extra = SGD_LR_1 if model == "vaegan" else SGD_LR_1[:2] + SGD_LR_1[3:5]
    cfg = make_cfg(f"model={model}", "arch=mlp", *extra)
    torch.manual_seed(0)
    return instantiate(cfg.model)


def one_step(model, real: torch.Tensor) -> None:
    """model.training_step outside a Trainer, with its own optimizers."""
    optimizers = model.configure_optimizers()
    model.optimizers = lambda: optimizers
    model._check_now = lambda batch_idx: True
    model.manual_backward = lambda loss: loss.backward()
    model.training_step((real, torch.zeros(real.shape[0], dtype=torch.long)), 0)


def moved(before, after) -> list[torch.Tensor]:
    pairs = zip(before.parameters(), after.parameters(), strict=True)
    return [b.detach() - a.detach() for b, a in pairs]


def assert_moves(model_before, model_after, net: str, expected_grads) -> None:
    for change, grad in zip(
        moved(getattr(model_before, net), getattr(model_after, net)), expected_grads, strict=True
    ):
        # SGD at lr 1: before - after == grad
        assert torch.allclose(change, grad, rtol=1e-4, atol=1e-6), net


def test_vaegan_updates_follow_algorithm_1(make_cfg):
    model = sgd_model(make_cfg, "vaegan")
    reference = copy.deepcopy(model)
    real = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.manual_seed(5)
    one_step(model, real)

    # the same step by hand, with the same random draws (eps, then z_p)
    torch.manual_seed(5)
    mu, logvar = reference.encoder(real)
    reconstruction = reference.generator(reparameterize(mu, logvar))
    prior_samples = reference.generator(reference.sample_latent(8))
    dis = reference.discriminator
    layer = reference.feature_layer
    loss_d = vaegan_discriminator_loss(
        dis.logits_and_features(real, layer=layer)[0],
        dis.logits_and_features(reconstruction.detach(), layer=layer)[0],
        dis.logits_and_features(prior_samples.detach(), layer=layer)[0],
    )
    grads_d = torch.autograd.grad(loss_d, list(dis.parameters()))
    assert_moves(reference, model, "discriminator", grads_d)
    with torch.no_grad():  # Dis after its step: Enc and Dec see the updated Dis
        for p, g in zip(dis.parameters(), grads_d, strict=True):
            p -= g
    with frozen(dis):
        real_features = dis.logits_and_features(real, layer=layer)[1].detach()
        logits_tilde, features_tilde = dis.logits_and_features(reconstruction, layer=layer)
        logits_prior = dis.logits_and_features(prior_samples, layer=layer)[0]
        llike = feature_nll(features_tilde, real_features)
        gamma = reference.reconstruction_weight
        adversarial = reference.generator_objective(logits_tilde) + reference.generator_objective(
            logits_prior
        )
        loss_e = kl_to_standard_normal(mu, logvar) + llike
        loss_g = gamma * llike + adversarial
        grads_e = torch.autograd.grad(
            loss_e, list(reference.encoder.parameters()), retain_graph=True
        )
        grads_g = torch.autograd.grad(loss_g, list(reference.generator.parameters()))
    # Enc: L_prior + L_llike only (no GAN term); Dec: gamma L_llike - L_GAN (no prior term)
    assert_moves(reference, model, "encoder", grads_e)
    assert_moves(reference, model, "generator", grads_g)
    # the paper's -L_GAN for Dec is the minimax objective (conf/model/vaegan.yaml)
    assert reference.generator_objective.__name__ == "gan_generator_loss_minimax"


def test_vae_step_descends_the_negative_elbo_of_both_nets(make_cfg):
    model = sgd_model(make_cfg, "vae")
    reference = copy.deepcopy(model)
    real = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.manual_seed(5)
    one_step(model, real)
    torch.manual_seed(5)
    mu, logvar = reference.encoder(real)
    reconstruction = reference.generator(reparameterize(mu, logvar))
    loss = kl_to_standard_normal(mu, logvar) + pixel_nll(reconstruction, real, "bernoulli")
    params = list(reference.encoder.parameters()) + list(reference.generator.parameters())
    grads = torch.autograd.grad(loss, params)
    n_encoder = len(list(reference.encoder.parameters()))
    assert_moves(reference, model, "encoder", grads[:n_encoder])
    assert_moves(reference, model, "generator", grads[n_encoder:])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model=vae", "arch=began"],
            r"has no encoder \(arch.encoder\).*one of \[.dcgan., .mlp.\]",
        ),
        (["model=vaegan", "arch=mlp", "model.feature_layer=7"], "model.feature_layer must be 1..1"),
        (["model=vae", "model.pixel_likelihood=laplace"], "model.pixel_likelihood='laplace'"),
        (["model=vaegan", "loss=energy_l2"], "needs a 'classifier' loss"),
    ],
)
def test_bad_vae_configs_are_refused_before_training(make_cfg, overrides, message):
    cfg = make_cfg(*overrides)
    # the model's own ValueError reaches the command line through Hydra's InstantiationException
    with pytest.raises((ConfigError, ValueError, InstantiationException), match=message):
        validate_config(cfg)
        instantiate(cfg.model)


@pytest.mark.parametrize("model", ["vae", "vaegan"])
def test_encoder_models_train_and_their_checkpoints_reconstruct_and_walk(
    make_cfg, tmp_path, data_dir, model
):
    from PIL import Image

    from src.evaluate import evaluate
    from src.interpolate import interpolate

    result = train(make_cfg(f"model={model}", "arch=dcgan"))
    assert result["status"] == "completed"
    assert "val/reconstruction_mse" in result["metrics"]
    # prior samples (8 columns) beside 8 columns of test image / reconstruction pairs
    grid = Image.open(tmp_path / "samples" / "last.png")
    assert grid.width > 2 * grid.height
    ckpt = str(tmp_path / "checkpoints" / "last.ckpt")
    scores = evaluate(
        compose_script(
            "evaluate",
            f"ckpt_path={ckpt}",
            "n_samples=200",
            "n_real=300",
            "kid_subset_size=50",
            "kid_subsets=3",
            f"out={tmp_path / 'evaluation.json'}",
            data_dir=data_dir,
        )
    )
    assert scores["n_reconstructed"] == 300
    assert 0 <= scores["reconstruction_mse"] <= 1
    assert 0 <= scores["reconstruction_accuracy"] <= 1 and scores["test_accuracy"] > 0.95
    interpolate(
        compose_script(
            "interpolate",
            f"ckpt_path={ckpt}",
            "pairs=2",
            "steps=3",
            "walk_rows=2",
            "walk_steps=3",
            "walk_samples=200",
            f"out_dir={tmp_path / 'interpolations'}",
            data_dir=data_dir,
        )
    )
    attribute = json.loads((tmp_path / "interpolations" / "attribute.json").read_text())
    assert attribute["from_class"] == 1 and len(attribute["p_to_class"]) == 3
    for name in ("real_linear.png", "real_spherical.png", "attribute_1_to_7.png"):
        assert (tmp_path / "interpolations" / name).is_file()
    # each real-pair row: image a, 3 decoded steps, image b
    assert Image.open(tmp_path / "interpolations" / "real_linear.png").width > (
        Image.open(tmp_path / "interpolations" / "linear.png").width
    )
