"""Where the project and its configs live, the resolvers its configs use, and what Hydra says
about the running job. Light on purpose (hydra and omegaconf only): the population launcher's
compose workers import it without torch."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"


def folder_name(text: str, limit: int = 120) -> str:
    """A folder name for a run's overrides: the text, or its start + a hash when too long."""
    if len(text) <= limit:
        return text or "default"
    return f"{text[: limit - 17]}-{hashlib.sha1(text.encode()).hexdigest()[:16]}"


def provenance() -> dict:
    """Where a measurement was made: date, the checkout's short commit, the machine."""
    import platform
    import subprocess
    import time

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        check=False,
    ).stdout.strip()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return {"date": time.strftime("%Y-%m-%d"), "commit": commit or "?", "machine": machine}


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("cwd"):  # where the command runs: runs and data go there
        OmegaConf.register_new_resolver("cwd", os.getcwd)
    if not OmegaConf.has_resolver("folder_name"):
        OmegaConf.register_new_resolver("folder_name", folder_name)
    if not OmegaConf.has_resolver("sum"):  # channels of pix2pix's D: input + output
        OmegaConf.register_new_resolver("sum", lambda *values: sum(int(v) for v in values))
    use_project_sweeper()


def use_project_sweeper() -> None:
    """``hydra/sweeper=optuna`` as this project's sweeper (hydra_plugins/ebgan_lab_population/
    optuna_sweeper.py) whatever order Hydra scans plugins in: its scan re-runs every plugin module,
    so hydra-optuna-sweeper's own config may be stored after ours. Scanned once here, then ours."""
    from hydra.core.plugins import Plugins

    Plugins.instance()
    from hydra_plugins.ebgan_lab_population.optuna_sweeper import store_config

    store_config()


def hydra_runtime() -> dict:
    """Overrides and group choices of this job (empty under the compose API)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        return {
            "overrides": list(hydra_cfg.overrides.task),
            "choices": {
                k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra")
            },
        }
    except ValueError:
        return {"overrides": [], "choices": {}}


def is_multirun() -> bool:
    """True inside a Hydra multirun job (a failing job must then let the sweep go on)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def config_options(group: str) -> list[str]:
    """The option names of a config group (conf/<group>/*.yaml)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def config_options_where(group: str, predicate) -> list[str]:
    return [
        name
        for name in config_options(group)
        if predicate(OmegaConf.load(CONF_DIR / group / f"{name}.yaml"))
    ]


def selected_choice(cfg: DictConfig, group: str) -> str:
    """The option name selected for a group (Hydra's runtime choices when available)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.choices[group])
    except Exception:  # compose API without the hydra node
        return "<selected>"
