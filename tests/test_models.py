"""The training loop's contracts: who updates what, BEGAN's k_t state, divergence."""

import copy
from itertools import pairwise

import pytest
import torch
from hydra.utils import instantiate

from src.models import DivergenceError
from src.runs.training import instantiate_all

MODELS = [
    ("gan", "mlp"),
    ("ebgan", "mlp"),
    ("ebgan_pt", "dcgan"),
    ("began", "began"),
    ("wgan", "mlp"),
    ("wgan_gp", "dcgan"),
    ("cgan", "dcgan"),
    ("infogan", "dcgan"),
]


def named_grads(module):
    return {name for name, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("model_name", "arch"), MODELS)
def test_d_step_touches_only_d_and_g_step_only_g(make_cfg, model_name, arch):
    # a G step on the one batch
    cfg = make_cfg(
        f"model={model_name}",
        f"arch={arch}",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=0",
        "model.d_steps_per_g_step=1",
    )
    datamodule, model, trainer = instantiate_all(cfg)
    steps = []
    original_backward = model.manual_backward

    def spy_backward(loss, *args, **kwargs):
        model.zero_grad(set_to_none=True)  # see exactly which grads this backward produces
        g_before = [p.detach().clone() for p in model.generator.parameters()]
        d_before = [p.detach().clone() for p in model.discriminator.parameters()]
        original_backward(loss, *args, **kwargs)
        steps.append(
            (named_grads(model.generator), named_grads(model.discriminator), g_before, d_before)
        )

    model.manual_backward = spy_backward
    trainer.fit(model, datamodule=datamodule)
    (g_grads_d_step, d_grads_d_step, g0, d0), (g_grads_g_step, d_grads_g_step, g1, d1) = steps
    assert not g_grads_d_step and d_grads_d_step, "the D step must give gradients to D only"
    assert not d_grads_g_step and g_grads_g_step, "the G step must give gradients to G only"
    # between the D backward and the G backward only D's optimizer stepped: G unchanged, D changed
    assert all(torch.equal(a, b) for a, b in zip(g0, g1, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, d1, strict=True))
    # after the G step, D's weights are still those after its own step
    assert all(torch.equal(a, b) for a, b in zip(d1, model.discriminator.parameters(), strict=True))


def test_several_d_steps_per_g_step_each_on_its_own_batch(make_cfg):
    cfg = make_cfg(
        "model=gan",
        "model.d_steps_per_g_step=3",
        "trainer.limit_train_batches=7",
        "trainer.limit_val_batches=0",
    )
    datamodule, model, trainer = instantiate_all(cfg)
    real_batches_seen_by_d = []
    original = model.discriminator_loss

    def spy(real, fake, labels=None):
        real_batches_seen_by_d.append(real.clone())
        return original(real, fake, labels)

    model.discriminator_loss = spy
    trainer.fit(model, datamodule=datamodule)
    optimizer_g, optimizer_d = model.optimizers()
    # one D step per batch; a G step after batches 3 and 6 (none yet after the 7th batch's D step)
    assert optimizer_d.optimizer.state[next(model.discriminator.parameters())]["step"].item() == 7
    assert optimizer_g.optimizer.state[next(model.generator.parameters())]["step"].item() == 2
    assert len(real_batches_seen_by_d) == 7
    assert not any(torch.equal(a, b) for a, b in pairwise(real_batches_seen_by_d))


