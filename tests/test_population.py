"""A population member steps, logs and checkpoints as its single run (src/population).

The equality tests are generated from conf/: every (model, arch) pair of a model whose step a
population stacks, with K = 3 members that set apart what members may (each of the model's
``member_hparams``, their D/G schedules, seeds, optimizers, and widths where the arch pads them),
after three batches equal three single runs of ``AdversarialModel._adversarial_updates`` (<= 1e-4
relative, per tensor). A model of conf/model/ whose step does not stack must be listed in
REFUSED with its reason, so a new model fails a test until it is stacked or refused.

Whole steps are compared with SGD and RMSprop members: Adam divides by sqrt(v) + 1e-8, so a
gradient entry of ~1e-8 whose last digits differ between two correct matmul orders moves by a
visibly different amount; Adam is pinned down by the optimizer test against torch's own instead.
"""

import copy
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from src.config.registry import fitting_archs, model_classes
from src.population.optim import MemberOptimizer, StackedOptimizer
from src.population.stack import PaddingError
from src.population.step import Population
from src.utils import PROJECT_ROOT

CONF = PROJECT_ROOT / "conf"

#: models of conf/model/ a population does not stack, and the reason they give
REFUSED = {
    "vae": "own training step",
    "vaegan": "own training step",
    "pix2pix": "own training step",
    "cyclegan": "own training step",
}


MODELS = sorted(model_classes())
STACKED_PAIRS = [
    (model, arch)
    for model in MODELS
    if model not in REFUSED
    for arch in fitting_archs(model_classes()[model])
]


def test_every_model_either_stacks_or_is_refused_with_its_reason():
    for model in MODELS:
        refusal = model_classes()[model].population_refusal
        if model in REFUSED:
            assert refusal and REFUSED[model] in refusal, model
        else:
            assert refusal is None, f"model={model} does not stack ({refusal}): list it in REFUSED"
    assert len(STACKED_PAIRS) >= 20  # every stacked model on each arch that serves its D


# ----------------------------------------------------------------------------- building members
WIDTHS = {"arch.sizeG": (32, 24, 32), "arch.sizeD": (16, 24, 8)}
SCHEDULES = (1, 2, 1)  # each member's d_steps_per_g_step: member 1 takes G steps every 2nd batch
HPARAM_FACTORS = (1.0, 0.5, 0.8)
SGD = "torch.optim.SGD"


def member_overrides(make_cfg, model: str, arch: str, k: int) -> list[str]:
    base = make_cfg(f"model={model}", f"arch={arch}")
    overrides = [f"model={model}", f"arch={arch}", f"seed={k + 1}"]
    overrides.append(f"model.d_steps_per_g_step={SCHEDULES[k]}")
    for key in model_classes()[model].member_hparams:
        value = base.model.get(key)
        if value is not None:
            overrides.append(f"model.{key}={float(value) * HPARAM_FACTORS[k]}")
    if "sizeG" in (base.arch.get("pad_widths") or []):
        overrides += [f"{key}={values[k]}" for key, values in WIDTHS.items()]
    for net in ("optimizer_g", "optimizer_d"):
        kept = base.model[net]._target_ == "torch.optim.RMSprop" and k == 0
        if not kept:  # SGD, with momentum for member 2
            overrides.append(f"optimizer@model.{net}=sgd")
            # a model's own Adam betas (WGAN-GP's) stay in its optimizer node: not SGD's
            sgd = make_cfg(f"model={model}", f"arch={arch}", f"optimizer@model.{net}=sgd")
            overrides += [f"~model.{net}.betas"] if "betas" in sgd.model[net] else []
            overrides += [f"model.{net}.momentum=0.9"] if k == 2 else []
    if model == "infogan":
        overrides.append("model.num_codes=4")
    return overrides


