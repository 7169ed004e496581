"""A population step of member k equals the same step of member k's own model (GAN, EBGAN and
EBGAN-PT; members of different widths, zero-padded, learning rates, margins, PT weights):

- gradients of both steps, for every optimizer mix, equal each member's own (<= 1e-5 relative);
- the stacked optimizer, given the same gradients, steps as torch.optim.Adam / SGD do;
- whole steps with SGD (no normalisation to amplify rounding) equal the members' own steps, and
  zero padding stays exactly zero.

(Whole Adam steps are not compared parameter by parameter: Adam divides by sqrt(v) + 1e-8, so a
gradient entry of ~1e-8 whose last digits differ between two correct matmul orders moves by a
visibly different amount; the gradient and optimizer tests pin down both halves instead.)"""

import copy

import pytest
import torch
from hydra.utils import instantiate

from src.models.base import frozen
from src.population.optim import MemberOptimizer, StackedOptimizer
from src.population.stacked import StackedMLP
from src.population.step import Population

# three members of one grid cell's depth, with different widths and knobs
MEMBERS = [
    ["arch.sizeG=32", "arch.sizeD=16", "seed=1"],
    ["arch.sizeG=24", "arch.sizeD=24", "seed=2", "model.optimizer_g.lr=0.003"],
    ["arch.sizeG=32", "arch.sizeD=8", "seed=3", "model.optimizer_d.lr=0.0005"],
]
KNOBS = {
    "gan": [[], [], []],
    "ebgan": [["model.margin=10"], ["model.margin=5"], ["model.margin=20"]],
    "ebgan_pt": [["model.pt_weight=0.1"], ["model.pt_weight=1.0"], ["model.pt_weight=0.0"]],
}
SGD = ["optimizer@model.optimizer_d=sgd", "optimizer@model.optimizer_g=sgd"]
OPTIMIZERS = {
    "adam": [[], [], []],
    "sgd": [SGD, SGD, [*SGD, "model.optimizer_d.momentum=0.9"]],
    "mixed": [["optimizer@model.optimizer_d=sgd"], ["optimizer@model.optimizer_g=sgd"], []],
}


def build_members(make_cfg, model: str, optimizer: str) -> list:
    models = []
    for k, overrides in enumerate(MEMBERS):
        extra = [*overrides, *OPTIMIZERS[optimizer][k], *KNOBS[model][k]]
        cfg = make_cfg(f"model={model}", "arch.nLayerG=3", "arch.nLayerD=3", *extra)
        torch.manual_seed(cfg.seed)
        models.append(instantiate(cfg.model))
    return models


def reference_step(model, real, z, optimizers) -> None:
    """AdversarialModel.training_step's work for one run, without Lightning."""
    optimizer_g, optimizer_d = optimizers
    fake = model.generator(z)
    loss_d, _ = model.discriminator_loss(real, fake.detach())
    optimizer_d.zero_grad(set_to_none=True)
    loss_d.backward()
    optimizer_d.step()
    with frozen(model.discriminator):
        loss_g, _ = model.generator_loss(fake)
        optimizer_g.zero_grad(set_to_none=True)
        loss_g.backward()
        optimizer_g.step()


def batches(size: int, steps: int, latent_dim: int = 8, batch: int = 16):
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.rand(size, batch, 1, 28, 28, generator=generator) * 2 - 1,
            torch.randn(size, batch, latent_dim, generator=generator),
        )
        for _ in range(steps)
    ]


def cancelled_by_batch_norm(net) -> set[str]:
    """Linear biases that a BatchNorm1d follows, and that BN's running mean. BN subtracts the bias
    again, so its true gradient is 0 and what it gets is rounding residue (~1e-9), which Adam
    normalises into lr-sized steps of arbitrary sign; the running mean tracks it. Two correct
    implementations disagree there, the member's function does not (compared on outputs)."""
    names = set()
    for prefix, module in net.named_modules():
        children = list(module.named_children())
        for (name, layer), (next_name, following) in zip(children, children[1:], strict=False):
            if isinstance(layer, torch.nn.Linear) and isinstance(following, torch.nn.BatchNorm1d):
                path = f"{prefix}." if prefix else ""
                names |= {f"{path}{name}.bias", f"{path}{next_name}.running_mean"}
    return names


