"""What a sweep config expands to, with Hydra's own basic-sweeper logic (no job is launched)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from src.utils import PROJECT_ROOT, register_resolvers

SWEEPS_DIR = PROJECT_ROOT / "sweeps"
# how a run is launched, not what it computes: left out of run folder names (conf/hydra/default.yaml
# lists the same keys) and ignored when a relaunched sweep decides whether a run is done
LAUNCH_ONLY_KEYS = {
    "torch_threads",
    "hydra/launcher",
    "hydra.launcher.n_jobs",
    "hydra.launcher.max_members",
    "hydra.launcher.max_padding",
    "hydra.sweep.dir",
}


def expand_params(params: dict, extra: list[str] | None = None) -> list[list[str]]:
    """Each job's overrides for ``hydra.sweeper.params`` (+ command-line ``extra``), in order."""
    lines = [f"{key}={value}" for key, value in params.items()] + list(extra or [])
    overrides = OverridesParser.create().parse_overrides(lines)
    return [
        job
        for batch in BasicSweeper.split_arguments(overrides, max_batch_size=None)
        for job in batch
    ]


def sweep_jobs(config_name: str, overrides: list[str] | None = None) -> list[list[str]]:
    """The jobs ``python src/train.py -cd sweeps -cn <config_name> [overrides]`` would launch."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3"):
        # conf/ is the primary config path of src/train.py; sweeps/ is added with -cd, as here
        cfg = compose(
            config_name=config_name,
            overrides=[f"hydra.searchpath=[file://{PROJECT_ROOT / 'conf'}]"],
            return_hydra_config=True,
        )
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    return expand_params({k: str(v) for k, v in params.items()}, overrides)


def jobs_of_multirun(folder: Path) -> list[list[str]]:
    """The jobs a launched sweep folder was meant to hold, from its Hydra ``multirun.yaml``."""
    saved = OmegaConf.load(Path(folder) / "multirun.yaml")
    params = (
        OmegaConf.to_container(saved.hydra.sweeper.params)
        if saved.hydra.sweeper.get("params")
        else {}
    )
    # as Hydra's basic sweeper merges them: a command-line override of a swept key replaces it
    task = [str(o) for o in saved.hydra.overrides.task]
    return expand_params({k: str(v) for k, v in params.items()}, task)
