"""``regions_from`` a DICOM SEG: segments named by region, frames placed by their source images."""

from __future__ import annotations

import numpy as np
import pytest

import lungdamage as ld
from lungdamage.errors import GeometryError
from lungdamage.phantom import make_phantom, write_dicom_series
from lungdamage.report import write_seg


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg_import")
    ph = make_phantom(matrix=64, n_slices=32, slice_thickness_mm=5.0, vessels=False, truth_samples=2**10, seed=2)
    write_dicom_series(ph.ct, root / "series", patient_id="S1")
    ct = ld.read_series(root / "series")
    return root, ph, ct


def test_lobe_seg_round_trips_exactly(scan):
    root, ph, ct = scan
    path = write_seg(ct, ph.truth.lobe_regions(), ld.get_scheme("covid"), root / "lobes_seg.dcm")
    rm = ld.segment_lungs(ct, regions_from=path, regions="lobes")
    assert rm.region_set == "lobes" and rm.method == "labels:lobes_seg.dcm"
    np.testing.assert_array_equal(rm.labels, ph.truth.lobes)
    # the same SEG scored: per-lobe volumes equal the truth label counts
    df = ld.score(ct, rm).to_frame().set_index("region")
    for code, name in rm.names.items():
        assert df.loc[name, "voxels"] == np.count_nonzero(ph.truth.lobes == code)


def test_seg_on_a_ct_not_read_from_dicom_is_refused(scan):
    root, ph, ct = scan
    path = write_seg(ct, ph.truth.lung_regions(), ld.get_scheme("covid"), root / "lungs_seg.dcm")
    with pytest.raises(GeometryError, match="DICOM slices"):
        ld.segment_lungs(ph.ct, regions_from=path)
    rm = ld.segment_lungs(ct, regions_from=path)
    np.testing.assert_array_equal(rm.labels, ph.truth.lungs)
