"""Sampling from a trained generator: images, grids, labels (generation), latent walks
(interpolation) and image-to-image translations (translation). The callbacks, evaluate.py,
sample.py, interpolate.py and translate.py all sample through here."""

from src.sampling.generation import (
    balanced_labels,
    encode,
    generate,
    grid_layout,
    has_encoder,
    image_grid,
    reconstruct,
    reconstruction_pairs,
    render,
    requested_labels,
    save_grid,
    seeded_latents,
)
from src.sampling.translation import (
    IdentityTranslator,
    is_translator,
    translate_images,
    translation_triplets,
)

__all__ = [
    "balanced_labels",
    "encode",
    "generate",
    "grid_layout",
    "has_encoder",
    "IdentityTranslator",
    "is_translator",
    "translate_images",
    "translation_triplets",
    "image_grid",
    "reconstruct",
    "reconstruction_pairs",
    "render",
    "requested_labels",
    "save_grid",
    "seeded_latents",
]