def build_members(make_cfg, model: str, arch: str, size: int = 3, widths: bool = True) -> list:
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=_seeded(5))
    members = []
    for k in range(size):
        overrides = member_overrides(make_cfg, model, arch, k)
        if not widths:
            overrides = [o for o in overrides if o.split("=")[0] not in WIDTHS]
        cfg = make_cfg(*overrides)
        torch.manual_seed(cfg.seed)
        member = instantiate(cfg.model)
        if hasattr(member, "fit_clusters"):  # the cluster GAN: clusters of stand-in images
            member.fit_clusters(_resized(images, cfg.arch.generator.image_shape))
        members.append(member)
    return members


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _resized(images: torch.Tensor, shape) -> torch.Tensor:
    if shape is None or tuple(shape[1:]) == tuple(images.shape[2:]):
        return images
    return torch.nn.functional.interpolate(images.float(), size=tuple(shape[1:])).byte()


def image_shape(model) -> tuple:
    with torch.no_grad():
        probe = copy.deepcopy(model).eval()
        labels = torch.zeros(2, dtype=torch.long) if probe.num_classes else None
        return tuple(probe(probe.sample_latent(2, generator=_seeded(0)), labels).shape[1:])


def draw_batches(population: Population, models: list, steps: int, batch: int = 16):
    """(real [B, ...], labels, z [K, B, d], noise {name: [K, B, ...]}) per step, each member's
    draws from its own generator."""
    shape = image_shape(models[0])
    generators = [_seeded(100 + k) for k in range(len(models))]
    out = []
    for step in range(steps):
        real = torch.rand(batch, *shape, generator=_seeded(step)) * 2 - 1
        classes = torch.randint(0, 10, (batch,), generator=_seeded(50 + step))
        labels = population.model.batch_labels((real, classes))
        z = torch.stack(
            [m.sample_latent(batch, generator=g) for m, g in zip(models, generators, strict=True)]
        )
        drawn = [
            m.sample_step_noise(batch, generator=g) for m, g in zip(models, generators, strict=True)
        ]
        noise = {name: torch.stack([d[name] for d in drawn]) for name in drawn[0]}
        out.append((real, labels, z, noise))
    return out


def single_run_step(model, optimizers, real, labels, z, noise, generator_step: bool) -> dict:
    """A single run's batch: the model's own ``_adversarial_updates``, as ``training_step``."""
    optimizer_g, optimizer_d = optimizers

    def update(optimizer, loss, name):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.log_this_step = True
    _, logs_d, logs_g = model._adversarial_updates(
        real, labels, z, noise, generator_step, optimizer_d, optimizer_g, update
    )
    return {**logs_d, **logs_g}


def cancelled_by_batch_norm(model) -> set[str]:
    """Biases a batch norm follows (BN subtracts them again: their true gradient is 0 and what
    they get is rounding residue, which the two sides round differently), and that BN's running
    mean. Compared on outputs instead (the function, in training mode)."""
    names = set()
    for prefix, module in model.named_modules():
        children = list(module.named_children())
        for (name, layer), (next_name, following) in zip(children, children[1:], strict=False):
            norms = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)
            if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and (
                isinstance(following, norms)
            ):
                path = f"{prefix}." if prefix else ""
                names |= {f"{path}{name}.bias", f"{path}{next_name}.running_mean"}
    return names


def assert_member_equals(population, k: int, reference, rtol: float = 1e-4) -> None:
    member = population.stack.write_member(k, copy.deepcopy(reference))
    got, expected = member.state_dict(), reference.state_dict()
    skip = cancelled_by_batch_norm(reference)
    for name, value in expected.items():
        if name in skip or name.startswith("generator_ema"):
            continue
        if not value.is_floating_point():
            assert torch.equal(got[name], value), f"member {k} {name}"
            continue
        scale = value.abs().max()
        if scale < 1e-6:  # a tensor still (nearly) zero: rounding of nothing
            continue
        error = ((got[name].double() - value.double()).abs().max() / scale).item()
        assert error <= rtol, f"member {k} {name}: relative error {error:.2e}"


def padding_is_zero(population) -> bool:
    """Every padded entry (beyond a member's own shape) of every parameter is still exactly 0."""
    for name, stacked in population.stack.params.items():
        for k, shape in enumerate(population.member_shapes[name]):
            inside = torch.zeros_like(stacked[k], dtype=torch.bool)
            inside[tuple(slice(0, s) for s in shape)] = True
            if stacked[k].detach()[~inside].abs().sum():
                return False
    return True


