"""Latent interpolations and class-direction walks through a trained generator.

Every function takes a model as built by src/runs/checkpoints.py (``model(z, labels)``,
``model.sample_latent``, ``model.num_classes``) and the project's pinned classifier; images are
float [-1, 1].
"""

from __future__ import annotations

import torch

from src.data.images import to_classifier_input
from src.sampling.generation import encode, render

#: a class direction needs at least this many generated samples of each of its two classes
MIN_SAMPLES_PER_CLASS = 10


def lerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation (1 - t) z0 + t z1, row-wise; ``t`` has one value per row."""
    t = t.view(-1, *([1] * (z0.dim() - 1)))
    return (1 - t) * z0 + t * z1


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation along the great circle (Shoemake 1985; White 2016 for GAN latents):
    sin((1 - t) W) / sin W * z0 + sin(t W) / sin W * z1, W the angle between z0 and z1, row-wise.

    Nearly parallel rows (sin W ~ 0) fall back to ``lerp``. Unlike ``lerp`` it keeps the norm of two
    equal-norm latents, so midpoints stay where a Gaussian prior puts its mass.
    """
    t = t.view(-1, 1)
    a, b = z0.flatten(1), z1.flatten(1)
    cos = (torch.nn.functional.normalize(a, dim=1) * torch.nn.functional.normalize(b, dim=1)).sum(
        1, keepdim=True
    )
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    sin = torch.sin(omega)
    spherical = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / sin.clamp_min(eps)
    linear = (1 - t) * a + t * b
    return torch.where(sin > eps, spherical, linear).view_as(z0)


@torch.no_grad()
def interpolation_latents(model, pairs: int, steps: int, mode: str, seed: int = 0) -> torch.Tensor:
    """[pairs * steps, latent_dim]: grid row i walks between two random latents in ``steps``."""
    if mode not in ("linear", "spherical"):
        raise ValueError(f"mode must be 'linear' or 'spherical', got {mode!r}")
    seeded = torch.Generator().manual_seed(seed)
    z0 = model.sample_latent(pairs, generator=seeded, device="cpu")
    z1 = model.sample_latent(pairs, generator=seeded, device="cpu")
    t = torch.linspace(0, 1, steps)
    start, end = z0.repeat_interleave(steps, 0), z1.repeat_interleave(steps, 0)
    weights = t.repeat(pairs)
    return (lerp if mode == "linear" else slerp)(start, end, weights)


