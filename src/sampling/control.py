"""Controllable generation of non-class features with a frozen generator.

Two ways to move one measured attribute (src/metrics/morphometry.py) of generated digits, for any
generator built by src/runs/checkpoints.py (unconditional, class-conditional: the label stays):

- ``gradient``: steps on z through G and the pinned attribute regressor toward
  ``start + delta``, with a prior term that keeps z typical and an optional class-keeping term, the
  pinned digit classifier's -log p(start class | G(z)) (classifier-guided latent search);
- ``direction``: a fixed latent direction per unit of the attribute, from a linear probe of the
  measured attribute on z (or the difference of the mean latents of high- and low-attribute
  samples), applied as z + a * delta * d.

src/metrics/entanglement.py then measures what happened with morphometry, not with the regressor
that was optimised.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from src.data.images import to_classifier_input
from src.models.base import frozen
from src.sampling.generation import render
from src.sampling.interpolation import class_probabilities

METHODS = ("gradient", "direction")
DIRECTION_FITS = ("probe", "mean_difference")


def noise_width(model) -> int:
    """How many leading latent dims are continuous noise: a cluster GAN's one-hot tail is not."""
    return model.latent_dim - int(getattr(model, "num_clusters", 0) or 0)


def typicality(z: torch.Tensor, model) -> torch.Tensor:
    """Per row: ||z_noise|| / sqrt(d) (about 1 for a standard normal draw in high dimension)."""
    noise = z[:, : noise_width(model)]
    return noise.norm(dim=1) / math.sqrt(noise.shape[1])


def prior_penalty(z: torch.Tensor, model) -> torch.Tensor:
    """Per row: (||z_noise|| / sqrt(d) - 1)^2, zero on the shell where a Gaussian prior puts its
    mass (not -log p(z), which would pull z to the origin, a latent G never saw). Uniform priors
    are kept by projection instead (``project``): zero here."""
    if model.latent_distribution == "uniform":
        return z.new_zeros(z.shape[0])
    return (typicality(z, model) - 1.0) ** 2


def project(z: torch.Tensor, model) -> torch.Tensor:
    """z back inside the support of a uniform prior (U[-1, 1]); a Gaussian's is everything."""
    if model.latent_distribution == "uniform":
        width = noise_width(model)
        z[:, :width].clamp_(-1.0, 1.0)
    return z


@contextlib.contextmanager
def frozen_in_eval(*modules):
    """Eval mode and no parameter gradients (the training loop's ``frozen``) in the block; the
    modes restored after."""
    modes = [module.training for module in modules]
    try:
        with contextlib.ExitStack() as stack:
            for module in modules:
                stack.enter_context(frozen(module))
                module.eval()
            yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.train(mode)


def start_classes(classifier, images: torch.Tensor, labels: torch.Tensor | None):
    """The class each sample starts as: a conditional G's label, else the classifier's reading."""
    if labels is not None:
        return labels.clone()
    return predicted_classes(classifier, images)


def predicted_classes(classifier, images: torch.Tensor) -> torch.Tensor:
    """[N] the classifier's reading of each image."""
    return class_probabilities(classifier, images).argmax(1)


def _targets_per_column(delta: float, columns: int) -> torch.Tensor:
    """The share of ``delta`` each grid column asks for: 0 (the start), ..., 1."""
    return torch.linspace(0.0, 1.0, columns) * delta


