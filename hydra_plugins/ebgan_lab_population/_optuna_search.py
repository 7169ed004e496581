"""The search behind ``hydra/sweeper=optuna`` (optuna_sweeper.py): hydra-optuna-sweeper's search
(its samplers, its ``params`` syntax, its study settings) on Optuna's ask/tell API, with what it
lacks for this project:

- pruning inside a population: with ``hydra/launcher=population`` and a ``pruner``, the first
  ``n_jobs`` trials train as one population; every member reports its score (the config's
  ``optimized_metric``) each time it is scored (``callbacks.generative_metrics.every_n_epochs``),
  the pruner decides, and a pruned, finished or diverged member's slot goes to the next trial the
  sampler proposes (src/population/run.py ``Refill``), so the population stays full;
- studies that resume: trials count toward ``n_trials`` across launches of the same study
  (SQLite by default, any SQLAlchemy URL works), and trials left running by a killed launch are
  marked failed and proposed again with the same parameters;
- a compute budget: ``max_member_epochs`` stops asking for trials once that many epochs were
  trained over all trials (pruned-TPE vs TPE vs random at equal compute);
- each trial's run folder, status and epochs trained kept as the trial's user attributes.

Without a pruner, or with another launcher, trials are asked ``n_jobs`` at a time and each batch
is launched as one sweep (the population launcher trains it as populations). Its own sweeper
class rather than hydra-optuna-sweeper's, whose loop asks a batch and waits for all of it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobStatus
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_params_from_overrides,
)
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.ebgan_lab_population.population_launcher import (
    PopulationLauncher,
    group_key,
    paddable,
    run_alone_reason,
    valid,
)

log = logging.getLogger(__name__)

TrialState = optuna.trial.TrialState
#: a trial's user attribute: it was left running by a launch that died, and asked again
INTERRUPTED = "interrupted"


def sqlite_folder(storage: Any) -> Path | None:
    """The folder of a ``sqlite:///<path>`` storage (made before the study opens it), or None."""
    url = str(storage or "")
    if not url.startswith("sqlite:///") or url.endswith(":memory:"):
        return None
    return Path(url[len("sqlite:///") :]).parent


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a finished trial counts toward ``n_trials`` (an interrupted one is asked again)."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and not trial.user_attrs.get(INTERRUPTED)


