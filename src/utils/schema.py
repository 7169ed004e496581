"""Types and ranges of every tunable key of a training config, declared once and checked before
anything is built: a bad value stops the run with one line naming the key, the value and what is
allowed. The constructors keep their own checks as a second line.

Add a rule here with every new numeric, boolean or choice key: ``tests/test_schema.py`` composes
every model's config and fails on a key without one, then feeds each rule's own wrong-type and
out-of-range examples back through ``train``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

NOT_A_VALUE = "abc"  # a string where a number, flag or list is expected


@dataclass(frozen=True)
class Rule:
    """What one key accepts.

    ``kind``: "int", "number" (int or float), "bool", "choice" (one of ``choices``), "numbers" (a
    list of ``length`` numbers) or "count_or_fraction" (Lightning's limit_*_batches: an int >= 0 or
    a float in [0, 1]; with ``low_open``, not 0). ``low`` / ``high`` bound numbers (open with
    ``low_open`` / ``high_open``);
    ``also`` lists further literal values that are accepted (-1, "auto"); ``nullable`` accepts null.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    length: int | None = None
    also: tuple = ()
    nullable: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if value in self.also and type(value) in {type(a) for a in self.also}:
            return True
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "choice":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if self.kind == "int":
            return _is_int(value) and self._in_range(value)
        if self.kind == "number":
            return _is_number(value) and self._in_range(value)
        if self.kind == "count_or_fraction":
            if self.low_open and value == 0:
                return False
            return (_is_int(value) and value >= 0) or (_is_number(value) and 0 <= value <= 1)
        if self.kind == "numbers":
            return (
                isinstance(value, (list, tuple, ListConfig))
                and (self.length is None or len(value) == self.length)
                and all(_is_number(v) and self._in_range(v) for v in value)
            )
        raise ValueError(f"unknown rule kind {self.kind!r}")

    def _in_range(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def _range(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f" in {left}{_fmt(self.low)}, {_fmt(self.high)}{right}"
        if self.low is not None:
            return f" {'>' if self.low_open else '>='} {_fmt(self.low)}"
        if self.high is not None:
            return f" {'<' if self.high_open else '<='} {_fmt(self.high)}"
        return ""

    def allowed(self) -> str:
        """What is accepted, in words: 'an integer >= 2', 'one of ['normal', 'uniform']'."""
        text = {
            "bool": "true or false",
            "choice": f"one of {list(self.choices)}",
            "int": f"an integer{self._range()}",
            "number": f"a number{self._range()}",
            "count_or_fraction": (
                "an integer >= 1 (batches) or a fraction in (0.0, 1.0]"
                if self.low_open
                else "an integer >= 0 (batches) or a fraction in [0.0, 1.0]"
            ),
            "numbers": f"a list of {self.length or 'any number of'} numbers{self._range()}",
        }[self.kind]
        extras = [repr(a) for a in self.also] + (["null"] if self.nullable else [])
        return text + (f" (or {', '.join(extras)})" if extras else "")

    def wrong_type_example(self) -> Any:
        """A value of the wrong type for this key (for the schema sweep test)."""
        if self.kind == "choice":  # a type none of the choices has
            return NOT_A_VALUE if any(isinstance(c, int) for c in self.choices) else 3
        return NOT_A_VALUE

    def out_of_range_example(self) -> Any | None:
        """A value of the right type outside the allowed range, or None if every value is valid."""
        if self.kind == "choice":
            return "not_an_option"
        if self.kind == "count_or_fraction":
            return 0 if self.low_open else 1.5
        unbounded = self.low is None and self.high is None
        if self.kind not in ("int", "number", "numbers") or unbounded:
            return None
        if self.low is not None:
            bad = self.low if self.low_open else self.low - 1
        else:
            bad = self.high if self.high_open else self.high + 1
        bad = int(bad) if self.kind == "int" else float(bad)
        if bad in self.also:  # e.g. max_epochs: below 1 is invalid, but -1 means "no limit"
            bad -= 1
        return [bad] * (self.length or 1) if self.kind == "numbers" else bad


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and not (
        isinstance(value, float) and math.isnan(value)
    )


def _fmt(bound: float) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def integer(low=None, high=None, *, also=(), nullable=False) -> Rule:
    return Rule("int", low, high, also=tuple(also), nullable=nullable)


def number(low=None, high=None, *, low_open=False, high_open=False, nullable=False) -> Rule:
    return Rule("number", low, high, low_open, high_open, nullable=nullable)


def positive(nullable=False) -> Rule:
    return number(0, low_open=True, nullable=nullable)


def boolean(*, also=(), nullable=False) -> Rule:
    return Rule("bool", also=tuple(also), nullable=nullable)


def choice(*values, nullable=False) -> Rule:
    return Rule("choice", choices=tuple(values), nullable=nullable)


SEED = integer(0, 2**32 - 1)


@cache
def schema() -> dict[str, Rule]:
    """Key pattern -> rule; ``*`` stands for one key (any optimizer, any discriminator role)."""
    import typing

    from lightning.fabric.connector import _PRECISION_INPUT_INT, _PRECISION_INPUT_STR
    from lightning.pytorch.strategies import StrategyRegistry

    from src.data.idx import DATASETS
    from src.data.image_folder import IN_MEMORY
    from src.data.translation import TASKS
    from src.losses import ENERGY_NORMS, PIXEL_LIKELIHOODS
    from src.models.base import LATENT_DISTRIBUTIONS
    from src.nets.translation import NORMS

    precisions = typing.get_args(_PRECISION_INPUT_STR) + typing.get_args(_PRECISION_INPUT_INT)
    return {
        # the run
        "seed": SEED,
        "torch_threads": integer(1, nullable=True),
        "matmul_precision": choice("highest", "high", "medium"),
        "print_config": boolean(),
        # data
        "data.dataset": choice(*DATASETS, "image_folder"),
        "data.channels": choice(1, 3),
        "data.test_size": integer(1),
        "data.in_memory": choice(*IN_MEMORY),
        "data.batch_size": integer(2),
        "data.val_size": integer(0, 59999),
        "data.split_seed": SEED,
        "data.image_size": integer(8),
        "data.download": boolean(),
        "data.on_device": boolean(),
        "data.num_classes": integer(1),
        "data.task": choice(*TASKS),
        "data.channels_a": choice(1, 3),
        "data.channels_b": choice(1, 3),
        "data.task_seed": SEED,
        # the shared adversarial loop (conf/model/base/adversarial.yaml) and each model's knobs
        "model.d_steps_per_g_step": integer(1),
        "model.latent_distribution": choice(*LATENT_DISTRIBUTIONS),
        "model.check_finite_every_n_steps": integer(1),
        "model.compile": boolean(),
        "model.cuda_graphs": boolean(),
        "model.num_classes": integer(2),
        "model.num_codes": integer(2),
        "model.num_clusters": integer(2),
        "model.cluster_iterations": integer(1),
        "model.cluster_seed": integer(0),
        "model.code_weight": number(0),
        "model.margin": positive(),
        "model.pt_weight": number(0),
        "model.gamma": number(0, 1, low_open=True),
        "model.lambda_k": positive(),
        "model.k_init": number(0, 1),
        "model.lr_decay_factor": number(0, 1, low_open=True),
        "model.lr_decay_patience": integer(1),
        "model.lr_min": number(0),
        "model.clip_value": positive(),
        "model.penalty_weight": number(0),
        "model.kl_weight": number(0),
        "model.ema_decay": number(0, 1, low_open=True, high_open=True, nullable=True),
        "model.pixel_likelihood": choice(*PIXEL_LIKELIHOODS),
        "model.reconstruction_weight": number(0),
        "model.feature_layer": integer(-1),
        "model.l1_weight": number(0),
        "model.adversarial_weight": number(0),
        "model.test_time_noise": boolean(),
        "model.cycle_weight": number(0),
        "model.identity_weight": number(0),
        "model.pool_size": integer(0),
        "model.decay_epochs": integer(0, nullable=True),
        "model.*.lr": positive(),
        "model.*.betas": Rule("numbers", 0, 1, high_open=True, length=2),
        "model.*.momentum": number(0),
        "model.*.weight_decay": number(0),
        "model.*.fused": boolean(nullable=True),
        # loss
        "loss.family": choice("classifier", "energy", "wasserstein"),
        "loss.energy.norm": choice(*ENERGY_NORMS),
        # arch
        "arch.latent_dim": integer(1),
        "arch.nLayerG": integer(2),
        "arch.nLayerD": integer(2),
        "arch.sizeG": integer(1),
        "arch.sizeD": integer(1),
        "arch.dropoutD": boolean(),
        "arch.critic_norm": choice("batch", "layer", "spectral", "none"),
        "arch.classifier_norm": choice("batch", "layer", "spectral", "none"),
        "arch.num_classes": integer(0),
        "arch.gan_lr": positive(nullable=True),
        "arch.cgan_lr": positive(nullable=True),
        "arch.width": integer(1),
        "arch.embedding_dim": integer(1),
        "arch.hidden_dim": integer(1),
        "arch.filters": integer(1),
        "arch.init": choice("xavier", "default"),
        "arch.discriminator_width": integer(1),
        "arch.norm": choice(*NORMS),
        "arch.dropout": number(0, 1, high_open=True),
        "arch.dropout_layers": integer(0),
        "arch.patch_layers": integer(1),
        "arch.blocks": integer(0),
        "arch.generator.init_std": positive(),
        "arch.discriminators.*.init_std": positive(),
        # trainer (Lightning's own values: -1 epochs = no limit, devices -1 / "auto" = all)
        "trainer.accelerator": choice("auto", "cpu", "gpu", "cuda", "mps", "tpu"),
        "trainer.devices": integer(1, also=(-1, "auto")),
        "trainer.num_nodes": integer(1),
        "trainer.sync_batchnorm": boolean(),
        # Lightning's registered strategy names
        "trainer.strategy": choice("auto", *StrategyRegistry.available_strategies()),
        "trainer.max_epochs": integer(1, also=(-1,)),
        "trainer.min_epochs": integer(0, nullable=True),
        "trainer.max_steps": integer(1, also=(-1,)),
        "trainer.log_every_n_steps": integer(1),
        "trainer.check_val_every_n_epoch": integer(1, nullable=True),
        # 0 would "complete" a run without one optimizer step
        "trainer.limit_train_batches": Rule("count_or_fraction", low_open=True),
        "trainer.limit_val_batches": Rule("count_or_fraction"),
        "trainer.overfit_batches": Rule("count_or_fraction"),
        "trainer.num_sanity_val_steps": integer(-1),
        "trainer.deterministic": boolean(also=("warn",), nullable=True),
        "trainer.precision": choice(*precisions),
        "trainer.enable_model_summary": boolean(),
        # callbacks
        "callbacks.model_checkpoint.save_last": boolean(also=("link",), nullable=True),
        "callbacks.model_checkpoint.save_top_k": integer(-1),
        "callbacks.model_checkpoint.save_on_train_epoch_end": boolean(nullable=True),
        "callbacks.model_checkpoint.every_n_epochs": integer(0, nullable=True),
        "callbacks.model_checkpoint.enable_version_counter": boolean(),
        "callbacks.sample_grid.n_samples": integer(1),
        "callbacks.sample_grid.every_n_epochs": integer(1),
        "callbacks.sample_grid.seed": SEED,
        "callbacks.progress_bar.every_n_batches": integer(1),
        "callbacks.generative_metrics.every_n_epochs": integer(1),
        "callbacks.generative_metrics.n_samples": integer(2),
        "callbacks.generative_metrics.n_real": integer(2),
        "callbacks.generative_metrics.kid_subsets": integer(1),
        "callbacks.generative_metrics.kid_subset_size": integer(2),
        "callbacks.generative_metrics.seed": SEED,
        "callbacks.generative_metrics.nearest_k": integer(1),
        # loggers
        "logger.wandb.log_model": boolean(also=("all",)),
        "logger.tensorboard.default_hp_metric": boolean(),
        # the other entry points' own keys (conf/evaluate.yaml, sample.yaml, interpolate.yaml)
        "n_samples": integer(2),
        "n_real": integer(2),
        "kid_subsets": integer(1),
        "kid_subset_size": integer(2),
        "nearest_k": integer(1),
        "n": integer(1),
        "class": integer(0, nullable=True),
        "pairs": integer(1),
        "steps": integer(2),
        "from_class": integer(0, 9),
        "to_class": integer(0, 9),
        "walk_rows": integer(1),
        "walk_steps": integer(2),
        "walk_scale": positive(),
        "walk_samples": integer(1),
        "grid_images": integer(1),
        "batch_norm": choice("running", "batch"),
        "use_ema": boolean(),
        "baseline": choice("identity", nullable=True),
        "direction": choice("a2b", "b2a"),
    }


@cache
def _compiled() -> list[tuple[re.Pattern, str]]:
    return [(re.compile("^" + re.escape(p).replace(r"\*", r"[^.]+") + "$"), p) for p in schema()]


def rule_for(key: str) -> Rule | None:
    """The rule of a dotted key (``model.optimizer_g.lr``), or None if the schema has none."""
    for pattern, name in _compiled():
        if pattern.match(key):
            return schema()[name]
    return None


def leaves(node: DictConfig, prefix: str = ""):
    """(dotted key, value) of every leaf that holds a value of its own: interpolations, which
    repeat a key checked where it is set, Hydra's own ``_target_``-style keys and values still
    missing (``???``) are skipped; a list of plain values is one leaf."""
    for key in node:
        hydra_key = key.startswith("_") and key.endswith("_")
        if hydra_key or OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key):
            continue
        path, child = f"{prefix}{key}", node[key]
        if isinstance(child, DictConfig):
            yield from leaves(child, path + ".")
        elif isinstance(child, ListConfig):
            if not any(OmegaConf.is_interpolation(child, i) for i in range(len(child))):
                yield path, OmegaConf.to_container(child)
        else:
            yield path, child


def check_schema(cfg: DictConfig) -> None:
    """Every key with a rule holds an accepted value; else a ConfigError naming key and value."""
    from src.utils.config import ConfigError

    try:
        items = list(leaves(cfg))
    except OmegaConfBaseException as err:  # a broken interpolation: reported where it is resolved
        raise ConfigError(str(err).splitlines()[0]) from err
    for key, value in items:
        rule = rule_for(key)
        if rule is not None and not rule.accepts(value):
            raise ConfigError(f"{key}={value!r}: must be {rule.allowed()}")