def gradient_edit(
    model,
    regressor,
    classifier,
    z: torch.Tensor,
    labels: torch.Tensor | None,
    attribute: str,
    delta: float,
    columns: int = 6,
    iterations: int = 40,
    lr: float = 0.05,
    prior_weight: float = 1.0,
    class_weight: float = 1.0,
    keep_class: bool = True,
    batch_size: int = 500,
) -> tuple[torch.Tensor, dict]:
    """Latents [columns, N, D]: column c is z moved until the regressor reads start + c/(C-1) delta.

    Per row, Adam minimises ((r_a(G(z)) - target) / s_a)^2 + prior_weight (||z||/sqrt d - 1)^2
    [+ class_weight (-log p_classifier(start class | G(z)))], s_a the attribute's spread on real
    digits; each column starts from the one before (``iterations`` steps each). The rows are
    independent (summed losses, per-element Adam), so the batch only sets the speed.
    """
    device = model.device
    index = regressor.index(attribute)
    scale = float(regressor.std[index])
    shares = _targets_per_column(delta, columns)
    noise = noise_width(model)
    path = z.unsqueeze(0).repeat(columns, 1, 1)
    readings = []
    with frozen_in_eval(model, regressor, classifier):
        for start in range(0, z.shape[0], batch_size):
            chunk = z[start : start + batch_size].to(device)
            chunk_labels = None if labels is None else labels[start : start + batch_size].to(device)
            with torch.no_grad():
                images = model(chunk, chunk_labels)
                origin = regressor(images)[:, index]
                keep = start_classes(classifier, images, chunk_labels).to(device)
            readings.append(origin.cpu())
            current = chunk.clone()
            for column in range(1, columns):
                current = current.detach().requires_grad_(True)
                optimizer = torch.optim.Adam([current], lr=lr)
                target = origin + shares[column].item()
                for _ in range(iterations):
                    images = model(current, chunk_labels)
                    miss = (regressor(images)[:, index] - target) / scale
                    loss = miss.pow(2) + prior_weight * prior_penalty(current, model)
                    if keep_class:
                        log_p = F.log_softmax(classifier(to_classifier_input(images)), dim=1)
                        loss = loss - class_weight * log_p.gather(1, keep[:, None]).squeeze(1)
                    optimizer.zero_grad(set_to_none=True)
                    loss.sum().backward()
                    current.grad[:, noise:] = 0.0  # a cluster code is a label: it stays
                    optimizer.step()
                    with torch.no_grad():
                        project(current, model)
                path[column, start : start + batch_size] = current.detach().cpu()
    info = {
        "method": "gradient",
        "iterations_per_column": iterations,
        "lr": lr,
        "prior_weight": prior_weight,
        "class_weight": class_weight if keep_class else 0.0,
        "keep_class": keep_class,
        "regressor_start_mean": round(float(torch.cat(readings).mean()), 4),
    }
    return path, info


@torch.no_grad()
def fit_direction(
    model,
    measure_attribute: Callable[[torch.Tensor], np.ndarray],
    n: int = 2000,
    seed: int = 0,
    fit: str = "probe",
    batch_size: int = 1000,
) -> tuple[torch.Tensor, dict]:
    """A latent direction d (noise dims only) with E[attribute(G(z + d))] - E[attribute(G(z))] ~ 1
    unit to first order, from ``n`` samples of G measured by ``measure_attribute`` (images ->
    [N] values, NaN where unmeasurable: morphometry in src/control.py).

    ``probe``: least squares attribute ~ w . z_noise + b (+ one-hot class / cluster offsets), d =
    w / ||w||^2. ``mean_difference``: mean(z | top quarter) - mean(z | bottom quarter), divided by
    the attribute gap between the two quarters.
    """
    if fit not in DIRECTION_FITS:
        raise ValueError(f"fit must be one of {DIRECTION_FITS}, got {fit!r}")
    seeded = torch.Generator().manual_seed(seed)
    z = model.sample_latent(n, generator=seeded, device="cpu")
    labels = None
    if model.num_classes:
        labels = torch.randint(model.num_classes, (n,), generator=seeded)
    values = torch.from_numpy(measure_attribute(render(model, z, labels, batch_size))).float()
    keep = torch.isfinite(values)
    z, values = z[keep], values[keep]
    width = noise_width(model)
    noise = z[:, :width]
    info: dict = {"fit": fit, "fit_samples": int(keep.sum())}
    if fit == "probe":
        columns = [noise, torch.ones(len(z), 1)]
        if labels is not None:
            columns.append(F.one_hot(labels[keep], model.num_classes).float()[:, 1:])
        if width < z.shape[1]:  # the cluster code: one offset per cluster
            columns.append(z[:, width + 1 :])
        design = torch.cat(columns, 1).double()
        solution = torch.linalg.lstsq(design, values.double()[:, None]).solution[:, 0]
        fitted = design @ solution
        residual = (values.double() - fitted).pow(2).sum()
        total = (values.double() - values.double().mean()).pow(2).sum()
        weights = solution[:width].float()
        direction = weights / weights.pow(2).sum()
        info["probe_r2"] = round(float(1 - residual / total), 4)
    else:
        low, high = torch.quantile(values, torch.tensor([0.25, 0.75]))
        upper, lower = values >= high, values <= low
        gap = values[upper].mean() - values[lower].mean()
        direction = (noise[upper].mean(0) - noise[lower].mean(0)) / gap
        info["quartile_gap"] = round(float(gap), 4)
    info["direction_norm_per_unit"] = round(float(direction.norm()), 4)
    full = torch.zeros(z.shape[1])
    full[:width] = direction
    return full, info


def direction_edit(
    model, z: torch.Tensor, direction: torch.Tensor, delta: float, columns: int = 6
) -> torch.Tensor:
    """Latents [columns, N, D]: z + share * delta * direction, share 0 .. 1 over the columns."""
    shares = _targets_per_column(delta, columns)
    path = torch.stack([z + s * direction for s in shares])
    return torch.stack([project(column.clone(), model) for column in path])