def assert_member_equals(population: Population, k: int, model, rtol: float = 1e-5) -> None:
    probe = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(7)) * 2 - 1
    latents = torch.randn(
        16, model.generator.latent_dim, generator=torch.Generator().manual_seed(8)
    )
    for stacked, net, x in (
        (population.generator, model.generator, latents),
        (population.discriminator, model.discriminator, probe),
    ):
        member = stacked.unstack(k, copy.deepcopy(net))
        got, expected = member.state_dict(), net.state_dict()
        for name, value in expected.items():
            if name in cancelled_by_batch_norm(net):
                continue
            scale = value.abs().max().clamp_min(1e-12)
            error = (got[name].double() - value.double()).abs().max() / scale
            assert error <= rtol, f"member {k} {name}: relative error {error.item():.2e}"
        # the function in training mode, where BN cancels those biases exactly (in eval mode the
        # running mean lags them, so there the two differ by the rounding-driven bias steps)
        outputs = [n.train()(x) for n in (member, copy.deepcopy(net))]
        for a, b in zip(*(o if isinstance(o, tuple) else (o,) for o in outputs), strict=True):
            error = (a - b).abs().max() / b.abs().max()
            assert error <= rtol, f"member {k} {type(net).__name__}: {error.item():.2e}"


def padding_is_zero(stacked: StackedMLP, widths: list[int]) -> bool:
    """Every weight row / column and bias beyond a member's own width is still exactly 0."""
    for layer in [*stacked.hidden, stacked.head]:
        if not hasattr(layer, "weight") or layer.weight.dim() != 3:
            continue
        for k, width in enumerate(widths):
            in_features, out_features = layer.weight.shape[1:]  # stored [K, in, out]
            outs = slice(width, None) if out_features == max(widths) else slice(out_features, None)
            ins = slice(width, None) if in_features == max(widths) else slice(in_features, None)
            if layer.weight[k, :, outs].abs().sum() or layer.weight[k, ins].abs().sum():
                return False
            if layer.bias[k, outs].abs().sum():
                return False
    return True


def member_grads(stacked: StackedMLP, k: int, net) -> dict:
    """Member k's slice of every stacked gradient, cut to ``net``'s shapes, by its names."""
    stacked_layers = [m for m in [*stacked.hidden, stacked.head] if hasattr(m, "weight")]
    own = [m for m in net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.BatchNorm1d))]
    names = {id(p): n for n, p in net.named_parameters()}
    grads = {}
    for source, target in zip(stacked_layers, own, strict=True):
        for attr in ("weight", "bias"):
            shape = getattr(target, attr).shape
            grad = getattr(source, attr).grad[k]
            if attr == "weight" and isinstance(target, torch.nn.Linear):
                grad = grad.T  # stored [in, out]
            grads[names[id(getattr(target, attr))]] = grad[tuple(slice(0, n) for n in shape)]
    return grads


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("model", sorted(KNOBS))
def test_population_gradients_equal_each_members_own(make_cfg, model, optimizer):
    members = build_members(make_cfg, model, optimizer)
    references = [copy.deepcopy(m) for m in members]
    population = Population(members)
    real, z = batches(len(members), steps=1)[0]
    fake = population.generator(z)
    population.discriminator_losses(real, fake.detach()).sum().backward()
    with frozen(population.discriminator):
        population.generator_losses(fake).sum().backward()
    for k, reference in enumerate(references):
        own_fake = reference.generator(z[k])
        reference.discriminator_loss(real[k], own_fake.detach())[0].backward()
        with frozen(reference.discriminator):
            reference.generator_loss(own_fake)[0].backward()
        for stacked, net in (
            (population.generator, reference.generator),
            (population.discriminator, reference.discriminator),
        ):
            got = member_grads(stacked, k, net)
            skip = cancelled_by_batch_norm(net)
            for name, param in net.named_parameters():
                if name in skip:  # rounding residue of a zero gradient on both sides
                    assert got[name].abs().max() < 1e-6 and param.grad.abs().max() < 1e-6
                    continue
                error = (got[name] - param.grad).abs().max() / param.grad.abs().max()
                assert error <= 1e-5, f"member {k} {name}: relative error {error.item():.2e}"


