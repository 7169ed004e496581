"""Config checks that run before anything is built: a bad combination fails with a clear line.

The top of the config layer: it reads the models and data it checks (their classes declare what
they need), and nothing below imports it."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from src.config.registry import arch_misfit, fitting_archs, models_where
from src.config.schema import check_schema
from src.data.idx import DATASETS, locate_raw_dir
from src.data.translation import PAIRED_TASKS, TASKS
from src.models.base import shares_adversarial_step
from src.utils.checkpoint_file import read_checkpoint
from src.utils.errors import ConfigError
from src.utils.project import config_options, config_options_where, selected_choice


def validate_config(cfg: DictConfig) -> type:
    """Check that model, loss and arch fit together and that every key has an allowed type and
    value (src/config/schema.py); return the model class."""
    check_schema(cfg)  # first: a value of the wrong type gets its own message, not a knock-on one
    target = OmegaConf.select(cfg, "model._target_")
    if target is None:
        raise ConfigError(
            f"config key model._target_ is missing; choose model= one of {config_options('model')}"
        )
    try:
        model_cls = get_class(target)
    except Exception as err:
        raise ConfigError(f"model._target_={target!r} cannot be imported: {err}") from err

    family = OmegaConf.select(cfg, "loss.family")
    if model_cls.loss_family is not None and family != model_cls.loss_family:
        fitting = config_options_where("loss", lambda c: c.get("family") == model_cls.loss_family)
        raise ConfigError(
            f"loss={selected_choice(cfg, 'loss')} (family {family!r}) does not fit "
            f"model={selected_choice(cfg, 'model')}, "
            f"which needs a {model_cls.loss_family!r} loss: choose loss= one of {fitting}"
        )

    _check_translation(cfg, model_cls)
    misfit = arch_misfit(model_cls, OmegaConf.select(cfg, "arch") or {})
    if misfit is not None:
        raise ConfigError(
            f"arch={selected_choice(cfg, 'arch')} has no {misfit}, which "
            f"model={selected_choice(cfg, 'model')} needs: choose arch= one of "
            f"{fitting_archs(model_cls)}"
        )
    # a typo, or a key a group option merged in that the chosen class does not take (an SGD chosen
    # for a model whose config sets Adam's betas)
    for group in ("model", "data", "model.optimizer_g", "model.optimizer_d"):
        _check_keys_known(cfg, group)
    _check_accelerator(cfg)
    if OmegaConf.select(cfg, "model.cuda_graphs"):
        _check_cuda_graphs(cfg, model_cls)
    conditional = OmegaConf.select(cfg, "model.num_classes") or 0
    if conditional and OmegaConf.select(cfg, "data.dataset") == "image_folder":
        raise ConfigError(
            f"model={selected_choice(cfg, 'model')} is class-conditional, and data=image_folder "
            "has no labels: choose an unconditional model or data= mnist / fashion_mnist"
        )
    return model_cls


def accepted_keys(cls: type) -> set[str] | None:
    """The keyword arguments ``cls(...)`` takes, following ``**kwargs`` up its bases; None when
    some constructor takes any keyword (nothing can be called unknown)."""
    keys: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            parameters = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return None
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        keys |= {p.name for p in parameters if p.kind in named and p.name != "self"}
        if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters):
            return keys
    return None


def _check_keys_known(cfg: DictConfig, group: str) -> None:
    """A key the group's class does not take (a typo, ``+model.foo=1``) is named with the keys it
    does take, instead of a constructor's "unexpected keyword argument"."""
    node = OmegaConf.select(cfg, group)
    target = OmegaConf.select(cfg, f"{group}._target_")
    if not isinstance(node, DictConfig) or target is None:
        return
    try:
        keys = accepted_keys(get_class(target))
    except Exception:  # not a class (a factory function): its own call reports bad arguments
        return
    if keys is None:
        return
    given = {str(k) for k in node if not str(k).startswith("_")}
    # the model's run config is passed by src/runs/training.py, never from the config
    unknown = sorted(given - keys - {"run_config"})
    if unknown:
        option = group.rsplit(".", 1)[-1] if "." in group else group
        name = f"{group}={selected_choice(cfg, option)} ({target})" if "." not in group else target
        hint = f"; remove it with ~{group}.{unknown[0]}" if "." in group else ""
        raise ConfigError(
            f"{group}.{unknown[0]}: not a key of {name}; its keys are "
            f"{sorted(keys - {'run_config', 'params'})}{hint}"
        )


