"""Speed benchmark: `python src/benchmark.py [--batches 150] [--rounds 3] [--out FILE]`.

Measured side by side in one process, for the small / medium / largest cells of the paper's MLP grid
and for arch=dcgan / arch=began (EBGAN-PT / BEGAN):
1. training throughput (batches/s) of the project's Lightning loop (default callbacks and CSV
   logging, no generative metrics; once without and once with the default progress bar) vs a plain
   PyTorch loop with the same nets, optimisers, losses and batches;
2. achieved GFLOP/s of a training step (FLOPs counted by torch.utils.flop_counter) vs this machine's
   measured fp32 matmul throughput (the roofline);
3. the share of step time spent producing batches;
4. the time of IS + FID + KID on 10 000 samples.

Each loop is timed ``--rounds`` times, the loops taking turns, and the best round counts: other work
on the machine only ever slows a round down. ``--override`` applies Hydra overrides to every cell,
e.g. ``--override model.compile=true`` or ``--override trainer.precision=bf16-mixed`` (the plain
loop then runs under the same autocast).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import tempfile
import time
from pathlib import Path

import torch

from src.models.base import frozen
from src.utils import PROJECT_ROOT, register_resolvers, write_json_atomic

CELLS = {
    "mlp small (2x400 / 2x128)": [
        "model=ebgan",
        "arch=mlp",
        "arch.nLayerG=2",
        "arch.sizeG=400",
        "arch.nLayerD=2",
        "arch.sizeD=128",
    ],
    "mlp medium (3x800 / 3x256)": [
        "model=ebgan",
        "arch=mlp",
        "arch.nLayerG=3",
        "arch.sizeG=800",
        "arch.nLayerD=3",
        "arch.sizeD=256",
    ],
    "mlp largest (5x3200 / 5x1024)": [
        "model=ebgan",
        "arch=mlp",
        "arch.nLayerG=5",
        "arch.sizeG=3200",
        "arch.nLayerD=5",
        "arch.sizeD=1024",
    ],
    "dcgan, EBGAN-PT": ["model=ebgan_pt", "arch=dcgan"],
    # the CPU-sized nets of docs/speed.md's numbers (the arch's default is the paper's n = h = 64)
    "began, BEGAN": ["model=began", "arch=began", "arch.filters=16", "arch.hidden_dim=32"],
}


def compose_cfg(
    overrides: list[str],
    output_dir: str,
    data_dir: str,
    progress_bar: bool = False,
    accelerator: str = "cpu",
):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                *overrides,
                "logger=csv",
                "print_config=false",
                f"trainer.accelerator={accelerator}",
                "trainer.enable_model_summary=false",
            ],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = output_dir
        cfg.paths.data_dir = data_dir
        cfg.callbacks.pop("generative_metrics", None)
        if not progress_bar:
            cfg.callbacks.pop("progress_bar", None)
    return cfg


def autocast_context(cfg):
    """The autocast that ``trainer.precision`` gives Lightning's loop, for the plain loop."""
    precision = str(cfg.trainer.get("precision") or "32")
    if precision.startswith("bf16"):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    if precision not in ("32", "32-true"):
        raise ValueError(
            f"benchmark: trainer.precision={precision} is not supported on the CPU plain loop"
        )
    return contextlib.nullcontext()


def matmul_roofline(size: int = 2048, repeats: int = 20) -> float:
    """Measured fp32 GFLOP/s of a square matmul on this machine (the best of a few rounds)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9)
    return best


def plain_step(model, optimizer_g, optimizer_d, batch):
    """One plain-PyTorch training batch: AdversarialModel.training_step's work (D frozen for G),
    through the model's own forward and batch labels (cGAN's classes, a cluster GAN's clusters,
    InfoGAN's codes)."""
    real, labels = batch[0], model.batch_labels(batch)
    fake = model(model.sample_latent(real.shape[0]), labels)
    loss_d, _ = model.discriminator_loss(real, fake.detach(), labels)
    optimizer_d.zero_grad(set_to_none=True)
    loss_d.backward()
    optimizer_d.step()
    model.after_discriminator_step(_)
    with frozen(model.discriminator):
        loss_g, _ = model.generator_loss(fake, labels)
        optimizer_g.zero_grad(set_to_none=True)
        loss_g.backward()
        optimizer_g.step()


