"""Every option of every config group composes; bad combinations fail before anything is built."""

import copy

import pytest
import torch
from hydra.utils import instantiate

from src.config import accepted_keys, validate_config
from src.config.registry import fitting_archs, knob_rules, model_classes
from src.data.translation import PAIRED_TASKS
from src.utils import PROJECT_ROOT, ConfigError

CONF = PROJECT_ROOT / "conf"
GROUPS = [
    "model",
    "arch",
    "loss",
    "data",
    "trainer",
    "logger",
    "callbacks",
    "optimizer",
    "experiment",
    "debug",
]
OPTIONS = [(group, p.stem) for group in GROUPS for p in sorted((CONF / group).glob("*.yaml"))]


def test_every_group_has_options():
    assert {g for g, _ in OPTIONS} == set(GROUPS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes(make_cfg, group, option):
    override = (
        f"optimizer@model.optimizer_g={option}" if group == "optimizer" else f"{group}={option}"
    )
    cfg = make_cfg(override)
    if group == "loss" and cfg.loss.family == "energy":
        cfg = make_cfg("model=ebgan", override)
    if group == "loss" and cfg.loss.family == "wasserstein":
        cfg = make_cfg("model=wgan", override)
    if group == "arch" and option == "began":
        cfg = make_cfg("model=began", override)
    # translation nets and tasks: pix2pix takes the paired ones, CycleGAN any
    if (group == "arch" and option in ("unet", "resnet")) or "task" in cfg.data:
        translator = "pix2pix" if cfg.data.get("task") in PAIRED_TASKS else "cyclegan"
        cfg = make_cfg(f"model={translator}", override)
    validate_config(cfg)
    assert cfg.model._target_.startswith("src.models.")


# every (model, arch) pair whose arch provides the nets the model declares it needs (registry.py)
COMBOS = [(m, a) for m, cls in model_classes().items() for a in fitting_archs(cls)]


def test_every_model_has_an_arch_a_name_and_known_keys():
    for option, cls in model_classes().items():
        assert fitting_archs(cls), f"model={option}: no arch in conf/arch/ provides its nets"
        assert cls.display_name, f"{cls.__name__} declares no display_name"
        # knob rules name keys the class takes (a typo there would check a key nobody sets)
        assert set(knob_rules(cls)) <= set(accepted_keys(cls)), option


def test_arch_misfits_are_derived_from_the_class():
    classes = model_classes()
    assert fitting_archs(classes["began"]) == ["began", "dcgan", "mlp"]
    assert fitting_archs(classes["wgan_gp"]) == ["dcgan", "mlp"]  # no critic in arch=began
    assert fitting_archs(classes["pix2pix"]) == ["resnet", "unet"]
    assert fitting_archs(classes["vae"]) == ["dcgan", "mlp"]  # an encoder


@pytest.mark.parametrize(("model", "arch"), COMBOS, ids=[f"{m}-{a}" for m, a in COMBOS])
def test_models_instantiate_on_every_fitting_arch(make_cfg, model, arch):
    cfg = make_cfg(f"model={model}", f"arch={arch}")
    validate_config(cfg)
    module = instantiate(cfg.model)
    assert type(module) is model_classes()[model]
    assert module.num_classes == (10 if model == "cgan" else 0)
    if model == "cluster_gan":  # conditioned inside on its clusters, unconditional outside
        assert module.generator.num_classes == module.num_clusters == 50
    elif not getattr(module, "is_translator", False):
        assert getattr(module.generator, "num_classes", 0) == module.num_classes


def test_model_options_all_have_a_class():
    assert set(model_classes()) == {p.stem for p in (CONF / "model").glob("*.yaml")}


def test_loss_that_does_not_fit_the_model_is_named(make_cfg):
    with pytest.raises(
        ConfigError,
        match=r"needs a 'energy' loss: choose loss= one of "
        r"\['energy_l1', 'energy_l2', 'energy_mse'\]",
    ):
        validate_config(make_cfg("model=ebgan", "loss=bce_ns"))
    with pytest.raises(
        ConfigError, match=r"choose loss= one of \['bce_minimax', 'bce_ns', 'least_squares'\]"
    ):
        validate_config(make_cfg("model=gan", "loss=energy_l2"))


def test_arch_without_the_needed_discriminator_is_named(make_cfg):
    with pytest.raises(
        ConfigError,
        match=r"has no classifier discriminator .* choose arch= one of \['dcgan', 'mlp'\]",
    ):
        validate_config(make_cfg("model=gan", "arch=began"))
    with pytest.raises(
        ConfigError, match=r"has no critic discriminator .* choose arch= one of \['dcgan', 'mlp'\]"
    ):
        validate_config(make_cfg("model=wgan_gp", "arch=began"))


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_wgan_gp_refuses_a_batch_norm_critic_and_names_the_fix(make_cfg, arch):
    # a 2-layer MLP D has no normalised layer at all
    deep = ["arch.nLayerD=3"] if arch == "mlp" else []
    with pytest.raises(
        Exception, match="needs a critic without batch norm .* arch.critic_norm=layer"
    ):
        instantiate(
            make_cfg("model=wgan_gp", f"arch={arch}", "arch.critic_norm=batch", *deep).model
        )
    for norm in ("layer", "none"):
        critic = instantiate(
            make_cfg("model=wgan_gp", f"arch={arch}", f"arch.critic_norm={norm}", *deep).model
        ).discriminator
        assert any(
            isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm)) for m in critic.modules()
        ) == (norm == "layer")
        assert not any("BatchNorm" in type(m).__name__ for m in critic.modules())


