"""model.cuda_graphs and data.on_device: the GPU fast path of one run (src/models/cuda_graphs.py).

On the CPU the graphed path runs uncaptured: the same updates through the plain optimizers, the
optimizer-step count advanced by hand, the NaN/inf check after the step. Those must give the eager
loop's weights and step count exactly. Capture itself needs a CUDA device: the tests at the end run
where one is, and are skipped elsewhere (CI has none)."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from src.config import validate_config
from src.config.registry import models_where
from src.models.base import shares_adversarial_step
from src.models.cuda_graphs import CapturedStep, learning_rates, make_capturable
from src.runs.training import instantiate_all, train
from src.utils import ConfigError

# on the CPU also where a GPU is: these check the uncaptured path
SHORT = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1",
]


def _final(folder):
    saved = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return saved["state_dict"], saved["global_step"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ("model=ebgan_pt", "model.ema_decay=0.9"),
        ("model=began", "arch=began", "model.lr_decay_patience=1"),  # k_t and an lr decay
        ("model=wgan", "model.d_steps_per_g_step=3"),  # batches with and without a G step
        ("model=cluster_gan",),
    ],
    ids=lambda o: o[0].split("=")[1],
)
def test_graphed_path_uncaptured_gives_the_eager_loops_weights(
    make_cfg, tmp_path_factory, monkeypatch, overrides
):
    monkeypatch.setattr("src.config.validation._check_cuda_graphs", lambda cfg, model_cls: None)
    results = []
    for graphs in ("false", "true"):
        folder = tmp_path_factory.mktemp(f"graphs_{graphs}")
        cfg = make_cfg(*overrides, *SHORT, f"model.cuda_graphs={graphs}", "data.on_device=true")
        cfg.paths.output_dir = str(folder)
        assert train(cfg)["status"] == "completed"
        results.append(_final(folder))
    (eager, eager_steps), (graphed, graphed_steps) = results
    assert eager_steps == graphed_steps > 0
    assert eager.keys() == graphed.keys()
    for key in eager:
        assert torch.equal(eager[key], graphed[key]), key


def test_graphed_path_stops_a_diverging_run(make_cfg, monkeypatch):
    monkeypatch.setattr("src.config.validation._check_cuda_graphs", lambda cfg, model_cls: None)
    cfg = make_cfg("model=ebgan", *SHORT, "model.cuda_graphs=true", "model.optimizer_d.lr=1e30")
    result = train(cfg)
    assert result["status"] == "diverged"
    assert "non-finite" in result["failure"]["message"]


def test_cuda_graphs_are_refused_where_they_cannot_run(make_cfg):
    with pytest.raises(ConfigError, match="has its own training step"):
        validate_config(make_cfg("model=vaegan", "model.cuda_graphs=true"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="needs a CUDA GPU"):
            validate_config(make_cfg("model=ebgan", "model.cuda_graphs=true"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer=ddp", "trainer.devices=1"], "no DDP"),
        (["trainer.devices=2"], "one device"),
        (["trainer.precision=bf16-mixed"], "precision=32"),
        (["+trainer.detect_anomaly=true"], "detect_anomaly"),
        (["model.compile=true"], "choose one"),
    ],
)
def test_cuda_graphs_refuse_what_a_capture_cannot_hold(make_cfg, monkeypatch, overrides, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    cfg = make_cfg("model=ebgan", "model.cuda_graphs=true", "trainer.accelerator=gpu", *overrides)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_a_second_fit_of_the_same_model_steps_its_own_optimizers(make_cfg, monkeypatch):
    """Graphs step the optimizers they were captured with: a new fit (new optimizers) drops them."""
    monkeypatch.setattr("src.config.validation._check_cuda_graphs", lambda cfg, model_cls: None)
    cfg = make_cfg("model=ebgan", *SHORT, "model.cuda_graphs=true", "trainer.max_epochs=1")
    datamodule, model, trainer = instantiate_all(cfg)
    trainer.fit(model, datamodule=datamodule)
    _, _, second = instantiate_all(cfg)
    second.fit(model, datamodule=datamodule)
    for optimizer in second.optimizers:
        assert len(optimizer.state) == len(optimizer.param_groups[0]["params"])


def test_make_capturable_sets_the_flag_where_the_optimizer_has_it():
    weight = torch.nn.Parameter(torch.ones(3))
    adam, sgd = torch.optim.Adam([weight]), torch.optim.SGD([weight], lr=0.1, momentum=0.9)
    weight.grad = torch.ones(3)
    adam.step(), sgd.step()
    make_capturable(adam), make_capturable(sgd)
    assert adam.param_groups[0]["capturable"] is True
    assert "capturable" not in sgd.param_groups[0]
    assert adam.state[weight]["step"].device == weight.device
    assert learning_rates(adam, sgd) == (0.001, 0.1)


def test_a_checkpoint_of_a_captured_run_resumes_on_the_cpu(make_cfg, tmp_path_factory):
    """A GPU capture sets `capturable` on the optimizers (simulated here); the checkpoint saves it
    off, so a CPU run resumes from it (a capturable Adam refuses to step on a CPU)."""

    class Capturable(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            for optimizer in trainer.optimizers:
                make_capturable(optimizer)

    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    cfg = make_cfg("model=ebgan", *SHORT, "trainer.max_epochs=1")
    cfg.paths.output_dir = str(first)
    L.seed_everything(0)
    datamodule, model, trainer = instantiate_all(cfg)
    trainer.callbacks.append(Capturable())
    trainer.fit(model, datamodule=datamodule)
    assert trainer.optimizers[0].param_groups[0]["capturable"] is True
    checkpoint = first / "checkpoints" / "last.ckpt"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert all(
        not group["capturable"]
        for state in saved["optimizer_states"]
        for group in state["param_groups"]
    )
    cfg = make_cfg("model=ebgan", *SHORT, f"ckpt_path={checkpoint}")
    cfg.paths.output_dir = str(second)
    assert train(cfg)["status"] == "completed"


def test_captured_step_uncaptured_calls_the_function_every_time():
    calls = []
    step = CapturedStep(lambda x: calls.append(x) or x * 2, capture=False)
    assert [step(torch.tensor(i)).item() for i in range(5)] == [0, 2, 4, 6, 8]
    assert len(calls) == 5 and not step.captured


# ----------------------------------------------------------------- on a CUDA device only
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# per model, what else its check exercises; every model of the shared step is checked (registry)
GPU_EXTRA = {
    "ebgan_pt": ["model.ema_decay=0.99"],
    "began": ["arch=began"],
    "wgan_gp": ["arch.critic_norm=layer"],  # double backward; eps drawn in-graph
}
GPU_MODELS = {
    option: [f"model={option}", *GPU_EXTRA.get(option, [])]
    for option in models_where(shares_adversarial_step)
}


class HalveLearningRates(L.Callback):
    """From the second epoch on, lr / 2: a graph bakes its learning rates in, so this recaptures."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = group["lr"] / 2


