"""Optuna search (hydra/sweeper=optuna, hydra_plugins/ebgan_lab_population/_optuna_search.py):
every search space composes into valid runs; a population slot freed by pruning is refilled
without touching the other members; a study prunes, refills and resumes from its SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from omegaconf import OmegaConf, open_dict

from src.config import validate_config
from src.population.run import Member, train_population
from src.utils import PROJECT_ROOT, register_resolvers
from tests.conftest import CONF_DIR

FAMILIES = sorted(p.stem for p in (Path(CONF_DIR) / "hparams_search").glob("*.yaml"))


def _space(family: str) -> tuple[dict, dict]:
    register_resolvers()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=[f"hparams_search={family}"], return_hydra_config=True
        )
    assert cfg.hydra.sweeper._target_.endswith("PopulationOptunaSweeper")
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    return create_params_from_overrides([f"{k}={v}" for k, v in params.items()])


def test_every_model_family_has_a_search_space():
    assert set(FAMILIES) >= {"gan", "lsgan", "wgan", "wgan_gp", "began", "ebgan", "ebgan_pt"}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_search_space_composes_and_its_sampled_trials_are_valid_runs(family, data_dir):
    distributions, fixed = _space(family)
    assert distributions and not fixed
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(2):
        trial = study.ask(fixed_distributions=distributions)
        overrides = [f"{name}={value}" for name, value in trial.params.items()]
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"hparams_search={family}", *overrides])
        with open_dict(cfg):
            cfg.paths.data_dir = data_dir
        validate_config(cfg)  # raises, naming the key, on a value the run would refuse
        for name, value in trial.params.items():
            assert OmegaConf.select(cfg, name) == value, name
        # one learning rate for both nets (Lucic et al. 2018)
        assert cfg.model.optimizer_d.lr == cfg.model.optimizer_g.lr
        study.tell(trial, 1.0)


class ScriptedSearch:
    """src.population.run.Refill with decisions fixed in advance: prunes the named members at
    their first score, hands out ``spares`` in order."""

    def __init__(self, prune: set[str], spares: list[Member]):
        self.prune, self.spares = prune, list(spares)
        self.reports, self.results, self.misfits = [], {}, []

    def report(self, member, epoch, metrics):
        self.reports.append((member.output_dir.name, epoch))
        assert metrics["val/fid"] > 0
        return member.output_dir.name in self.prune

    def ended(self, member, result):
        self.results[member.output_dir.name] = result

    def next_member(self):
        return self.spares.pop(0) if self.spares else None

    def misfit(self, member, reason):
        self.misfits.append((member.output_dir.name, reason))


def _members(make_cfg, folder: Path, specs: dict) -> list[Member]:
    members = []
    for name, (seed, lr, size_g) in specs.items():
        cfg = make_cfg(
            "model=ebgan",
            "arch=mlp",
            f"arch.sizeG={size_g}",
            f"seed={seed}",
            f"model.optimizer_g.lr={lr}",
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=0",
            keep_metrics=True,
        )
        members.append(Member(cfg, folder / name))
    return members


def _weights(member: Member) -> dict:
    path = member.output_dir / "checkpoints" / "last.ckpt"
    return torch.load(path, weights_only=False)["state_dict"]


def test_a_pruned_members_slot_is_refilled_and_the_others_train_exactly_as_without(
    make_cfg, tmp_path
):
    population = {"m0": (1, 1e-3, 32), "m1": (2, 2e-3, 32), "m2": (3, 5e-4, 24)}
    straight = _members(make_cfg, tmp_path / "straight", population)
    train_population(straight)

    members = _members(make_cfg, tmp_path / "pruned", population)
    spares = _members(make_cfg, tmp_path / "pruned", {"wide": (4, 1e-3, 64), "s0": (5, 1e-3, 16)})
    search = ScriptedSearch(prune={"m1"}, spares=spares)
    results = train_population(members, refill=search)

    # m1 pruned after its first epoch; the wider spare cannot join (it waits), s0 takes the slot
    assert search.results["m1"]["status"] == "pruned"
    assert search.results["m1"]["pruned"] == {"after_epochs": 1, "optimizer_steps": 4}
    saved = json.loads((tmp_path / "pruned" / "m1" / "metrics.json").read_text())
    assert saved["status"] == "pruned" and saved["pruned"]["after_epochs"] == 1
    assert [name for name, _ in search.misfits] == ["wide"]
    assert "exceeds the population's" in search.misfits[0][1]
    assert search.results["s0"]["status"] == "completed"
    # s0 joined at the population's epoch 1 and trained its own 2 epochs (2 x 2 batches x D + G)
    assert search.results["s0"]["epochs_completed"] == 2
    assert search.results["s0"]["optimizer_steps"] == 8
    # every member reports each score but its last (its result then goes to ``ended``)
    assert search.reports == [("m0", 0), ("m1", 0), ("m2", 0), ("s0", 0)]
    assert [r["status"] for r in results] == ["completed", "pruned", "completed", "completed"]
    # the survivors: bit for bit the members of the population that pruned nothing
    for name in ("m0", "m2"):
        k = int(name[1])
        ours, theirs = _weights(members[k]), _weights(straight[k])
        assert ours.keys() == theirs.keys()
        for key, value in ours.items():
            assert torch.equal(value, theirs[key]), (name, key)
        scores = [
            {key: v for key, v in r["metrics"].items() if not key.endswith("_seconds")}
            for r in (results[k], straight[k].result)
        ]
        assert scores[0] == scores[1]


def _search(tmp_path: Path, data_dir: str, *overrides: str) -> subprocess.CompletedProcess:
    """``python src/train.py -m hparams_search=ebgan hydra/launcher=population`` on tiny nets."""
    command = [
        sys.executable,
        str(PROJECT_ROOT / "src" / "train.py"),
        "-m",
        "hparams_search=ebgan",
        "hydra/launcher=population",
        "debug=fast",
        "logger=none",
        f"paths.root_dir={tmp_path}",
        "hydra.sweeper.study_name=tiny",
        "hydra.sweeper.n_jobs=2",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=0",
        # the nets fixed (tiny, one depth): the search samples the optimizer and the margin
        "arch.nLayerG=2",
        "arch.nLayerD=2",
        "arch.sizeG=16",
        "arch.sizeD=16",
        "arch.latent_dim=8",
        *overrides,
    ]
    env = {**os.environ, "DATA_DIR": data_dir, "WANDB_MODE": "disabled"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_a_study_prunes_refills_and_resumes_where_it_stopped(tmp_path, data_dir):
    storage = f"sqlite:///{tmp_path}/outputs/search/tiny/study.db"
    # every member pruned at its first score (FID > 0): each freed slot goes to the next trial
    done = _search(
        tmp_path,
        data_dir,
        "hydra.sweeper.n_trials=4",
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.upper=0",
    )
    assert "joins at epoch 1" in done.stdout + done.stderr
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert [t.state.name for t in study.trials] == ["PRUNED"] * 4
    for trial in study.trials:
        result = json.loads((Path(trial.user_attrs["output_dir"]) / "metrics.json").read_text())
        assert result["status"] == "pruned" and result["pruned"]["after_epochs"] == 1
        assert trial.user_attrs["epochs"] == 1 and trial.intermediate_values[1] > 0

    # a launch killed mid-trial leaves it RUNNING: the next launch asks its parameters again
    left_running = study.ask(fixed_distributions=study.trials[0].distributions)
    _search(tmp_path, data_dir, "hydra.sweeper.n_trials=5", "hydra/sweeper/pruner=none")
    study = optuna.load_study(study_name="tiny", storage=storage)
    states = [t.state.name for t in study.trials]
    assert states == ["PRUNED"] * 4 + ["FAIL", "COMPLETE"]
    interrupted, rerun = study.trials[4], study.trials[5]
    assert interrupted.number == left_running.number and interrupted.user_attrs["interrupted"]
    assert rerun.params == left_running.params and rerun.user_attrs["status"] == "completed"
    results = (tmp_path / "outputs" / "search" / "tiny" / "optimization_results.yaml").read_text()
    assert "best_trial: 5" in results

    # the study is complete: a third launch trains nothing
    done = _search(tmp_path, data_dir, "hydra.sweeper.n_trials=5")
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == 6
