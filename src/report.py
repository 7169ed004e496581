"""Sweeps summarised like the EBGAN paper's Figures 2-4: `python src/report.py DIR… --out DIR`.

Writes DIR/runs.csv (every run: model, grid knobs, status, wall time, scores), DIR/report.md, and
PNGs: is_histograms.png (GAN vs EBGAN vs EBGAN-PT: all runs, nLayerG,D <= 4, <= 3; Fig. 2),
fid_histograms.png, gan_optimizers.png (GAN split by optimisers and learning rate; Fig. 3),
best_samples.png (the best run's sample grid per model; Fig. 4). Runs that are missing or did not
complete are listed, never dropped.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from pathlib import Path

from omegaconf import OmegaConf

from src.config.registry import display_name, model_classes
from src.utils.files import atomic_path, headless_pyplot, save_figure, write_text_atomic

# quality (precision, density) and diversity (recall, coverage): src/metrics/manifold.py
MANIFOLD_SCORES = ("precision", "recall", "density", "coverage")


def model_names() -> list[str]:
    """The report names of every model in conf/model/, in the order figures show them."""
    return [display_name(cls) for cls in model_classes().values()]


COLUMNS = [
    "model",
    "nLayerG",
    "nLayerD",
    "sizeG",
    "sizeD",
    "dropoutD",
    "optimD",
    "optimG",
    "lr",
    "seed",
    "status",
    "wall_time_s",
    "is",
    "is_std",
    "fid",
    "kid",
    "modes_covered",
    "precision",
    "recall",
    "density",
    "coverage",
    "overrides",
    "folder",
]


def _optimizer_name(node) -> str:
    return str(node["_target_"]).rsplit(".", 1)[-1].lower() if node is not None else ""


def collect(folder: Path) -> list[dict]:
    """One row per job of a multirun folder: the launched ones and those multirun.yaml expects."""
    from src.runs.sweep_jobs import jobs_of_multirun

    rows, seen = [], set()
    for overrides_file in sorted(folder.glob("*/.hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        cfg = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
        overrides = [str(o) for o in OmegaConf.load(overrides_file)]
        seen.add(tuple(sorted(overrides)))
        result = (
            json.loads((job_dir / "metrics.json").read_text())
            if (job_dir / "metrics.json").is_file()
            else {}
        )
        metrics = result.get("metrics", {})
        arch = cfg.get("arch", {})
        rows.append(
            {
                "model": display_name(str(cfg.model._target_)),
                "nLayerG": arch.get("nLayerG", ""),
                "nLayerD": arch.get("nLayerD", ""),
                "sizeG": arch.get("sizeG", ""),
                "sizeD": arch.get("sizeD", ""),
                "dropoutD": arch.get("dropoutD", ""),
                "optimD": _optimizer_name(cfg.model.get("optimizer_d")),
                "optimG": _optimizer_name(cfg.model.get("optimizer_g")),
                "lr": cfg.model.optimizer_g.lr if cfg.model.get("optimizer_g") else "",
                "seed": cfg.get("seed", ""),
                "status": result.get("status", "no metrics.json (crashed or running)"),
                "wall_time_s": result.get("wall_time_s", ""),
                "is": metrics.get("val/is", ""),
                "is_std": metrics.get("val/is_std", ""),
                "fid": metrics.get("val/fid", ""),
                "kid": metrics.get("val/kid", ""),
                "modes_covered": metrics.get("val/modes_covered", ""),
                **{key: metrics.get(f"val/{key}", "") for key in MANIFOLD_SCORES},
                "overrides": " ".join(overrides),
                "folder": str(job_dir),
            }
        )
    if (folder / "multirun.yaml").is_file():
        choice = OmegaConf.select(
            OmegaConf.load(folder / "multirun.yaml"), "hydra.runtime.choices.model"
        )
        for job in jobs_of_multirun(folder):
            if tuple(sorted(job)) not in seen:
                rows.append(
                    {
                        **{c: "" for c in COLUMNS},
                        "model": (
                            display_name(model_classes()[choice])
                            if choice in model_classes()
                            else folder.name
                        ),
                        "status": "missing (never ran)",
                        "overrides": " ".join(job),
                        "folder": str(folder),
                    }
                )
    return rows


def _mean_std(values: list[float]) -> str:
    """'mean ± sample std' (just the value for a single run; '' for none)."""
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _scored(rows, model=None, key="is"):
    return [
        r
        for r in rows
        if r["status"] == "completed"
        and isinstance(r[key], float)
        and math.isfinite(r[key])
        and (model is None or r["model"] == model)
    ]


def headline(rows: list[dict], is_threshold: float) -> list[dict]:
    out = []
    for model in sorted({r["model"] for r in rows if r["model"] in model_names()}):
        runs = [r for r in rows if r["model"] == model]
        scored = _scored(rows, model)
        is_values, fid_values = [r["is"] for r in scored], [r["fid"] for r in scored]
        out.append(
            {
                "model": model,
                "runs": len(runs),
                "completed": len(scored),
                "not completed": len(runs) - len(scored),
                "median IS": statistics.median(is_values) if is_values else float("nan"),
                "best IS": max(is_values) if is_values else float("nan"),
                "median FID": statistics.median(fid_values) if fid_values else float("nan"),
                "best FID": min(fid_values) if fid_values else float("nan"),
                f"share IS >= {is_threshold:g}": (
                    sum(v >= is_threshold for v in is_values) / len(runs)
                )
                if runs
                else 0.0,
                **{
                    key: _mean_std([r[key] for r in _scored(rows, model, key)])
                    for key in MANIFOLD_SCORES
                },
            }
        )
    return out


def _histograms(rows, key, path, title, lower_is_better=False):
    plt = headless_pyplot()

    models = [m for m in model_names() if _scored(rows, m, key)]
    panels = [
        ("all runs", lambda r: True),
        (
            "nLayerG, nLayerD <= 4",
            lambda r: r["nLayerG"] != "" and max(r["nLayerG"], r["nLayerD"]) <= 4,
        ),
        (
            "nLayerG, nLayerD <= 3",
            lambda r: r["nLayerG"] != "" and max(r["nLayerG"], r["nLayerD"]) <= 3,
        ),
    ]
    values = [r[key] for r in _scored(rows, key=key)]
    if not values:
        return False
    low, high = min(values), max(values)
    bins = [low + (high - low) * i / 20 for i in range(21)] if high > low else 10
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), sharey=False)
    for ax, (name, keep) in zip(axes, panels, strict=True):
        for model in models:
            data = [r[key] for r in _scored(rows, model, key) if keep(r)]
            if data:
                ax.hist(data, bins=bins, alpha=0.55, label=f"{model} ({len(data)})")
        ax.set_title(name)
        ax.set_xlabel(
            key.upper() + (" (lower is better)" if lower_is_better else " (higher is better)")
        )
        ax.set_ylabel("runs")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    plt.close(fig)
    return True


def _without_seed(row: dict) -> str:
    """A run's configuration: its overrides without the seed and the launch-only keys."""
    from src.runs.sweep_jobs import LAUNCH_ONLY_KEYS

    ignored = {"seed", *LAUNCH_ONLY_KEYS}
    keep = [
        o for o in str(row["overrides"]).split() if o.split("=", 1)[0].lstrip("+~") not in ignored
    ]
    return " ".join(sorted(keep))