def batches_per_second_plain(
    model,
    datamodule,
    batches: int,
    warmup: int = 10,
    max_seconds: float = float("inf"),
    context=contextlib.nullcontext,
) -> tuple[float, float, int]:
    """(batches/s of the plain loop, seconds spent producing batches per batch, batches timed).

    Stops after ``batches`` timed batches or ``max_seconds``, whichever comes first (at least 3).
    """
    optimizer_g, optimizer_d = model.configure_optimizers()
    model.train()
    loader = iter(datamodule.train_dataloader())
    with context():
        for _ in range(warmup):
            plain_step(model, optimizer_g, optimizer_d, next(loader))
        produce, count = 0.0, 0
        started = time.perf_counter()
        while count < batches and (count < 3 or time.perf_counter() - started < max_seconds):
            t = time.perf_counter()
            batch = next(loader)
            produce += time.perf_counter() - t
            plain_step(model, optimizer_g, optimizer_d, batch)
            count += 1
        elapsed = time.perf_counter() - started
    return count / elapsed, produce / count, count


def synchronize(device: torch.device | None = None) -> None:
    """Wait for the GPU's queued work (a clock read must not run ahead of it); on a CPU nothing.
    Without ``device``: the current GPU, if this process has used one."""
    if device is not None:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
    elif torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class BatchTimer:
    """Times training batches inside Lightning, after a warm-up. On a GPU the clock reads wait for
    the queued kernels (at the first timed and after the last batch only: a wait every batch would
    take away the overlap of Python and GPU that is being measured)."""

    def __init__(self, warmup: int, last: int | None = None):
        from lightning import Callback

        timer = self

        class _Callback(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if batch_idx == warmup:
                    synchronize()
                    timer.started = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if last is not None and batch_idx + 1 == last:
                    synchronize()
                timer.ended, timer.count = time.perf_counter(), batch_idx + 1 - warmup

        self.callback = _Callback()
        self.started = 0.0
        self.ended = 0.0
        self.count = 0


def batches_per_second_lightning(cfg, batches: int, warmup: int = 10) -> float:
    from omegaconf import open_dict

    from src.runs.training import instantiate_all

    with open_dict(cfg):
        cfg.trainer.max_epochs = 1
        cfg.trainer.limit_train_batches = batches + warmup
        cfg.trainer.limit_val_batches = 0
    datamodule, model, trainer = instantiate_all(cfg)
    timer = BatchTimer(warmup, last=batches + warmup)
    trainer.callbacks.append(timer.callback)
    trainer.fit(model, datamodule=datamodule)
    return timer.count / (timer.ended - timer.started)


def step_flops(model, datamodule) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    optimizer_g, optimizer_d = model.configure_optimizers()
    batch = next(iter(datamodule.train_dataloader()))
    with FlopCounterMode(display=False) as counter:
        plain_step(model, optimizer_g, optimizer_d, batch)
    return float(counter.get_total_flops())


def metrics_seconds(data_dir: str, n: int = 10000) -> dict:
    from src.data import load_split
    from src.metrics.scores import GenerativeScores

    real = load_split("mnist", data_dir, "test", False)[0].unsqueeze(1)
    started = time.perf_counter()
    scores = GenerativeScores("mnist", real[:n], kid_subset_size=min(1000, n))
    setup = time.perf_counter() - started
    fake = load_split("mnist", data_dir, "train", False)[0][:n].unsqueeze(1).float() / 127.5 - 1
    started = time.perf_counter()
    scores.score(fake)
    return {"samples": n, "real_features_s": setup, "is_fid_kid_s": time.perf_counter() - started}


def best_rounds(cfg, cfg_bar, datamodule, model, args) -> dict:
    """Plain, Lightning and Lightning + progress bar loops in turns; each the best of its rounds."""
    plain, lightning, bar, produce = [], [], [], []
    for _ in range(args.rounds):
        rate, production, count = batches_per_second_plain(
            model,
            datamodule,
            args.batches,
            max_seconds=args.max_seconds,
            context=lambda: autocast_context(cfg),
        )
        plain.append(rate)
        produce.append(production * rate)
        lightning.append(batches_per_second_lightning(copy.deepcopy(cfg), count))
        if cfg_bar is not None:
            bar.append(batches_per_second_lightning(copy.deepcopy(cfg_bar), count))
    best = {
        "plain_batches_s": max(plain),
        "lightning_batches_s": max(lightning),
        "batch_production_share": min(produce),
        "rounds": {"plain": plain, "lightning": lightning},
    }
    if bar:
        best["lightning_bar_batches_s"] = max(bar)
        best["rounds"]["lightning_bar"] = bar
    return best


def main(argv=None) -> dict:
    from hydra.utils import instantiate

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--batches", type=int, default=150, help="timed batches per loop (after 10 warm-up)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=15.0,
        help="time cap per plain-loop round (the Lightning loops then run as many batches)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="timed rounds per loop; the best one counts"
    )
    parser.add_argument(
        "--cells", nargs="*", default=list(CELLS), help="which cells (default: all)"
    )
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides for every cell")
    parser.add_argument(
        "--no-progress-bar",
        action="store_true",
        help="skip the Lightning loop with the default progress bar",
    )
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "outputs" / "benchmark.json")
    parser.add_argument(
        "--roofline-size", type=int, default=2048, help="square matmul size for the roofline"
    )
    parser.add_argument(
        "--metrics-samples", type=int, default=10000, help="samples scored for the metrics time"
    )
    args = parser.parse_args(argv)
    register_resolvers()
    data_dir = os.environ.get("DATA_DIR", str(PROJECT_ROOT / "data"))
    roofline = matmul_roofline(args.roofline_size)
    print(f"fp32 matmul roofline: {roofline:.1f} GFLOP/s on {torch.get_num_threads()} threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cells:
            cfg = compose_cfg([*CELLS[name], *args.override], tmp, data_dir)
            cfg_bar = (
                None
                if args.no_progress_bar
                else compose_cfg([*CELLS[name], *args.override], tmp, data_dir, progress_bar=True)
            )
            datamodule = instantiate(cfg.data)
            datamodule.setup("fit")
            torch.manual_seed(0)
            # eager fp32 nets: the work a step asks for
            flops = step_flops(instantiate(cfg.model), datamodule)
            model = instantiate(cfg.model)
            model.setup("fit")  # model.compile=true compiles here, as in the Lightning loop
            best = best_rounds(cfg, cfg_bar, datamodule, model, args)
            plain = best["plain_batches_s"]
            row = {
                "cell": name,
                **best,
                "lightning_vs_plain": best["lightning_batches_s"] / plain,
                "gflop_per_batch": flops / 1e9,
                "gflops_plain": flops * plain / 1e9,
                "roofline_share": flops * plain / 1e9 / roofline,
            }
            if "lightning_bar_batches_s" in best:
                row["lightning_bar_vs_plain"] = best["lightning_bar_batches_s"] / plain
            rows.append(row)
            bar = (
                f"  + bar {row['lightning_bar_vs_plain']:.3f}"
                if "lightning_bar_vs_plain" in row
                else ""
            )
            print(
                f"{name:30} plain {plain:7.1f}/s  lightning {row['lightning_batches_s']:7.1f}/s  "
                f"ratio {row['lightning_vs_plain']:.3f}{bar}  {row['gflops_plain']:6.1f} GFLOP/s "
                f"({100 * row['roofline_share']:.0f} % of roofline)  batches "
                f"{100 * row['batch_production_share']:.1f} %",
                flush=True,
            )
    scoring = metrics_seconds(data_dir, args.metrics_samples)
    print(
        f"IS + FID + KID on {scoring['samples']} samples: {scoring['is_fid_kid_s']:.2f} s "
        f"(+ {scoring['real_features_s']:.2f} s once for the real features)"
    )
    result = {
        "roofline_gflops": roofline,
        "threads": torch.get_num_threads(),
        "cells": rows,
        "metrics": scoring,
        "overrides": args.override,
        "rounds": args.rounds,
        "torch": torch.__version__,
    }
    write_json_atomic(args.out, result)
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
