"""``lungdamage score`` on bad input: one line naming the path and what to do, exit code 2."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from lungdamage.cli import main
from lungdamage.phantom import make_phantom, write_dicom_series

SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicom"


def _run(capsys, *argv):
    rc = main(list(argv))
    err = capsys.readouterr().err.strip()
    return rc, err


def test_not_dicom(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an image")
    rc, err = _run(capsys, "score", str(tmp_path))
    assert rc == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(tmp_path) in err and "No DICOM image found" in err and "Potential fix" in err


def test_empty_folder_and_missing_path(tmp_path, capsys):
    rc, err = _run(capsys, "score", str(tmp_path))
    assert rc == 2 and str(tmp_path) in err and len(err.splitlines()) == 1
    rc, err = _run(capsys, "score", str(tmp_path / "nope"))
    assert rc == 2 and "does not exist" in err and "nope" in err


def test_several_series_need_a_choice_and_the_choice_works(tmp_path, capsys):
    ph = make_phantom(matrix=64, n_slices=40, slice_thickness_mm=5.0, vessels=False, truth_samples=2**10)
    write_dicom_series(ph.ct, tmp_path / "a", patient_id="X", series_number=1)
    files = write_dicom_series(ph.ct, tmp_path / "b", patient_id="X", series_number=2, series_description="second")
    folder = tmp_path / "mixed"
    shutil.copytree(tmp_path / "a", folder)
    for f in files:
        shutil.copy(f, folder / f"b_{f.name}")
    rc, err = _run(capsys, "score", str(folder))
    assert rc == 2 and len(err.splitlines()) == 1
    import pydicom

    uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    assert uid in err and "--series-uid" in err
    out = tmp_path / "r.json"
    rc, _ = _run(capsys, "score", str(folder), "--series-uid", uid, "-o", str(out))
    assert rc == 0 and uid in out.read_text()


def test_bad_output_suffix_fails_before_work(tmp_path, capsys):
    rc, err = _run(capsys, "score", str(SAMPLE / "P001" / "2020-04-01_baseline"), "-o", str(tmp_path / "r.xlsx"))
    assert rc == 2 and ".xlsx" in err and ".csv" in err


def test_module_entry_point_prints_no_traceback(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, "-m", "lungdamage", "score", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("lungdamage score: error:")


def test_score_and_batch_build_one_options_object_from_the_same_flags():
    from lungdamage.cli import _parser
    from lungdamage.cli._analysis import analysis_options

    flags = ["--scheme", "covid", "--scheme", "lcta", "--regions", "zones", "--suppress-vessels",
             "--smooth-sigma-mm", "1.5", "--partial-lobes", "--css-approx-lobes", "--method", "threshold"]
    score_options = analysis_options(_parser().parse_args(["score", "scan/", *flags]))
    batch_options = analysis_options(_parser().parse_args(["batch", "root/", "--store", "s.sqlite", *flags]))
    assert score_options == batch_options
    assert [s.name for s in score_options.schemes] == ["covid", "lcta"]
    assert (score_options.region_set, score_options.smooth_sigma_mm) == ("zones", 1.5)
    assert score_options.suppress_vessels and score_options.partial_lobes and score_options.css_approx_lobes
    defaults = analysis_options(_parser().parse_args(["score", "scan/"]))
    from lungdamage.pipeline import AnalysisOptions

    assert defaults == AnalysisOptions() and defaults.run_hash == AnalysisOptions().run_hash