# the MLP pairs in the default tier; the conv nets' pairs (a few seconds each) in the slow tier
@pytest.mark.parametrize(
    ("model", "arch"),
    [
        pytest.param(m, a, marks=() if a == "mlp" else pytest.mark.slow, id=f"{m}-{a}")
        for m, a in STACKED_PAIRS
    ],
)
def test_members_step_log_and_keep_state_as_their_single_runs(make_cfg, model, arch):
    members = build_members(make_cfg, model, arch)
    try:
        population = Population(members)
    except PaddingError:  # nets that normalise over their width: members of one width only
        assert any(isinstance(m, torch.nn.LayerNorm) for m in members[0].modules())
        members = build_members(make_cfg, model, arch, widths=False)
        population = Population(members)
    references = [copy.deepcopy(m) for m in members]
    optimizers = [r.configure_optimizers() for r in references]
    population.member_shapes = {
        name: [dict(m.named_parameters())[name].shape for m in members]
        for name in population.stack.params
    }
    for step, (real, labels, z, noise) in enumerate(draw_batches(population, members, 3)):
        steps = population.generator_steps(step)
        logged = population.training_step(real, z, steps, labels, noise)
        for k, reference in enumerate(references):
            own = {n: v[k] for n, v in noise.items()}
            values = single_run_step(reference, optimizers[k], real, labels, z[k], own, steps[k])
            for name, value in values.items():  # what a single run logs, member by member
                expected = torch.as_tensor(value, dtype=torch.float32)
                assert torch.allclose(logged[name][k], expected, rtol=1e-4, atol=1e-5), name
    # the model's epoch-end update (BEGAN's lr decay) with its learning-rate scale
    population.end_epoch()
    for reference, (optimizer_g, optimizer_d) in zip(references, optimizers, strict=True):
        scale = reference.epoch_end_update().get("lr_scale")
        for optimizer in (optimizer_g, optimizer_d):
            for group in optimizer.param_groups:
                group["lr"] = reference.scaled_lr(group["lr"], float(scale or 1.0))
    for k, reference in enumerate(references):
        assert_member_equals(population, k, reference)
        assert population.optimizer_g.lrs[k] == optimizers[k][0].param_groups[0]["lr"]
    assert padding_is_zero(population)
    assert not population.divergences


# ----------------------------------------------------------------------------- the optimizer
@pytest.mark.parametrize("vectorized", [False, True], ids=["per_member", "vectorized"])
@pytest.mark.parametrize("kind", ["adam", "adam_fused", "sgd", "sgd_momentum", "rmsprop", "mixed"])
def test_the_stacked_optimizer_steps_as_torch_does(kind, vectorized):
    generator = _seeded(0)
    shapes, lrs = (3, 5, 4), [1e-3, 2e-4, 5e-2]
    params = [torch.randn(*shapes[1:], generator=generator) for _ in lrs]
    stacked = torch.nn.Parameter(torch.stack([p.clone() for p in params]))
    singles = [torch.nn.Parameter(p.clone()) for p in params]
    build = {
        "adam": lambda p, lr: torch.optim.Adam([p], lr=lr, betas=(0.5, 0.999)),
        "adam_fused": lambda p, lr: torch.optim.Adam([p], lr=lr, betas=(0.5, 0.999), fused=True),
        "sgd": lambda p, lr: torch.optim.SGD([p], lr=lr),
        "sgd_momentum": lambda p, lr: torch.optim.SGD([p], lr=lr, momentum=0.9),
        "rmsprop": lambda p, lr: torch.optim.RMSprop([p], lr=lr, alpha=0.9),
    }
    # mixed: one member of each kind in one population (the GAN grid's optimD x optimG axes)
    kinds = ["adam", "sgd_momentum", "rmsprop"] if kind == "mixed" else [kind] * len(lrs)
    torch_optimizers = [build[k](p, lr) for k, p, lr in zip(kinds, singles, lrs, strict=True)]
    optimizer = StackedOptimizer(
        [stacked], [MemberOptimizer.from_torch(o) for o in torch_optimizers], vectorized=vectorized
    )
    resting = torch.tensor([True, True, False])
    for step in range(6):
        # gradients over nine orders of magnitude, some below Adam's eps
        grads = torch.randn(*shapes, generator=generator) * 10.0 ** torch.randint(
            -10, 0, shapes, generator=generator
        )
        if step == 3:
            optimizer.freeze(1)  # member 1 diverged: it keeps its weights from here on
        if step >= 3:
            grads[1] = float("nan")  # a frozen member's gradient can be NaN: it must not leak
        if step == 4:  # member 2 rests on this batch (its schedule has no step here)
            grads[2] = float("nan")
        stacked.grad = grads.clone()
        optimizer.step(resting if step == 4 else None)
        for k, (single, torch_optimizer) in enumerate(zip(singles, torch_optimizers, strict=True)):
            if (k == 1 and step >= 3) or (k == 2 and step == 4):
                continue
            single.grad = grads[k].clone()
            torch_optimizer.step()
    for k, single in enumerate(singles):
        error = (stacked.detach()[k] - single.detach()).abs().max() / single.detach().abs().max()
        assert error <= 1e-6, f"member {k}: relative error {error.item():.2e}"
    assert optimizer.steps.tolist() == [6, 3, 5]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ebgan_pt", "wgan"])