def test_began_k_moves_by_the_control_law_and_survives_a_checkpoint(make_cfg, tmp_path):
    cfg = make_cfg(
        "model=began",
        "arch=began",
        "model.lambda_k=0.05",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=0",
    )
    datamodule, model, trainer = instantiate_all(cfg)
    seen = []
    original = model.after_discriminator_step

    def spy(logs):
        k_before = model.k.item()
        added = original(logs)
        assert added["k"].item() == k_before  # the k_t this step's L_D used is what is logged
        expected = min(
            max(k_before + 0.05 * (0.5 * logs["loss_real"].item() - logs["loss_fake"].item()), 0.0),
            1.0,
        )
        seen.append((expected, model.k.item()))
        return added

    model.after_discriminator_step = spy
    trainer.fit(model, datamodule=datamodule)
    assert len(seen) == 4 and all(e == pytest.approx(k, abs=1e-6) for e, k in seen)
    assert model.k.item() > 0  # real loss dominates at the start: k grows from 0

    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["state_dict"]["k"].item() == pytest.approx(model.k.item())
    restored = instantiate(cfg.model)
    assert restored.k.item() == 0.0
    restored.load_state_dict(checkpoint["state_dict"])
    assert restored.k.item() == pytest.approx(model.k.item())


def test_began_halves_the_learning_rates_when_convergence_stalls(make_cfg):
    cfg = make_cfg(
        "model=began",
        "arch=began",
        "model.lr_decay_patience=1",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=0",
    )
    datamodule, model, trainer = instantiate_all(cfg)
    epoch_means = []
    original = model.on_train_epoch_end

    def spy():
        epoch_means.append((model.convergence_sum / model.convergence_count).item())
        original()

    model.on_train_epoch_end = spy
    trainer.fit(model, datamodule=datamodule)
    stalls = sum(b >= min(epoch_means[: i + 1]) for i, b in enumerate(epoch_means[1:]))
    for optimizer in model.optimizers():
        assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.5**stalls)


def test_non_finite_loss_raises_divergence_and_writes_no_checkpoint(make_cfg, tmp_path):
    cfg = make_cfg(
        "model=ebgan", "model.check_finite_every_n_steps=1", "trainer.limit_val_batches=0"
    )
    datamodule, model, trainer = instantiate_all(cfg)
    with torch.no_grad():
        next(model.generator.parameters()).fill_(float("nan"))
    with pytest.raises(DivergenceError, match="non-finite discriminator loss at training batch 1"):
        trainer.fit(model, datamodule=datamodule)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_latent_distributions():
    from src.models import BEGAN
    from src.nets import MLPAutoEncoder, MLPGenerator

    model = BEGAN(
        MLPGenerator(8, 2, 8, (1, 28, 28)),
        MLPAutoEncoder(2, 8, (1, 28, 28)),
        torch.optim.Adam,
        torch.optim.Adam,
        energy=lambda x, r: (x - r).abs().flatten(1).mean(1),
        latent_distribution="uniform",
    )
    z = model.sample_latent(10000)
    assert z.min() >= -1 and z.max() <= 1 and abs(z.mean().item()) < 0.02
    with pytest.raises(ValueError, match="latent_distribution must be one of"):
        BEGAN(
            model.generator,
            model.discriminator,
            torch.optim.Adam,
            torch.optim.Adam,
            energy=None,
            latent_distribution="cauchy",
        )


def test_batch_statistics_evaluates_like_training_without_moving_running_stats():
    from src.nets import MLPClassifier
    from src.nets.batch_norm import batch_statistics

    net = MLPClassifier(3, 8, (1, 4, 4), dropout=True)
    net.eval()
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d))
    before = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    x = torch.randn(6, 1, 4, 4) * 5 + 3
    with batch_statistics(net):
        inside = net(x)
        assert (
            bn.training
            and not next(m for m in net.modules() if isinstance(m, torch.nn.Dropout)).training
        )
    assert not bn.training and bn.momentum == 0.1
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            before, (bn.running_mean, bn.running_var, bn.num_batches_tracked), strict=True
        )
    )
    # inside: normalised with this batch's statistics, as in a training forward pass (dropout off)
    reference = copy.deepcopy(net).train()
    for m in reference.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    assert torch.allclose(inside, reference(x), atol=1e-5)
    assert not torch.allclose(inside, net(x), rtol=0.1, atol=0)


