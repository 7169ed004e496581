"""Each reduced grid trained twice, as single runs and as populations, timed; the members' scores
next to the single runs' (median and best IS / FID):

    python sweeps/population_vs_single.py cpu_grid_began cpu_grid_wgan_gp cpu_grid_gan_dcgan

Single runs: ``hydra/launcher=local_parallel`` (2 jobs at once, ``torch_threads=1``); populations:
``hydra/launcher=population`` with the launcher's defaults. Writes ``summary.json`` and
``summary.md`` into ``--out`` (default ``sweeps/results/population_models``); the runs themselves go
under ``outputs/population_vs_single/``. Relaunching skips the runs already completed (their time
is then not measured again: delete the sweep folder to time it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.utils.files import write_json_atomic, write_text_atomic  # noqa: E402
from src.utils.project import provenance  # noqa: E402

WAYS = {
    "single": ["hydra/launcher=local_parallel", "torch_threads=1"],
    "population": ["hydra/launcher=population"],
}


def launch(grid: str, way: str, folder: Path, extra: list[str]) -> float:
    command = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "-cd",
        str(ROOT / "sweeps"),
        "-cn",
        grid,
        *WAYS[way],
        f"hydra.sweep.dir={folder}",
        *extra,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    (folder.parent / f"{way}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{grid} as {way} failed:\n{done.stderr[-3000:]}")
    return seconds


def scores(folder: Path) -> dict:
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*/metrics.json"))]
    values = {"runs": len(runs), "completed": sum(r["status"] == "completed" for r in runs)}
    for key, best in (("val/is", max), ("val/fid", min)):
        found = [r["metrics"][key] for r in runs if key in r["metrics"]]
        if found:
            name = key.split("/")[1]
            values[f"median_{name}"] = round(statistics.median(found), 3)
            values[f"best_{name}"] = round(best(found), 3)
    return values


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("grids", nargs="+")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "sweeps" / "results" / "population_models"
    )
    parser.add_argument("--runs", type=Path, default=Path("outputs") / "population_vs_single")
    parser.add_argument("--set", nargs="*", default=[], help="overrides passed to every launch")
    args = parser.parse_args(argv)
    measured = provenance()
    summary_path = args.out / "summary.json"
    # Grids measured earlier (each with its own date and commit) are kept, so they can run apart.
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"grids": {}}
    for grid in args.grids:
        row = {}
        for way in WAYS:
            folder = args.runs / grid / way / "sweep"
            row[way] = {"wall_s": round(launch(grid, way, folder, args.set), 1)}
            row[way].update(scores(folder))
        row["speedup"] = round(row["single"]["wall_s"] / row["population"]["wall_s"], 2)
        row.update(measured)
        summary["grids"][grid] = row
        print(grid, json.dumps(row))
        write(summary, args.out)
    return summary


def write(summary: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "summary.json", summary)
    lines = [
        "| grid | runs | single runs (s) | populations (s) | speed-up | median / best IS, single "
        "| population | median / best FID, single | population | measured |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for grid, row in summary["grids"].items():
        single, population = row["single"], row["population"]

        def pair(values, name):
            return f"{values.get('median_' + name, '–')} / {values.get('best_' + name, '–')}"

        lines.append(
            f"| {grid} | {single['runs']} | {single['wall_s']} | {population['wall_s']} | "
            f"{row['speedup']}× | {pair(single, 'is')} | {pair(population, 'is')} | "
            f"{pair(single, 'fid')} | {pair(population, 'fid')} | "
            f"{row['date']}, {row['commit']}, {row['machine']} |"
        )
    write_text_atomic(out / "summary.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