def test_a_members_exported_optimizer_state_is_torchs_own(make_cfg, model):
    """What a member's checkpoint holds for resume: torch's optimizer state after the same steps
    (SGD with and without momentum, RMSprop)."""
    members = build_members(make_cfg, model, "mlp")
    references = [copy.deepcopy(m) for m in members]
    optimizers = [r.configure_optimizers() for r in references]
    population = Population(members)
    for step, (real, labels, z, noise) in enumerate(draw_batches(population, members, 3)):
        steps = population.generator_steps(step)
        population.training_step(real, z, steps, labels, noise)
        for k, reference in enumerate(references):
            own = {n: v[k] for n, v in noise.items()}
            single_run_step(reference, optimizers[k], real, labels, z[k], own, steps[k])
    for k, reference in enumerate(references):
        mine = copy.deepcopy(reference)
        for net, stacked_optimizer, index in (
            ("generator", population.optimizer_g, 0),
            ("discriminator", population.optimizer_d, 1),
        ):
            exported = mine.configure_optimizers()[index]
            pairs = population.stack.member_pairs(k, mine, net)
            stacked_optimizer.export_member(k, pairs, exported)
            want = optimizers[k][index].state_dict()["state"]
            got = exported.state_dict()["state"]
            assert got.keys() == want.keys(), (k, net)
            names = [name for name, _ in getattr(reference, net).named_parameters()]
            cancelled = {n.split(".", 1)[1] for n in cancelled_by_batch_norm(reference)}
            for index_, state in want.items():
                if names[index_] in cancelled:
                    continue
                for key, value in state.items():
                    scale = value.abs().max().clamp_min(1e-12)
                    error = ((got[index_][key] - value).abs().max() / scale).item()
                    assert error <= 1e-4, (k, net, index_, key, error)


# ----------------------------------------------------------------------------- failures
@pytest.mark.slow
def test_a_diverging_member_is_frozen_and_the_others_go_on(make_cfg):
    members = build_members(make_cfg, "ebgan", "mlp")
    references = [copy.deepcopy(m) for m in members]
    optimizers = [r.configure_optimizers() for r in references]
    population = Population(members)
    batches = draw_batches(population, members, 2)
    population.training_step(*_step_args(batches[0], population, 0))
    name = "discriminator.decoder.weight"
    frozen_weights = population.stack.params[name][1].detach().clone()
    real, labels, z, noise = batches[1]
    poisoned = real.unsqueeze(0).repeat(3, *([1] * real.dim()))
    poisoned[1, 0, 0, 0, 0] = float("nan")  # member 1's next batch breaks its D loss
    population.training_step(
        poisoned, z, population.generator_steps(1), labels, noise, member_real=True
    )
    divergences = [(d.member, d.loss_name, d.batch) for d in population.divergences]
    assert divergences == [(1, "discriminator loss", 2)]
    assert torch.equal(population.stack.params[name][1], frozen_weights)
    assert population.active.tolist() == [True, False, True]
    for k in (0, 2):  # the siblings took both steps exactly as they would alone
        for step, (real, labels, z, noise) in enumerate(batches):
            own = {n: v[k] for n, v in noise.items()}
            steps = population.generator_steps(step)
            single_run_step(references[k], optimizers[k], real, labels, z[k], own, steps[k])
        assert_member_equals(population, k, references[k])