def test_wgan_defaults_are_the_papers(make_cfg):
    wgan = instantiate(make_cfg("model=wgan").model)
    assert (wgan.clip_value, wgan.d_steps_per_g_step) == (0.01, 5)
    optimizer_g, optimizer_d = wgan.configure_optimizers()
    assert isinstance(optimizer_d, torch.optim.RMSprop) and optimizer_d.defaults["lr"] == 5e-5
    gp = instantiate(make_cfg("model=wgan_gp").model)
    assert (gp.penalty_weight, gp.d_steps_per_g_step, gp.clip_value) == (10.0, 5, None)
    for optimizer in gp.configure_optimizers():
        assert isinstance(optimizer, torch.optim.Adam)
        assert optimizer.defaults["lr"] == 1e-4 and tuple(optimizer.defaults["betas"]) == (0.0, 0.9)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.margin=0", "model.margin must be > 0"),
        ("model.margin=-1", "model.margin must be > 0"),
    ],
)
def test_ebgan_margin_is_checked(make_cfg, override, message):
    with pytest.raises(Exception, match=message):
        instantiate(make_cfg("model=ebgan", override).model)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.gamma=0", r"model.gamma must be in \(0, 1\]"),
        ("model.gamma=1.5", r"model.gamma must be in \(0, 1\]"),
        ("model.lambda_k=0", "model.lambda_k must be > 0"),
    ],
)
def test_began_values_are_checked(make_cfg, override, message):
    with pytest.raises(Exception, match=message):
        instantiate(make_cfg("model=began", "arch=began", override).model)


def test_negative_pt_weight_is_refused(make_cfg):
    with pytest.raises(Exception, match="model.pt_weight must be >= 0"):
        instantiate(make_cfg("model=ebgan_pt", "model.pt_weight=-0.1").model)


def test_run_folders_are_unique_per_microsecond():
    text = (CONF / "hydra" / "default.yaml").read_text()
    assert "%f" in text and "chdir: false" in text


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "loss").glob("*.yaml")))
def test_loss_callables_are_plain_not_hydra_partials(make_cfg, option):
    # Hydra re-checks its target policy on every call of a partial it built (~0.3 ms a call, several
    # calls per batch): the loss group builds plain callables once instead.
    import functools

    model = "ebgan" if option.startswith("energy") else "gan"
    cfg = make_cfg(f"model={model}", f"loss={option}")
    for key, node in cfg.loss.items():
        if key == "family":
            continue
        fn = instantiate(node)
        assert callable(fn) and not isinstance(fn, functools.partial), (
            f"loss.{key} of loss={option}"
        )


def test_default_adam_is_fused_and_takes_the_same_steps_as_the_reference_adam(make_cfg):
    cfg = make_cfg("model=ebgan")
    factory = instantiate(cfg.model.optimizer_g)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    reference_net = copy.deepcopy(net)
    fused, reference = (
        factory(net.parameters()),
        torch.optim.Adam(
            reference_net.parameters(),
            lr=cfg.model.optimizer_g.lr,
            betas=tuple(cfg.model.optimizer_g.betas),
            foreach=False,
        ),
    )
    assert fused.defaults["fused"]
    for _ in range(50):
        x = torch.randn(16, 8)
        for model, optimizer in ((net, fused), (reference_net, reference)):
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()
    for a, b in zip(net.parameters(), reference_net.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)


def test_the_multi_node_slurm_launcher_takes_its_shape_from_the_trainer(tmp_path):
    """hydra/launcher=slurm_ddp: one SLURM job per run with num_nodes x devices tasks (composition
    only: no SLURM cluster here)."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "trainer=ddp",
                "trainer.num_nodes=2",
                "trainer.devices=4",
                "hydra/launcher=slurm_ddp",
            ],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert cfg.trainer.strategy == "ddp_find_unused_parameters_true"
