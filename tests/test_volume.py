"""CTVolume geometry against SimpleITK's own index -> physical mapping."""

from __future__ import annotations

import numpy as np
import pytest

from lungdamage import CTVolume, ScanMeta


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@pytest.mark.parametrize("angles", [(0, 0, 0), (0.3, -0.2, 1.1), (np.pi, 0, 0)])
def test_index_to_lps_matches_simpleitk(angles):
    rng = np.random.default_rng(1)
    hu = rng.integers(-1000, 1000, size=(5, 6, 7)).astype(np.int16)
    direction = rotation(*angles)
    ct = CTVolume(hu, (2.5, 0.7, 0.8), (-10.0, 20.0, -300.0), direction)
    img = ct.to_sitk()
    for k, i, j in [(0, 0, 0), (4, 5, 6), (2, 1, 3)]:
        expected = img.TransformIndexToPhysicalPoint((j, i, k))  # SimpleITK index is (x, y, z)
        np.testing.assert_allclose(ct.index_to_lps([k, i, j]), expected, atol=1e-9)
        assert img[j, i, k] == hu[k, i, j]
    back = CTVolume.from_sitk(img)
    assert back.same_grid(ct)
    np.testing.assert_array_equal(back.hu, hu)


def test_volume_is_immutable_and_with_array_keeps_geometry():
    ct = CTVolume(np.zeros((2, 3, 4), np.int16), (1, 2, 3), meta=ScanMeta(series_uid="1.2.3"))
    with pytest.raises(ValueError):
        ct.hu[0, 0, 0] = 5
    other = ct.with_array(np.ones((2, 3, 4), np.int16))
    assert other.same_grid(ct) and other.meta.series_uid == "1.2.3"
    assert ct.voxel_volume_ml == pytest.approx(0.006)
    assert "orientation='SPL'" in repr(ct) and "1.2.3" in repr(ct)
    with pytest.raises(ValueError, match="shape"):
        ct.with_array(np.zeros((2, 3, 5), np.int16))


def test_single_slice_becomes_3d_and_bad_spacing_is_refused():
    ct = CTVolume(np.zeros((3, 4), np.int16), (5, 1, 1))
    assert ct.shape == (1, 3, 4)
    with pytest.raises(ValueError, match="spacing_mm"):
        CTVolume(np.zeros((1, 3, 4), np.int16), (0, 1, 1))
