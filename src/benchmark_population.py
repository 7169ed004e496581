"""Population speed: `python src/benchmark_population.py [--members 1 4 16] [--steps 30]`.

For the small / medium / largest cells of the EBGAN paper's MLP grid (EBGAN, Adam, batch 64):
member-steps/s of a population of K members (one training batch = one D and one G update of every
member) against K, next to one Lightning run's batches/s of the same cell, measured in one run.
Prints a table; JSON goes to outputs/benchmark_population.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from src.benchmark import CELLS, batches_per_second_lightning, compose_cfg
from src.utils import PROJECT_ROOT, register_resolvers, write_json_atomic

MLP_CELLS = {name: overrides for name, overrides in CELLS.items() if "arch=mlp" in overrides}


def member_steps_per_second(cfg, members: int, steps: int, warmup: int = 3) -> float:
    """Member-steps/s of a population of ``members`` copies of the cell (own seeds)."""
    from hydra.utils import instantiate

    from src.population.step import Population

    models = []
    for k in range(members):
        torch.manual_seed(k)
        models.append(instantiate(cfg.model))
    population = Population(models)
    latent_dim = models[0].latent_dim
    batch = int(cfg.data.batch_size)
    real = torch.rand(members, batch, 1, 28, 28) * 2 - 1
    for _ in range(warmup):
        population.training_step(real, torch.randn(members, batch, latent_dim), True)
    started = time.perf_counter()
    for _ in range(steps):
        population.training_step(real, torch.randn(members, batch, latent_dim), True)
    return members * steps / (time.perf_counter() - started)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--steps", type=int, default=30, help="timed population steps per K")
    parser.add_argument("--lightning-batches", type=int, default=100)
    parser.add_argument("--cells", nargs="*", default=list(MLP_CELLS))
    parser.add_argument(
        "--out", type=Path, default=PROJECT_ROOT / "outputs" / "benchmark_population.json"
    )
    args = parser.parse_args(argv)
    register_resolvers()
    data_dir = os.environ.get("DATA_DIR", str(PROJECT_ROOT / "data"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cells:
            cfg = compose_cfg(MLP_CELLS[name], tmp, data_dir)
            lightning = batches_per_second_lightning(cfg, args.lightning_batches)
            print(f"{name}: one Lightning run {lightning:.1f} batches/s")
            for members in args.members:
                rate = member_steps_per_second(cfg, members, args.steps)
                rows.append(
                    {
                        "cell": name,
                        "members": members,
                        "member_steps_s": rate,
                        "lightning_batches_s": lightning,
                        "vs_lightning": rate / lightning,
                    }
                )
                print(f"  K = {members:3d}: {rate:8.1f} member-steps/s ({rate / lightning:.2f}x)")
    result = {"threads": torch.get_num_threads(), "rows": rows}
    write_json_atomic(args.out, result)
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
