"""Messages a new user sees (issue 15, items 9 and 10): each warning once; the thick-slice rule on
every input format."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

import lungdamage as ld
from lungdamage.phantom import make_phantom, write_dicom_series

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def phantom_5mm():
    return make_phantom(matrix=64, n_slices=40, slice_thickness_mm=5.0, vessels=False, truth_samples=2**10)


def test_each_reader_warning_is_shown_once(phantom_5mm, tmp_path):
    """A single-slice series: the reader warns once; the CLI shows that line once (not 3 times)."""
    folder = tmp_path / "series"
    files = write_dicom_series(phantom_5mm.ct, folder, patient_id="P1", study_date="2020-04-01")
    for f in files[:20] + files[21:]:  # keep one slice through the lungs
        f.unlink()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    res = subprocess.run([sys.executable, "-m", "lungdamage", "score", str(folder)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    text = res.stdout + res.stderr
    assert text.count("has a single slice") == 1, text
    assert "DicomReadWarning" not in text and "warnings.warn" not in text  # no raw Python-warning line
    # the acquisition rule (not a reader warning) is still listed with the table, once
    assert text.count("thick slices (5 mm > 2.5 mm)") == 1


def _nrrd(ph, path: Path, slice_mm: float) -> Path:
    img = ph.ct.to_sitk()
    sx, sy, _ = img.GetSpacing()
    img.SetSpacing((sx, sy, slice_mm))
    sitk.WriteImage(img, str(path))
    return path


@pytest.mark.parametrize("slice_mm, warned", [(5.0, True), (4.0, True), (2.0, False)])
def test_thick_slice_rule_uses_the_voxel_spacing_without_a_thickness_tag(phantom_5mm, tmp_path, slice_mm, warned):
    path = _nrrd(phantom_5mm, tmp_path / "ct.nrrd", slice_mm)
    res = ld.analyze(path)  # ScanResult
    assert res.meta.slice_thickness_mm is None
    thick = [w for w in res.comparability_warnings() if w.startswith("thick slices")]
    if warned:
        assert thick == [f"thick slices (slice spacing {slice_mm:g} mm > 2.5 mm; no slice thickness recorded): "
                         "partial volume inflates GGO"]
    else:
        assert thick == []


def test_the_dicom_tag_decides_when_present(phantom_5mm, tmp_path):
    """5 mm SliceThickness tag: the tag's wording, once (no second warning from the spacing)."""
    folder = tmp_path / "series"
    write_dicom_series(phantom_5mm.ct, folder, patient_id="P1", study_date="2020-04-01")
    from lungdamage.pipeline import analyze_scan

    res = analyze_scan(folder).result
    thick = [w for w in res.comparability_warnings() if w.startswith("thick slices")]
    assert thick == ["thick slices (5 mm > 2.5 mm): partial volume inflates GGO"]