def seed_spread(rows: list[dict]) -> list[dict]:
    """Per model and configuration run with several seeds: mean ± std of IS / FID / recall."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["seed"] != "":
            groups.setdefault((row["model"], _without_seed(row)), []).append(row)
    out = []
    for (model, config), runs in sorted(groups.items()):
        if len(runs) < 2:
            continue
        entry = {"model": model, "configuration": config or "(defaults)", "seeds": len(runs)}
        for key in ("is", "fid", "recall", "coverage"):
            entry[key] = _mean_std([r[key] for r in runs if isinstance(r[key], float)])
        entry["completed"] = sum(r["status"] == "completed" for r in runs)
        out.append(entry)
    return out


def _heatmaps(rows, path):
    """The paper's other figure: best and median IS over (nLayerG x nLayerD) and (sizeG x sizeD)."""
    plt = headless_pyplot()

    models = [m for m in model_names() if _scored(rows, m)]
    axes_pairs = (("nLayerG", "nLayerD"), ("sizeG", "sizeD"))
    panels = [(m, pair, stat) for m in models for pair in axes_pairs for stat in ("best", "median")]

    def varies(model, keys) -> bool:
        runs = _scored(rows, model)
        return any(len({r[key] for r in runs} - {""}) > 1 for key in keys)

    panels = [p for p in panels if varies(p[0], p[1])]
    if not panels:
        return False
    models = [m for m in models if any(p[0] == m for p in panels)]
    fig, axes = plt.subplots(len(models), 4, figsize=(16, 3.6 * len(models)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for index, (model, (x_key, y_key), stat) in enumerate(panels):
        ax = axes[models.index(model)][index % 4]
        ax.axis("on")
        runs = _scored(rows, model)
        xs = sorted({r[x_key] for r in runs})
        ys = sorted({r[y_key] for r in runs})
        grid = [[float("nan")] * len(xs) for _ in ys]
        for j, y in enumerate(ys):
            for i, x in enumerate(xs):
                values = [r["is"] for r in runs if r[x_key] == x and r[y_key] == y]
                if values:
                    grid[j][i] = max(values) if stat == "best" else statistics.median(values)
        image = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto")
        for j in range(len(ys)):
            for i in range(len(xs)):
                if grid[j][i] == grid[j][i]:
                    ax.text(
                        i, j, f"{grid[j][i]:.2f}", ha="center", va="center", color="w", fontsize=8
                    )
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set_yticks(range(len(ys)), [str(y) for y in ys])
        ax.set_xlabel(x_key)
        ax.set_ylabel(y_key)
        ax.set_title(f"{model}: {stat} IS")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, path, dpi=70)
    plt.close(fig)
    return True


def _precision_recall(rows, path):
    """Precision vs recall (and density vs coverage), a point per completed run, by model."""
    plt = headless_pyplot()

    models = [m for m in model_names() if _scored(rows, m, "precision")]
    if not models:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, (x, y) in zip(axes, (("recall", "precision"), ("coverage", "density")), strict=True):
        for model in models:
            runs = [r for r in _scored(rows, model, x) if isinstance(r[y], float)]
            ax.scatter([r[x] for r in runs], [r[y] for r in runs], alpha=0.7, label=model)
        ax.set_xlabel(f"{x} (diversity)")
        ax.set_ylabel(f"{y} (quality)")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_xlim(0, 1)
    axes[0].set_ylim(0, 1)
    fig.suptitle("One point per run; k-NN manifolds of the pinned classifier's features (k = 5)")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    plt.close(fig)
    return True


def _gan_optimizers(rows, path):
    plt = headless_pyplot()

    gan = _scored(rows, "GAN")
    if not gan:
        return False
    groups = sorted(
        {(r["optimD"], r["optimG"], r["lr"]) for r in gan}, key=lambda g: (g[0], g[1], -float(g[2]))
    )
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(groups)), 4))
    ax.boxplot([[r["is"] for r in gan if (r["optimD"], r["optimG"], r["lr"]) == g] for g in groups])
    ax.set_xticks(
        range(1, len(groups) + 1), [f"D {d}\nG {g}\nlr {lr:g}" for d, g, lr in groups], fontsize=8
    )
    ax.set_ylabel("IS")
    ax.set_title("GAN: inception score by optimisers and learning rate")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    plt.close(fig)
    return True


