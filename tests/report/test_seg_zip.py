"""DICOM SEG of a series read from a zip archive references the zipped source images."""

from __future__ import annotations

import zipfile

import highdicom as hd
import numpy as np

import lungdamage as ld
from lungdamage.phantom import make_phantom, write_dicom_series
from lungdamage.report import write_seg


def test_seg_of_zipped_series(tmp_path):
    ph = make_phantom(matrix=64, n_slices=24, slice_thickness_mm=5.0, vessels=False, truth_samples=2**10)
    files = write_dicom_series(ph.ct, tmp_path / "series", patient_id="Z1")
    with zipfile.ZipFile(tmp_path / "export.zip", "w") as zf:
        for f in files:
            zf.write(f, f"Z1/{f.name}")
    ct = ld.read_series(tmp_path / "export.zip")
    regions = ph.truth.lung_regions()
    path = write_seg(ct, regions, ld.get_scheme("covid"), tmp_path / "seg.dcm")
    seg = hd.seg.segread(path)
    import pydicom

    sop_uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    assert referenced == sop_uids
    right = seg.get_segment_numbers(segment_label="right")
    assert len(right) == 1
    vol = seg.get_volume(segment_numbers=right, combine_segments=True)
    assert int(np.count_nonzero(vol.array)) == int(np.count_nonzero(regions.labels == 1))
