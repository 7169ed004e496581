"""Morphometry on strokes of known geometry (numbers, not shapes), and on real MNIST digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from src.metrics import morphometry
from src.metrics.morphometry import measure

SUBPIXELS = 8


def draw(inside) -> np.ndarray:
    """A 28x28 image in [0, 1]: ``inside(x, y)`` (28-px coordinates) averaged over 8x8 subpixels
    per pixel, so edges are anti-aliased as a scanned stroke is."""
    centres = (np.arange(28 * SUBPIXELS) + 0.5) / SUBPIXELS
    x, y = np.meshgrid(centres, centres)
    ink = inside(x, y).astype(np.float64)
    return ink.reshape(28, SUBPIXELS, 28, SUBPIXELS).mean((1, 3))


def bar(thickness: float, height: float = 16.0, slant: float = 0.0):
    """A stroke through (14, 14), ``slant`` radians from vertical (> 0: top to the right)."""

    def inside(x, y):
        centre_x = 14.0 - math.tan(slant) * (y - 14.0)
        return (np.abs(x - centre_x) * math.cos(slant) <= thickness / 2) & (
            np.abs(y - 14.0) <= height / 2
        )

    return inside


def ring(radius: float, thickness: float):
    return lambda x, y: np.abs(np.hypot(x - 14.0, y - 14.0) - radius) <= thickness / 2


def box(width: float, height: float):
    return lambda x, y: (np.abs(x - 14.0) <= width / 2) & (np.abs(y - 14.0) <= height / 2)


def test_thickness_of_bars_and_rings():
    thick = [2.0, 3.0, 4.0, 5.0]
    measured = measure(np.stack([draw(bar(t)) for t in thick] + [draw(ring(8, 2.0))]))
    np.testing.assert_allclose(measured["thickness"][:4], thick, atol=0.1)
    assert measured["thickness"][4] == pytest.approx(2.0, abs=0.1)


def test_slant_in_radians_positive_leaning_right():
    slants = [-0.4, -0.2, 0.0, 0.2, 0.4]
    measured = measure(np.stack([draw(bar(2.5, slant=s)) for s in slants]))
    np.testing.assert_allclose(measured["slant"], slants, atol=0.01)
    # slanting does not make the stroke thicker (the measure is across the stroke)
    np.testing.assert_allclose(measured["thickness"], 2.5, atol=0.1)


def test_width_and_height_follow_the_box():
    widths = [6.0, 8.0, 10.0, 12.0]
    measured = measure(np.stack([draw(box(w, 16.0)) for w in widths]))
    # 98 % of the ink: each extra pixel of box adds up to 0.98 px (less: the blur of the x4
    # expansion moves part of the outer 1 % into the tails); the blur's tails add 0.6 - 1 px
    np.testing.assert_allclose(np.diff(measured["width"]), 1.88, atol=0.1)
    excess = measured["width"] - np.array(widths) * 0.98
    assert ((excess > 0.3) & (excess < 1.1)).all(), excess
    assert 0.3 < measured["height"].mean() - 16 * 0.98 < 1.1
    tall = measure(draw(box(6.0, 20.0))[None])
    assert tall["height"][0] - measured["height"][0] == pytest.approx(3.8, abs=0.2)


def test_length_of_rings_and_bars():
    radii = [6.0, 8.0, 10.0]
    rings = measure(np.stack([draw(ring(r, 2.0)) for r in radii]))
    # unit and diagonal steps over-measure a circle by ~5 % (Freeman chain codes)
    np.testing.assert_allclose(rings["length"], [2 * math.pi * r for r in radii], rtol=0.07)
    bars = measure(np.stack([draw(bar(2.0, height=h)) for h in (10.0, 16.0, 20.0)]))
    # a skeleton stops about a half-thickness short of each end
    np.testing.assert_allclose(bars["length"], np.array([10.0, 16.0, 20.0]) - 2.4, atol=0.6)
    np.testing.assert_allclose(np.diff(bars["length"]), [6.0, 4.0], atol=0.3)


def test_a_blank_image_measures_nan_not_zero():
    measured = measure(np.stack([np.zeros((28, 28)), draw(bar(3.0))]))
    assert all(np.isnan(measured[name][0]) for name in morphometry.ATTRIBUTES)
    assert measured["thickness"][1] == pytest.approx(3.0, abs=0.1)


def test_inputs_in_any_project_format_agree():
    image = draw(bar(3.0, slant=0.2))
    signed = torch.from_numpy(image * 2 - 1).float()[None, None]
    as_uint8 = torch.from_numpy(np.round(image * 255)).to(torch.uint8)[None]
    a, b = measure(signed), measure(as_uint8)
    for name in morphometry.ATTRIBUTES:
        assert a[name][0] == pytest.approx(b[name][0], rel=0.02, abs=0.02)
    with pytest.raises(ValueError, match="grey"):
        measure(torch.zeros(2, 3, 28, 28))


def _reference_box(image: np.ndarray, fraction: float = 0.02):
    """The bounding parallelogram by explicit loops over thresholds (the definition, slowly)."""
    h, w = image.shape
    x, y = np.arange(w)[None, :], np.arange(h)[:, None]
    mass = image.sum()
    mx, my = (x * image).sum() / mass, (y * image).sum() / mass
    shear = ((x * y * image).sum() / mass - mx * my) / ((y * y * image).sum() / mass - my**2)
    horizontal = [((x + 0.5 < t + shear * (y - my)) * image).sum() / mass for t in range(w)]
    vertical = [((y < t) * image).sum() / mass for t in range(h)]
    q = [fraction / 2, 1 - fraction / 2]
    left, right = np.interp(q, horizontal, np.arange(w))
    top, bottom = np.interp(q, vertical, np.arange(h))
    return math.atan(-shear), right - left, bottom - top


def test_vectorised_batch_equals_one_image_at_a_time(mnist_test_digits):
    images = mnist_test_digits[:24]
    batch = measure(images)
    for i in (0, 7, 23):
        single = measure(images[i : i + 1])
        for name in morphometry.ATTRIBUTES:
            assert batch[name][i] == pytest.approx(single[name][0], abs=1e-9)
    hires = morphometry.upsample(morphometry._as_unit_numpy(images[:6]))
    slant, width, height = morphometry.moments_and_box(hires)
    for i in range(6):
        np.testing.assert_allclose(
            _reference_box(hires[i]), (slant[i], width[i], height[i]), atol=1e-9
        )


def test_real_digits_per_class(mnist_test_digits, mnist_test_labels):
    measured = measure(mnist_test_digits)
    labels = mnist_test_labels.numpy()
    ones, zeros = labels == 1, labels == 0
    # MNIST digits are scaled into a 20 x 20 box: about 19 px tall; a one is the narrowest digit
    assert 18.0 < np.mean(measured["height"]) < 20.5
    assert np.mean(measured["width"][ones]) + 5 < np.mean(measured["width"][zeros])
    assert 1.5 < np.mean(measured["thickness"]) < 3.5
    assert abs(np.mean(measured["slant"])) < 0.15
    assert np.isfinite(measured["length"]).all()
