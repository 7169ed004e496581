"""Every key's type and range is declared once (src/config/schema.py) and checked before anything
is built; a bad checkpoint file is named by every entry point. Cases are generated from the
composed configs and the schema's own rules, not listed by hand."""

import copy

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from src.config.registry import fitting_archs, model_classes
from src.config.schema import leaves, rule_for
from src.runs.cli import report_user_errors
from src.runs.training import train
from src.utils import PROJECT_ROOT

CONF_DIR = str(PROJECT_ROOT / "conf")
ENTRY_POINTS = ["train", "evaluate", "sample", "interpolate", "translate"]


def action_of(entry_point: str):
    """What the script's main runs under report_user_errors (train.py: src.runs.training.train)."""
    import importlib

    if entry_point == "train":
        return train
    return getattr(importlib.import_module(f"src.{entry_point}"), entry_point)


def composed_configs() -> dict[str, tuple[str, object]]:
    """name -> (entry point, config): every model on every arch that fits it, with all three
    loggers (their keys count too), and the other entry points' configs."""
    configs = {}
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for model, model_cls in model_classes().items():
            for arch in fitting_archs(model_cls):
                overrides = [f"model={model}", f"arch={arch}", "logger=[wandb,csv,tensorboard]"]
                cfg = compose(config_name="train", overrides=overrides)
                configs[" ".join(overrides)] = ("train", cfg)
        for entry_point in ENTRY_POINTS[1:]:
            configs[entry_point] = (entry_point, compose(config_name=entry_point))
    return configs


def is_checkable(value) -> bool:
    """Numbers, flags and lists of numbers: the values a schema must type and bound."""
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, (int, float)) for v in value)
    return isinstance(value, (bool, int, float))


CONFIGS = composed_configs()
# key -> a composed config that has it (the first one found)
KEYS = {}
for _entry_point, _config in CONFIGS.values():
    for _key, _value in leaves(_config):
        if rule_for(_key) is not None or is_checkable(_value):
            KEYS.setdefault(_key, (_entry_point, _config))
CASES = [
    (key, kind, example)
    for key in sorted(KEYS)
    if rule_for(key) is not None
    for kind, example in (
        ("wrong type", rule_for(key).wrong_type_example()),
        ("out of range", rule_for(key).out_of_range_example()),
    )
    if example is not None
]


def test_every_numeric_boolean_and_choice_key_of_every_model_has_a_rule():
    missing = sorted(key for key in KEYS if rule_for(key) is None)
    assert not missing, f"add rules for these keys to src/config/schema.py: {missing}"
    # the schema covers what the models really compose, choice keys included
    for key in (
        "model.latent_distribution",
        "arch.critic_norm",
        "loss.energy.norm",
        "trainer.precision",
        "data.dataset",
        "model.optimizer_d.betas",
        "walk_scale",
    ):
        assert key in KEYS
    assert len(KEYS) >= 70


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_composed_defaults_pass_the_schema(name):
    for key, value in leaves(CONFIGS[name][1]):
        rule = rule_for(key)
        assert rule is None or rule.accepts(value), f"{key}={value!r} must be {rule.allowed()}"


@pytest.mark.parametrize(("key", "kind", "value"), CASES, ids=[f"{k}-{t}" for k, t, _ in CASES])
def test_a_bad_value_stops_before_anything_is_built_with_one_line_naming_the_key(
    key, kind, value, tmp_path, capsys
):
    entry_point, cfg = KEYS[key]
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        if entry_point == "train":
            cfg.paths.output_dir = str(tmp_path)
        else:  # checked before the checkpoint is read: a missing one is never reached
            cfg.ckpt_path = str(tmp_path / "missing.ckpt")
        OmegaConf.update(cfg, key, value, merge=False)
    with pytest.raises(SystemExit) as stopped:
        report_user_errors(action_of(entry_point), cfg)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}={value!r}: must be "), lines
    assert not any(tmp_path.iterdir()), "nothing is written for a refused config"


def test_the_rules_accept_what_lightning_and_the_nets_accept():
    assert rule_for("trainer.max_epochs").accepts(-1)
    assert not rule_for("trainer.max_epochs").accepts(0)
    assert rule_for("trainer.devices").accepts("auto")
    assert rule_for("trainer.limit_train_batches").accepts(0.25)
    assert rule_for("trainer.limit_train_batches").accepts(3)
    assert not rule_for("trainer.limit_train_batches").accepts(-1)
    assert rule_for("trainer.precision").accepts("bf16-mixed")
    assert rule_for("model.margin").accepts(5)  # an int where a float is written
    assert not rule_for("model.margin").accepts(True)  # a flag is not a number
    assert not rule_for("model.margin").accepts(float("nan"))
    assert rule_for("model.optimizer_g.lr").allowed() == "a number > 0"
    assert rule_for("model.gamma").allowed() == "a number in (0, 1]"
    assert rule_for("torch_threads").allowed() == "an integer >= 1 (or null)"


# --- bad checkpoint files, for every entry point that reads one ---------------------------------


def bad_checkpoints(folder) -> dict:
    """A truncated checkpoint, random bytes, a text file, a tensor, a dict of another program."""
    folder.mkdir()
    whole = folder / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "run_config": {}}, whole)
    files = {"truncated": folder / "truncated.ckpt", "random bytes": folder / "random.ckpt"}
    files["truncated"].write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    files["random bytes"].write_bytes(bytes(range(256)) * 8)
    files["text"] = folder / "notes.ckpt"
    files["text"].write_text("not a checkpoint\n")
    files["a tensor"] = folder / "tensor.pt"
    torch.save(torch.zeros(3), files["a tensor"])
    files["other dict"] = folder / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2)}, files["other dict"])
    return files


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_a_bad_checkpoint_file_is_named_in_one_line_by_every_entry_point(
    entry_point, tmp_path, data_dir, capsys
):
    action = action_of(entry_point)
    for problem, path in bad_checkpoints(tmp_path / "files").items():
        out = tmp_path / f"out_{path.stem}"
        overrides = [f"ckpt_path={path}", f"paths.data_dir={data_dir}"]
        if entry_point == "train":
            overrides += ["debug=fast", f"paths.output_dir={out}"]
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name=entry_point, overrides=overrides)
        with pytest.raises(SystemExit) as stopped:
            report_user_errors(action, cfg)
        assert stopped.value.code == 2, problem
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: ckpt_path={path}: "), (
            problem,
            lines,
        )
        assert not out.exists(), "nothing is written for a refused checkpoint"