def _best_samples(rows, path):
    import matplotlib.image as mpimg

    plt = headless_pyplot()

    best = []
    for model in model_names():
        scored = _scored(rows, model)
        if scored:
            top = max(scored, key=lambda r: r["is"])
            grid = Path(top["folder"]) / "samples" / "last.png"
            if grid.is_file():
                best.append((model, top, grid))
    if not best:
        return False
    fig, axes = plt.subplots(1, len(best), figsize=(4 * len(best), 4.8))
    for ax, (model, top, grid) in zip(axes if len(best) > 1 else [axes], best, strict=True):
        ax.imshow(mpimg.imread(grid), cmap="gray")
        label = f"G {top['nLayerG']}x{top['sizeG']}, D {top['nLayerD']}x{top['sizeD']}"
        if top["optimD"]:
            label += f", {top['optimD']}/{top['optimG']} lr {top['lr']:g}"
        ax.set_title(f"{model}: IS {top['is']:.2f}, FID {top['fid']:.1f}\n{label}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return True


def _fmt(value) -> str:
    if isinstance(value, float):
        return (
            "nan" if math.isnan(value) else f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        )
    return str(value)


def write_report(folders: list[Path], out: Path, is_threshold: float = 8.0) -> dict:
    rows = [row for folder in folders for row in collect(Path(folder))]
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "runs.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    summary = headline(rows, is_threshold)
    figures = {
        "is_histograms.png": _histograms(
            rows, "is", out / "is_histograms.png", "Inception score over the grid (Fig. 2)"
        ),
        "fid_histograms.png": _histograms(
            rows, "fid", out / "fid_histograms.png", "FID over the grid", True
        ),
        "precision_recall.png": _precision_recall(rows, out / "precision_recall.png"),
        "is_heatmaps.png": _heatmaps(rows, out / "is_heatmaps.png"),
        "gan_optimizers.png": _gan_optimizers(rows, out / "gan_optimizers.png"),
        "best_samples.png": _best_samples(rows, out / "best_samples.png"),
    }
    lines = [
        "# Grid report",
        "",
        f"Sweeps: {', '.join(str(f) for f in folders)}",
        "",
        "IS / FID / KID and precision / recall / density / coverage (k = 5) from the project's "
        "pinned MNIST classifier (src/metrics); real MNIST test digits score IS 9.80. `share IS "
        ">= t` counts over all runs of the model, failed and missing ones included; the last four "
        "columns are mean ± std over the completed runs.",
        "",
    ]
    if summary:
        keys = list(summary[0])
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_fmt(s[k]) for k in keys) + " |" for s in summary]
    spread = seed_spread(rows)
    if spread:
        keys = list(spread[0])
        lines += ["", "## Spread over seeds (mean ± std per configuration)", ""]
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_fmt(e[k]) for k in keys) + " |" for e in spread]
    lines += (
        [""]
        + [f"![{name}]({name})" for name, made in figures.items() if made]
        + ["", "## Every run", ""]
    )
    shown = [c for c in COLUMNS if c not in ("folder", "overrides")]
    lines += ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    order = sorted(
        rows, key=lambda r: (r["model"], -(r["is"] if isinstance(r["is"], float) else -1e9))
    )
    lines += ["| " + " | ".join(_fmt(r[c]) for c in shown) + " |" for r in order]
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    return {"rows": rows, "summary": summary, "figures": figures, "seed_spread": spread}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "folders", nargs="+", type=Path, help="multirun folders (outputs/sweeps/<task_name>)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("outputs/report"), help="where the report goes"
    )
    parser.add_argument("--is-threshold", type=float, default=8.0, help="IS counted as a good run")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.folders if not f.is_dir()]
    if missing:
        parser.error(f"not a folder: {', '.join(missing)}")
    result = write_report(args.folders, args.out, args.is_threshold)
    for s in result["summary"]:
        print("  ".join(f"{k}: {_fmt(v)}" for k, v in s.items()))
    statuses = {}
    for r in result["rows"]:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    print(
        f"{len(result['rows'])} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    )
    print(f"report: {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
