"""The budget study's report (sweeps/budget_study/run.sh; Lucic et al. 2018, "Are GANs Created
Equal?", on MNIST): minimum FID reachable vs the number of configurations tried (bootstrap), the
best configuration's FID over seeds, random vs TPE vs pruned TPE at equal compute, the claims.

    python src/budget_report.py --search outputs/search --out sweeps/results/budget_study
    python src/budget_report.py --best-overrides outputs/search/gan_random/study.db

Reads the Optuna studies (their SQLite files) the study's commands wrote; a failed or diverged
trial counts as FID = inf (it reaches no minimum), as a run that produced nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import numpy as np

from hydra_plugins.ebgan_lab_population._optuna_search import counted
from src.utils.files import headless_pyplot, save_figure, write_json_atomic, write_text_atomic
from src.utils.project import provenance

MODELS = ("gan", "lsgan", "wgan", "wgan_gp", "began", "ebgan", "ebgan_pt")
NAMES = {
    "gan": "GAN",
    "lsgan": "LSGAN",
    "wgan": "WGAN",
    "wgan_gp": "WGAN-GP",
    "began": "BEGAN",
    "ebgan": "EBGAN",
    "ebgan_pt": "EBGAN-PT",
}
SEARCHES = (("random", "random"), ("tpe", "TPE"), ("pruned_tpe", "pruned TPE"))


def load(db: Path):
    """The study in ``db`` (SQLite; the study's name is its folder's), quietly."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=db.parent.name, storage=f"sqlite:///{db}")


def fids(study) -> list[float]:
    """Each counted trial's FID in trial order: inf for a failed one, none for pruned ones."""
    return [
        float(t.value) if t.state.name == "COMPLETE" else math.inf
        for t in study.trials
        if counted(t) and t.state.name != "PRUNED"
    ]


def bootstrap_min(values: list[float], budgets, resamples: int = 5000, seed: int = 0) -> dict:
    """For each budget k: mean and std over ``resamples`` draws (with replacement) of k runs of
    the minimum FID among them (Lucic et al. 2018, Fig. 3); an all-failed draw counts as NaN-free
    inf and is left out of the mean (its share is reported)."""
    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=float)
    out = {}
    for k in budgets:
        draws = data[rng.integers(0, len(data), size=(resamples, k))].min(axis=1)
        finite = draws[np.isfinite(draws)]
        out[int(k)] = {
            "mean": float(finite.mean()) if finite.size else math.inf,
            "std": float(finite.std()) if finite.size else 0.0,
            "all_failed_share": float(1 - finite.size / resamples),
        }
    return out


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a share."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def best_overrides(db: Path) -> str:
    """The best trial's parameters as command-line overrides (a rerun over seeds)."""
    best = load(db).best_trial
    return " ".join(f"{name}={value}" for name, value in best.params.items())


def compute_curve(study) -> list[tuple[int, float]]:
    """(epochs trained so far, best FID so far) after each trial, in the order trials ended."""
    ended = [t for t in study.trials if t.datetime_complete is not None]
    ended.sort(key=lambda t: t.datetime_complete)
    spent, best, curve = 0, math.inf, []
    for trial in ended:
        if not counted(trial):  # interrupted: asked again as another trial
            continue
        spent += int(trial.user_attrs.get("epochs", 0))
        if trial.state.name == "COMPLETE":
            best = min(best, float(trial.value))
        curve.append((spent, best))
    return curve


def wall_clock(study) -> float:
    """First start to last end; NaN for trials recorded without their times (``add_trial``)."""
    timed = [
        t
        for t in study.trials
        if t.datetime_start
        and t.datetime_complete
        and (t.datetime_complete - t.datetime_start).total_seconds() > 0.01
    ]
    if not timed:
        return math.nan
    starts = [t.datetime_start for t in study.trials if t.datetime_start]
    ends = [t.datetime_complete for t in study.trials if t.datetime_complete]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else math.nan