@torch.no_grad()
def class_probabilities(classifier, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """[N, 10] softmax of the pinned classifier."""
    device = next(classifier.parameters()).device
    return torch.cat(
        [
            classifier(to_classifier_input(images[i : i + batch_size].to(device))).softmax(1).cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
    )


@torch.no_grad()
def latent_class_direction(
    model, classifier, from_class: int, to_class: int, n: int = 10000, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Unconditional G: d = mean(z | G(z) classified to_class) - mean(z | ... from_class).

    Returns (d, latents classified as ``from_class`` to start walks from, the class counts among n
    samples).
    """
    seeded = torch.Generator().manual_seed(seed)
    z = model.sample_latent(n, generator=seeded, device="cpu")
    predicted = class_probabilities(classifier, render(model, z)).argmax(1)
    counts = torch.bincount(predicted, minlength=10)
    for c in (from_class, to_class):
        if counts[c] < MIN_SAMPLES_PER_CLASS:
            raise ValueError(
                f"only {int(counts[c])} of {n} generated samples are classified as {c} (need "
                f"{MIN_SAMPLES_PER_CLASS}); samples per class: {counts.tolist()}. Choose "
                "from_class/to_class "
                "among the classes the model generates, or raise walk_samples"
            )
    direction = z[predicted == to_class].mean(0) - z[predicted == from_class].mean(0)
    return direction, z[predicted == from_class], {str(c): int(v) for c, v in enumerate(counts)}


@torch.no_grad()
def walk(
    model,
    classifier,
    from_class: int,
    to_class: int,
    rows: int,
    steps: int,
    scale: float,
    n: int = 10000,
    seed: int = 0,
) -> tuple[torch.Tensor, dict]:
    """A [rows * steps] image grid walking each row from ``from_class`` toward ``to_class``, and
    what the classifier says along it: per column, the mean P(to_class) and the share predicted as
    to_class.

    Unconditional G: z + a * d for a in [0, scale], starting from latents G maps to ``from_class``
    (d from ``latent_class_direction``). Class-conditional G: z fixed, the label vector moves from
    one-hot(from) to one-hot(to) (a in [0, 1]; ``scale`` is not used).
    """
    if from_class == to_class:
        raise ValueError(f"from_class and to_class must differ, both are {from_class}")
    alphas = torch.linspace(0, 1 if model.num_classes else scale, steps)
    info: dict = {
        "from_class": from_class,
        "to_class": to_class,
        "alphas": [round(a, 4) for a in alphas.tolist()],
    }
    if model.num_classes:
        seeded = torch.Generator().manual_seed(seed)
        z = model.sample_latent(rows, generator=seeded, device="cpu").repeat_interleave(steps, 0)
        eye = torch.eye(model.num_classes)
        mix = alphas.repeat(rows).view(-1, 1)
        labels = (1 - mix) * eye[from_class] + mix * eye[to_class]
        info["method"] = "label vector interpolation (conditional G)"
        images = render(model, z, labels)
    else:
        direction, starts, counts = latent_class_direction(
            model, classifier, from_class, to_class, n, seed
        )
        starts = starts[:rows]
        z = (
            starts.repeat_interleave(steps, 0)
            + alphas.repeat(starts.shape[0]).view(-1, 1) * direction
        )
        info.update(
            {
                "method": "difference of class-conditional latent means",
                "class_counts": counts,
                "direction_norm": round(direction.norm().item(), 4),
            }
        )
        images = render(model, z)
    probabilities = class_probabilities(classifier, images).view(-1, steps, 10)
    info["p_to_class"] = [round(v, 4) for v in probabilities[..., to_class].mean(0).tolist()]
    info["share_predicted_to_class"] = [
        round(v, 4) for v in (probabilities.argmax(2) == to_class).float().mean(0).tolist()
    ]
    info["p_from_class"] = [round(v, 4) for v in probabilities[..., from_class].mean(0).tolist()]
    return images, info


@torch.no_grad()
def real_pair_latents(
    model, images: torch.Tensor, pairs: int, steps: int, mode: str, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """An encoder model: [pairs * steps] latents, row i walking from Enc(a_i) to Enc(b_i) for two
    seeded random test images a_i, b_i; also the [pairs, 2, ...] images themselves."""

    if mode not in ("linear", "spherical"):
        raise ValueError(f"mode must be 'linear' or 'spherical', got {mode!r}")
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    chosen = images[order[: 2 * pairs]].view(pairs, 2, *images.shape[1:])
    z0, z1 = encode(model, chosen[:, 0]), encode(model, chosen[:, 1])
    weights = torch.linspace(0, 1, steps).repeat(pairs)
    start, end = z0.repeat_interleave(steps, 0), z1.repeat_interleave(steps, 0)
    return (lerp if mode == "linear" else slerp)(start, end, weights), chosen


@torch.no_grad()
def encoded_class_walk(
    model,
    classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    from_class: int,
    to_class: int,
    rows: int,
    steps: int,
    scale: float,
) -> tuple[torch.Tensor, dict]:
    """An encoder model's attribute vector (Larsen et al. 2016 Sec. 5.1): d = mean Enc(x) over real
    images of ``to_class`` - mean over ``from_class``; each row decodes Enc(x) + a d, a in [0,
    scale], for a real image x of ``from_class``. Returns the grid and the classifier's view."""

    if from_class == to_class:
        raise ValueError(f"from_class and to_class must differ, both are {from_class}")
    z = encode(model, images)
    direction = z[labels == to_class].mean(0) - z[labels == from_class].mean(0)
    starts = z[labels == from_class][:rows]
    alphas = torch.linspace(0, scale, steps)
    walk_z = starts.repeat_interleave(steps, 0) + alphas.repeat(starts.shape[0]).view(-1, 1) * (
        direction
    )
    decoded = render(model, walk_z)
    probabilities = class_probabilities(classifier, decoded).view(-1, steps, 10)
    info = {
        "method": "difference of the mean encodings of real test images of the two classes",
        "from_class": from_class,
        "to_class": to_class,
        "alphas": [round(a, 4) for a in alphas.tolist()],
        "direction_norm": round(direction.norm().item(), 4),
        "images_per_class": {str(c): int((labels == c).sum()) for c in (from_class, to_class)},
        "p_to_class": [round(v, 4) for v in probabilities[..., to_class].mean(0).tolist()],
        "share_predicted_to_class": [
            round(v, 4) for v in (probabilities.argmax(2) == to_class).float().mean(0).tolist()
        ],
    }
    return decoded, info