@pytest.mark.parametrize("vectorized", [False, True], ids=["per_member", "vectorized"])
@pytest.mark.parametrize("kind", ["adam", "adam_fused", "sgd", "sgd_momentum", "mixed"])
def test_the_stacked_optimizer_steps_as_torch_does(kind, vectorized):
    generator = torch.Generator().manual_seed(0)
    shapes, lrs = (3, 5, 4), [1e-3, 2e-4, 5e-2]
    params = [torch.randn(*shapes[1:], generator=generator) for _ in lrs]
    stacked = torch.nn.Parameter(torch.stack([p.clone() for p in params]))
    singles = [torch.nn.Parameter(p.clone()) for p in params]
    build = {
        "adam": lambda p, lr: torch.optim.Adam([p], lr=lr, betas=(0.5, 0.999)),
        "adam_fused": lambda p, lr: torch.optim.Adam([p], lr=lr, betas=(0.5, 0.999), fused=True),
        "sgd": lambda p, lr: torch.optim.SGD([p], lr=lr),
        "sgd_momentum": lambda p, lr: torch.optim.SGD([p], lr=lr, momentum=0.9),
    }
    # mixed: one member of each kind in one population (the GAN grid's optimD x optimG axes)
    kinds = ["adam", "sgd_momentum", "sgd"] if kind == "mixed" else [kind] * len(lrs)
    torch_optimizers = [build[k](p, lr) for k, p, lr in zip(kinds, singles, lrs, strict=True)]
    optimizer = StackedOptimizer(
        [stacked], [MemberOptimizer.from_torch(o) for o in torch_optimizers], vectorized=vectorized
    )
    for step in range(5):
        # gradients over nine orders of magnitude, some below Adam's eps
        grads = torch.randn(*shapes, generator=generator) * 10.0 ** torch.randint(
            -10, 0, shapes, generator=generator
        )
        if step == 3:
            optimizer.freeze(1)  # member 1 diverged: it keeps its weights from here on
        if step >= 3:
            grads[1] = float("nan")  # a frozen member's gradient can be NaN: it must not leak
        stacked.grad = grads.clone()
        optimizer.step()
        for k, (single, torch_optimizer) in enumerate(zip(singles, torch_optimizers, strict=True)):
            if k == 1 and step >= 3:
                continue
            single.grad = grads[k].clone()
            torch_optimizer.step()
    for k, single in enumerate(singles):
        error = (stacked.detach()[k] - single.detach()).abs().max() / single.detach().abs().max()
        assert error <= 1e-6, f"member {k}: relative error {error.item():.2e}"
    assert optimizer.steps.tolist() == [5, 3, 5]


VECTORIZED = pytest.mark.parametrize("vectorized", [False, True], ids=["per_member", "vectorized"])


@VECTORIZED
@pytest.mark.parametrize("model", sorted(KNOBS))
def test_whole_sgd_steps_equal_each_members_own_and_padding_stays_zero(make_cfg, model, vectorized):
    members = build_members(make_cfg, model, "sgd")
    references = [copy.deepcopy(m) for m in members]
    reference_optimizers = [m.configure_optimizers() for m in references]
    population = Population(members, vectorized_optimizer=vectorized)
    for real, z in batches(len(members), steps=3):
        for k, reference in enumerate(references):
            reference_step(reference, real[k], z[k], reference_optimizers[k])
        population.training_step(real, z, generator_step=True)
    for k, reference in enumerate(references):
        assert_member_equals(population, k, reference)
    assert padding_is_zero(population.discriminator, [16, 24, 8])
    assert padding_is_zero(population.generator, [32, 24, 32])
    assert not population.divergences


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_a_members_exported_optimizer_state_is_torchs_own(make_cfg, optimizer):
    """What a member's checkpoint holds for resume: torch's optimizer state after the same steps
    (Adam: one step, whose moments depend on the gradients alone; SGD: three, with momentum)."""
    members = build_members(make_cfg, "ebgan_pt", optimizer)
    references = [copy.deepcopy(m) for m in members]
    reference_optimizers = [m.configure_optimizers() for m in references]
    population = Population(members)
    steps = 1 if optimizer in ("adam", "mixed") else 3
    for real, z in batches(len(members), steps=steps):
        for k, reference in enumerate(references):
            reference_step(reference, real[k], z[k], reference_optimizers[k])
        population.training_step(real, z, generator_step=True)
    for k, reference in enumerate(references):
        for stack, net, stacked_optimizer, torch_optimizer in (
            (population.generator, reference.generator, population.optimizer_g, 0),
            (population.discriminator, reference.discriminator, population.optimizer_d, 1),
        ):
            mine = copy.deepcopy(net)
            exported = reference.configure_optimizers()[torch_optimizer]
            exported.param_groups[0]["params"] = list(mine.parameters())
            stacked_optimizer.export_member(k, stack.member_pairs(k, mine), exported)
            want = reference_optimizers[k][torch_optimizer].state_dict()["state"]
            got = exported.state_dict()["state"]
            assert got.keys() == want.keys(), (k, torch_optimizer)
            # a bias just before batch norm gets a gradient of rounding noise only: not compared
            names = [name for name, _ in net.named_parameters()]
            cancelled = cancelled_by_batch_norm(net)
            for index, state in want.items():
                if names[index] in cancelled:
                    continue
                for key, value in state.items():
                    scale = value.abs().max().clamp_min(1e-12)
                    error = ((got[index][key] - value).abs().max() / scale).item()
                    assert error <= 1e-4, (k, torch_optimizer, index, key, error)


