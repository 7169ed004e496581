"""Is "0 % class flips" under the class-keeping term real, or the pinned classifier fooled?

`python sweeps/control_second_reader.py <cluster_gan last.ckpt> <cgan last.ckpt> --out <json>`
trains a second digit reader that shares nothing with the pinned classifier (an MLP on raw pixels,
its own seed), then repeats the thickness +1 px gradient edit (300 samples, seed 0, the CLI's
defaults) with and without the class term and counts flips with both readers. docs/control.md
quotes the result (sweeps/results/control/second_reader.json).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch import nn


def train_mlp_reader(data_dir: str, epochs: int = 3, seed: int = 1) -> tuple[nn.Module, float]:
    from src.data import load_split, to_signed_unit

    torch.manual_seed(seed)
    images, labels = load_split("mnist", data_dir, "train", False)
    test_images, test_labels = load_split("mnist", data_dir, "test", False)
    x = to_signed_unit(images.unsqueeze(1)).flatten(1)
    reader = nn.Sequential(
        nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )
    optimizer = torch.optim.Adam(reader.parameters(), lr=1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(128):
            loss = F.cross_entropy(reader(x[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    reader.eval()
    with torch.no_grad():
        predicted = reader(to_signed_unit(test_images.unsqueeze(1)).flatten(1)).argmax(1)
    return reader, float((predicted == test_labels).float().mean())


def main() -> None:
    from src.metrics.attributes import load_attribute_regressor
    from src.metrics.classifier import load_classifier
    from src.runs.checkpoints import load_checkpoint
    from src.sampling import render
    from src.sampling.control import gradient_edit, predicted_classes
    from src.utils import write_json_atomic
    from src.utils.project import provenance

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    started = time.time()
    reader, accuracy = train_mlp_reader(os.environ.get("DATA_DIR", "data"))
    pinned = load_classifier("mnist")
    regressor = load_attribute_regressor("mnist")

    def mlp_classes(images):
        with torch.no_grad():
            return reader(images.flatten(1)).argmax(1)

    result = {"mlp_reader_test_accuracy": round(accuracy, 4), "models": {}, **provenance()}
    for ckpt in args.checkpoints:
        model, run_cfg = load_checkpoint(ckpt)
        z = model.sample_latent(args.samples, generator=torch.Generator().manual_seed(0))
        labels = torch.arange(args.samples) % model.num_classes if model.num_classes else None
        rows = {}
        for keep_class in (True, False):
            path, _ = gradient_edit(
                model, regressor, pinned, z, labels, "thickness", 1.0, keep_class=keep_class
            )
            before, after = render(model, path[0], labels), render(model, path[-1], labels)
            row = {}
            for name, read in (
                ("pinned", lambda im: predicted_classes(pinned, im)),
                ("mlp", mlp_classes),
            ):
                start = labels if labels is not None else read(before)
                row[f"{name}_flip_rate"] = round(float((read(after) != start).float().mean()), 4)
                row[f"{name}_misread_before"] = round(
                    float((read(before) != start).float().mean()), 4
                )
            rows["with_class_term" if keep_class else "without_class_term"] = row
        result["models"][run_cfg.model._target_.rsplit(".", 1)[-1]] = rows
        print(run_cfg.model._target_, rows, flush=True)
    result["seconds"] = round(time.time() - started, 1)
    write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
