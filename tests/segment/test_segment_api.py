"""segment_lungs dispatch, input checks and geometry handling on small synthetic volumes."""

from __future__ import annotations

import numpy as np
import pytest
from _segdata import dice

from lungdamage import CTVolume, InputError, LungDamageError, ScanMeta, SegmentationError
from lungdamage.segment import approx_lobes, segment_lungs, zones_from_lungs
from lungdamage.segment.lobes import LobeCoverageError


def _thorax(n_slices: int = 1, spacing=(5.0, 1.0, 1.0), seed: int = 0):
    """Ellipse body (+40 HU) with two elliptic lungs (-850 HU), noise 15 HU; SPL axes.

    Returns the CT and the true lung labels (1 right = low column index = low LPS x).
    """
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:200, 0:240].astype(float)
    body = ((r - 100) / 80) ** 2 + ((c - 120) / 110) ** 2 <= 1
    right = ((r - 100) / 55) ** 2 + ((c - 72) / 38) ** 2 <= 1
    left = ((r - 100) / 55) ** 2 + ((c - 168) / 38) ** 2 <= 1
    sl = np.where(body, 40, -1000).astype(np.int16)
    sl[right | left] = -850
    truth = np.zeros(sl.shape, np.uint8)
    truth[right], truth[left] = 1, 2
    hu = np.repeat(sl[None], n_slices, axis=0) + rng.normal(0, 15, (n_slices, *sl.shape)).astype(np.int16)
    ct = CTVolume(hu, spacing, meta=ScanMeta(series_uid="1.2.3.4"))
    return ct, np.repeat(truth[None], n_slices, axis=0)


@pytest.mark.parametrize("n_slices,spacing", [(1, (5.0, 1.0, 1.0)), (4, (0.5, 0.6, 0.6)), (3, (5.0, 0.8, 0.8))])
def test_single_and_few_slices_any_spacing(n_slices, spacing):
    ct, truth = _thorax(n_slices, spacing)
    rm = segment_lungs(ct)
    assert rm.labels.shape == ct.shape and rm.labels.dtype == np.uint8
    assert dice(rm.labels == 1, truth == 1) >= 0.97
    assert dice(rm.labels == 2, truth == 2) >= 0.97


def test_sides_follow_direction_not_array_order():
    ct, truth = _thorax(1)
    d = ct.direction.copy()
    d[:, 2] *= -1  # columns now run towards patient right
    mirrored = CTVolume(ct.hu, ct.spacing_mm, ct.origin_lps, d, ct.meta)
    rm = segment_lungs(mirrored)
    assert dice(rm.labels == 1, truth == 2) >= 0.97  # the high-column lung is now the right one


def test_no_lung_raises_with_uid_and_fix():
    ct = CTVolume(np.full((2, 64, 64), 40, np.int16), (2.5, 1.0, 1.0), meta=ScanMeta(series_uid="9.9.9"))
    with pytest.raises(SegmentationError, match=r"9\.9\.9.*Potential fix"):
        segment_lungs(ct)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"method": "watershed"}, "Allowed: threshold, lungmask"),
        ({"regions": "segments"}, "Allowed: lungs, zones, lobes"),
        ({"label_codes": "totalsegmentator"}, "only used with regions_from"),
        ({"regions_from": "x.nii.gz"}, "needs label_codes"),
    ],
)
def test_bad_arguments(kwargs, match):
    ct, _ = _thorax(1)
    with pytest.raises(InputError, match=match):
        segment_lungs(ct, **kwargs)


def test_zones_thirds_by_height_and_orientation():
    ct, truth = _thorax(9, (3.0, 1.0, 1.0))
    zones = segment_lungs(ct, regions="zones")
    # default direction: slice index grows superiorly -> top three slices are the upper zone
    assert set(np.unique(zones.labels[6:][truth[6:] == 1])) == {1}
    assert set(np.unique(zones.labels[3:6][truth[3:6] == 1])) == {2}
    assert set(np.unique(zones.labels[:3][truth[:3] == 2])) == {6}
    # reverse the slice direction: the same array slices become inferior
    d = ct.direction.copy()
    d[:, 0] *= -1
    rev = CTVolume(ct.hu, ct.spacing_mm, ct.origin_lps, d, ct.meta)
    zr = zones_from_lungs(rev, segment_lungs(rev))
    assert set(np.unique(zr.labels[6:][truth[6:] == 1])) == {3}
    single = segment_lungs(_thorax(1)[0], regions="zones")
    assert set(np.unique(single.labels)) == {0, 2, 5}  # one slice: the middle third


def test_approx_lobes_are_labelled_approx_and_partition_lungs():
    # cylinders through every slice: neither apex nor base is in the scan
    ct, truth = _thorax(12, (10.0, 1.0, 1.0))
    lungs = segment_lungs(ct)
    with pytest.raises(LobeCoverageError, match="right lung: apex and base not in the scan") as info:
        approx_lobes(ct, lungs)
    assert "--partial-lobes" in str(info.value) and "lungdamage models download" in str(info.value)
    with pytest.raises(LobeCoverageError):
        segment_lungs(ct, regions="lobes")
    lobes = approx_lobes(ct, lungs, allow_partial=True)
    assert lobes.region_set == "lobes-approx" and lobes.method == "threshold"
    assert "partial scan" in lobes.info["warnings"][0]
    np.testing.assert_array_equal(lobes.to_lungs().labels, lungs.labels)
    counts = lobes.voxel_counts()
    assert all(counts[n] > 0 for n in ("RUL", "RML", "RLL", "LUL", "LLL"))
    assert segment_lungs(ct, regions="lobes", partial_lobes=True).region_set == "lobes-approx"


def test_lungmask_dispatch_is_lazy():
    """method='lungmask' goes to the optional backend (error or result, never the threshold path)."""
    ct, _ = _thorax(1)
    try:
        rm = segment_lungs(ct, method="lungmask")
    except (ImportError, LungDamageError) as exc:  # backend or weights missing
        assert "lungmask" in str(exc).lower() or "weights" in str(exc).lower()
    else:
        assert rm.method.startswith("lungmask")


def test_single_coronal_slice_is_refused_clearly():
    import pytest

    from lungdamage.errors import SegmentationError
    from lungdamage.phantom import make_phantom
    from lungdamage.volume import CTVolume

    ph = make_phantom(matrix=96, slice_thickness_mm=5.0, vessels=False, truth_samples=2**10)
    # one coronal slice: array axis 0 along anterior-posterior
    hu = ph.ct.hu[:, 48:49, :].transpose(1, 0, 2)
    d = ph.ct.direction[:, [1, 0, 2]]
    sp = tuple(ph.ct.spacing_mm[k] for k in (1, 0, 2))
    coronal = CTVolume(hu, sp, ph.ct.origin_lps, d)
    with pytest.raises(SegmentationError, match="non-axial"):
        segment_lungs(coronal)
