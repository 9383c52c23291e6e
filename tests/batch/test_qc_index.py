"""``lungdamage batch --qc DIR``: review outputs per scan and an index page with failures."""

from __future__ import annotations

import re

import numpy as np
import pydicom
import pytest

from lungdamage.cli import main
from lungdamage.phantom import make_phantom, write_dicom_series


@pytest.mark.slow
def test_batch_qc_writes_review_outputs_and_index(tmp_path, capsys):
    root = tmp_path / "archive"
    uids = {}
    for pid, scale in (("Q1", 1.0), ("Q2", 0.3)):
        ph = make_phantom(matrix=64, n_slices=40, slice_thickness_mm=5.0, vessels=False, damage_scale=scale,
                          noise_hu=5.0, truth_samples=2**10)
        files = write_dicom_series(ph.ct, root / pid, patient_id=pid, study_date="20200401")
        uids[pid] = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    # a series whose pixel data is cut short: it must appear on the index as a failure
    files = write_dicom_series(ph.ct.with_array(np.full(ph.ct.shape, 40, np.int16)), root / "Q3",
                               patient_id="Q3", study_date="20200401")
    for f in files:
        f.write_bytes(f.read_bytes()[:-200])
    qc = tmp_path / "qc"
    rc = main(["-q", "batch", str(root), "--store", str(tmp_path / "r.sqlite"), "--jobs", "0", "--qc", str(qc)])
    assert rc == 1  # one series failed
    index = (qc / "index.html").read_text()
    for pid, uid in uids.items():
        pngs = list(qc.glob(f"{pid}_*_qc.png"))
        assert len(pngs) == 1 and pngs[0].stat().st_size > 10_000
        assert len(list(qc.glob(f"{pid}_*_report.html"))) == 1
        assert uid in index
    rows = re.findall(r"<tr.*?</tr>", index, re.S)
    failure = [r for r in rows if not r.startswith('<tr class="ok"') and ">Q3<" in r]
    assert sum(r.startswith('<tr class="ok"') for r in rows) == 2
    assert len(failure) == 1 and re.search(r"read|Dicom|pixel", failure[0]), "Q3 failure missing from the index"
    assert len(re.findall(r"_report\.html", index)) >= 2
    assert "review index" in capsys.readouterr().out