def write_report(search: Path, out: Path, threshold: float = 50.0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    plt = headless_pyplot()
    measured = provenance()
    summary: dict = {
        "provenance": f"{measured['date']}, commit {measured['commit']}, {measured['machine']}",
        "fid_threshold": threshold,
        "models": {},
    }
    random = {
        m: fids(load(search / f"{m}_random" / "study.db"))
        for m in MODELS
        if (search / f"{m}_random" / "study.db").is_file()
    }
    n = min((len(v) for v in random.values()), default=0)
    budgets = list(range(1, n + 1))

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for model, values in random.items():
        curve = bootstrap_min(values, budgets)
        means = np.array([curve[k]["mean"] for k in budgets])
        stds = np.array([curve[k]["std"] for k in budgets])
        axis.plot(budgets, means, label=NAMES[model])
        axis.fill_between(budgets, means - stds, means + stds, alpha=0.15)
        finite = [v for v in values if math.isfinite(v)]
        good = sum(v < threshold for v in values)
        summary["models"][model] = {
            "runs": len(values),
            "failed": len(values) - len(finite),
            "median_fid": statistics.median(finite) if finite else math.inf,
            "best_fid": min(finite) if finite else math.inf,
            "share_under_threshold": good / len(values),
            "share_under_threshold_ci95": wilson(good, len(values)),
            "min_fid_k5": curve.get(5),
            "min_fid_k20": curve.get(20),
            f"min_fid_k{n}": curve.get(n),
        }
    axis.set_xscale("log")
    axis.set_xlabel("budget: configurations tried (random search)")
    axis.set_ylabel("minimum FID (mean ± std, 5 000 bootstrap resamples)")
    axis.set_title("Minimum FID reachable vs budget (MNIST, CPU cell)")
    axis.legend(fontsize=8)
    save_figure(figure, out / "min_fid_vs_budget.png", dpi=110)
    plt.close(figure)

    seeds = {}
    for model in MODELS:
        db = search / f"{model}_seeds" / "study.db"
        if db.is_file():
            seeds[model] = fids(load(db))
            values = [v for v in seeds[model] if math.isfinite(v)]
            summary["models"].setdefault(model, {})["seeds"] = {
                "runs": len(seeds[model]),
                "failed": len(seeds[model]) - len(values),
                "median": statistics.median(values) if values else math.inf,
                "min": min(values) if values else math.inf,
                "max": max(values) if values else math.inf,
            }
    if seeds:
        figure, axis = plt.subplots(figsize=(7, 4))
        names = list(seeds)
        finite = [[v for v in seeds[m] if math.isfinite(v)] or [np.nan] for m in names]
        axis.boxplot(finite, tick_labels=[NAMES[m] for m in names], showfliers=True)
        for i, values in enumerate(finite, start=1):
            axis.scatter([i] * len(values), values, s=10, alpha=0.6)
        axis.set_ylabel("FID")
        axis.set_title("Best random configuration of each model, over seeds")
        save_figure(figure, out / "best_config_over_seeds.png", dpi=110)
        plt.close(figure)

    compared = {}
    for model in MODELS:
        studies = {
            kind: search / f"{model}_{kind}" / "study.db"
            for kind, _ in SEARCHES
            if (search / f"{model}_{kind}" / "study.db").is_file()
        }
        if len(studies) < 2:
            continue
        rows = {}
        for kind, db in studies.items():
            study = load(db)
            curve = compute_curve(study)
            states = [t.state.name for t in study.trials]
            rows[kind] = {
                "trials": len(states),
                "completed": states.count("COMPLETE"),
                "pruned": states.count("PRUNED"),
                "epochs_trained": curve[-1][0] if curve else 0,
                "best_fid": curve[-1][1] if curve else math.inf,
                "wall_clock_s": wall_clock(study),
                "curve": curve,
            }
        # the best FID each search had reached when the cheapest of them had spent all it spent
        equal = min(row["epochs_trained"] for row in rows.values())
        for row in rows.values():
            reached = [best for spent, best in row["curve"] if spent <= equal]
            row["best_fid_at_equal_compute"] = reached[-1] if reached else math.inf
        reference = rows.get("tpe", {}).get("best_fid")
        for row in rows.values():  # compute spent to reach TPE's best (within 5 %)
            reach = [e for e, best in row["curve"] if reference and best <= 1.05 * reference]
            row["epochs_to_tpe_best_5pct"] = reach[0] if reach else None
        compared[model] = rows
    if compared:
        figure, axes = plt.subplots(1, len(compared), figsize=(5 * len(compared), 4), squeeze=False)
        for axis, (model, rows) in zip(axes[0], compared.items(), strict=True):
            for kind, label in SEARCHES:
                if kind in rows and rows[kind]["curve"]:
                    spent, best = zip(*rows[kind]["curve"], strict=True)
                    axis.step(spent, best, where="post", label=label)
            axis.set_title(NAMES[model])
            axis.set_xlabel("epochs trained over all trials")
            axis.set_ylabel("best FID so far")
            axis.legend(fontsize=8)
        save_figure(figure, out / "search_at_equal_compute.png", dpi=110)
        plt.close(figure)
    summary["searches"] = {
        m: {k: {key: v for key, v in row.items() if key != "curve"} for k, row in rows.items()}
        for m, rows in compared.items()
    }
    summary["claims"] = claims(summary)
    summary["began"] = began_question(search)
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "report.md", markdown(summary, n))
    return summary


