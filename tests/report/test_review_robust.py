"""Review outputs never discard a score (issue 15, items 1 and 2).

Each case is a header a real archive can have and that broke a review output:
zone regions in the DICOM SEG, no PatientID, ``$`` in the SeriesDescription
(matplotlib mathtext), an unknown SpecificCharacterSet, a 250-character
PatientID (file name too long).
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from lungdamage.batch.runner import InlineEngine, plan_batch, run_batch
from lungdamage.batch.store import ResultStore
from lungdamage.cli import main
from lungdamage.errors import ReviewError
from lungdamage.io.catalog import SelectionPolicy
from lungdamage.pipeline import analyze_scan
from lungdamage.report import ReviewHook, default_stem, safe_stem, write_review

ALL_KINDS = {
    "qc_png", "qc_json", "thumbnail", "regions_nifti", "bands_nifti", "regions_nrrd", "bands_nrrd", "seg", "html",
}


def _edited_copy(synth_dicom, tmp_path: Path, edit) -> Path:
    folder, files = synth_dicom
    out = tmp_path / "series"
    out.mkdir()
    for f in files:
        ds = pydicom.dcmread(f)
        edit(ds)
        ds.save_as(out / f.name)
    return out


def test_zones_segments_are_written_to_the_dicom_seg(synth_dicom, tmp_path):
    folder, _ = synth_dicom
    analysis = analyze_scan(folder, regions="zones")
    files = write_review(analysis, tmp_path, qc=False, masks=False, html=False)
    seg = pydicom.dcmread(files["seg"])
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    zones = [lab for lab in labels if lab[:3] in ("RUZ", "RMZ", "RLZ", "LUZ", "LMZ", "LLZ")]
    assert len(zones) == 6, labels
    # each zone segment names its lung (SNOMED right lung 3341006 / left lung 44029006) as anatomic region
    for s in seg.SegmentSequence:
        if s.SegmentLabel[:3] in ("RUZ", "RMZ", "RLZ", "LUZ", "LMZ", "LLZ"):
            want = "3341006" if s.SegmentLabel.startswith("R") else "44029006"
            assert s.AnatomicRegionSequence[0].CodeValue == want
            assert s.AnatomicRegionSequence[0].CodingSchemeDesignator == "SCT"


def _no_patient_id(ds):
    del ds.PatientID


def _mathtext_description(ds):
    ds.SeriesDescription = "thorax $x^{$ 1.0 B30f"


def _unknown_charset(ds):
    ds.SpecificCharacterSet = "ISO_IR 999"


def _long_patient_id(ds):
    ds.PatientID = "P" * 250


@pytest.mark.filterwarnings("ignore:Unknown encoding:UserWarning")
@pytest.mark.filterwarnings("ignore:The value length:UserWarning")
@pytest.mark.parametrize(
    "edit", [_no_patient_id, _mathtext_description, _unknown_charset, _long_patient_id],
    ids=["no-PatientID", "mathtext-description", "unknown-charset", "250-char-PatientID"],
)
def test_every_review_output_is_written_for_awkward_headers(synth_dicom, tmp_path, edit):
    series = _edited_copy(synth_dicom, tmp_path, edit)
    analysis = analyze_scan(series)
    files = write_review(analysis, tmp_path / "qc")
    assert ALL_KINDS <= set(files), sorted(files)
    for p in files.values():
        assert p.is_file() and len(p.name.encode()) <= 128, p.name
    seg = pydicom.dcmread(files["seg"])
    assert seg.SeriesInstanceUID != analysis.ct.meta.series_uid and len(seg.SegmentSequence) >= 2
    if edit is _mathtext_description:  # the text is shown literally in the report
        assert "thorax $x^{$ 1.0 B30f" in files["html"].read_text()


def test_stem_is_bounded_and_distinct():
    a, b = "P" * 250 + "A", "P" * 250 + "B"
    assert len(safe_stem(a)) <= 96 and safe_stem(a) != safe_stem(b)
    assert safe_stem("P001_20200401_abc") == "P001_20200401_abc"
    assert safe_stem("a/b:c") == "a-b-c"


def test_score_writes_the_table_even_when_the_review_folder_is_unusable(synth_dicom, tmp_path, capsys):
    folder, _ = synth_dicom
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    out_csv = tmp_path / "scan.csv"
    rc = main(["score", str(folder), "-o", str(out_csv), "--qc", str(blocker / "qc")])
    cap = capsys.readouterr()
    assert rc == 1
    assert out_csv.is_file() and "damage %" in cap.out  # the scores: table printed and file written
    errors = [line for line in cap.err.splitlines() if "error" in line]
    assert len(errors) == 1 and "scores are unaffected" in errors[0] and "Traceback" not in cap.err


def test_batch_stores_the_result_when_the_review_fails(synth_dicom, tmp_path):
    folder, _ = synth_dicom
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    tasks, excluded = plan_batch(folder, policy=SelectionPolicy(min_extent_mm=50.0))
    assert len(tasks) == 1
    summary = run_batch(None, tmp_path / "r.sqlite", tasks=tasks, excluded=excluded, engine=InlineEngine(),
                        hook=ReviewHook(str(blocker / "qc")))
    assert summary.stored == 1 and summary.n_failed == 0 and summary.review_failed == 1
    assert summary.exit_code == 0 and "review outputs incomplete for 1 series" in summary.text()
    with ResultStore(tmp_path / "r.sqlite", readonly=True) as store:
        (row,) = store.hook_values()
        assert "cannot create the folder" in row["review_error"] and row["numbers"]["damage % total"] > 0
        assert store.failures().empty


def _raising_hook(analysis):
    raise RuntimeError("disk on fire")


def test_batch_keeps_the_result_when_any_hook_raises(synth_dicom, tmp_path):
    folder, _ = synth_dicom
    tasks, excluded = plan_batch(folder, policy=SelectionPolicy(min_extent_mm=50.0))
    summary = run_batch(None, tmp_path / "r.sqlite", tasks=tasks, excluded=excluded, engine=InlineEngine(),
                        hook=_raising_hook)
    assert summary.stored == 1 and summary.n_failed == 0 and summary.review_failed == 1
    with ResultStore(tmp_path / "r.sqlite", readonly=True) as store:
        (row,) = store.hook_values()
        assert row["review_error"] == "RuntimeError: disk on fire"


def test_one_failing_output_keeps_the_others(synth_dicom, tmp_path):
    """The SEG's file name is taken by a folder: the SEG fails, every other output is written."""
    folder, _ = synth_dicom
    analysis = analyze_scan(folder)
    out = tmp_path / "qc"
    (out / f"{default_stem(analysis)}_seg.dcm").mkdir(parents=True)
    with pytest.raises(ReviewError) as info:
        write_review(analysis, out)
    exc = info.value
    assert set(exc.failures) == {"DICOM SEG"} and "IsADirectoryError" in exc.failures["DICOM SEG"]
    assert ALL_KINDS - {"seg"} <= set(exc.files)
    assert all(p.is_file() for p in exc.files.values())
    assert "DICOM SEG not written: IsADirectoryError" in exc.files["html"].read_text()