def test_ebgan_pt_generator_loss_is_energy_plus_weighted_pt_of_the_fake_embeddings():
    from src.losses import energy, pulling_away_term
    from src.models import EBGANPT
    from src.nets import MLPAutoEncoder, MLPGenerator

    torch.manual_seed(0)
    generator, autoencoder = (
        MLPGenerator(8, 2, 16, (1, 4, 4)),
        MLPAutoEncoder(3, 6, (1, 4, 4), init_std=0.5),
    )
    model = EBGANPT(
        generator,
        autoencoder,
        torch.optim.Adam,
        torch.optim.Adam,
        energy=energy,
        margin=1.0,
        pt_weight=0.25,
    )
    fake = generator(torch.randn(5, 8))
    loss, logs = model.generator_loss(fake)
    reconstruction, embedding = autoencoder(fake)
    by_hand_energy = (reconstruction - fake).flatten(1).pow(2).sum(1).sqrt().mean()
    unit = embedding / embedding.norm(dim=1, keepdim=True)
    cosines = unit @ unit.T
    by_hand_pt = (cosines.pow(2).sum() - cosines.diagonal().pow(2).sum()) / (5 * 4)
    assert torch.allclose(loss, by_hand_energy + 0.25 * by_hand_pt, atol=1e-6)
    assert torch.allclose(logs["pt"], pulling_away_term(embedding), atol=1e-7)
    assert logs["pt"].item() > 0.01  # a real, non-trivial term on these embeddings


def test_mlp_nets_follow_the_paper_grid_layout():
    from src.nets import MLPAutoEncoder, MLPClassifier, MLPGenerator

    def layers(module, kind):
        return [m for m in module.modules() if isinstance(m, kind)]

    autoencoder = MLPAutoEncoder(n_layers=4, hidden=32, image_shape=(1, 28, 28), dropout=True)
    encoder_linears = layers(autoencoder.encoder, torch.nn.Linear)
    assert [(layer.in_features, layer.out_features) for layer in encoder_linears] == [
        (784, 32),
        (32, 32),
        (32, 32),
    ]
    assert (autoencoder.decoder.in_features, autoencoder.decoder.out_features) == (32, 784)
    assert len(layers(autoencoder.encoder, torch.nn.BatchNorm1d)) == 2  # none after D's input layer
    assert len(layers(autoencoder.encoder, torch.nn.Dropout)) == 3
    generator = MLPGenerator(latent_dim=10, n_layers=3, hidden=64, image_shape=(1, 28, 28))
    assert [
        (layer.in_features, layer.out_features) for layer in layers(generator, torch.nn.Linear)
    ] == [
        (10, 64),
        (64, 64),
        (64, 784),
    ]
    assert len(layers(generator, torch.nn.BatchNorm1d)) == 2  # none on G's output layer
    classifier = MLPClassifier(n_layers=2, hidden=16, image_shape=(1, 28, 28))
    assert [
        (layer.in_features, layer.out_features) for layer in layers(classifier, torch.nn.Linear)
    ] == [
        (784, 16),
        (16, 1),
    ]
    assert not layers(classifier, torch.nn.BatchNorm1d) and not layers(classifier, torch.nn.Dropout)
    assert abs(generator.out.weight.std().item() - 0.02) < 0.002
    # 12 544 weights
    assert abs(layers(classifier, torch.nn.Linear)[0].weight.std().item() - 0.002) < 0.0002


def test_divergence_between_checks_is_caught_on_the_epochs_last_batch(make_cfg, tmp_path):
    cfg = make_cfg(
        "model=ebgan",
        "model.check_finite_every_n_steps=10",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=0",
    )
    datamodule, model, trainer = instantiate_all(cfg)
    with torch.no_grad():
        next(model.generator.parameters()).fill_(float("nan"))
    with pytest.raises(DivergenceError, match="at training batch 3"):
        trainer.fit(model, datamodule=datamodule)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_wgan_clips_every_critic_weight_after_each_critic_step(make_cfg):
    cfg = make_cfg(
        "model=wgan",
        "arch.nLayerD=3",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=0",
    )
    datamodule, model, trainer = instantiate_all(cfg)
    seen = []
    original = model.after_discriminator_step

    def spy(logs):
        added = original(logs)
        seen.append(max(p.abs().max().item() for p in model.discriminator.parameters()))
        return added

    model.after_discriminator_step = spy
    trainer.fit(model, datamodule=datamodule)
    # the layer norm's scale starts at 1, the init std is 0.002: clipping brings the scale to 0.01
    assert seen == [pytest.approx(0.01), pytest.approx(0.01)]


