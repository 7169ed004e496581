"""Per-epoch curves of finished runs: quality against wall clock, and how two logged values move
together.

    python src/curves.py outputs/recipe/* --out outputs/curves/fid_vs_time.png
    python src/curves.py outputs/began/* --x epoch --y val/fid --correlate train/convergence_epoch

Reads each run's ``csv/metrics.csv`` (a run trained with ``logger=csv``): one point per scored
epoch, x = ``val/elapsed_seconds`` (the run's wall clock at that scoring, scoring included) by
default. Prints one line per run (its points and, with ``--correlate A``, the Spearman rank
correlation of A with the y value over the epochs) and draws all runs into one figure.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch

from src.utils.files import save_figure


def read_curve(run: Path) -> dict[str, list[float]]:
    """{key: values per epoch} for every key logged at epoch level in ``run/csv/metrics.csv``, in
    epoch order; an epoch's values may sit on several rows (callback and module log apart)."""
    path = run / "csv" / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train the run with logger=csv")
    by_epoch: dict[int, dict[str, float]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            values = by_epoch.setdefault(int(row["epoch"]), {})
            for key, value in row.items():
                # epoch-level values only: the step-level train/* rows of the same epoch differ
                if (
                    value not in ("", None)
                    and key not in ("epoch", "step")
                    and (key.startswith("val/") or key.endswith("_epoch"))
                ):
                    values[key] = float(value)
    epochs = sorted(e for e, values in by_epoch.items() if values)  # not yet scored: left out
    keys = sorted({k for values in by_epoch.values() for k in values})
    curve = {"epoch": [float(e + 1) for e in epochs]}
    for key in keys:
        curve[key] = [by_epoch[e].get(key, float("nan")) for e in epochs]
    return curve


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation of two equally long series (average ranks for ties), NaN pairs
    dropped; NaN when fewer than 3 pairs remain or a series is constant."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x == x and y == y]
    if len(pairs) < 3:
        return float("nan")
    ranks = [_ranks([p[i] for p in pairs]) for i in (0, 1)]
    x, y = (r - r.mean() for r in ranks)
    denominator = (x.pow(2).sum() * y.pow(2).sum()).sqrt()
    return float("nan") if denominator == 0 else float((x * y).sum() / denominator)


def _ranks(values: list[float]) -> torch.Tensor:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = torch.empty(len(values), dtype=torch.float64)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):  # ties share the mean of their positions (1-based)
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def run_label(run: Path) -> str:
    """The run's overrides from metrics.json (what distinguishes it), else its folder name."""
    metrics = run / "metrics.json"
    if metrics.is_file():
        overrides = json.loads(metrics.read_text()).get("overrides") or []
        skip = ("paths.", "logger=", "print_config", "torch_threads", "callbacks.")
        kept = [o for o in overrides if not o.startswith(skip)]
        if kept:
            return " ".join(kept)
    return run.name


def plot(curves: dict[str, dict], x: str, y: str, out: Path, log_y: bool = False) -> None:
    from src.utils.files import headless_pyplot

    plt = headless_pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (label, curve) in enumerate(curves.items()):
        # 20 distinct colours, then dashed: no two runs share a look
        style = {"color": plt.cm.tab20(i % 20), "linestyle": "-" if i < 20 else "--"}
        ax.plot(curve[x], curve[y], marker="o", markersize=3, label=label, **style)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders trained with logger=csv")
    parser.add_argument("--x", default="val/elapsed_seconds", help="x key (or epoch)")
    parser.add_argument("--y", default="val/fid", help="y key")
    parser.add_argument("--correlate", default=None, help="key whose Spearman rho with y is shown")
    parser.add_argument("--log-y", action="store_true", help="log-scale y axis")
    parser.add_argument("--out", type=Path, default=None, help="figure (PNG) to write")
    parser.add_argument(
        "--labels",
        default=None,
        help="legend names, ';'-separated, one per run (default: overrides)",
    )
    args = parser.parse_args(argv)
    labels = args.labels.split(";") if args.labels else None
    if labels is not None and len(labels) != len(args.runs):
        parser.error(f"--labels names {len(labels)} runs, {len(args.runs)} were given")
    curves = {}
    for i, run in enumerate(args.runs):
        if not run.is_dir():
            parser.error(f"not a folder: {run}")
        curve = read_curve(run)
        for key in filter(None, (args.x, args.y, args.correlate)):
            if key not in curve:
                parser.error(f"{run}: no epoch-level '{key}' logged (has: {', '.join(curve)})")
        label = labels[i] if labels else run_label(run)
        curves[label] = curve
        points = ", ".join(
            f"({a:.0f}, {b:.3g})" for a, b in zip(curve[args.x], curve[args.y], strict=True)
        )
        line = f"{label}: {args.y} vs {args.x}: {points}"
        if args.correlate:
            rho = spearman(curve[args.correlate], curve[args.y])
            line += f"; Spearman({args.correlate}, {args.y}) = {rho:.2f}"
        print(line)
    if args.out:
        plot(curves, args.x, args.y, args.out, args.log_y)
        print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
