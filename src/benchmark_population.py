"""Population speed: `python src/benchmark_population.py [--members 1 4 16] [--steps 30]`.

For the small / medium / largest cells of the EBGAN paper's MLP grid (EBGAN, Adam, batch 64; or any
cell of ``POPULATION_CELLS``: ``--cells "dcgan, GAN" "began, BEGAN"``):
member-steps/s of a population of K members (one training batch = one D and one G update of every
member) against K, next to one Lightning run's batches/s of the same cell on the same device,
measured in one run. On a GPU (``--device cuda``, the default where there is one) also with TF32
matmuls (``--matmul-precision high``), either optimizer implementation (``--optimizers``) and
with the population steps replayed from CUDA graphs (``--cuda-graphs off on``).
Prints a table; JSON goes to outputs/benchmark_population.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

import torch

from src.benchmark import CELLS, batches_per_second_lightning, compose_cfg, synchronize
from src.utils import PROJECT_ROOT, register_resolvers, write_json_atomic

#: the grid cells of src/benchmark.py, and the other models' cells a population stacks
POPULATION_CELLS = {
    **CELLS,
    "mlp medium, WGAN-GP": ["model=wgan_gp", "arch=mlp", "arch.sizeG=800", "arch.sizeD=256"],
    "dcgan, GAN": ["model=gan", "arch=dcgan"],
}
#: the default: the EBGAN paper's MLP cells
MLP_CELLS = [name for name, overrides in CELLS.items() if "arch=mlp" in overrides]


def member_steps_per_second(
    cfg,
    members: int,
    steps: int,
    warmup: int = 3,
    device: torch.device | str = "cpu",
    vectorized_optimizer: bool = False,
    cuda_graphs: bool = False,
) -> float:
    """Member-steps/s of a population of ``members`` copies of the cell (own seeds)."""
    from hydra.utils import instantiate

    from src.population.step import Population

    device = torch.device(device)
    shape = tuple(int(s) for s in cfg.arch.generator.image_shape)
    batch = int(cfg.data.batch_size)
    clustered = torch.randint(0, 256, (256, *shape), dtype=torch.uint8)
    models = []
    for k in range(members):
        torch.manual_seed(k)
        models.append(instantiate(cfg.model))
        if hasattr(models[-1], "fit_clusters"):  # the cluster GAN: clusters of stand-in images
            models[-1].fit_clusters(clustered)
    population = Population(
        models, device, vectorized_optimizer=vectorized_optimizer, cuda_graphs=cuda_graphs
    )
    real = torch.rand(batch, *shape, device=device) * 2 - 1  # one batch for all, as in a grid
    labels = population.model.batch_labels((real, torch.arange(batch, device=device) % 10))
    draws = []
    for _ in range(warmup + steps):
        noise = [m.sample_step_noise(batch, device=device) for m in models]
        draws.append(
            (
                torch.stack([m.sample_latent(batch, device=device) for m in models]),
                {n: torch.stack([d[n] for d in noise]) for n in noise[0]},
            )
        )
    del models
    for i in range(warmup):
        population.train_batch(
            real, draws[i][0], population.generator_steps(i), labels, draws[i][1]
        )
    synchronize(device)
    started = time.perf_counter()
    for i in range(warmup, warmup + steps):
        population.train_batch(
            real, draws[i][0], population.generator_steps(i), labels, draws[i][1]
        )
    synchronize(device)
    return members * steps / (time.perf_counter() - started)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument(
        "--max-members",
        nargs="*",
        default=[],
        help="cap K per cell, e.g. largest=32 (the cell's name starts with the word)",
    )
    parser.add_argument("--steps", type=int, default=30, help="timed population steps per K")
    parser.add_argument(
        "--lightning-batches", type=int, default=100, help="0: no Lightning run for comparison"
    )
    parser.add_argument("--cells", nargs="*", default=MLP_CELLS, choices=list(POPULATION_CELLS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--matmul-precision",
        nargs="+",
        default=["highest"],
        choices=["highest", "high", "medium"],
        help="float32 matmul precision(s) to measure (high: TF32 on a GPU)",
    )
    parser.add_argument(
        "--optimizers",
        nargs="+",
        default=["per_member"],
        choices=["per_member", "vectorized"],
        help="how Adam members step (src/population/optim.py): K fused kernels or one vectorized",
    )
    parser.add_argument(
        "--cuda-graphs",
        nargs="+",
        default=["off"],
        choices=["off", "on"],
        help="population steps replayed from CUDA graphs (the members' model.cuda_graphs)",
    )
    parser.add_argument(
        "--out", type=Path, default=PROJECT_ROOT / "outputs" / "benchmark_population.json"
    )
    args = parser.parse_args(argv)
    register_resolvers()
    device = torch.device(args.device)
    if "on" in args.cuda_graphs and device.type != "cuda":
        parser.error("--cuda-graphs on needs a CUDA device")
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    caps = dict(item.split("=", 1) for item in args.max_members)
    vectorized = {"per_member": False, "vectorized": True}
    data_dir = os.environ.get("DATA_DIR", str(PROJECT_ROOT / "data"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cells:
            cap = next((int(v) for k, v in caps.items() if name.split()[1] == k), None)
            for precision in args.matmul_precision:
                torch.set_float32_matmul_precision(precision)
                cfg = compose_cfg(POPULATION_CELLS[name], tmp, data_dir, accelerator=accelerator)
                lightning = None
                if args.lightning_batches:
                    lightning = batches_per_second_lightning(cfg, args.lightning_batches)
                    print(f"{name}, {precision}: one Lightning run {lightning:.1f} batches/s")
                else:
                    print(f"{name}, {precision}:")
                for optimizer, graphs in itertools.product(args.optimizers, args.cuda_graphs):
                    for members in args.members:
                        if cap is not None and members > cap:
                            continue
                        rate = member_steps_per_second(
                            cfg,
                            members,
                            args.steps,
                            device=device,
                            vectorized_optimizer=vectorized[optimizer],
                            cuda_graphs=graphs == "on",
                        )
                        rows.append(
                            {
                                "cell": name,
                                "matmul_precision": precision,
                                "optimizer": optimizer,
                                "cuda_graphs": graphs == "on",
                                "members": members,
                                "member_steps_s": rate,
                                "lightning_batches_s": lightning,
                                "vs_lightning": rate / lightning if lightning else None,
                            }
                        )
                        ratio = f" ({rate / lightning:.2f}x)" if lightning else ""
                        form = f"{optimizer}{', graphs' if graphs == 'on' else ''}"
                        line = f"  {form:18s} K = {members:3d}: {rate:9.1f} member-steps/s"
                        print(line + ratio)
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
    torch.set_float32_matmul_precision("highest")
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    write_json_atomic(args.out, result)
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