def claims(summary: dict) -> dict:
    """The two claims, tested on the random-search runs."""
    models = {m: s for m, s in summary["models"].items() if s.get("min_fid_k5")}
    result = {}
    if models:
        low = {m: s["min_fid_k5"] for m, s in models.items()}
        best = min(low, key=lambda m: low[m]["mean"])
        band = low[best]["mean"] + low[best]["std"]
        overlapping = [m for m, v in low.items() if v["mean"] - v["std"] <= band]
        result["similar_min_fid_at_low_budget"] = {
            "test": "at k = 5 configurations, every model's mean - std of the bootstrap minimum "
            "FID reaches the best model's mean + std",
            "holds": len(overlapping) == len(low),
            "models_within": overlapping,
            "best_model": best,
        }
    if "ebgan" in models and "gan" in models:
        share = {m: models[m]["share_under_threshold"] for m in ("ebgan", "gan")}
        ci = {m: models[m]["share_under_threshold_ci95"] for m in ("ebgan", "gan")}
        result["ebgan_more_reliable_than_gan"] = {
            "test": f"share of random configurations with FID < {summary['fid_threshold']}: "
            "EBGAN's 95 % interval above GAN's",
            "share": share,
            "ci95": ci,
            "holds": ci["ebgan"][0] > ci["gan"][1],
            "higher_point_estimate": max(share, key=share.get),
        }
    return result