@VECTORIZED
def test_a_diverging_member_is_frozen_and_the_others_go_on(make_cfg, vectorized):
    members = build_members(make_cfg, "ebgan", "sgd")
    references = [copy.deepcopy(m) for m in members]
    reference_optimizers = [m.configure_optimizers() for m in references]
    population = Population(members, vectorized_optimizer=vectorized)
    (real, z), (real2, z2) = batches(3, steps=2)
    population.training_step(real, z, generator_step=True)
    frozen_weights = population.discriminator.head.weight[1].clone()
    poisoned = real2.clone()
    poisoned[1, 0, 0, 0, 0] = float("nan")  # member 1's next batch breaks its D loss
    population.training_step(poisoned, z2, generator_step=True)
    divergences = [(d.member, d.loss_name, d.batch) for d in population.divergences]
    assert divergences == [(1, "discriminator loss", 2)]
    assert torch.equal(population.discriminator.head.weight[1], frozen_weights)
    assert population.active.tolist() == [True, False, True]
    for k in (0, 2):  # the siblings took both steps exactly as they would alone
        for step_real, step_z in ((real, z), (real2, z2)):
            reference_step(references[k], step_real[k], step_z[k], reference_optimizers[k])
        assert_member_equals(population, k, references[k])


def test_members_of_different_depth_or_class_are_refused(make_cfg):
    shallow = build_members(make_cfg, "ebgan", "adam")[:1]
    cfg = make_cfg("model=ebgan", "arch.nLayerD=2", "arch.nLayerG=3")
    with pytest.raises(ValueError, match="differ in depth"):
        Population([*shallow, instantiate(cfg.model)])
    with pytest.raises(ValueError, match="a population trains one of"):
        Population([*shallow, instantiate(make_cfg("model=gan").model)])


POPULATION_SWEEP = [
    "model=ebgan",
    "arch.nLayerG=2",
    "arch.nLayerD=2",
    "arch.sizeG=32",
    "arch.latent_dim=8",
    "data.batch_size=16",
    "data.val_size=64",
    "trainer.limit_train_batches=3",
    "trainer.max_epochs=1",
    "logger=none",
    "callbacks.progress_bar=null",
    "callbacks.generative_metrics.n_samples=200",
    "callbacks.generative_metrics.n_real=300",
    "callbacks.generative_metrics.kid_subset_size=50",
    "callbacks.generative_metrics.kid_subsets=3",
    # 2 widths (one zero-padded) x 2 learning rates of D; 1e30 diverges at once
    "arch.sizeD=16,24",
    "model.optimizer_d.lr=0.001,1e30",
]


