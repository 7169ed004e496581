"""Sampling from a trained generator: images, grids, labels (generation) and latent walks
(interpolation). The callbacks, evaluate.py, sample.py and interpolate.py all sample through
here."""

from src.sampling.generation import (
    balanced_labels,
    encode,
    generate,
    has_encoder,
    image_grid,
    reconstruct,
    reconstruction_pairs,
    render,
    requested_labels,
    save_grid,
    to_uint8,
)

__all__ = [
    "balanced_labels",
    "encode",
    "generate",
    "has_encoder",
    "image_grid",
    "reconstruct",
    "reconstruction_pairs",
    "render",
    "requested_labels",
    "save_grid",
    "to_uint8",
]
