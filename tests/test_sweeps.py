"""The paper's grids expand to the right job counts; a tiny multirun reports, resumes, survives."""

import csv
import json
import os
import subprocess
import sys

import pytest

from src.report import write_report
from src.runs.sweep_jobs import sweep_jobs
from src.utils import PROJECT_ROOT


@pytest.mark.parametrize(
    ("config", "count"),
    [
        ("ebgan_mnist_grid", 512),
        ("ebgan_pt_mnist_grid", 512),
        ("gan_mnist_grid", 6144),
        ("cpu_grid_ebgan", 8),
        ("cpu_grid_ebgan_pt", 8),
        ("cpu_grid_gan", 32),
        ("cpu_model_comparison", 6),
    ],
)
def test_grid_configs_expand_to_the_paper_counts(config, count):
    jobs = sweep_jobs(config)
    assert len(jobs) == count and len({tuple(j) for j in jobs}) == count


def test_model_comparison_runs_every_model_at_its_paper_defaults():
    jobs = sweep_jobs("cpu_model_comparison")
    assert sorted(o for job in jobs for o in job if o.startswith("model=")) == sorted(
        f"model={m}" for m in ("gan", "cgan", "ebgan", "ebgan_pt", "wgan", "wgan_gp")
    )


def test_gan_grid_crosses_optimizers_and_learning_rates():
    jobs = sweep_jobs("gan_mnist_grid")
    combos = {tuple(o for o in job if "optimizer" in o) for job in jobs}
    assert len(combos) == 2 * 2 * 3
    assert {o for job in jobs for o in job if o.startswith("model.optimizer_g.lr=")} == {
        "model.optimizer_g.lr=0.01",
        "model.optimizer_g.lr=0.001",
        "model.optimizer_g.lr=0.0001",
    }
    assert {o for job in jobs for o in job if o.startswith("arch.sizeG=")} == {
        f"arch.sizeG={n}" for n in (400, 800, 1600, 3200)
    }


TINY_SWEEP = [
    "model=ebgan",
    "arch.sizeG=32",
    "arch.sizeD=16",
    "arch.latent_dim=8",
    "data.batch_size=16",
    "data.val_size=64",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "logger=none",
    "callbacks.progress_bar=null",
    "model.check_finite_every_n_steps=1",
    "callbacks.generative_metrics.n_samples=200",
    "callbacks.generative_metrics.n_real=300",
    "callbacks.generative_metrics.kid_subset_size=50",
    "callbacks.generative_metrics.kid_subsets=3",
    "optimizer@model.optimizer_d=sgd",
    # the 2 x 2 grid: lr 1e30 makes D's weights explode at the first step, a real divergence
    "arch.nLayerG=2,3",
    "model.optimizer_d.lr=0.001,1e30",
]


