"""``qc_flags``: plausibility checks on the lung mask (issue 12).

Clean scans (phantom, CIP ``ct-64``, the sample DICOM series) carry no flag;
each deliberately broken case carries its own flag, and the column survives
the SQLite batch store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _segdata import REALDATA

from lungdamage.pipeline import analyze_scan
from lungdamage.regions import LUNG_CODES, RegionMap
from lungdamage.segment import segment_lungs
from lungdamage.segment.plausibility import QC_FLAGS, qc_checks, qc_flags
from lungdamage.volume import CTVolume

phantom = pytest.importorskip("lungdamage.phantom")
SAMPLES = Path(__file__).resolve().parents[2] / "sample_dicom"


@pytest.fixture(scope="module")
def ph():
    return phantom.make_phantom(matrix=128, slice_thickness_mm=2.5, seed=0)


def _crop(ct: CTVolume, sl) -> CTVolume:
    origin = ct.index_to_lps([s.start or 0 for s in sl])
    return CTVolume(np.ascontiguousarray(ct.hu[sl]), ct.spacing_mm, tuple(origin), ct.direction, ct.meta)


def test_clean_phantom_has_no_flag(ph):
    assert qc_flags(ph.ct, segment_lungs(ph.ct)) == ()
    assert qc_flags(ph.ct, ph.truth.lung_regions()) == ()


@pytest.mark.realdata
@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata not present")
def test_clean_cip_has_no_flag():
    from lungdamage.io.images import read_image

    ct = read_image(REALDATA / "cip" / "ct-64.nrrd")
    assert qc_flags(ct, segment_lungs(ct)) == ()


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="sample_dicom not present")
@pytest.mark.parametrize("series", sorted(p.name for p in SAMPLES.glob("P001/*") if p.is_dir()))
def test_clean_sample_series_have_no_flag(series):
    res = analyze_scan(SAMPLES / "P001" / series).result
    assert res.qc_flags == ()
    assert set(res.to_frame()["qc_flags"]) == {""}


def test_one_sided_crop_is_flagged(ph):
    c = ph.ct.shape[2]
    ct = _crop(ph.ct, (slice(None), slice(None), slice(0, c // 2 - 4)))
    flags = qc_flags(ct, segment_lungs(ct))
    assert "right_left_ratio" in flags and "mask_on_border" in flags


def test_missing_apex_and_base_are_flagged(ph):
    n = ph.ct.shape[0]
    top = _crop(ph.ct, (slice(0, int(0.8 * n)), slice(None), slice(None)))  # slice 0 = inferior
    assert "apex_not_covered" in qc_flags(top, segment_lungs(top))
    bottom = _crop(ph.ct, (slice(int(0.3 * n), n), slice(None), slice(None)))
    assert "base_not_covered" in qc_flags(bottom, segment_lungs(bottom))


def test_shifted_calibration_is_flagged_by_tracheal_air(ph):
    shifted = ph.ct.with_array((ph.ct.hu.astype(np.int32) + 80).clip(-1024, 3071).astype(np.int16))
    checks = qc_checks(shifted, segment_lungs(shifted))
    assert [c.flag for c in checks] == ["trachea_air_hu"]
    assert "-92" in checks[0].message  # about -1000 + 80


def test_gas_in_the_mask_and_implausible_volume_are_flagged(ph):
    labels = np.array(ph.truth.lungs)
    # a block of outside air (below the table) taken into the left lung's mask
    labels[:, -12:, 40:80] = 2
    flags = qc_flags(ph.ct, RegionMap(labels, dict(LUNG_CODES), method="test", region_set="lungs"))
    assert "gas_in_mask" in flags
    # the same lungs on a grid of 4x larger voxels: 4x the volume for the same coverage
    big = CTVolume(ph.ct.hu, tuple(s * 4 ** (1 / 3) for s in ph.ct.spacing_mm), ph.ct.origin_lps,
                   ph.ct.direction, ph.ct.meta)
    assert "lung_volume" in qc_flags(big, ph.truth.lung_regions())


def test_flags_are_known_names_and_reach_the_store(ph, tmp_path):
    from lungdamage.batch import ResultStore, load_results

    c = ph.ct.shape[2]
    ct = _crop(ph.ct, (slice(None), slice(None), slice(0, c // 2 - 4)))
    ct = ct.with_meta(series_uid="1.2.3.4.5")
    res = analyze_scan(ct).result
    assert set(res.qc_flags) <= set(QC_FLAGS) and res.qc_flags
    assert any("one lung only" in w for w in res.warnings)
    frame = res.to_frame()
    cols = list(frame.columns)
    assert cols.index("qc_flags") < cols.index("method")  # before the provenance columns
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.save_result(res, run_hash="h", version="v")
    back = load_results(tmp_path / "r.sqlite")
    assert list(back["qc_flags"]) == list(frame["qc_flags"]) == [";".join(res.qc_flags)] * len(frame)