def _check_accelerator(cfg: DictConfig) -> None:
    """A GPU asked for on a machine without one: say so, and how to run on the CPU."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator") or "auto")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator}, but torch finds no CUDA GPU on this machine "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}): run on the "
            "CPU with trainer.accelerator=cpu (or auto, which takes a GPU when there is one)"
        )


def _check_cuda_graphs(cfg: DictConfig, model_cls: type) -> None:
    """model.cuda_graphs=true: the shared adversarial loop, one CUDA device, 32-bit precision."""
    model = selected_choice(cfg, "model")
    if not shares_adversarial_step(model_cls):
        raise ConfigError(
            f"model.cuda_graphs=true: model={model} has its own training step, which is not "
            "captured; it is supported by the models of the shared adversarial loop "
            f"({', '.join(models_where(shares_adversarial_step))})"
        )
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator") or "auto")
    if accelerator not in ("gpu", "cuda", "auto") or not torch.cuda.is_available():
        raise ConfigError(
            f"model.cuda_graphs=true needs a CUDA GPU (trainer.accelerator=gpu); "
            f"trainer.accelerator={accelerator}, CUDA available: {torch.cuda.is_available()}"
        )
    devices = OmegaConf.select(cfg, "trainer.devices")
    nodes = OmegaConf.select(cfg, "trainer.num_nodes") or 1
    strategy = str(OmegaConf.select(cfg, "trainer.strategy") or "auto")
    one_device = devices in (1, "1", "auto", None) or (
        isinstance(devices, (list, ListConfig)) and len(devices) == 1
    )
    if not one_device or nodes != 1 or strategy not in ("auto", "single_device"):
        raise ConfigError(
            "model.cuda_graphs=true runs in one process on one device (no DDP); got "
            f"trainer.devices={devices}, trainer.num_nodes={nodes}, trainer.strategy={strategy}"
        )
    precision = str(OmegaConf.select(cfg, "trainer.precision") or "32")
    if precision not in ("32", "32-true"):
        raise ConfigError(
            f"model.cuda_graphs=true needs trainer.precision=32 (got {precision}); for TF32 "
            "matmuls set matmul_precision=high instead"
        )
    if OmegaConf.select(cfg, "trainer.detect_anomaly"):
        raise ConfigError(
            "model.cuda_graphs=true and trainer.detect_anomaly=true cannot be combined: anomaly "
            "detection reads every backward's values on the host, which a graph capture forbids"
        )
    if OmegaConf.select(cfg, "model.compile"):
        raise ConfigError("model.cuda_graphs and model.compile cannot both be true: choose one")


def is_translation_data(cfg: DictConfig) -> bool:
    """Whether ``data`` is a translation task (conf/data/base/translation.yaml: it has ``task``)."""
    return OmegaConf.select(cfg, "data.task") is not None


def _is_translator_config(model_cfg) -> bool:
    try:
        return getattr(get_class(str(model_cfg.get("_target_"))), "is_translator", False)
    except Exception:  # a config without a target, or one that cannot be imported
        return False


def _check_translation(cfg: DictConfig, model_cls: type) -> None:
    """Translators need translation data and nets, pix2pix paired data; samplers need images."""
    translator = getattr(model_cls, "is_translator", False)
    tasks = config_options_where("data", lambda c: "task" in c)
    model = selected_choice(cfg, "model")
    if translator and not is_translation_data(cfg):
        raise ConfigError(
            f"model={model} translates images between two domains: choose data= one of {tasks}"
        )
    if not translator and is_translation_data(cfg):
        translators = config_options_where("model", _is_translator_config)
        raise ConfigError(
            f"data={selected_choice(cfg, 'data')} is a translation task "
            f"(data.task={cfg.data.task}), which model={model} cannot train: choose model= one "
            f"of {translators} or data= one of "
            f"{[o for o in config_options('data') if o not in tasks]}"
        )
    if not translator:
        return
    if getattr(model_cls, "needs_pairs", False) and cfg.data.task not in PAIRED_TASKS:
        raise ConfigError(
            f"model={model} learns from (input, target) pairs; data.task={cfg.data.task} is "
            f"unpaired: choose data= one of {[t for t in tasks if t in PAIRED_TASKS]}"
        )


def _data_sets(cfg: DictConfig) -> list[str]:
    """The IDX datasets a run reads: data.dataset, or those its translation task is built from."""
    if OmegaConf.select(cfg, "data.dataset") == "image_folder":
        return []
    if not is_translation_data(cfg):
        return [cfg.data.dataset]
    spec = TASKS.get(cfg.data.task)
    if spec is None or spec.a is None:  # an unknown task is the schema's error; folders: none
        return []
    return sorted({spec.a.classifier, spec.b.classifier})


def check_paths(cfg: DictConfig) -> None:
    """The data folder and the checkpoint to resume from exist and fit, before any training."""
    data_dir = Path(cfg.paths.data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(
            f"paths.data_dir={data_dir} is a file, not a folder; set DATA_DIR (or paths.data_dir) "
            "to the folder holding MNIST/raw/ (or FashionMNIST/raw/)"
        )
    if OmegaConf.select(cfg, "data.dataset") == "image_folder":
        path = None if OmegaConf.is_missing(cfg.data, "path") else cfg.data.path
        if not path or not Path(path).is_dir():
            raise ConfigError(
                f"data.path={path if path else '???'}: data=image_folder reads your images from "
                "a folder (sub-folders too); set data.path to one that exists"
            )
    folder_task = is_translation_data(cfg) and str(cfg.data.task).endswith("_folder")
    if folder_task and not (cfg.data.path and Path(cfg.data.path).is_dir()):
        raise ConfigError(
            f"data.path={cfg.data.path}: data.task={cfg.data.task} reads images from a folder, "
            "and this one does not exist"
        )
    for dataset in _data_sets(cfg):
        spec = DATASETS.get(dataset)
        if spec is None:
            raise ConfigError(
                f"data.dataset={dataset!r} is unknown; allowed: {sorted(DATASETS)} "
                f"(data= one of {config_options('data')})"
            )
        # a missing folder is an error, except the default data/ (made for the first download)
        if (
            not data_dir.is_dir()
            and data_dir != Path(cfg.paths.root_dir) / "data"
            and locate_raw_dir(spec, data_dir) is None
        ):
            raise ConfigError(
                f"paths.data_dir={data_dir} does not exist; set DATA_DIR (or paths.data_dir) to "
                f"the folder holding {spec.folder}/raw/"
            )
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path:
        path = Path(ckpt_path)
        saved = read_checkpoint(path)["run_config"]
        saved_model = (saved.get("model") or {}).get("_target_")
        if saved_model and saved_model != cfg.model._target_:
            raise ConfigError(
                f"ckpt_path={path} holds a {saved_model} model, but this run configures "
                f"{cfg.model._target_}: choose the matching model= or another checkpoint"
            )