def began_question(search: Path) -> dict:
    """Does any BEGAN configuration reach >= 8 classes with IS >= 7 at gamma <= 0.7? And what does
    starting G at the data mean change?"""
    db = search / "began_random" / "study.db"
    if not db.is_file():
        return {}
    study = load(db)
    rows = []
    for trial in study.trials:
        folder = Path(trial.user_attrs.get("output_dir", ""))
        path = folder / "metrics.json"
        if not path.is_file():
            continue
        metrics = json.loads(path.read_text()).get("metrics", {})
        rows.append(
            {**trial.params, **{k: metrics.get(f"val/{k}") for k in ("fid", "is", "modes_covered")}}
        )
    hits = [
        r
        for r in rows
        if r.get("model.gamma", 1) <= 0.7 and (r["modes_covered"] or 0) >= 8 and (r["is"] or 0) >= 7
    ]
    by_bias = {}
    for bias in ("zero", "data_mean"):
        mine = [r for r in rows if r.get("model.output_bias") == bias and r["fid"] is not None]
        if mine:
            by_bias[bias] = {
                "runs": len(mine),
                "median_fid": statistics.median(r["fid"] for r in mine),
                "best_fid": min(r["fid"] for r in mine),
                "median_classes": statistics.median(r["modes_covered"] or 0 for r in mine),
                "share_8_classes": sum((r["modes_covered"] or 0) >= 8 for r in mine) / len(mine),
            }
    by_gamma = {}
    for low, high in ((0.3, 0.5), (0.5, 0.7), (0.7, 0.85), (0.85, 1.0)):
        band = [r for r in rows if low <= r.get("model.gamma", 0) < high and r["fid"] is not None]
        if band:
            by_gamma[f"{low}-{high}"] = {
                "runs": len(band),
                "median_fid": statistics.median(r["fid"] for r in band),
                "median_classes": statistics.median(r["modes_covered"] or 0 for r in band),
                "share_8_classes": sum((r["modes_covered"] or 0) >= 8 for r in band) / len(band),
            }
    low_gamma = [r for r in rows if r.get("model.gamma", 1) <= 0.7 and r["is"] is not None]
    diverse = [r for r in low_gamma if (r["modes_covered"] or 0) >= 8]
    best_low = max(low_gamma, key=lambda r: (r["modes_covered"] or 0, r["is"]), default=None)
    return {
        "runs": len(rows),
        "gamma_le_0.7_with_8_classes_and_is_7": len(hits),
        "examples": hits[:3],
        "best_at_gamma_le_0.7": best_low,
        "runs_gamma_le_0.7": len(low_gamma),
        "runs_gamma_le_0.7_with_8_classes": len(diverse),
        "best_is_gamma_le_0.7_with_8_classes": max((r["is"] for r in diverse), default=None),
        "best_is_any_gamma": max((r["is"] for r in rows if r["is"] is not None), default=None),
        "by_output_bias": by_bias,
        "by_gamma": by_gamma,
    }