def launch_population(sweep_dir, data_dir):
    import os
    import subprocess
    import sys

    from src.utils import PROJECT_ROOT

    command = [
        sys.executable,
        str(PROJECT_ROOT / "src" / "train.py"),
        "-m",
        "hydra/launcher=population",
        # two populations of two, trained side by side in two worker processes
        "hydra.launcher.max_members=2",
        "hydra.launcher.n_jobs=2",
        # the jobs' configs composed in two worker processes too
        "hydra.launcher.compose_jobs=2",
        f"hydra.sweep.dir={sweep_dir}",
        *POPULATION_SWEEP,
    ]
    env = {**os.environ, "DATA_DIR": data_dir, "WANDB_MODE": "disabled"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_population_launcher_writes_single_run_folders_and_a_relaunch_resumes(tmp_path, data_dir):
    import json
    import os
    import subprocess
    import sys

    from src.report import write_report
    from src.utils import PROJECT_ROOT

    sweep_dir = tmp_path / "sweep"
    launch_population(sweep_dir, data_dir)
    results = {p.parent: json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}
    assert sorted(r["status"] for r in results.values()) == ["completed"] * 2 + ["diverged"] * 2
    for folder, result in results.items():
        assert {"status", "failure", "wall_time_s", "epochs_completed", "optimizer_steps"} <= set(
            result
        )
        assert result["population"]["size"] == 2
        assert ("lr=1e+30" in " ".join(result["overrides"])) == (result["status"] == "diverged")
        if result["status"] == "completed":
            assert result["optimizer_steps"] == 6 and result["epochs_completed"] == 1
            assert "val/fid" in result["metrics"] and "val/recall" in result["metrics"]
            assert (folder / "samples" / "last.png").is_file()
            assert (folder / ".hydra" / "overrides.yaml").is_file()
    report = write_report([sweep_dir], tmp_path / "report")
    assert len(report["rows"]) == 4
    # a member's checkpoint is an ordinary run's: the sampling script takes it
    member = next(f for f, r in results.items() if r["status"] == "completed")
    done = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "src" / "sample.py"),
            f'ckpt_path="{member / "checkpoints" / "last.ckpt"}"',  # quoted: '=' in the path
            "n=16",
            f"out={tmp_path / 'grid.png'}",
            f"hydra.run.dir={tmp_path / 'sample'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "grid.png").is_file()
    # ... and resume takes it: one more epoch as a single run, from the member's optimizer state
    import yaml

    overrides = yaml.safe_load((member / ".hydra" / "overrides.yaml").read_text())
    resumed = tmp_path / "resumed"
    done = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "src" / "train.py"),
            *[o for o in overrides if not o.startswith("trainer.max_epochs")],
            "trainer.max_epochs=2",
            f'ckpt_path="{member / "checkpoints" / "last.ckpt"}"',
            f"hydra.run.dir={resumed}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DATA_DIR": data_dir, "WANDB_MODE": "disabled"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((resumed / "metrics.json").read_text())
    assert result["status"] == "completed"
    assert result["epochs_completed"] == 2 and result["optimizer_steps"] == 12
    checkpoint = resumed / "checkpoints" / "last.ckpt"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    # Adam's step count goes on from the population's 3 steps of the first epoch
    assert saved["optimizer_states"][1]["state"][0]["step"].item() == 6
    # relaunching skips the completed members and trains the diverged ones again, together
    stamps = {f: (f / "metrics.json").stat().st_mtime_ns for f, r in results.items()}
    output = launch_population(sweep_dir, data_dir)
    assert "population of 2 EBGAN members" in output
    for folder, result in results.items():
        unchanged = (folder / "metrics.json").stat().st_mtime_ns == stamps[folder]
        assert unchanged == (result["status"] == "completed")


