"""Measured attributes of digit images: Morpho-MNIST's morphometrics (Castro et al. 2019, Sec. 3).

Each image is upsampled x4 (bicubic pyramid expansion), binarised at half its intensity range, and
measured in pixels of the original 28x28 grid:

- ``thickness``: twice the mean Euclidean distance to the background along the skeleton;
- ``length``: the length of the skeleton (unit steps 1, diagonal steps sqrt 2);
- ``slant``: arctan(-mu11 / mu02) of the intensity's second central moments, radians; > 0 leans
  right (the top of the digit to the right of its bottom);
- ``width`` / ``height``: the sides of the bounding parallelogram (the box sheared by the slant)
  that holds all but 2 % of the ink, 1 % on each side;
- ``area``: the binarised ink, px^2.

Vectorised over a batch: the images are tiled into one mosaic with background gaps, so
scikit-image's thinning and scipy's distance transform run once per batch (both are local: a gap
of background pixels keeps the tiles apart, and the result equals the per-image one exactly).
Morpho-MNIST takes the skeleton from ``medial_axis``, which breaks ties at random per image; we thin
with ``skeletonize`` (Zhang & Suen 1984), which is deterministic and tiles exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: the attributes a measurement returns, in this order
ATTRIBUTES = ("thickness", "slant", "width", "height", "length", "area")
#: the attributes a user may ask to control (area follows thickness and length)
CONTROLLABLE = ("thickness", "slant", "width", "height", "length")
UNITS = {
    "thickness": "px",
    "slant": "rad",
    "width": "px",
    "height": "px",
    "length": "px",
    "area": "px^2",
}

SCALE = 4
THRESHOLD = 0.5
BOUND_FRACTION = 0.02
_GAP = 2  # background pixels around each tile (hi-res): thinning and the EDT never cross it


def _as_unit_numpy(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """[N, H, W] float64 in [0, 1] from [N, (1,) H, W] images in [-1, 1] (tensors) or uint8."""
    if isinstance(images, torch.Tensor):
        array = images.detach().cpu()
        if array.dtype == torch.uint8:
            array = array.double() / 255.0
        else:
            array = (array.double() + 1.0) / 2.0
        array = array.numpy()
    else:
        array = np.asarray(images, dtype=np.float64)
        if np.asarray(images).dtype == np.uint8:
            array = array / 255.0
    if array.ndim == 4:
        if array.shape[1] != 1:
            raise ValueError(f"morphometry takes grey images, got {array.shape[1]} channels")
        array = array[:, 0]
    if array.ndim != 3:
        raise ValueError(f"morphometry takes [N, H, W] or [N, 1, H, W] images, got {array.shape}")
    return np.clip(array, 0.0, 1.0)


def upsample(images: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """[N, H, W] -> [N, sH, sW]: Morpho-MNIST's bicubic pyramid expansion, all images at once."""
    from skimage.transform import pyramid_expand

    stacked = np.moveaxis(images, 0, -1)  # the batch as channels: one call for all images
    return np.moveaxis(pyramid_expand(stacked, upscale=scale, order=3, channel_axis=-1), -1, 0)


