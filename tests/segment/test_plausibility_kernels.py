"""The plausibility checks' fast kernels against scipy.ndimage (the independent reference)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from lungdamage.segment.plausibility import _CROSS2D, _dilate_cross2d, _erode_cross2d, _mask_box


def _random_masks(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        shape = tuple(int(s) for s in rng.integers(1, 9, 3))
        yield rng.random(shape) < rng.random()


@pytest.mark.parametrize("seed", [0, 1])
def test_cross2d_erosion_and_dilation_equal_ndimage(seed: int) -> None:
    for mask in _random_masks(seed):
        for m in (mask, np.moveaxis(mask, 2, 0)):  # contiguous and strided (moved-axis) views
            assert np.array_equal(_erode_cross2d(m), ndimage.binary_erosion(m, structure=_CROSS2D, border_value=0))
            assert np.array_equal(_dilate_cross2d(m), ndimage.binary_dilation(m, structure=_CROSS2D))


def _reference_box(labels: np.ndarray, codes: tuple[int, int]):
    boxes = ndimage.find_objects(labels, max_label=max(codes))
    found = [boxes[c - 1] for c in codes if boxes[c - 1] is not None]
    if not found:
        return None
    return tuple(slice(min(b[a].start for b in found), max(b[a].stop for b in found)) for a in range(3))


@pytest.mark.parametrize("codes", [(1, 2), (2, 1), (1, 3)])
def test_mask_box_equals_find_objects(codes: tuple[int, int]) -> None:
    rng = np.random.default_rng(7)
    for _ in range(100):
        shape = tuple(int(s) for s in rng.integers(1, 12, 3))
        labels = ((rng.random(shape) < 0.05 * rng.random()) * rng.integers(0, 4, shape)).astype(np.uint8)
        assert _mask_box(labels, codes) == _reference_box(labels, codes)


def test_mask_box_ignores_other_codes() -> None:
    labels = np.zeros((10, 12, 14), np.uint8)
    labels[2:4, 3:5, 4:6] = 1
    labels[8, 10, 12] = 3  # not a lung code: outside the box
    assert _mask_box(labels, (1, 2)) == (slice(2, 4), slice(3, 5), slice(4, 6))