def test_the_population_benchmark_measures_both_optimizers(tmp_path, data_dir, monkeypatch):
    import json

    from src.benchmark_population import main

    monkeypatch.setenv("DATA_DIR", data_dir)
    out = tmp_path / "bench.json"
    main(
        [
            "--cells",
            "mlp small (2x400 / 2x128)",
            "--members",
            "1",
            "2",
            "--steps",
            "2",
            "--lightning-batches",
            "3",
            "--optimizers",
            "per_member",
            "vectorized",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    rows = json.loads(out.read_text())["rows"]
    assert [(r["optimizer"], r["members"]) for r in rows] == [
        ("per_member", 1),
        ("per_member", 2),
        ("vectorized", 1),
        ("vectorized", 2),
    ]
    assert all(r["member_steps_s"] > 0 and r["lightning_batches_s"] > 0 for r in rows)


def test_the_adam_form_is_chosen_by_device_and_width():
    """Per-member fused kernels on a CPU and for wide nets on a GPU; vectorized for narrow GPU nets
    (the choice is made from shapes only, so it is checked here without a GPU)."""
    from src.population.optim import VECTORIZED_BELOW, prefers_vectorized

    narrow = [torch.empty(4, 800, 800, device="meta")]
    wide = [torch.empty(4, VECTORIZED_BELOW, device="meta")]
    assert not prefers_vectorized(narrow, torch.device("cpu"))
    assert prefers_vectorized(narrow, torch.device("cuda"))
    assert not prefers_vectorized(wide, torch.device("cuda"))


def test_an_interrupted_population_resumes_where_a_straight_one_would_be(make_cfg, tmp_path):
    """Killed after its first epoch, a population relaunched with the same members continues from
    its saved state (stacks, optimizers, latent streams, dropout RNG, logs) and ends exactly where
    an uninterrupted one ends; the state file is removed once the members' results are written."""
    import src.population.run as run
    from src.population.run import Member, population_checkpoint_path, train_population

    def members(folder):
        built = []
        for k, width in enumerate((16, 24)):
            cfg = make_cfg(
                "model=ebgan",
                f"arch.sizeD={width}",
                "arch.dropoutD=true",
                f"seed={k + 1}",
                "trainer.max_epochs=2",
                "trainer.limit_train_batches=3",
                "callbacks.sample_grid=null",
            )
            built.append(Member(cfg, tmp_path / folder / f"member{k}"))
        return built

    straight = train_population(members("straight"))

    original, calls = run._save_population, []

    def save_then_die(path, state):
        original(path, state)
        calls.append(path)
        raise KeyboardInterrupt  # the machine went away after epoch 1's state was written

    run._save_population = save_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            train_population(members("resumed"))
    finally:
        run._save_population = original
    assert calls == [population_checkpoint_path(members("resumed"))] and calls[0].is_file()
    resumed = train_population(members("resumed"))
    assert not calls[0].exists()
    for a, b in zip(straight, resumed, strict=True):
        # 2 epochs x 3 batches x (a D and a G step)
        assert a["metrics"] == b["metrics"] and a["optimizer_steps"] == b["optimizer_steps"] == 12
    for k in range(2):
        weights = [
            torch.load(
                tmp_path / f / f"member{k}" / "checkpoints" / "last.ckpt", weights_only=False
            )
            for f in ("straight", "resumed")
        ]
        for name, value in weights[0]["state_dict"].items():
            assert torch.equal(value, weights[1]["state_dict"][name]), name


def _trained_population(make_cfg, cuda_graphs: bool, device: str, steps: int = 6):
    members = build_members(make_cfg, "ebgan_pt", "mixed")
    population = Population(members, device, cuda_graphs=cuda_graphs)
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        real = (torch.rand(16, 1, 28, 28, generator=generator) * 2 - 1).to(device)
        z = torch.randn(len(members), 16, 8, generator=generator).to(device)
        # every other batch without a G step: both kinds of batch (two graphs on a GPU)
        population.train_batch(real, z, generator_step=step % 2 == 1)
    return population


def test_a_population_with_cuda_graphs_uncaptured_steps_as_without(make_cfg):
    """The members' model.cuda_graphs where no CUDA graph can be captured: the same steps."""
    plain = _trained_population(make_cfg, False, "cpu")
    graphed = _trained_population(make_cfg, True, "cpu")
    assert graphed._captured and not any(s.captured for s in graphed._captured.values())
    for a, b in zip(_tensors(plain.state_dict()), _tensors(graphed.state_dict()), strict=True):
        assert torch.equal(a, b)


def _tensors(tree):
    if torch.is_tensor(tree):
        return [tree.float()]
    values = tree.values() if isinstance(tree, dict) else tree
    return [t for v in values for t in _tensors(v)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_captured_population_steps_as_the_eager_one_on_the_gpu(make_cfg):
    eager = _trained_population(make_cfg, False, "cuda", steps=12)
    graphed = _trained_population(make_cfg, True, "cuda", steps=12)
    assert all(s.captured for s in graphed._captured.values())
    worst = 0.0
    for a, b in zip(_tensors(eager.state_dict()), _tensors(graphed.state_dict()), strict=True):
        worst = max(worst, ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item())
    print(f"\npopulation: max relative difference, captured vs eager: {worst:.2e}")
    assert worst <= 1e-4


@pytest.mark.parametrize("model_name", ["gan", "ebgan", "ebgan_pt"])
def test_a_member_logs_what_a_single_run_logs(make_cfg, tmp_path, model_name):
    """A member's metrics.json has a single run's keys; its CSV logger gets the same columns at
    the same steps; each member gets a W&B run of its own; its held-out values are what Lightning's
    validation loop computes for its checkpoint."""
    import csv

    import lightning as L
    from omegaconf import open_dict

    from src.population.run import Member, train_population
    from src.runs.training import train

    def config(folder, width, seed, loggers):
        cfg = make_cfg(
            f"model={model_name}",
            "arch.nLayerD=3",  # batch norm in D: validation must use batch statistics
            f"arch.sizeD={width}",
            f"seed={seed}",
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=4",
            "trainer.log_every_n_steps=3",
            f"logger={loggers}",
            "callbacks.generative_metrics.n_samples=200",
            "callbacks.generative_metrics.n_real=300",
            "callbacks.generative_metrics.kid_subset_size=50",
            "callbacks.generative_metrics.kid_subsets=3",
            keep_metrics=True,
        )
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / folder)
            if "wandb" in cfg.logger:
                cfg.logger.wandb.mode = "offline"  # written to disk, never uploaded
        return cfg

    single = train(config("single", 16, 1, "csv"))
    members = [
        Member(config(f"member{k}", width, k + 1, "[csv,wandb]"), tmp_path / f"member{k}")
        for k, width in enumerate((16, 24))
    ]
    results = train_population(members)
    assert all(r["status"] == "completed" for r in results)
    assert set(results[0]["metrics"]) == set(single["metrics"])
    for name in ("train/lr_g", "train/lr_d"):  # float32 in both (Lightning logs tensors)
        assert results[0]["metrics"][name] == single["metrics"][name]

    def logged(folder):
        with open(tmp_path / folder / "csv" / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        return {(int(r["step"]), k) for r in rows for k, v in r.items() if v and k != "step"}

    # batches 3 and 6 log train/* (steps 2, 5); each epoch's end (steps 3, 7) val/*
    assert logged("member0") == logged("single") == logged("member1")
    assert {s for s, k in logged("single") if k == "train/loss_g"} == {2, 5}
    runs = [list((tmp_path / f"member{k}" / "wandb").glob("offline-run-*")) for k in range(2)]
    assert [len(r) for r in runs] == [1, 1] and runs[0][0].name != runs[1][0].name

    # the zero-padded member's checkpoint through Lightning's own validation loop
    checkpoint = torch.load(
        tmp_path / "member1" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    cfg = members[1].cfg
    model = instantiate(cfg.model, _partial_=True)(run_config=checkpoint["run_config"])
    model.load_state_dict(checkpoint["state_dict"])
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=cfg.trainer.limit_val_batches,
    )
    (validated,) = trainer.validate(model, datamodule=instantiate(cfg.data), verbose=False)
    assert "val/loss_d" in validated
    for name, expected in validated.items():
        assert results[1]["metrics"][name] == pytest.approx(expected, rel=1e-5), name


def test_a_crashing_population_closes_its_members_loggers_as_failed(
    make_cfg, tmp_path, monkeypatch
):
    from src.population import run
    from src.population.member_logs import MemberLogs

    closed = []
    original = MemberLogs.close
    monkeypatch.setattr(
        MemberLogs,
        "close",
        lambda self, statuses: (closed.append(statuses), original(self, statuses)),
    )

    def crash(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(run.Population, "train_batch", crash)
    members = [
        run.Member(make_cfg("model=ebgan", f"seed={k}", "logger=csv"), tmp_path / f"m{k}")
        for k in range(2)
    ]
    results = run.train_population_or_record_failure(members)
    assert [r["status"] for r in results] == ["failed", "failed"]
    assert closed == [["failed", "failed"]]