class PopulationOptunaSearch(OptunaSweeperImpl):
    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float = 1.0,
        search_space: DictConfig | None = None,
        custom_search_space: str | None = None,
        params: DictConfig | None = None,
        pruner: Any = None,
        max_member_epochs: int | None = None,
    ) -> None:
        if n_trials < 1 or n_jobs < 1:
            raise ValueError(
                f"hydra.sweeper.n_trials and n_jobs must be >= 1, got {n_trials}, {n_jobs}"
            )
        super().__init__(
            sampler,
            direction,
            storage,
            study_name,
            n_trials,
            n_jobs,
            max_failure_rate,
            search_space,
            custom_search_space,
            params,
        )
        self.pruner = pruner
        self.max_member_epochs = max_member_epochs

    # ------------------------------------------------------------------ the study
    def _space(self, arguments: list[str]) -> tuple[dict, dict]:
        """(distributions, fixed parameters) of ``params`` and the command line's sweeps, as
        hydra-optuna-sweeper reads them (``interval``, ``tag(log, ...)``, ``choice``, ``range``)."""
        self._process_searchspace_config()
        overrides = self._parse_sweeper_params_config() + list(arguments)
        distributions, fixed = create_params_from_overrides(overrides)
        distributions = {**(self.search_space_distributions or {}), **distributions}
        for name in fixed:
            distributions.pop(name, None)
        if not distributions:
            raise ValueError(
                "hydra/sweeper=optuna has nothing to search: set hydra.sweeper.params (an "
                "hparams_search=<family> config) or sweep a key on the command line"
            )
        return distributions, fixed

    def _study(self, distributions: dict) -> optuna.Study:
        if isinstance(self.sampler, functools.partial):  # the grid sampler: every combination
            grid = {name: self._to_grid_sampler_choices(d) for name, d in distributions.items()}
            self.sampler = self.sampler(grid)
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in grid.values()))
        folder = sqlite_folder(self.storage)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        directions = self._get_directions()
        if self.pruner is not None and len(directions) > 1:
            raise ValueError("hydra.sweeper.pruner: Optuna prunes single-objective studies only")
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=self.sampler,
            pruner=self.pruner,
            directions=directions,
            load_if_exists=True,
        )
        log.info(
            "study %s in %s: %s, %s, %d trials counted of %d",
            study.study_name,
            self.storage,
            type(self.sampler).__name__,
            type(self.pruner).__name__ if self.pruner is not None else "no pruner",
            sum(counted(t) for t in study.get_trials(deepcopy=False)),
            self.n_trials,
        )
        return study

    @staticmethod
    def _recover(study: optuna.Study) -> None:
        """Trials a killed launch left running: failed (marked interrupted, not counted), their
        parameters asked again first."""
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            trial = optuna.trial.Trial(study, frozen._trial_id)
            trial.set_user_attr(INTERRUPTED, True)
            study.tell(frozen.number, state=TrialState.FAIL)
            study.enqueue_trial(frozen.params)
            log.info("trial %d was left running: asked again", frozen.number)

    def _counted(self, study: optuna.Study) -> int:
        return sum(counted(t) for t in study.get_trials(deepcopy=False))

    def _spent(self, study: optuna.Study) -> int:
        """Epochs trained over the study's finished trials."""
        trials = study.get_trials(deepcopy=False)
        return sum(int(t.user_attrs.get("epochs", 0)) for t in trials if counted(t))

    def _budget_left(self, study: optuna.Study, running: int = 0, spent_running: int = 0) -> bool:
        if self._counted(study) + running >= self.n_trials:
            return False
        if self.max_member_epochs is None:
            return True
        return self._spent(study) + spent_running < int(self.max_member_epochs)

    def _overrides(self, trial: optuna.Trial, space: tuple[dict, dict]) -> list[str]:
        return list(self._configure_trials([trial], *space)[0])

    # ------------------------------------------------------------------ telling results
    def _objective(self) -> str | None:
        return self.config.get("optimized_metric")

    def tell(self, study: optuna.Study, trial: optuna.Trial, result: dict | None) -> None:
        """Record a trial's result (its metrics.json content) in the study: its value (the
        config's ``optimized_metric``) when it completed with one; pruned at its last report;
        failed otherwise (diverged, crashed, no score)."""
        result = result or {"status": "failed", "metrics": {}}
        status = result.get("status", "failed")
        trial.set_user_attr("status", status)
        trial.set_user_attr("epochs", int(result.get("epochs_completed") or 0))
        metric = self._objective()
        value = (result.get("metrics") or {}).get(metric) if metric else None
        try:
            if status == "pruned":
                study.tell(trial, state=TrialState.PRUNED)
            elif status == "completed" and value is not None and math.isfinite(float(value)):
                study.tell(trial, float(value))
            else:
                if status == "completed":
                    log.warning("trial %d completed without a finite %s", trial.number, metric)
                study.tell(trial, state=TrialState.FAIL)
        except RuntimeError as err:  # the grid sampler, its grid done, calls study.stop()
            if "Study.stop" not in str(err):
                raise
        log.info("trial %d: %s %s=%s", trial.number, status, metric, value)

    # ------------------------------------------------------------------ the loop
    def sweep(self, arguments: list[str]) -> None:
        space = self._space(arguments)
        study = self._study(space[0])
        self._recover(study)
        pruning = self.pruner is not None and not isinstance(self.pruner, optuna.pruners.NopPruner)
        if pruning and isinstance(self.launcher, PopulationLauncher):
            self._sweep_populations(study, space)
        else:
            if pruning:
                log.warning(
                    "hydra.sweeper.pruner prunes inside populations only "
                    "(hydra/launcher=population): these trials train to their end"
                )
            self._sweep_batches(study, space)
        self._write_results(study)

    def _write_results(self, study: optuna.Study) -> None:
        """``optimization_results.yaml`` in the sweep folder (as hydra-optuna-sweeper writes it),
        with the count of trials by state."""
        from src.utils.files import write_text_atomic

        trials = study.get_trials(deepcopy=False)
        states = [t.state.name.lower() for t in trials]
        results = {
            "name": "optuna",
            "study_name": study.study_name,
            "storage": str(self.storage),
            "trials": {state: states.count(state) for state in sorted(set(states))},
            "epochs_trained": self._spent(study),
        }
        if any(t.state == TrialState.COMPLETE for t in trials) and len(study.directions) == 1:
            results["best_trial"] = study.best_trial.number
            results["best_params"] = study.best_trial.params
            results["best_value"] = study.best_trial.value
        path = Path(str(self.config.hydra.sweep.dir)) / "optimization_results.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, OmegaConf.to_yaml(OmegaConf.create(results)))
        log.info("best of %s: %s", study.study_name, results.get("best_value"))

    def _sweep_batches(self, study: optuna.Study, space: tuple[dict, dict]) -> None:
        """``n_jobs`` trials asked at a time, each batch launched as one sweep."""
        while self._budget_left(study):
            count = min(self.n_jobs, self.n_trials - self._counted(study))
            trials = [study.ask() for _ in range(count)]
            self._launch(study, trials, [self._overrides(t, space) for t in trials])

    def _launch(self, study, trials: list, overrides: list[list[str]]) -> None:
        """Launch trials (consecutive numbers: a job's number is its trial's) and tell them."""
        groups: list[list[int]] = []
        for i, trial in enumerate(trials):  # a job number is its trial's number
            if groups and trials[groups[-1][-1]].number + 1 == trial.number:
                groups[-1].append(i)
            else:
                groups.append([i])
        for group in groups:
            returns = self.launcher.launch(
                [overrides[i] for i in group], initial_job_idx=trials[group[0]].number
            )
            for i, job in zip(group, returns, strict=True):
                trial, result = trials[i], None
                runtime = OmegaConf.select(job.hydra_cfg or {}, "hydra.runtime") or {}
                folder = Path(runtime["output_dir"]) if runtime.get("output_dir") else None
                if folder is not None:
                    trial.set_user_attr("output_dir", str(folder))
                    if (folder / "metrics.json").is_file():
                        result = json.loads((folder / "metrics.json").read_text())
                if job.status != JobStatus.COMPLETED:
                    result = {**(result or {}), "status": "failed"}
                    log.warning("trial %d failed: %s", trial.number, job._return_value)
                self.tell(study, trial, result)

    def _sweep_populations(self, study: optuna.Study, space: tuple[dict, dict]) -> None:
        """Populations of ``n_jobs`` trials, pruned and refilled (``StudyRefill``), one after
        another until ``n_trials`` (or ``max_member_epochs``) is reached."""
        from src.population.run import train_population_or_record_failure

        refill = StudyRefill(self, study, space)
        while True:
            members = refill.first_members(self.n_jobs)
            if not members:
                break
            log.info("population of %d trials: %s", len(members), refill.numbers(members))
            results = train_population_or_record_failure(members, refill=refill)
            refill.settle(results)


