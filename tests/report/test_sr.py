"""DICOM SR (TID 1500) of a scored series: structure, references, numbers read back."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pydicom
import pytest

from lungdamage.cli import main
from lungdamage.report import write_review
from lungdamage.report.seg import write_seg
from lungdamage.report.sr import read_sr, write_sr

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def seg_and_sr(tmp_path_factory, synth_analysis):
    a = synth_analysis
    out = tmp_path_factory.mktemp("sr")
    seg = write_seg(a.ct, a.regions, a.result.scheme, out / "seg.dcm")
    sr = write_sr(a.ct, a.result, out / "sr.dcm", seg=seg)
    return seg, sr


def _measure_columns(result):
    return ["volume_ml", *(f"{b}_pct" for b in result.scheme.band_names), "damage_pct"]


def test_sr_reads_back_the_table_and_the_truth(seg_and_sr, synth_analysis, synth):
    a = synth_analysis
    table = a.result.to_frame().set_index("region")
    back = read_sr(seg_and_sr[1]).set_index("region")
    assert sorted(back.index) == sorted(table.index) == ["left", "right", "total"]
    cols = _measure_columns(a.result)
    # same numbers as the table, to the precision of a DICOM decimal string (16 characters)
    np.testing.assert_allclose(back.loc[table.index, cols].to_numpy(float), table[cols].to_numpy(float), rtol=1e-10)
    # ... and the volumes are the construction's (independent of the scorer)
    voxel_ml = float(np.prod(a.ct.spacing_mm)) / 1000.0
    assert back.loc["right", "volume_ml"] == pytest.approx((synth.lungs == 1).sum() * voxel_ml, rel=1e-10)
    assert back.loc["left", "volume_ml"] == pytest.approx((synth.lungs == 2).sum() * voxel_ml, rel=1e-10)
    assert set(back["scheme"]) == {a.result.scheme.name} and set(back["method"]) == {a.result.method}
    assert set(back["series_uid"]) == {a.ct.meta.series_uid}


def test_sr_references_the_source_series_and_the_seg(seg_and_sr, synth_analysis, synth_dicom):
    seg_path, sr_path = seg_and_sr
    _, files = synth_dicom
    sr = pydicom.dcmread(sr_path)
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    ct_uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    ct_series = synth_analysis.ct.meta.series_uid
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.StudyInstanceUID == seg.StudyInstanceUID == synth_analysis.ct.meta.study_uid
    assert sr.SeriesInstanceUID not in (ct_series, seg.SeriesInstanceUID)
    evidence = {
        str(se.SeriesInstanceUID): {str(r.ReferencedSOPInstanceUID) for r in se.ReferencedSOPSequence}
        for st in sr.CurrentRequestedProcedureEvidenceSequence
        for se in st.ReferencedSeriesSequence
    }
    assert evidence == {ct_series: ct_uids, str(seg.SeriesInstanceUID): {str(seg.SOPInstanceUID)}}
    back = read_sr(sr_path).set_index("region")
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    for region in ("right", "left"):  # regions with a segment reference it; the aggregate does not
        assert back.loc[region, "seg_sop_instance_uid"] == seg.SOPInstanceUID
        assert labels[int(back.loc[region, "segment_number"])] == region
    assert back.loc["total", "seg_sop_instance_uid"] == ""


def test_sr_units_codes_and_algorithm(seg_and_sr):
    import highdicom as hd

    sr = hd.sr.srread(seg_and_sr[1])
    groups = sr.content.get_volumetric_roi_measurement_groups()
    right = next(g for g in groups if str(g.tracking_identifier) == "right")
    site = right.finding_sites[0]
    assert (site.value.value, site.value.scheme_designator) == ("3341006", "SCT")
    units = {
        str(m.name.meaning).split(":")[0]: (m.unit.value, m.unit.scheme_designator) for m in right.get_measurements()
    }
    assert units["Volume"] == ("ml", "UCUM") and units["ggo_pct"] == ("%", "UCUM")
    assert units["damage_pct"] == ("%", "UCUM")
    texts = [str(i.TextValue) for i in right[0].ContentSequence if i.ValueType == "TEXT"]
    assert "lungdamage" in texts and any(t.startswith("scheme=") for t in texts)


def test_lesion_columns_are_written_when_the_table_has_them(tmp_path, synth_analysis):
    a = synth_analysis
    base = a.result

    class WithLesions(type(base)):  # a result whose table carries lesion columns (added by another analysis)
        def to_frame(self, form="wide"):
            df = super().to_frame(form)
            df["lesion_pct"] = np.arange(len(df), dtype=float) + 0.25
            df.loc[df["region"] == "total", "lesion_pct"] = np.nan  # absent values are skipped
            return df

    res = WithLesions(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
    back = read_sr(write_sr(a.ct, res, tmp_path / "sr.dcm")).set_index("region")
    expect = res.to_frame().set_index("region")["lesion_pct"]
    assert back.loc["right", "lesion_pct"] == expect["right"] and back.loc["left", "lesion_pct"] == expect["left"]
    assert np.isnan(back.loc["total", "lesion_pct"])
    # a result scored without the lesion measure (lesions=False: NaN lesion columns) reports none
    plain = dataclasses.replace(base, lesion_voxels=None, lesion_count=None)
    assert "lesion_pct" not in read_sr(write_sr(a.ct, plain, tmp_path / "plain.dcm")).columns


def test_write_review_writes_the_sr_and_export_reads_it_back(tmp_path, synth_analysis, capsys):
    files = write_review(synth_analysis, tmp_path / "review", qc=False, masks=False, html=False)
    assert files["sr"].name.endswith("_sr.dcm")
    out = tmp_path / "from_sr.csv"
    assert main(["export", "--from-sr", str(tmp_path / "review"), "-o", str(out)]) == 0
    table = synth_analysis.result.to_frame().set_index("region")
    back = pd.read_csv(out).set_index("region")
    cols = _measure_columns(synth_analysis.result)
    np.testing.assert_allclose(back.loc[table.index, cols].to_numpy(float), table[cols].to_numpy(float), rtol=1e-10)


def test_read_sr_refuses_other_objects(synth_dicom):
    from lungdamage.errors import InputError

    with pytest.raises(InputError, match="not a TID 1500"):
        read_sr(synth_dicom[1][0])
