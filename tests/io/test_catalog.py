"""Catalog and series selection on a synthetic archive written with pydicom."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

from lungdamage.cli import main
from lungdamage.errors import InputError
from lungdamage.io.catalog import (
    SelectionPolicy,
    catalog_frame,
    kernel_family,
    scan,
    select_series,
    selection_frame,
)
from lungdamage.io.dicom import read_series


def _study(root: Path, w, patient: str, n_study: int, rng) -> dict:
    """One study: localizer, thick soft series, thin lung series, dose-report SC; returns UIDs."""
    study = generate_uid()
    frame = generate_uid()
    uids = {k: generate_uid() for k in ("loc", "thick", "thin", "dose")}
    date = f"2020040{n_study}"
    common = dict(study_uid=study, frame_uid=frame, patient_id=patient, StudyDate=date)
    base = root / patient / f"study{n_study}"
    w(base / "loc", rng.integers(-1000, 200, (1, 6, 4)), series_uid=uids["loc"], iop=(1, 0, 0, 0, 0, -1),
      ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], SeriesDescription="Topogram", **common)
    w(base / "thick", rng.integers(-1000, 200, (32, 4, 4)), spacing=(5.0, 0.7, 0.7), series_uid=uids["thick"],
      ConvolutionKernel="B30f", SeriesDescription="Thorax 5.0 B30f", **common)
    w(base / "thin", rng.integers(-1000, 200, (64, 4, 4)), spacing=(2.5, 0.7, 0.7), series_uid=uids["thin"],
      ConvolutionKernel="B70f", SeriesDescription="Lung 2.5 B70f", **common)

    def as_dose_report(k, ds):
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
        del ds.ImagePositionPatient, ds.ImageOrientationPatient

    w(base / "dose", rng.integers(0, 200, (1, 8, 8)), series_uid=uids["dose"], SeriesDescription="Dose Report",
      per_slice=as_dose_report, **common)
    (base / "README.txt").write_text("exported by PACS")
    (base / "thumb.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))
    return {"study": study, **uids}


@pytest.fixture(scope="module")
def archive(tmp_path_factory, series_writer):
    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("catalog") / "archive"
    studies = {}
    for p in ("P1", "P2", "P3"):
        for n in (1, 2):
            studies[(p, n)] = _study(root, series_writer, p, n, rng)
    # one truncated file: an extra copy of a thin slice cut in half
    src = next((root / "P1" / "study1" / "thin").glob("*.dcm"))
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(root / "P1" / "study1" / "broken.dcm")
    data = (root / "P1" / "study1" / "broken.dcm").read_bytes()
    (root / "P1" / "study1" / "broken.dcm").write_bytes(data[: len(data) // 2])
    # half of the archive inside a zip: P2 study 2 and all of P3
    with zipfile.ZipFile(root / "export.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for folder in (root / "P2" / "study2", root / "P3"):
            for f in sorted(folder.rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(root).as_posix())
            shutil.rmtree(folder)
    return root, studies


def test_catalog_synthetic_archive(archive):
    root, studies = archive
    summary: dict = {}
    series = scan(root, summary=summary)
    assert len(series) == 6 * 4
    assert summary["n_non_dicom"] == 12  # README + jpg per study
    assert summary["n_truncated"] == 1
    assert summary["n_dicom"] == 6 * (1 + 32 + 64 + 1)
    by_uid = {s.series_uid: s for s in series}
    for (patient, _), uids in studies.items():
        thin, thick = by_uid[uids["thin"]], by_uid[uids["thick"]]
        assert (thin.patient_id, thin.n_slices, thin.spacing_mm, thin.z_extent_mm) == (patient, 64, 2.5, 160.0)
        assert (thick.n_slices, thick.spacing_mm, thick.kernel) == (32, 5.0, "B30f")
        assert by_uid[uids["loc"]].orientation == "coronal"
    zipped = by_uid[studies[("P3", 1)]["thin"]]
    assert all("export.zip::P3/" in f for f in zipped.files)

    frame = catalog_frame(series)
    assert len(frame) == 24 and set(frame.kernel_family) == {"soft", "lung"}


def test_policy_picks_expected_series(archive):
    root, studies = archive
    series = scan(root)
    selections = select_series(series)
    chosen = {s.series.study_uid: s.series.series_uid for s in selections if s.selected}
    assert len(chosen) == 6
    reasons = {s.series.series_uid: s.reason for s in selections}
    for uids in studies.values():
        # thin (2.5 mm <= 3 mm) beats thick 5 mm even though its kernel is sharp
        assert chosen[uids["study"]] == uids["thin"]
        assert reasons[uids["thin"]].startswith("selected:")
        assert "ranked below" in reasons[uids["thick"]] and "thicker than 3 mm" in reasons[uids["thick"]]
        assert reasons[uids["loc"]].startswith("rejected: localizer/scout")
        assert reasons[uids["dose"]].startswith("rejected: secondary capture")
    # the selected series read back, from disk and from inside the zip
    for key in (("P1", 1), ("P3", 2)):
        sel = next(s.series for s in selections if s.series.series_uid == studies[key]["thin"])
        ct = read_series(sel)
        assert ct.shape == (64, 4, 4) and ct.meta.series_uid == sel.series_uid
    # thick-only preference when thin slices are not wanted
    loose = select_series(series, SelectionPolicy(max_preferred_thickness_mm=5.0))
    chosen = {s.series.study_uid: s.series.series_uid for s in loose if s.selected}
    assert all(chosen[u["study"]] == u["thick"] for u in studies.values())  # soft kernel wins now
    lung = select_series(series, SelectionPolicy(max_preferred_thickness_mm=5.0, prefer_kernel="lung"))
    chosen = {s.series.study_uid: s.series.series_uid for s in lung if s.selected}
    assert all(chosen[u["study"]] == u["thin"] for u in studies.values())
    table = selection_frame(selections)
    assert table.selected.sum() == 6 and (table.reason != "").all()


def test_short_and_irregular_series_rejected(tmp_path, series_writer, phantom):
    series_writer(tmp_path / "a", phantom((6, 4, 4)), spacing=(2.5, 1, 1), series_uid="1.1")
    pos = np.outer([0, 2.5, 5, 12.5, 15, 17.5], [0, 0, 1])
    series_writer(tmp_path / "b", phantom((6, 4, 4)), positions=pos, series_uid="1.2")
    sel = {s.series_uid: s for s in select_series(scan(tmp_path), SelectionPolicy(min_extent_mm=10))}
    assert sel["1.1"].selected
    assert "gap of 7.50 mm" in sel["1.2"].reason
    sel = {s.series_uid: s for s in select_series(scan(tmp_path))}
    assert "covers 15.0 mm in z (6 slices), less than the 150 mm" in sel["1.1"].reason


@pytest.mark.parametrize(
    "kernel, family",
    [("B30f", "soft"), ("Br40d\\3", "soft"), ("B70f", "lung"), ("I70f", "lung"), ("STANDARD", "soft"),
     ("LUNG", "lung"), ("BONEPLUS", "lung"), ("FC08", "soft"), ("FC51", "lung"), ("YA", "lung"),
     ("B", "soft"), ("", "unknown"), ("XYZ", "unknown")],
)
def test_kernel_family(kernel, family):
    assert kernel_family(kernel) == family


def test_policy_validation():
    with pytest.raises(InputError, match="prefer_kernel must be 'soft' or 'lung'"):
        SelectionPolicy(prefer_kernel="sharp")


def test_cli_index(archive, tmp_path, capsys):
    root, studies = archive
    out = tmp_path / "series.csv"
    assert main(["index", str(root), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 patient(s), 6 study(ies), 24 series" in text
    assert text.count("[SCORE]") == 6
    assert "12 non-DICOM skipped, 1 truncated" in text
    table = pd.read_csv(out)
    assert len(table) == 24 and table.selected.sum() == 6
    assert set(table.loc[table.selected, "series_uid"]) == {u["thin"] for u in studies.values()}


def test_scan_missing_root(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        scan(tmp_path / "nope")


@pytest.mark.realdata
@pytest.mark.slow
def test_realdata_catalog(realdata):
    summary: dict = {}
    series = scan(realdata, summary=summary)
    dicom_files = 0
    for f in realdata.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                head = fh.read(132)
            dicom_files += head[128:132] == b"DICM"
    assert summary["n_dicom"] == dicom_files == sum(s.n_files for s in series)
    # 5 patients x 2 studies x (axial, coronal, sagittal) single slices, each its own series
    covid = [s for s in series if "covid19_ny_sbu" in s.files[0]]
    assert len(covid) == 30
    assert {s.orientation for s in covid} == {"axial", "coronal", "sagittal"}
    assert all(s.n_slices in (1, 2) for s in covid)
    cip = next(s for s in series if "ct-64Dicom" in s.files[0])
    assert (cip.n_slices, round(cip.spacing_mm, 3)) == (79, 3.987)
    assert sum(s.selected for s in select_series(series)) == 1  # only ct-64 covers >= 150 mm


def test_parallel_header_parsing_gives_the_same_catalog(archive, monkeypatch):
    from lungdamage.io import _dicom_headers

    root, _ = archive
    serial_summary: dict = {}
    serial = scan(root, summary=serial_summary, workers=1)
    # the archive has ~600 files; lower the threshold so the worker pool is really used
    monkeypatch.setattr(_dicom_headers, "PARALLEL_MIN_FILES", 10)
    parallel_summary: dict = {}
    parallel = scan(root, summary=parallel_summary, workers=2)
    assert parallel_summary == serial_summary
    assert [(s.series_uid, s.files) for s in parallel] == [(s.series_uid, s.files) for s in serial]


def test_two_copies_of_a_series_are_cataloged_once_and_selected(tmp_path, series_writer):
    import shutil

    from lungdamage.io.catalog import select_series

    src = tmp_path / "src"
    series_writer(src, np.full((64, 4, 4), -800), spacing=(2.5, 0.7, 0.7))
    for copy in ("a", "b"):
        shutil.copytree(src, tmp_path / "archive" / copy)
    (s,) = scan(tmp_path / "archive")
    assert s.n_slices == 64 and s.regular_spacing
    assert any("same instance" in i for i in s.issues)
    (sel,) = select_series([s])
    assert sel.selected, sel.reason