class StudyRefill:
    """src/population/run.py's ``Refill`` for an Optuna study: trials asked as slots free up."""

    def __init__(self, sweeper: PopulationOptunaSearch, study: optuna.Study, space):
        self.sweeper = sweeper
        self.study = study
        self.space = space
        self.trials: dict[int, optuna.Trial] = {}  # id(member) -> its trial, while it runs
        self.epochs: dict[int, int] = {}  # id(member) -> epochs trained so far
        self.waiting: list = []  # members asked that did not fit the population they were for
        self.shapes: dict[int, dict] = {}  # id(member) -> what decides whom it stacks with
        self.training: set[int] = set()  # id(member) of the population's members

    def numbers(self, members) -> list[int]:
        return [self.trials[id(m)].number for m in members]

    def _may_ask(self) -> bool:
        running = len(self.trials)
        return self.sweeper._budget_left(self.study, running, sum(self.epochs.values()))

    def _ask(self):
        """A new trial as a population member (its config composed, its folder made), or None
        when the budget is spent. Trials a population cannot train run alone here."""
        from src.population.run import Member

        while self._may_ask():
            trial = self.study.ask()
            overrides = self.sweeper._overrides(trial, self.space)
            config, job = self.sweeper.launcher._described_jobs([overrides], trial.number)[0]
            seen = job.return_value if job.status == JobStatus.COMPLETED else None
            cfg = seen["cfg"] if seen else None
            if cfg is None or not valid(cfg) or run_alone_reason(cfg) is not None:
                log.info("trial %d runs alone (not a population member)", trial.number)
                self.sweeper._launch(self.study, [trial], [overrides])
                continue
            member = Member(cfg, seen["output_dir"], seen["runtime"])
            self.shapes[id(member)] = seen["shape_values"]
            trial.set_user_attr("output_dir", str(member.output_dir))
            self.trials[id(member)] = trial
            self.epochs[id(member)] = 0
            return member
        return None

    def first_members(self, count: int) -> list:
        """A new population: the members left waiting first, then new trials; those that cannot
        stack with the first (another depth, model class ...) wait for a later population."""
        pool, self.waiting = self.waiting, []
        while len(pool) < count and (member := self._ask()) is not None:
            pool.append(member)
        if not pool:
            return []

        def key(member):  # as the population launcher groups jobs
            cfg = member.cfg
            return group_key(cfg, self.shapes[id(member)] if paddable(cfg) else None)

        first = key(pool[0])
        members = [m for m in pool if key(m) == first][:count]
        self.waiting = [m for m in pool if not any(m is chosen for chosen in members)]
        self.training = {id(m) for m in members}
        return members

    # ------------------------------------------------------------------ Refill
    def report(self, member, epoch: int, metrics: dict) -> bool:
        trial = self.trials[id(member)]
        self.epochs[id(member)] = epoch + 1
        value = metrics.get(self.sweeper._objective() or "")
        if value is None or not math.isfinite(float(value)):
            return False
        trial.report(float(value), step=epoch + 1)
        return trial.should_prune()

    def ended(self, member, result: dict) -> None:
        trial = self.trials.pop(id(member))
        self.epochs.pop(id(member), None)
        self.training.discard(id(member))
        self.shapes.pop(id(member), None)
        self.sweeper.tell(self.study, trial, result)

    def next_member(self):
        if len(self.waiting) >= self.sweeper.n_jobs:  # a whole population already waits
            return None
        member = self._ask()
        if member is not None:
            self.training.add(id(member))
        return member

    def misfit(self, member, reason: str) -> None:
        log.info("trial %d waits for a later population: %s", self.numbers([member])[0], reason)
        self.training.discard(id(member))
        self.waiting.append(member)

    def settle(self, results: list[dict]) -> None:
        """After a population: members it did not end (it crashed) are told as failed."""
        for key in self.training & set(self.trials):
            trial = self.trials.pop(key)
            self.epochs.pop(key, None)
            result = next((r for r in results if r and r.get("status") == "failed"), None)
            self.sweeper.tell(self.study, trial, result)
        self.training = set()