def launch(sweep_dir, data_dir):
    command = [
        sys.executable,
        str(PROJECT_ROOT / "src" / "train.py"),
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        *TINY_SWEEP,
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "DATA_DIR": data_dir, "WANDB_MODE": "disabled"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_tiny_multirun_reports_resumes_and_survives_divergence(tmp_path, data_dir):
    sweep_dir = tmp_path / "sweep"
    launch(sweep_dir, data_dir)
    results = {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}
    assert len(results) == 4
    statuses = {name: r["status"] for name, r in results.items()}
    assert sorted(statuses.values()) == ["completed", "completed", "diverged", "diverged"]
    lr_of = {
        p.parent.name: (p.parent / ".hydra" / "overrides.yaml").read_text()
        for p in sweep_dir.glob("*/metrics.json")
    }
    assert all(
        ("lr=1e+30" in lr_of[name]) == (status == "diverged") for name, status in statuses.items()
    )
    diverged = next(r for r in results.values() if r["status"] == "diverged")
    assert diverged["failure"]["loss"] in ("discriminator loss", "generator loss")

    report = write_report([sweep_dir], tmp_path / "report")
    with open(tmp_path / "report" / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and sum(r["status"] == "diverged" for r in rows) == 2
    assert all(float(r["is"]) > 0 for r in rows if r["status"] == "completed")
    assert report["summary"][0]["completed"] == 2 and report["summary"][0]["not completed"] == 2
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "diverged" in markdown and "| EBGAN |" in markdown
    assert (tmp_path / "report" / "is_histograms.png").is_file()
    assert (tmp_path / "report" / "best_samples.png").is_file()
    # quality and diversity apart: per run in runs.csv, mean ± std per model, the scatter
    completed = [r for r in rows if r["status"] == "completed"]
    assert all(
        0 <= float(r[k]) <= 1 for r in completed for k in ("precision", "recall", "coverage")
    )
    values = [float(r["recall"]) for r in completed]
    mean, std = sum(values) / 2, abs(values[0] - values[1]) / 2**0.5
    assert report["summary"][0]["recall"] == f"{mean:.3f} ± {std:.3f}"
    assert (tmp_path / "report" / "precision_recall.png").is_file()
    # nLayerG 2 vs 3: the paper's other figure
    assert (tmp_path / "report" / "is_heatmaps.png").is_file()

    # a second launch: completed runs are skipped (their results untouched), diverged ones run again
    stamps = {p.parent.name: p.stat().st_mtime_ns for p in sweep_dir.glob("*/metrics.json")}
    again = launch(sweep_dir, data_dir)
    assert (
        again.stderr.count("already completed with these overrides")
        + again.stdout.count("already completed with these overrides")
        == 2
    )
    for name, stamp in stamps.items():
        changed = (sweep_dir / name / "metrics.json").stat().st_mtime_ns != stamp
        assert changed == (statuses[name] == "diverged")


def test_report_lists_jobs_that_never_ran(tmp_path):
    sweep_dir = tmp_path / "sweep"
    (sweep_dir).mkdir()
    (sweep_dir / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      arch.nLayerG: 2,3\n  overrides:\n    task: "
        "[model=ebgan]\n"
    )
    report = write_report([sweep_dir], tmp_path / "report")
    assert [r["status"] for r in report["rows"]] == ["missing (never ran)"] * 2
    assert "missing (never ran)" in (tmp_path / "report" / "report.md").read_text()


def test_command_line_sweeps_replace_the_configs_swept_keys(tmp_path):
    from src.runs.sweep_jobs import jobs_of_multirun

    # sweeps/cpu_pt_claim.yaml sweeps model and seed; the command line narrowed both and added a key
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      model: ebgan,ebgan_pt\n      seed: 1,2,3,4,5\n"
        "  overrides:\n    task: [model=ebgan_pt, 'model.pt_weight=1,10', 'seed=1,2,3']\n"
    )
    jobs = jobs_of_multirun(tmp_path)
    assert len(jobs) == 6 and all("model=ebgan_pt" in job for job in jobs)
    assert sorted(j for job in jobs for j in job if j.startswith("seed=")) == [
        "seed=1", "seed=1", "seed=2", "seed=2", "seed=3", "seed=3",
    ]  # fmt: skip


def test_seed_spread_groups_runs_that_differ_only_in_seed():
    from src.report import seed_spread

    def row(seed, size, score):
        return {
            "model": "EBGAN", "seed": seed, "status": "completed", "is": score, "fid": 10.0,
            "recall": 0.5, "coverage": 0.4,
            "overrides": f"arch.sizeD={size} seed={seed} torch_threads=1",
        }  # fmt: skip

    rows = [row(1, 128, 5.0), row(2, 128, 6.0), row(3, 128, 7.0), row(1, 256, 4.0)]
    (spread,) = seed_spread(rows)  # the 256 configuration has one seed only: no spread
    assert spread["configuration"] == "arch.sizeD=128" and spread["seeds"] == 3
    assert spread["is"] == "6.000 ± 1.000" and spread["fid"] == "10.000 ± 0.000"


def test_launch_only_keys_name_neither_run_folders_nor_decide_resume():
    """The keys left out of sweep folder names are the ones a relaunch ignores."""
    from omegaconf import OmegaConf

    from src.runs.sweep_jobs import LAUNCH_ONLY_KEYS
    from src.utils import PROJECT_ROOT

    hydra_cfg = OmegaConf.load(PROJECT_ROOT / "conf" / "hydra" / "default.yaml")
    assert set(hydra_cfg.job.config.override_dirname.exclude_keys) == LAUNCH_ONLY_KEYS


@pytest.mark.slow
def test_the_population_launcher_pads_only_within_its_budget(make_cfg):
    """Jobs of one depth group: equal widths always share a population, no member is padded to
    more than max_padding x its own work (the nets' FLOPs, counted on the nets the jobs build);
    a large max_padding stacks them all."""
    from hydra_plugins.ebgan_lab_population.population_launcher import (
        chunk_by_padding,
        member_cost,
        padded_cost,
    )

    def job(size_g, size_d):
        return make_cfg("model=ebgan", f"arch.sizeG={size_g}", f"arch.sizeD={size_d}", tiny=False)

    jobs = [job(g, d) for g in (400, 800, 1600, 3200) for d in (128, 1024) for _ in range(2)]
    chunks = chunk_by_padding(jobs, lambda j: j, max_members=64, max_padding=2.0)
    assert sum(len(c) for c in chunks) == len(jobs)
    for chunk in chunks:
        assert padded_cost(chunk) <= 2.0 * min(sum(member_cost(j)) for j in chunk)
    # wide G: D's width is a small part of the cost, so D widths share; narrow G: they do not
    widths = [[(int(j.arch.sizeG), int(j.arch.sizeD)) for j in chunk] for chunk in chunks]
    assert widths == [
        [(3200, 1024)] * 2 + [(3200, 128)] * 2,
        [(1600, 1024)] * 2 + [(1600, 128)] * 2 + [(800, 1024)] * 2,
        [(400, 1024)] * 2,  # its wide D costs more than the 800-wide G with a 128-wide D
        [(800, 128)] * 2,
        [(400, 128)] * 2,
    ]
    equal_only = chunk_by_padding(jobs, lambda j: j, max_members=64, max_padding=1.0)
    assert [len(c) for c in equal_only] == [2] * 8
    assert [len(c) for c in chunk_by_padding(jobs, lambda j: j, 5, 1000.0)] == [5, 5, 5, 1]


@pytest.mark.parametrize(
    "overrides, stacked",
    [
        ([], True),
        (["trainer.precision=32"], True),
        (["trainer.precision=bf16-mixed"], False),  # a population steps in float32 only
        (["model.compile=true"], False),
        (["model.ema_decay=0.999"], False),
        (["arch=dcgan"], True),
        (["model=cgan"], True),
        (["model=began", "arch=began"], True),
        (["model=wgan"], True),  # RMSprop
        (["model=vae"], False),  # its own training step
        (["model=vaegan"], False),
        (["optimizer@model.optimizer_d=sgd", "model.optimizer_d._target_=torch.optim.ASGD"], False),
    ],
)
@pytest.mark.slow
def test_jobs_a_population_would_not_train_as_asked_run_alone(make_cfg, overrides, stacked):
    from hydra_plugins.ebgan_lab_population.population_launcher import run_alone_reason

    model = [] if any(o.startswith("model=") for o in overrides) else ["model=ebgan"]
    reason = run_alone_reason(make_cfg(*model, *overrides))
    assert (reason is None) == stacked, reason


def test_the_costliest_populations_are_trained_first(make_cfg):
    from types import SimpleNamespace

    from hydra_plugins.ebgan_lab_population.population_launcher import population_cost

    def chunk(members, size_g, limit=1.0, epochs=1):
        cfg = make_cfg(
            "model=ebgan",
            f"arch.sizeG={size_g}",
            "arch.sizeD=128",
            f"trainer.max_epochs={epochs}",
            f"trainer.limit_train_batches={limit}",
            tiny=False,
        )
        return [(i, SimpleNamespace(cfg=cfg), None) for i in range(members)]

    assert population_cost(chunk(2, 800)) == 2 * population_cost(chunk(1, 800))
    assert population_cost(chunk(1, 1600)) > population_cost(chunk(1, 800))
    assert population_cost(chunk(1, 800, epochs=3)) == 3 * population_cost(chunk(1, 800))
    assert population_cost(chunk(1, 800, limit=10)) < population_cost(chunk(1, 800, limit=0.5))
