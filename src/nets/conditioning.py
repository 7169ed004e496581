"""Label inputs of class-conditional nets: one-hot vectors for G's latent and D's input."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_vectors(labels: torch.Tensor | None, num_classes: int, batch_size: int) -> torch.Tensor:
    """[N, C] float label vectors from class indices [N] (one-hot) or already [N, C] vectors (kept:
    a mix of two one-hots conditions G between two classes)."""
    if labels is None:
        raise ValueError(f"this net is conditioned on {num_classes} classes: labels are required")
    if labels.dtype.is_floating_point:
        if labels.shape != (batch_size, num_classes):
            raise ValueError(
                f"label vectors must have shape ({batch_size}, {num_classes}), got "
                f"{tuple(labels.shape)}"
            )
        return labels
    if labels.shape != (batch_size,):
        raise ValueError(f"class labels must have shape ({batch_size},), got {tuple(labels.shape)}")
    return F.one_hot(labels.long(), num_classes).float()


def check_unconditional(labels: torch.Tensor | None, net: str) -> None:
    if labels is not None:
        raise ValueError(f"{net} was built without num_classes, so it takes no labels")


def append_label_vectors(
    h: torch.Tensor, labels: torch.Tensor | None, num_classes: int, net: str
) -> torch.Tensor:
    """``h`` [N, F] with the [N, C] label vectors appended (a conditional net), or ``h`` itself when
    the net has no classes (then no labels may be given)."""
    if not num_classes:
        check_unconditional(labels, net)
        return h
    return torch.cat([h, label_vectors(labels, num_classes, h.shape[0])], dim=1)
