"""Types and ranges of every tunable key of a training config, declared once and checked before
anything is built: a bad value stops the run with one line naming the key, the value and what is
allowed. The constructors keep their own checks as a second line.

A model's own knobs are declared with the model (``knob_rules`` on its class, collected here for
every option in conf/model/); the shared keys are listed below. Add a rule with every new numeric,
boolean or choice key: ``tests/test_schema.py`` composes every model's config and fails on a key
without one, then feeds each rule's own wrong-type and out-of-range examples back through ``train``.
"""

from __future__ import annotations

import re
import typing
from functools import cache

from lightning.fabric.connector import _PRECISION_INPUT_INT, _PRECISION_INPUT_STR
from lightning.pytorch.strategies import StrategyRegistry
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.config.registry import all_knob_rules
from src.data.idx import DATASETS
from src.data.image_folder import IN_MEMORY
from src.data.translation import TASKS
from src.losses import ENERGY_NORMS
from src.metrics.morphometry import CONTROLLABLE
from src.nets.translation import NORMS
from src.sampling.control import DIRECTION_FITS, METHODS
from src.utils.errors import ConfigError
from src.utils.rules import SEED, Rule, boolean, choice, integer, number, positive


@cache
def schema() -> dict[str, Rule]:
    """Key pattern -> rule; ``*`` stands for one key (any optimizer, any discriminator role)."""
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
        # each model's own knobs, declared with the model (knob_rules), and the optimizers'
        **all_knob_rules(),
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
        # conf/control.yaml
        "attribute": choice(*CONTROLLABLE, "all"),
        "method": choice(*METHODS, "all"),
        "delta": number(nullable=True),
        "keep_class": boolean(),
        "rows": integer(1),
        "columns": integer(2),
        "measure_samples": integer(2),
        "gradient.iterations": integer(1),
        "gradient.lr": positive(),
        "gradient.prior_weight": number(0),
        "gradient.class_weight": number(0),
        "latent_direction.fit": choice(*DIRECTION_FITS),
        "latent_direction.samples": integer(10),
        "default_delta.*": number(),
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
    try:
        items = list(leaves(cfg))
    except OmegaConfBaseException as err:  # a broken interpolation: reported where it is resolved
        raise ConfigError(str(err).splitlines()[0]) from err
    for key, value in items:
        rule = rule_for(key)
        if rule is not None and not rule.accepts(value):
            raise ConfigError(f"{key}={value!r}: must be {rule.allowed()}")
