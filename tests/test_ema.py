"""The generator's moving average: its arithmetic by hand, which G samples in which mode, and the
scripts sampling from it."""

import pytest
import torch
from hydra.utils import instantiate


def build(make_cfg, decay=0.9):
    torch.manual_seed(0)
    return instantiate(make_cfg("model=gan", "arch=mlp", f"model.ema_decay={decay}").model)


def test_the_average_follows_its_warm_up_and_decay_by_hand(make_cfg):
    model = build(make_cfg, decay=0.9)
    start = {k: v.clone() for k, v in model.generator.state_dict().items()}
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)
    model.update_generator_ema()
    # update 1: d = min(0.9, 2 / 11); ema = d * start + (1 - d) * (start + 1)
    first = 1 - 2 / 11
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)  # the live G is now start + 2
    model.update_generator_ema()
    # update 2: d = min(0.9, 3 / 12) = 0.25
    expected = 0.25 * first + 0.75 * 2.0
    for name, p in model.generator_ema.named_parameters():
        assert torch.allclose(p, start[name] + expected, atol=1e-6), name
    assert model.ema_updates.item() == 2
    # late in training the decay itself rules: min(0.9, (1 + t) / (10 + t)) = 0.9 from t = 80
    model.ema_updates.fill_(1000)
    before = {k: v.clone() for k, v in model.generator_ema.named_parameters()}
    model.update_generator_ema()
    for name, p in model.generator_ema.named_parameters():
        live = dict(model.generator.named_parameters())[name]
        assert torch.allclose(p, 0.9 * before[name] + 0.1 * live, atol=1e-6), name


def test_eval_mode_samples_from_the_average_and_training_from_g(make_cfg):
    model = build(make_cfg)
    with torch.no_grad():
        for p in model.generator_ema.parameters():
            p.zero_()
    z = torch.randn(4, model.latent_dim)
    model.eval()
    assert torch.equal(model(z), torch.zeros(4, 1, 28, 28))  # tanh(0): the zeroed average
    model.train()
    assert not torch.equal(model(z), torch.zeros(4, 1, 28, 28))
    # the average is no parameter of any optimizer
    optimized = {
        id(p) for o in model.configure_optimizers() for g in o.param_groups for p in g["params"]
    }
    assert not any(id(p) in optimized for p in model.generator_ema.parameters())


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5])
def test_a_decay_outside_the_open_unit_interval_is_refused(make_cfg, decay):
    from src.config import validate_config
    from src.utils import ConfigError

    with pytest.raises(ConfigError, match=r"model.ema_decay=.*must be"):
        validate_config(make_cfg(f"model.ema_decay={decay}"))


def test_a_run_with_ema_samples_from_it_after_training(make_cfg, tmp_path, data_dir):
    from src.evaluate import evaluate
    from src.runs.checkpoints import load_checkpoint
    from src.runs.training import train
    from src.sampling import generate
    from tests.conftest import compose_script

    assert (
        train(make_cfg("model=ebgan", "arch=mlp", "model.ema_decay=0.99"))["status"] == "completed"
    )
    model, _ = load_checkpoint(str(tmp_path / "checkpoints" / "last.ckpt"))
    assert model.ema_updates.item() == 3
    samples = generate(model, 8, seed=1)
    model.generator_ema = None  # the trained G draws different samples from the same latents
    assert not torch.equal(samples, generate(model, 8, seed=1))

    # evaluate.py scores the average by default and the trained G on request, into two files
    def scores(use_ema: bool) -> dict:
        small = ["n_samples=64", "n_real=64", "kid_subset_size=32", "kid_subsets=2"]
        ckpt = tmp_path / "checkpoints" / "last.ckpt"
        return evaluate(
            compose_script(
                "evaluate", f"ckpt_path={ckpt}", f"use_ema={use_ema}", *small, data_dir=data_dir
            )
        )

    averaged, trained = scores(True), scores(False)
    assert averaged["ema"] and not trained["ema"] and averaged["fid"] != trained["fid"]
    assert (tmp_path / "evaluation.json").exists() and (
        tmp_path / "evaluation_trained_g.json"
    ).exists()


def test_sampling_on_batch_statistics_leaves_the_running_ones_alone(make_cfg):
    from src.sampling import generate

    model = build(make_cfg)
    model.train()
    model(torch.randn(16, model.latent_dim))  # move G's running statistics off their init
    model.update_generator_ema()
    saved = {k: v.clone() for k, v in model.generator_ema.state_dict().items()}
    running = generate(model, 64, batch_size=32, seed=3)
    batch = generate(model, 64, batch_size=32, seed=3, batch_norm="batch")
    assert not torch.allclose(running, batch)
    for key, value in model.generator_ema.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert model.training  # the mode the caller had is restored
    with pytest.raises(ValueError, match="batch_norm must be one of"):
        generate(model, 4, batch_norm="instance")
