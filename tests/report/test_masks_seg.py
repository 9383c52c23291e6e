"""Label maps (NIfTI, .seg.nrrd, colour tables) and DICOM SEG read back against the truth."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from lungdamage.errors import InputError
from lungdamage.pipeline import Analysis
from lungdamage.report import write_review
from lungdamage.report.masks import band_map, write_masks
from lungdamage.report.seg import write_seg
from lungdamage.score import get_scheme
from lungdamage.volume import CTVolume


def test_band_map_half_open_edges():
    from lungdamage.regions import RegionMap

    hu = np.array([[[-951, -950, -701, -700, -301, -300, 99, 100, 0]]], np.int16)
    ct = CTVolume(hu, (1, 1, 1))
    regions = RegionMap(np.array([[[1, 1, 1, 1, 1, 1, 1, 1, 0]]], np.uint8), {1: "right"})
    # covid: emphysema 1 < -950 <= aerated 2 < -700 <= ggo 3 < -300 <= consolidation 4 < 100 <= dense 5
    assert band_map(ct, regions, get_scheme("covid")).ravel().tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 0]


def test_masks_read_back_with_ct_geometry_and_counts(tmp_path, synth_analysis, synth):
    a = synth_analysis
    files = write_masks(a.ct, a.regions, a.result.scheme, tmp_path, stem="s")
    bands = list(a.result.scheme.band_names)
    total = a.result.regions.index("total")
    expected_bands = a.result.band_voxels()[total]
    for kind in ("nifti", "nrrd"):
        reg = sitk.ReadImage(str(files[f"regions_{kind}"]))
        bnd = sitk.ReadImage(str(files[f"bands_{kind}"]))
        for img in (reg, bnd):
            assert a.ct.same_grid(img, atol_mm=1e-4)
        r = sitk.GetArrayFromImage(reg)
        b = sitk.GetArrayFromImage(bnd)
        # regions: identical to the truth lungs, counts equal the scores
        assert np.array_equal(r, synth.lungs)
        assert [int((r == c).sum()) for c in (1, 2)] == a.result.voxels[:2].tolist()
        # bands: counts equal the scored total row, and the lesion bands equal the truth lesions
        counts = np.bincount(b.ravel(), minlength=len(bands) + 1)
        assert counts[1:].tolist() == expected_bands.tolist()
        assert np.array_equal(b == bands.index("ggo") + 1, synth.ggo)
        assert np.array_equal(b == bands.index("consolidation") + 1, synth.consolidation)
    # Slicer segmentation fields and colour table
    nrrd = sitk.ReadImage(str(files["bands_nrrd"]))
    names = {
        nrrd.GetMetaData(f"Segment{i}_Name"): int(nrrd.GetMetaData(f"Segment{i}_LabelValue")) for i in range(len(bands))
    }
    assert names == {n: k + 1 for k, n in enumerate(bands)}
    lines = files["bands_ctbl"].read_text().splitlines()
    assert lines[0].startswith("# Color table file")
    table = {int(line.split()[0]): line.split()[1] for line in lines if not line.startswith("#")}
    assert table == {0: "Background", **{k + 1: n for k, n in enumerate(bands)}}
    assert all(len(line.split()) == 6 for line in lines if not line.startswith("#"))


def _sorted_sources(files):
    hs = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    return sorted(hs, key=lambda h: float(h.ImagePositionPatient[2]))


def test_dicom_seg_frames_reference_source_slices(tmp_path, synth_analysis, synth, synth_dicom):
    import highdicom as hd

    a = synth_analysis
    _, files = synth_dicom
    path = write_seg(a.ct, a.regions, a.result.scheme, tmp_path / "seg.dcm")
    seg = hd.seg.segread(path)
    labels = {d.SegmentLabel: int(d.SegmentNumber) for d in seg.SegmentSequence}
    assert {"right", "left", "ggo HU band", "consolidation HU band", "aerated HU band"} <= set(labels)
    props = {d.SegmentLabel: d.SegmentedPropertyTypeCodeSequence[0].CodeValue for d in seg.SegmentSequence}
    assert props["right"] == "3341006" and props["left"] == "44029006"
    sources = _sorted_sources(files)  # slice order from the files' positions, independent of the writer
    assert seg.SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    uids = [s.SOPInstanceUID for s in sources]
    referenced = set(seg.get_source_image_uids()[i][2] for i in range(len(seg.get_source_image_uids())))
    assert referenced == set(uids)
    for name, truth in (("right", synth.lungs == 1), ("left", synth.lungs == 2),
                        ("ggo HU band", synth.ggo), ("consolidation HU band", synth.consolidation)):
        arr = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, segment_numbers=[labels[name]], combine_segments=False,
        )
        assert arr.shape == (len(uids), *a.ct.shape[1:], 1)
        assert np.array_equal(arr[..., 0].astype(bool), truth), name


def test_seg_refused_for_resampled_volume(tmp_path, synth_analysis):
    a = synth_analysis
    shifted = CTVolume(a.ct.hu, a.ct.spacing_mm, tuple(np.asarray(a.ct.origin_lps) + [0, 0, 1.25]),
                       a.ct.direction, a.ct.meta)
    with pytest.raises(InputError, match="no source image at their position"):
        write_seg(shifted, a.regions, a.result.scheme, tmp_path / "x.dcm")
    out = write_review(Analysis(shifted, a.regions, a.result), tmp_path / "r", qc=False, masks=False)
    assert "seg" not in out
    assert "DICOM SEG not written" in out["html"].read_text()


def test_write_review_nifti_input_skips_seg(tmp_path, synth_analysis):
    a = synth_analysis
    ct = a.ct.with_meta(series_uid="", patient_id="", study_date="", source=str(tmp_path / "scan.nii.gz"))
    out = write_review(Analysis(ct, a.regions, a.result), tmp_path / "r", qc=False)
    assert "seg" not in out and out["regions_nifti"].name == "scan_regions.nii.gz"
