"""``hydra/sweeper=optuna``: this project's Optuna sweeper (the search: _optuna_search.py) in place
of hydra-optuna-sweeper's, with its settings and samplers, plus ``pruner`` and
``max_member_epochs``. Registered under hydra-optuna-sweeper's name after its own config, so
``hydra/sweeper=optuna`` and its ``sampler`` group keep working; Optuna itself is imported only
when a sweep starts (it costs ~1.3 s)."""

# no `from __future__ import annotations`: OmegaConf reads the dataclass's real types
from dataclasses import dataclass, field
from typing import Any, List  # noqa: UP035 (OmegaConf's structured configs)

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import MISSING


@dataclass
class PopulationOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.ebgan_lab_population.optuna_sweeper.PopulationOptunaSweeper"
    defaults: List[Any] = field(  # noqa: UP006
        default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}]
    )
    # the trials' scores, the pruner's decisions and the run folders: SQLite beside the sweep's
    # runs by default; any SQLAlchemy URL works (postgresql://user@host/db). The same study_name
    # and storage resume the study; `optuna-dashboard <storage>` opens it.
    storage: Any = "sqlite:///${hydra.sweep.dir}/study.db"
    study_name: Any = "${task_name}"
    # trials in the study, counted across launches (a relaunch runs what is left)
    n_trials: int = 20
    # trials trained at once: a population's size with hydra/launcher=population
    n_jobs: int = 8
    max_failure_rate: float = 1.0
    # an Optuna pruner (conf/hydra/sweeper/pruner/): median | successive_halving | hyperband | none
    pruner: Any = MISSING
    # stop asking for trials once this many epochs were trained over all trials (null: no limit)
    max_member_epochs: Any = None


def store_config() -> None:
    """Ours as ``hydra/sweeper=optuna`` (src/utils/project.py calls it again after Hydra's plugin
    scan, which may have stored hydra-optuna-sweeper's after this module's)."""
    ConfigStore.instance().store(
        group="hydra/sweeper", name="optuna", node=PopulationOptunaSweeperConf, provider="ebgan_lab"
    )


store_config()


class PopulationOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        from hydra_plugins.ebgan_lab_population._optuna_search import PopulationOptunaSearch

        self.search = PopulationOptunaSearch(**settings)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.search.sweep(arguments)