@needs_cuda
@pytest.mark.parametrize("name", list(GPU_MODELS))
def test_captured_updates_match_the_eager_loop_on_the_gpu(make_cfg, name):
    runs = []
    for graphs in (False, True):
        cfg = make_cfg(
            *GPU_MODELS[name],
            "trainer.accelerator=gpu",
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=25",  # n_critic 5: 5 G steps an epoch, the 4th captured
            "trainer.limit_val_batches=0",
            "data.on_device=true",
            f"model.cuda_graphs={str(graphs).lower()}",
            "callbacks.model_checkpoint=null",
            "callbacks.sample_grid=null",
        )
        L.seed_everything(0)
        datamodule, model, trainer = instantiate_all(cfg)
        trainer.callbacks.append(HalveLearningRates())
        trainer.fit(model, datamodule=datamodule)
        runs.append((model, trainer.global_step))
    (eager, eager_steps), (graphed, graphed_steps) = runs
    assert eager_steps == graphed_steps
    assert graphed._captured_steps and all(s.captured for s in graphed._captured_steps.values())
    worst = 0.0
    for (key, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
        if a.is_floating_point():
            worst = max(worst, ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item())
        else:
            assert torch.equal(a, b), key
    print(f"\n{name}: max relative weight difference, captured vs eager: {worst:.2e}")
    assert worst <= 1e-4