def test_wgan_gp_critic_step_adds_the_weighted_penalty(make_cfg):
    model = instantiate(make_cfg("model=wgan_gp", "model.penalty_weight=3").model)
    real, fake = torch.rand(6, 1, 28, 28) * 2 - 1, torch.rand(6, 1, 28, 28) * 2 - 1
    torch.manual_seed(0)
    loss, logs = model.discriminator_loss(real, fake)
    expected = logs["critic_fake"] - logs["critic_real"] + 3 * logs["gradient_penalty"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logs["gradient_penalty"].item() > 0
    loss.backward()  # the penalty's graph reaches the critic's weights (create_graph)
    assert all(p.grad is not None for p in model.discriminator.parameters())


def test_cgan_conditions_both_nets_on_the_batch_labels(make_cfg):
    cfg = make_cfg("model=cgan", "trainer.limit_train_batches=2", "trainer.limit_val_batches=0")
    datamodule, model, trainer = instantiate_all(cfg)
    seen = []
    original = model.discriminate

    def spy(images, labels=None):
        seen.append(labels)
        return original(images, labels)

    batches = []
    original_step = model.training_step

    def record_batch(batch, batch_idx):
        batches.append(batch[1].clone())
        return original_step(batch, batch_idx)

    model.discriminate, model.training_step = spy, record_batch
    trainer.fit(model, datamodule=datamodule)
    first_batch_labels = batches[0]
    assert all(labels is not None for labels in seen)
    # D step: real and fake batches both carry the real batch's labels
    assert torch.equal(seen[0], first_batch_labels) and torch.equal(seen[1], first_batch_labels)
    model.eval()
    z = torch.randn(4, model.latent_dim)
    with torch.no_grad():
        as_threes, as_eights = model(z, torch.full((4,), 3)), model(z, torch.full((4,), 8))
        halfway = model(z, torch.full((4, 10), 0.0).index_fill_(1, torch.tensor([3, 8]), 0.5))
    assert not torch.allclose(as_threes, as_eights)  # the label changes the image for a fixed z
    assert halfway.shape == as_threes.shape  # soft label vectors are accepted (class walks)
    with pytest.raises(ValueError, match="class-conditional: pass labels"):
        model(z)


def test_unconditional_nets_refuse_labels_and_conditional_nets_require_them():
    from src.nets import DCGANClassifier, MLPGenerator

    with pytest.raises(ValueError, match="built without num_classes"):
        MLPGenerator(8, 2, 16, (1, 28, 28))(torch.randn(2, 8), torch.tensor([1, 2]))
    conditional = DCGANClassifier((1, 28, 28), width=4, num_classes=10)
    assert conditional.down[0].in_channels == 11  # one image channel + one constant plane per class
    with pytest.raises(ValueError, match="labels are required"):
        conditional(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"shape \(2, 10\)"):
        conditional(torch.randn(2, 1, 28, 28), torch.rand(2, 9))


def test_frozen_turns_grads_off_inside_and_restores_only_what_it_froze():
    from src.models.base import frozen

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    net[1].bias.requires_grad_(False)  # frozen by the user: must stay frozen after the block
    with frozen(net):
        assert not any(p.requires_grad for p in net.parameters())
        net(torch.randn(3, 2, requires_grad=True)).sum().backward()
    assert all(p.grad is None for p in net.parameters())
    assert [p.requires_grad for p in net.parameters()] == [True, True, True, False]


def test_model_compile_is_opt_in_for_fit_and_keeps_parameter_names(make_cfg):
    plain = instantiate(make_cfg("model=ebgan").model)
    plain.setup("fit")
    assert (
        plain.generator._compiled_call_impl is None
        and plain.discriminator._compiled_call_impl is None
    )
    model = instantiate(make_cfg("model=ebgan", "model.compile=true").model)
    model.setup("validate")
    assert model.generator._compiled_call_impl is None
    model.setup("fit")
    assert (
        model.generator._compiled_call_impl is not None
        and model.discriminator._compiled_call_impl is not None
    )
    assert list(model.state_dict()) == list(plain.state_dict())  # checkpoints stay interchangeable


def test_began_nets_start_with_the_reference_xavier_init_and_a_spread_of_samples():
    """With PyTorch's default init the BEGAN G maps every z to nearly the same image (no batch norm
    to undo it); Glorot-uniform (the reference implementation's, the default) does not."""
    from src.nets.began import BEGANGenerator

    spreads = {}
    for init in ("default", "xavier"):
        torch.manual_seed(0)
        generator = BEGANGenerator(32, (1, 28, 28), filters=16, init=init)
        with torch.no_grad():
            images = generator(torch.rand(256, 32) * 2 - 1)
        spreads[init] = images.std(0).mean().item()
    assert spreads["xavier"] > 20 * spreads["default"]
    assert all(
        m.bias.abs().sum() == 0 for m in generator.modules() if isinstance(m, torch.nn.Conv2d)
    )
    with pytest.raises(ValueError, match="arch.init must be one of"):
        BEGANGenerator(32, (1, 28, 28), init="he")


def test_spectral_norm_classifier_has_unit_top_singular_values_and_no_batch_norm(make_cfg):
    from src.nets import DCGANClassifier
    from src.runs.training import train

    net = DCGANClassifier((1, 28, 28), width=4, norm="spectral")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    for _ in range(30):  # one power iteration per training forward
        net(torch.randn(4, 1, 28, 28))
    for layer in (net.down[0], net.down[2], net.out):
        top = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert top.item() == pytest.approx(1.0, abs=1e-3)
    cfg = make_cfg("model=gan", "arch=dcgan", "arch.classifier_norm=spectral")
    assert train(cfg)["status"] == "completed"


@pytest.mark.parametrize("arch", ["mlp", "began"])
def test_began_output_bias_data_mean_starts_g_at_the_training_images_mean(make_cfg, arch):
    """model.output_bias=data_mean: G's last bias is the data mean (atanh of it behind a tanh), so
    an untrained G draws that pixel value where the zero bias draws 0 (grey)."""
    import math
    from types import SimpleNamespace

    images = torch.zeros(10, 1, 28, 28, dtype=torch.uint8)
    images[:, :, 10:18, 12:16] = 255  # 32 of 784 pixels white: mean -1 + 2 * 32 / 784
    mean = -1 + 2 * 32 / 784
    data = SimpleNamespace(splits={"train": (images, torch.zeros(10, dtype=torch.long))})
    cfg = make_cfg("model=began", f"arch={arch}", "model.output_bias=data_mean")
    model = instantiate(cfg.model)
    model.prepare_fit(data)
    last = [m for m in model.generator.modules() if getattr(m, "bias", None) is not None][-1]
    squashed = arch == "mlp"  # the MLP generator ends in tanh, BEGAN's decoder in a linear conv
    expected = math.atanh(mean) if squashed else mean
    assert torch.allclose(last.bias, torch.full_like(last.bias, expected))
    with torch.no_grad():
        torch.nn.init.zeros_(last.weight)  # the bias alone: G draws the data mean everywhere
        z = model.sample_latent(4, generator=torch.Generator().manual_seed(0), device="cpu")
        assert torch.allclose(model.generator(z), torch.full((4, 1, 28, 28), mean), atol=1e-5)
    with pytest.raises(Exception, match="output_bias must be zero or data_mean"):
        instantiate(make_cfg("model=began", "model.output_bias=median").model)
