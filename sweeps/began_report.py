"""BEGAN's two claims from the runs of sweeps/began_gamma.yaml (and began_causes.yaml):

    python sweeps/began_report.py [--gamma outputs/sweeps/began_gamma]
        [--causes outputs/sweeps/began_causes] [--out sweeps/results/began]

Claim 1 (gamma trades diversity for quality): per gamma, mean +- std over seeds of the final FID,
IS, classes covered and within-class diversity (from <run>/evaluation.json when evaluate.py has
scored the run's last checkpoint, else the last epoch's training-time scores), and a figure.
Claim 2 (M_global measures convergence): per run, the Spearman correlation over the epochs of
M_global (``train/convergence_epoch``) with FID and with IS, and the curves. Writes README.md and
the figures into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.curves import read_curve, spearman  # noqa: E402
from src.utils.files import headless_pyplot  # noqa: E402

M_GLOBAL = "train/convergence_epoch"
FINAL_KEYS = (
    "val/fid",
    "val/is",
    "val/modes_covered",
    "val/within_class_diversity",
    "val/precision",
    "val/recall",
)


def load_runs(folder: Path) -> list[dict]:
    """Every run folder under ``folder`` with a metrics.json: its overrides, status, curve."""
    runs = []
    for metrics in sorted(folder.glob("*/metrics.json")):
        written = json.loads(metrics.read_text())
        overrides = dict(o.split("=", 1) for o in written.get("overrides", []) if "=" in o)
        run = {"folder": metrics.parent, "overrides": overrides, "status": written["status"]}
        run["final"] = dict(written.get("metrics", {}))
        evaluation = metrics.parent / "evaluation.json"
        if evaluation.is_file():  # evaluate.py's scores of the last checkpoint (10 000 samples)
            scored = json.loads(evaluation.read_text())
            run["final"].update(
                {f"val/{k}": v for k, v in scored.items() if isinstance(v, (int, float))}
            )
        run["steps"] = written.get("optimizer_steps", 0) // 2  # one D and one G step per batch
        try:
            run["curve"] = read_curve(metrics.parent)
        except FileNotFoundError:
            run["curve"] = {}
        runs.append(run)
    if not runs:
        raise SystemExit(f"no runs (metrics.json) under {folder}")
    return runs


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{statistics.mean(values):.3g} ± {statistics.stdev(values):.2g}"


def gamma_table(runs: list[dict]) -> tuple[list[str], dict]:
    by_gamma: dict[float, list[dict]] = {}
    for run in runs:
        by_gamma.setdefault(float(run["overrides"].get("model.gamma", "nan")), []).append(run)
    lines = [
        "| γ | runs | FID | IS | classes ≥ 1 % | within-class diversity | precision | recall "
        "| k_t (last) | Spearman(M_global, FID) | Spearman(M_global, IS) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for gamma in sorted(by_gamma):
        group = [r for r in by_gamma[gamma] if r["status"] == "completed"]
        if not group:  # interrupted / failed only: relaunch the sweep to finish them
            continue
        finals = {k: [r["final"].get(k, float("nan")) for r in group] for k in FINAL_KEYS}
        rho_fid = [_rho(r, "val/fid") for r in group]
        rho_is = [_rho(r, "val/is") for r in group]
        k_last = [r["final"].get("train/k", float("nan")) for r in group]
        lines.append(
            f"| {gamma} | {len(group)} | "
            + " | ".join(_mean_std(finals[k]) for k in FINAL_KEYS)
            + f" | {_mean_std(k_last)} | {_mean_std(rho_fid)} | {_mean_std(rho_is)} |"
        )
        summary[gamma] = {**finals, "rho_fid": rho_fid, "rho_is": rho_is, "runs": group}
    return lines, summary


def _rho(run: dict, key: str) -> float:
    curve = run["curve"]
    if M_GLOBAL not in curve or key not in curve:
        return float("nan")
    return spearman(curve[M_GLOBAL], curve[key])


def causes_table(runs: list[dict]) -> list[str]:
    lines = [
        "| run | init | n, h | k_0 | λ_k | steps | FID | IS | classes ≥ 1 % "
        "| within-class diversity | k_t (last) | M_global (last) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in sorted(runs, key=lambda r: sorted(r["overrides"].items())):
        o, f = run["overrides"], run["final"]
        sizes = f"{o.get('arch.filters', '16')}, {o.get('arch.hidden_dim', '32')}"
        lines.append(
            f"| {run['folder'].name} | {o.get('arch.init', 'xavier')} | {sizes} | "
            f"{o.get('model.k_init', '0.0')} | {o.get('model.lambda_k', '0.001')} | "
            f"{run['steps']} | "
            + " | ".join(
                _mean_std([f.get(k, float("nan"))])
                for k in ("val/fid", "val/is", "val/modes_covered", "val/within_class_diversity")
            )
            + f" | {_mean_std([f.get('train/k', float('nan'))])} | "
            f"{_mean_std([run['curve'].get(M_GLOBAL, [float('nan')])[-1]])} |"
        )
    return lines


def figures(summary: dict, out: Path) -> None:
    gammas = sorted(summary)
    if not gammas:
        return
    plt = headless_pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
    for ax, key, title in zip(
        axes,
        ("val/fid", "val/is", "val/modes_covered", "val/within_class_diversity"),
        (
            "FID (lower: closer to the data)",
            "IS",
            "classes ≥ 1 %",
            "within-class diversity (real = 1)",
        ),
        strict=True,
    ):
        for gamma in gammas:
            values = [v for v in summary[gamma][key] if v == v]
            ax.scatter([gamma] * len(values), values, color="tab:blue", s=14)
        means = [
            statistics.mean([v for v in summary[g][key] if v == v] or [float("nan")])
            for g in gammas
        ]
        ax.plot(gammas, means, color="tab:orange", label="mean over seeds")
        ax.set_xlabel("γ")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "gamma.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(2, len(gammas), figsize=(3.3 * len(gammas), 5.6), squeeze=False)
    for column, gamma in enumerate(gammas):
        top, bottom = axes[0][column], axes[1][column]
        for run in summary[gamma]["runs"]:
            curve = run["curve"]
            if M_GLOBAL not in curve or "val/fid" not in curve:
                continue
            seed = run["overrides"].get("seed", "?")
            top.plot(
                curve["epoch"], curve[M_GLOBAL], marker="o", markersize=3, label=f"seed {seed}"
            )
            bottom.plot(curve["epoch"], curve["val/fid"], marker="o", markersize=3)
        top.set_title(f"γ = {gamma}", fontsize=9)
        top.set_ylabel("M_global (epoch mean)")
        bottom.set_ylabel("FID")
        bottom.set_xlabel("epoch (500 steps)")
        bottom.set_yscale("log")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
        top.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "m_global_and_fid.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gamma", type=Path, default=Path("outputs/sweeps/began_gamma"))
    parser.add_argument("--causes", type=Path, default=Path("outputs/sweeps/began_causes"))
    parser.add_argument("--out", type=Path, default=Path("sweeps/results/began"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    lines, summary = gamma_table(load_runs(args.gamma))
    text = ["## Claim 1 and 2: γ sweep (last epoch; mean ± std over seeds)", "", *lines, ""]
    if args.causes.is_dir():
        text += [
            "## Causes of the collapse at γ = 0.5 (seed 1)",
            "",
            *causes_table(load_runs(args.causes)),
            "",
        ]
    figures(summary, args.out)
    (args.out / "tables.md").write_text("\n".join(text))
    print("\n".join(text))
    print(f"figures: {args.out / 'gamma.png'}, {args.out / 'm_global_and_fid.png'}")


if __name__ == "__main__":
    main()
