"""The classical segmentation's fast kernels against plain reference computations.

Block mean (exact integer sums in slabs) against the float64 mean of edge-padded blocks;
the per-slice disk closing (squared Maurer distances on stacked slices) against SciPy's
binary closing with the same Euclidean disk; the depth below the body surface against SciPy's
exact Euclidean distance transform, slice by slice; the outside-field test on constant padding
next to noisy air.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from lungdamage.segment.lungs import _block_mean, _closing2d, _depth_mm, _outside_field


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("shape", [(3, 10, 11), (2, 9, 9), (1, 7, 5), (5, 13, 16)])
def test_block_mean_is_the_mean_of_edge_padded_blocks(shape, factor):
    rng = np.random.default_rng(factor)
    hu = rng.integers(-32768, 32768, shape).astype(np.int16)
    s, r, c = shape
    padded = np.pad(hu.astype(np.float64), ((0, 0), (0, (-r) % factor), (0, (-c) % factor)), mode="edge")
    ref = padded.reshape(s, padded.shape[1] // factor, factor, padded.shape[2] // factor, factor).mean(axis=(2, 4))
    got = _block_mean(hu, factor)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-3)
    # a non-contiguous view (a transposed series) gives the same
    view = np.ascontiguousarray(hu.transpose(0, 2, 1)).transpose(0, 2, 1)[:, ::-1]
    np.testing.assert_array_equal(_block_mean(view, factor), _block_mean(np.ascontiguousarray(view), factor))


def _disk(radius_mm: float, pixel_mm: tuple[float, float]) -> np.ndarray:
    nr, nc = int(radius_mm // pixel_mm[0]), int(radius_mm // pixel_mm[1])
    rr, cc = np.mgrid[-nr: nr + 1, -nc: nc + 1]
    return (rr * pixel_mm[0]) ** 2 + (cc * pixel_mm[1]) ** 2 <= radius_mm**2


@pytest.mark.parametrize("seed", range(6))
def test_disk_closing_equals_scipy_closing_per_slice(seed):
    rng = np.random.default_rng(seed)
    mask = ndimage.gaussian_filter(rng.random((4, 40, 50)), 3) > 0.52
    pixel_mm = (float(rng.uniform(1.0, 4.0)), float(rng.uniform(1.0, 4.0)))
    radius_mm = float(rng.uniform(3.0, 30.0)) + 0.0137  # off the lattice distances
    pad = int(radius_mm / min(pixel_mm)) + 2
    footprint = _disk(radius_mm, pixel_mm)[None]
    padded = np.pad(mask, ((0, 0), (pad, pad), (pad, pad)))
    ref = ndimage.binary_closing(padded, structure=footprint)[:, pad:-pad, pad:-pad]
    np.testing.assert_array_equal(_closing2d(mask, radius_mm, pixel_mm), ref)


def test_depth_below_the_body_surface_equals_scipy_per_slice():
    rng = np.random.default_rng(7)
    body = ndimage.gaussian_filter(rng.random((3, 30, 34)), 3) > 0.45
    pixel_mm = (0.9, 1.1)
    box = (slice(0, 3), slice(3, 27), slice(5, 30))
    coarse = np.pad(body[:, ::2, ::2], ((0, 0), (1, 1), (1, 1)))
    ref = np.stack([ndimage.distance_transform_edt(sl, sampling=(2 * pixel_mm[0], 2 * pixel_mm[1]))
                    for sl in coarse])[:, 1:-1, 1:-1]
    ref = np.repeat(np.repeat(ref, 2, axis=1), 2, axis=2)[:, : body.shape[1], : body.shape[2]][box]
    np.testing.assert_allclose(_depth_mm(body, pixel_mm, box), ref, rtol=1e-5, atol=1e-4)


def test_constant_padding_is_outside_the_field_and_noisy_air_is_not():
    rng = np.random.default_rng(3)
    lowres_hu = (-1010.0 + rng.normal(0, 8, (2, 30, 30))).astype(np.float32)  # noisy air, partly <= -1000
    lowres_hu[:, :, :8] = -1024.0  # the scanner's constant padding
    lowres_hu[:, 12:18, 12:18] = 40.0  # a body
    pad = _outside_field(lowres_hu)
    # the constant columns and their rim (at most 2 pixels, only through air <= -1000 HU)
    assert pad[:, :, :8].all()
    assert not pad[:, :, 11:].any()
    lowres_hu[:, :, :8] = -2048.0  # padding below -1100 HU is outside whatever its pattern
    assert _outside_field(lowres_hu)[:, :, :8].all()