def _step_args(batch, population, step):
    real, labels, z, noise = batch
    return real, z, population.generator_steps(step), labels, noise


def test_members_that_cannot_share_a_population_are_refused(make_cfg):
    shallow = build_members(make_cfg, "ebgan", "mlp")[:1]
    with pytest.raises(ValueError, match="differ in their nets"):
        Population([*shallow, instantiate(make_cfg("model=ebgan", "arch.nLayerD=3").model)])
    with pytest.raises(ValueError, match="a population trains one model class"):
        Population([*shallow, instantiate(make_cfg("model=gan").model)])
    with pytest.raises(ValueError, match="members differ in model.energy"):
        Population([*shallow, instantiate(make_cfg("model=ebgan", "loss=energy_l1").model)])
    with pytest.raises(ValueError, match="EMA of G"):
        Population([*shallow, instantiate(make_cfg("model=ebgan", "model.ema_decay=0.9").model)])
    with pytest.raises(ValueError, match="own training step"):
        Population([instantiate(make_cfg("model=vae").model)])
    # a layer-norm critic normalises over its width: members of other widths cannot be padded
    critics = [
        instantiate(make_cfg("model=wgan_gp", "arch.nLayerD=3", f"arch.sizeD={width}").model)
        for width in (16, 8)
    ]
    with pytest.raises(PaddingError, match="computes otherwise when zero-padded"):
        Population(critics)


# ----------------------------------------------------------------------------- the launcher
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