def binarise(images: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Ink where the intensity reaches ``threshold`` of each image's own [min, max] range."""
    low = images.min(axis=(1, 2), keepdims=True)
    high = images.max(axis=(1, 2), keepdims=True)
    return (images >= low + (high - low) * threshold) & (high > low)


def _tile(binary: np.ndarray) -> tuple[np.ndarray, int]:
    """[N, h, w] -> one 2-D mosaic, each tile padded with ``_GAP`` background pixels."""
    n, h, w = binary.shape
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    padded = np.zeros((rows * columns, h + 2 * _GAP, w + 2 * _GAP), dtype=binary.dtype)
    padded[:n, _GAP : _GAP + h, _GAP : _GAP + w] = binary
    th, tw = padded.shape[1:]
    mosaic = padded.reshape(rows, columns, th, tw).transpose(0, 2, 1, 3).reshape(rows * th, -1)
    return mosaic, columns


def _untile(mosaic: np.ndarray, n: int, columns: int, h: int, w: int) -> np.ndarray:
    th, tw = h + 2 * _GAP, w + 2 * _GAP
    rows = mosaic.shape[0] // th
    tiles = mosaic.reshape(rows, th, columns, tw).transpose(0, 2, 1, 3).reshape(-1, th, tw)
    return tiles[:n, _GAP : _GAP + h, _GAP : _GAP + w]


def skeleton_and_distance(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: its skeleton (bool) and each ink pixel's Euclidean distance to the background."""
    from scipy.ndimage import distance_transform_edt
    from skimage.morphology import skeletonize

    n, h, w = binary.shape
    mosaic, columns = _tile(binary)
    skeleton = _untile(skeletonize(mosaic), n, columns, h, w)
    distance = _untile(distance_transform_edt(mosaic), n, columns, h, w)
    return skeleton, distance


def skeleton_length(skeleton: np.ndarray) -> np.ndarray:
    """Sum over skeleton links: 1 per horizontal / vertical neighbour pair, sqrt 2 per diagonal."""
    s = skeleton.astype(np.float64)
    right = (s[:, :, :-1] * s[:, :, 1:]).sum((1, 2))
    down = (s[:, :-1, :] * s[:, 1:, :]).sum((1, 2))
    down_right = (s[:, :-1, :-1] * s[:, 1:, 1:]).sum((1, 2))
    down_left = (s[:, :-1, 1:] * s[:, 1:, :-1]).sum((1, 2))
    return right + down + math.sqrt(2.0) * (down_right + down_left)


def _quantile_positions(cdf: np.ndarray, quantiles: tuple[float, float]) -> np.ndarray:
    """Row-wise ``np.interp(q, cdf[i], arange)``: where each cumulative curve crosses each q."""
    n, m = cdf.shape
    positions = np.empty((n, len(quantiles)))
    for k, q in enumerate(quantiles):
        j = np.clip((cdf <= q).sum(1) - 1, 0, m - 2)  # last index with cdf <= q
        rows = np.arange(n)
        below, above = cdf[rows, j], cdf[rows, j + 1]
        step = np.where(above > below, (q - below) / np.where(above > below, above - below, 1), 0)
        positions[:, k] = j + np.clip(step, 0.0, 1.0)
    return positions


def moments_and_box(
    images: np.ndarray, bound_fraction: float = BOUND_FRACTION
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slant, width, height) of [N, H, W] intensities, in radians and pixels of this grid."""
    n, h, w = images.shape
    mass = images.sum((1, 2))
    safe = np.where(mass > 0, mass, 1.0)
    x = np.arange(w, dtype=np.float64)[None, None, :]
    y = np.arange(h, dtype=np.float64)[None, :, None]
    mean_x = (images * x).sum((1, 2)) / safe
    mean_y = (images * y).sum((1, 2)) / safe
    mu11 = (images * x * y).sum((1, 2)) / safe - mean_x * mean_y
    mu02 = (images * y * y).sum((1, 2)) / safe - mean_y**2
    shear = np.where(mu02 > 0, mu11 / np.where(mu02 > 0, mu02, 1.0), 0.0)
    slant = np.arctan(-shear)

    # horizontal: the share of ink left of the sheared line x + 1/2 < t + shear (y - mean_y), for
    # t = 0 .. w-1; a pixel is left of every t above its sheared position u, so a histogram of
    # ceil-like bins of u, summed cumulatively, gives all t at once
    sheared = x + 0.5 - shear[:, None, None] * (y - mean_y[:, None, None])
    first_t = np.clip(np.floor(sheared).astype(np.int64) + 1, 0, w).reshape(n, -1)
    counts = np.zeros((n, w + 1))
    np.add.at(counts, (np.arange(n)[:, None], first_t), images.reshape(n, -1))
    horizontal = np.cumsum(counts, 1)[:, :w] / safe[:, None]
    # vertical: the share of ink in rows above t (y < t), t = 0 .. h-1
    row_mass = images.sum(2)
    vertical = np.concatenate([np.zeros((n, 1)), np.cumsum(row_mass, 1)[:, :-1]], 1) / safe[:, None]

    quantiles = (bound_fraction / 2, 1.0 - bound_fraction / 2)
    left, right = _quantile_positions(horizontal, quantiles).T
    top, bottom = _quantile_positions(vertical, quantiles).T
    return slant, right - left, bottom - top


def measure(
    images: torch.Tensor | np.ndarray, scale: int = SCALE, batch_size: int = 500
) -> dict[str, np.ndarray]:
    """Morphometrics of a batch of grey digit images ([-1, 1] floats or uint8): attribute -> [N].

    An image with no ink measures NaN for every attribute (there is no stroke to measure).
    """
    array = _as_unit_numpy(images)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ATTRIBUTES}
    for start in range(0, len(array), batch_size):
        chunk = array[start : start + batch_size]
        # a flat image has no stroke (its expansion's rounding noise must not binarise into one)
        flat = (chunk.max((1, 2)) - chunk.min((1, 2))) < 1e-6
        hires = upsample(chunk, scale)
        hires[flat] = 0.0
        binary = binarise(hires)
        skeleton, distance = skeleton_and_distance(binary)
        pixels = skeleton.sum((1, 2))
        has_ink = pixels > 0
        along = (distance * skeleton).sum((1, 2)) / np.where(has_ink, pixels, 1)
        slant, width, height = moments_and_box(hires)
        measured = {
            "thickness": 2.0 * along / scale,
            "slant": slant,
            "width": width / scale,
            "height": height / scale,
            "length": skeleton_length(skeleton) / scale,
            "area": binary.sum((1, 2)) / scale**2,
        }
        for name, values in measured.items():
            parts[name].append(np.where(has_ink, values, np.nan))
    if not len(array):
        return {name: np.zeros(0) for name in ATTRIBUTES}
    return {name: np.concatenate(values) for name, values in parts.items()}


def as_matrix(measured: dict[str, np.ndarray], names=ATTRIBUTES) -> np.ndarray:
    """[N, len(names)] from a ``measure`` result."""
    return np.stack([measured[name] for name in names], 1)
