"""The GPU fast path of one run: `python src/benchmark_fast_path.py [--batches 800] [--rounds 2]`.

Batches/s of one training run on a CUDA device, in one process, the variants taking turns (the best
of ``--rounds`` counts):
- ``plain``: a plain PyTorch loop (same nets, optimizers and losses), batches already on the GPU;
- ``lightning``: the project's Lightning loop at its defaults (batches copied from the host);
- ``on_device``: + ``data.on_device=true`` (the training split on the GPU, batches sliced there);
- ``graphs``: + ``model.cuda_graphs=true`` (each batch's updates replayed from a CUDA graph).
For the small / medium / largest cells of the EBGAN paper's MLP grid (EBGAN, batch 64), then every
model of the shared adversarial loop on the medium cell (on_device vs graphs). Prints a table; JSON
to outputs/benchmark_fast_path.json (or ``--out``). Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

import torch

from src.benchmark import (
    CELLS,
    batches_per_second_lightning,
    compose_cfg,
    plain_step,
    synchronize,
)
from src.config.registry import models_where
from src.models.base import shares_adversarial_step
from src.utils import PROJECT_ROOT, register_resolvers, write_json_atomic

MLP_CELLS = {name.split()[1]: o for name, o in CELLS.items() if "arch=mlp" in o}
MEDIUM = [o for o in MLP_CELLS["medium"] if not o.startswith("model=")]
# every model of the shared adversarial step (the one CUDA graphs capture), from conf/model/;
# WGAN-GP with a layer-norm critic: the penalty is per sample, which batch norm breaks (Gulrajani
# et al. 2017, Sec. 4)
MODELS = {
    option: [f"model={option}"] + (["arch.critic_norm=layer"] if option == "wgan_gp" else [])
    for option in models_where(shares_adversarial_step)
}
VARIANTS = {
    "lightning": [],
    "on_device": ["data.on_device=true"],
    "graphs": ["data.on_device=true", "model.cuda_graphs=true"],
}


def plain_batches_per_second(cfg, batches: int, device: torch.device, warmup: int = 10) -> float:
    """The plain loop, the split resident on ``device`` (no host copies, no Lightning)."""
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    model = instantiate(cfg.model).to(device)
    model.train()
    optimizer_g, optimizer_d = model.configure_optimizers()
    loader = iter(datamodule.train_batches(lambda: 0, device=device))
    for _ in range(warmup):
        plain_step(model, optimizer_g, optimizer_d, next(loader))
    synchronize(device)
    started = time.perf_counter()
    for _ in range(batches):
        plain_step(model, optimizer_g, optimizer_d, next(loader))
    synchronize(device)
    return batches / (time.perf_counter() - started)


def measure(overrides, variants, batches, rounds, tmp, data_dir, device, plain=False) -> dict:
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    cfgs = {
        v: compose_cfg([*overrides, *VARIANTS[v]], tmp, data_dir, accelerator=accelerator)
        for v in variants
    }
    rates: dict[str, list[float]] = {v: [] for v in variants}
    if plain:
        rates["plain"] = []
    for _ in range(rounds):
        if plain:
            rates["plain"].append(plain_batches_per_second(cfgs[variants[0]], batches, device))
        for v in variants:
            rates[v].append(batches_per_second_lightning(copy.deepcopy(cfgs[v]), batches))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {v: max(r) for v, r in rates.items()} | {"rounds": rates}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--batches", type=int, default=800, help="timed batches per loop (after 10 warm-up)"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cells", nargs="*", default=list(MLP_CELLS))
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        help="without a GPU only lightning and on_device run (a check of the script)",
    )
    parser.add_argument(
        "--out", type=Path, default=PROJECT_ROOT / "outputs" / "benchmark_fast_path.json"
    )
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and "graphs" in args.variants:
        parser.error("model.cuda_graphs needs a CUDA device: choose --variants lightning on_device")
    register_resolvers()
    data_dir = os.environ.get("DATA_DIR", str(PROJECT_ROOT / "data"))
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    result = {"device": name, "torch": torch.__version__, "cells": [], "models": []}
    with tempfile.TemporaryDirectory() as tmp:
        for cell in args.cells:
            row = measure(
                MLP_CELLS[cell],
                args.variants,
                args.batches,
                args.rounds,
                tmp,
                data_dir,
                device,
                plain=True,
            )
            result["cells"].append({"cell": cell, **row})
            rates = "  ".join(f"{v} {row[v]:7.1f}" for v in ["plain", *args.variants])
            print(f"{cell:8s} {rates} batches/s", flush=True)
            write_json_atomic(args.out, result)
        for name in args.models:
            variants = [v for v in ("on_device", "graphs") if v in args.variants]
            row = measure(
                [*MODELS[name], *MEDIUM], variants, args.batches, 1, tmp, data_dir, device
            )
            result["models"].append({"model": name, **row})
            rates = "  ".join(f"{v} {row[v]:7.1f}" for v in variants)
            print(f"{name:12s} medium cell: {rates} batches/s", flush=True)
            write_json_atomic(args.out, result)
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