def launch_population(sweep_dir, data_dir, *overrides, jobs: int = 2):
    import os
    import subprocess
    import sys

    command = [
        sys.executable,
        str(PROJECT_ROOT / "src" / "train.py"),
        "-m",
        "hydra/launcher=population",
        # two populations of two, trained side by side in two worker processes
        "hydra.launcher.max_members=2",
        f"hydra.launcher.n_jobs={jobs}",
        # the jobs' configs composed in two worker processes too
        "hydra.launcher.compose_jobs=2",
        f"hydra.sweep.dir={sweep_dir}",
        *(overrides or POPULATION_SWEEP),
    ]
    env = {**os.environ, "DATA_DIR": data_dir, "WANDB_MODE": "disabled"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_population_launcher_writes_single_run_folders_and_a_relaunch_resumes(tmp_path, data_dir):
    import json
    import os
    import subprocess
    import sys

    from src.report import write_report

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
    assert output.count("runs alone: completed before") == 2
    for folder, result in results.items():
        unchanged = (folder / "metrics.json").stat().st_mtime_ns == stamps[folder]
        assert unchanged == (result["status"] == "completed")


@pytest.mark.slow
def test_the_launcher_groups_by_model_definition_and_says_what_runs_alone(tmp_path, data_dir):
    """BEGAN and WGAN-GP stack (their own populations); VAE runs alone, logged with the reason:
    nothing falls back silently."""
    import json

    common = [
        "data.batch_size=16",
        "data.val_size=64",
        "data.image_size=28",
        "trainer.limit_train_batches=2",
        "trainer.max_epochs=1",
        "logger=none",
        "callbacks.progress_bar=null",
        "callbacks.generative_metrics=null",
        "callbacks.sample_grid=null",
    ]
    output = launch_population(
        tmp_path / "sweep",
        data_dir,
        "model=began,wgan_gp,vae",
        "arch=mlp",
        "arch.sizeG=32",
        "arch.sizeD=16",
        "seed=1,2",
        *common,
        jobs=1,
    )
    assert "population of 2 BEGAN members" in output
    assert "population of 2 WGANGP members" in output
    assert output.count("runs alone: model=VAE: it has its own training step") == 2
    written = [json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/metrics.json")]
    assert [r["status"] for r in written] == ["completed"] * 6


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


@pytest.mark.slow
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
                "model=began",
                "arch=mlp",
                f"arch.sizeD={width}",
                "arch.dropoutD=true",
                f"seed={k + 1}",
                "trainer.max_epochs=3",
                "trainer.limit_train_batches=3",
                "model.lr_decay_patience=1",
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
        # 3 epochs x 3 batches x (a D and a G step)
        assert a["metrics"] == b["metrics"] and a["optimizer_steps"] == b["optimizer_steps"] == 18
        assert "train/convergence_epoch" in a["metrics"]
    for k in range(2):
        weights = [
            torch.load(
                tmp_path / f / f"member{k}" / "checkpoints" / "last.ckpt", weights_only=False
            )
            for f in ("straight", "resumed")
        ]
        for name, value in weights[0]["state_dict"].items():
            assert torch.equal(value, weights[1]["state_dict"][name]), name
        states = [_tensors(w["optimizer_states"]) for w in weights]
        assert all(torch.equal(a, b) for a, b in zip(*states, strict=True))


def _trained_population(make_cfg, cuda_graphs: bool, device: str, steps: int = 6):
    members = build_members(make_cfg, "ebgan_pt", "mlp")
    population = Population(members, device, cuda_graphs=cuda_graphs)
    for step, (real, labels, z, noise) in enumerate(draw_batches(population, members, steps)):
        # member 1 steps G every other batch: two kinds of batch (two graphs on a GPU)
        population.train_batch(
            real.to(device), z.to(device), population.generator_steps(step), labels, noise
        )
    return population


@pytest.mark.slow
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
    if isinstance(tree, (bool, int, float)):
        return [torch.tensor(float(tree))]
    if tree is None or isinstance(tree, str):
        return []
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


# ----------------------------------------------------------------------------- member outputs
@pytest.mark.slow
@pytest.mark.parametrize(
    ("model_name", "arch"),
    [
        ("gan", "mlp"),
        ("ebgan", "mlp"),
        ("ebgan_pt", "mlp"),
        ("began", "began"),
        ("wgan", "dcgan"),
        ("cgan", "mlp"),
    ],
)
def test_a_member_logs_what_a_single_run_logs(make_cfg, tmp_path, model_name, arch):
    """A member's metrics.json has a single run's keys; its CSV logger gets the same columns at
    the same steps; each member gets a W&B run of its own; its held-out values are what Lightning's
    validation loop computes for its checkpoint."""
    import csv

    import lightning as L
    from omegaconf import open_dict

    from src.population.run import Member, train_population
    from src.runs.training import train

    padded = arch == "mlp"

    def config(folder, width, seed, loggers):
        cfg = make_cfg(
            f"model={model_name}",
            f"arch={arch}",
            *(["arch.nLayerD=3", f"arch.sizeD={width}"] if padded else []),
            f"seed={seed}",
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=4",
            "trainer.log_every_n_steps=3",
            *(["model.d_steps_per_g_step=2"] if model_name == "wgan" else []),
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
    assert {s for s, k in logged("single") if k == "train/loss_d"} == {2, 5}
    runs = [list((tmp_path / f"member{k}" / "wandb").glob("offline-run-*")) for k in range(2)]
    assert [len(r) for r in runs] == [1, 1] and runs[0][0].name != runs[1][0].name

    # the second member's checkpoint through Lightning's own validation loop
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
    assert validated and set(validated) <= set(results[1]["metrics"])
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


def test_the_population_package_names_no_model_and_computes_no_loss():
    """src/population holds no model's losses, log keys or name, in its code (comments and
    docstrings aside): what a member computes is its model's own code."""
    import ast

    import src.losses
    import src.models

    models = {name for name in dir(src.models) if isinstance(getattr(src.models, name), type)}
    losses = {
        name
        for name, value in vars(src.losses).items()
        if callable(value) and getattr(value, "__module__", None) == "src.losses"
    }
    hparams = {h for m in models for h in getattr(getattr(src.models, m), "member_hparams", ())}
    for path in Path(PROJECT_ROOT / "src" / "population").glob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        }
        used = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if id(node) not in docstrings:
                    used.update(node.value.replace(".", " ").split())
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                module = getattr(node, "module", None) or ""
                assert module != "src.losses", f"{path.name} imports the losses"
        found = used & (models | losses | hparams)
        assert not found, f"{path.name} names {sorted(found)}"