def _f(value, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return "inf" if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


def markdown(summary: dict, n: int) -> str:
    lines = [
        "# Budget study: are GANs on MNIST created equal?",
        "",
        f"{summary['provenance']}. Command: `bash sweeps/budget_study/run.sh` then "
        "`python src/budget_report.py`. Budget per run (sweeps/budget_study/cpu_cell.yaml): MLP "
        "nets, batch 64, 3 epochs of a fifth of MNIST (516 D updates), FID on 2 000 samples with "
        "the project's MNIST classifier. Failed / diverged runs count as FID = inf.",
        "",
        f"## Minimum FID vs budget ({n} random configurations per model, 5 000 resamples)",
        "",
        "![min FID vs budget](min_fid_vs_budget.png)",
        "",
        f"| model | runs | failed | median FID | best FID | min FID k=5 | min FID k=20 | "
        f"min FID k={n} | FID < {summary['fid_threshold']:g} (95 % CI) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, s in summary["models"].items():
        if "runs" not in s:
            continue

        def band(entry):
            return f"{_f(entry['mean'])} ± {_f(entry['std'])}" if entry else "—"

        lo, hi = s["share_under_threshold_ci95"]
        lines.append(
            f"| {NAMES[model]} | {s['runs']} | {s['failed']} | {_f(s['median_fid'])} | "
            f"{_f(s['best_fid'])} | {band(s['min_fid_k5'])} | {band(s['min_fid_k20'])} | "
            f"{band(s.get(f'min_fid_k{n}'))} | {s['share_under_threshold']:.2f} "
            f"({lo:.2f}–{hi:.2f}) |"
        )
    seeded = {m: s["seeds"] for m, s in summary["models"].items() if "seeds" in s}
    if seeded:
        lines += [
            "",
            "## The best configuration of each model over seeds",
            "",
            "![best configuration over seeds](best_config_over_seeds.png)",
            "",
            "| model | seeds | failed | median FID | min | max |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {NAMES[m]} | {s['runs']} | {s['failed']} | {_f(s['median'])} | {_f(s['min'])} | "
            f"{_f(s['max'])} |"
            for m, s in seeded.items()
        ]
    if summary["searches"]:
        lines += [
            "",
            "## Random vs TPE vs pruned TPE at equal compute",
            "",
            "![searches](search_at_equal_compute.png)",
            "",
            "| model | search | trials | completed | pruned | epochs trained | best FID | "
            "best FID at equal compute | epochs to TPE's best (+5 %) | wall clock (s) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for model, rows in summary["searches"].items():
            for kind, label in SEARCHES:
                if kind in rows:
                    r = rows[kind]
                    lines.append(
                        f"| {NAMES[model]} | {label} | {r['trials']} | {r['completed']} | "
                        f"{r['pruned']} | {r['epochs_trained']} | {_f(r['best_fid'])} | "
                        f"{_f(r['best_fid_at_equal_compute'])} | "
                        f"{_f(r['epochs_to_tpe_best_5pct'])} | {_f(r['wall_clock_s'], 0)} |"
                    )
    lines += ["", "## Claims", ""]
    for name, claim in summary["claims"].items():
        verdict = "holds" if claim["holds"] else "does not hold"
        detail = {k: v for k, v in claim.items() if k not in ("test", "holds")}
        lines.append(f"- **{name}** — {claim['test']}: **{verdict}** ({json.dumps(detail)})")
    began = summary.get("began") or {}
    if began:
        lines += [
            "",
            "## BEGAN",
            "",
            f"{began['gamma_le_0.7_with_8_classes_and_is_7']} of {began['runs']} random BEGAN "
            "configurations reach >= 8 classes with IS >= 7 at gamma <= 0.7; "
            f"{began['runs_gamma_le_0.7_with_8_classes']} of the {began['runs_gamma_le_0.7']} at "
            "gamma <= 0.7 reach >= 8 classes, the best of them IS "
            f"{_f(began['best_is_gamma_le_0.7_with_8_classes'], 2)} (best IS at any gamma: "
            f"{_f(began['best_is_any_gamma'], 2)}). Best at gamma <= 0.7 (most classes, then IS): "
            f"`{json.dumps(began['best_at_gamma_le_0.7'])}`.",
            "",
            "| G starts at | runs | median FID | best FID | median classes | share >= 8 classes |",
            "|---|---|---|---|---|---|",
        ]
        for bias, s in began["by_output_bias"].items():
            lines.append(
                f"| {bias} | {s['runs']} | {_f(s['median_fid'])} | {_f(s['best_fid'])} | "
                f"{_f(s['median_classes'])} | {s['share_8_classes']:.2f} |"
            )
        lines += [
            "",
            "| gamma | runs | median FID | median classes | share >= 8 classes |",
            "|---|---|---|---|---|",
        ]
        for band, s in began["by_gamma"].items():
            lines.append(
                f"| [{band.replace('-', ', ')}) | {s['runs']} | {_f(s['median_fid'])} | "
                f"{_f(s['median_classes'])} | {s['share_8_classes']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--search", type=Path, default=Path("outputs/search"))
    parser.add_argument("--out", type=Path, default=Path("sweeps/results/budget_study"))
    parser.add_argument("--fid-threshold", type=float, default=50.0)
    parser.add_argument("--best-overrides", type=Path, help="print a study's best parameters")
    args = parser.parse_args(argv)
    if args.best_overrides:
        if not args.best_overrides.is_file():
            parser.error(f"no study database at {args.best_overrides}")
        print(best_overrides(args.best_overrides))
        return
    if not args.search.is_dir():
        parser.error(f"not a folder: {args.search}")
    summary = write_report(args.search, args.out, args.fid_threshold)
    for model, s in summary["models"].items():
        print(model, {k: v for k, v in s.items() if not isinstance(v, dict)})
    print(f"report: {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
