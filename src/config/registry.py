"""The models and nets this project offers, read from conf/: each ``model=`` option's class and what
that class declares about itself (display name, knob rules, loss family, the nets it needs). The
schema, the config checks, the report, the benchmarks and the tests ask here instead of keeping
their own lists, so a new file in conf/model/ reaches all of them."""

from __future__ import annotations

from functools import cache

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from src.utils.project import CONF_DIR, config_options
from src.utils.rules import Rule


def _target_of(option: str) -> str:
    """The ``_target_`` of conf/model/<option>.yaml, following its defaults list when the file
    itself names none (an option may only change another's knobs)."""
    node = OmegaConf.load(CONF_DIR / "model" / f"{option}.yaml")
    if "_target_" in node:
        return str(node._target_)
    for entry in node.get("defaults") or []:
        parent = entry if isinstance(entry, str) else None
        if parent and parent != "_self_" and (CONF_DIR / "model" / f"{parent}.yaml").is_file():
            return _target_of(parent)
    raise ValueError(f"conf/model/{option}.yaml names no _target_ (nor does its defaults list)")


@cache
def model_classes() -> dict[str, type]:
    """``model=`` option -> its LightningModule class, for every file in conf/model/."""
    return {option: get_class(_target_of(option)) for option in config_options("model")}


def models_where(predicate) -> list[str]:
    """The ``model=`` options whose class satisfies ``predicate``."""
    return [option for option, cls in model_classes().items() if predicate(cls)]


def display_name(model: str | type) -> str:
    """A model's name in reports: from its class (or a ``_target_`` path); the class name when
    the class declares none or the target cannot be imported."""
    if isinstance(model, str):
        try:
            model = get_class(model)
        except Exception:  # a run folder of a model this checkout no longer has
            return model.rsplit(".", 1)[-1]
    return getattr(model, "display_name", "") or model.__name__


def knob_rules(cls: type) -> dict[str, Rule]:
    """The rules of every ``model.*`` key ``cls`` takes: its own ``knob_rules`` and its bases'."""
    rules: dict[str, Rule] = {}
    for base in reversed(cls.__mro__):
        rules.update(vars(base).get("knob_rules", {}))
    return rules


@cache
def all_knob_rules() -> dict[str, Rule]:
    """``model.<key>`` -> rule over every model; one key with two different rules is an error."""
    merged: dict[str, tuple[Rule, str]] = {}
    for option, cls in model_classes().items():
        for key, rule in knob_rules(cls).items():
            seen = merged.setdefault(key, (rule, option))
            if seen[0] != rule:
                raise ValueError(
                    f"model.{key} has two rules: {seen[0].allowed()} (model={seen[1]}) and "
                    f"{rule.allowed()} (model={option}); one key must mean one thing"
                )
    return {f"model.{key}": rule for key, (rule, _) in merged.items()}


def arch_misfit(model_cls: type, arch: DictConfig) -> str | None:
    """The net an arch config lacks for ``model_cls`` (\"encoder (arch.encoder)\"), or None if
    it provides every net the model needs."""
    if getattr(model_cls, "is_translator", False):
        if "generator_back" not in arch:
            return "translation nets (image -> image generators and PatchGAN discriminators)"
        return None
    if getattr(model_cls, "needs_encoder", False) and arch.get("encoder") is None:
        return "encoder (arch.encoder)"
    role = getattr(model_cls, "discriminator_role", None)
    provided = sorted(arch.get("discriminators") or {})
    if role is not None and role not in provided:
        return f"{role} discriminator (it provides {provided})"
    return None


def fitting_archs(model_cls: type) -> list[str]:
    """The ``arch=`` options that provide every net ``model_cls`` needs."""
    return [
        name
        for name in config_options("arch")
        if arch_misfit(model_cls, OmegaConf.load(CONF_DIR / "arch" / f"{name}.yaml")) is None
    ]
