"""What a new user hit on the command line (issue 15): empty archives, selection options, flag names,
summary wording, a clean ``git status`` after the quick start."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lungdamage.batch.runner import BatchSummary
from lungdamage.cli import main
from lungdamage.phantom import make_phantom, write_dicom_series

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_dicom"


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err.strip()


# ----------------------------------------------------------------------------- item 5
def _pngs(folder: Path) -> Path:
    from PIL import Image

    folder.mkdir()
    for i in range(2):
        Image.new("L", (8, 8), 40 * i).save(folder / f"slice{i}.png")
    return folder


@pytest.mark.parametrize("kind", ["empty", "pngs", "missing"])
@pytest.mark.parametrize("command", ["batch", "index"])
def test_nothing_to_score_exits_2_with_one_line_and_no_store(tmp_path, capsys, kind, command):
    root = {"empty": lambda: (tmp_path / "e").mkdir() or tmp_path / "e",
            "pngs": lambda: _pngs(tmp_path / "p"),
            "missing": lambda: tmp_path / "typo"}[kind]()
    store = tmp_path / "results.sqlite"
    argv = [command, root] + (["--store", store, "--jobs", "0"] if command == "batch" else [])
    rc, out, err = _run(capsys, *argv)
    assert rc == 2
    assert len(err.splitlines()) == 1 and str(root.name) in err and "Traceback" not in err
    assert not store.exists() and not list(tmp_path.glob("*.sqlite*"))
    if kind == "pngs":
        assert "2 file(s), none a readable DICOM image" in err


# ----------------------------------------------------------------------------- item 6
@pytest.fixture(scope="module")
def short_series(tmp_path_factory):
    """One chest phantom covering only 100 mm head-foot: below the default --min-extent-mm 150."""
    ph = make_phantom(matrix=64, n_slices=20, slice_thickness_mm=5.0, vessels=False, truth_samples=2**10)
    folder = tmp_path_factory.mktemp("short") / "P9" / "s1"
    write_dicom_series(ph.ct, folder, patient_id="P9", study_date="2020-04-01")
    return folder.parent.parent


def _selection_flags(command: str) -> dict[str, tuple]:
    from lungdamage.cli import _parser

    sub = next(a for a in _parser()._actions if a.dest == "command").choices[command]
    group = next(g for g in sub._action_groups if g.title == "series selection")
    return {a.option_strings[0]: (a.default, a.help) for a in group._group_actions}


def test_batch_and_index_share_the_selection_options():
    flags = _selection_flags("batch")
    assert flags == _selection_flags("index")
    assert {"--min-extent-mm", "--allow-derived", "--prefer-kernel"} <= set(flags)


def test_batch_honours_min_extent(short_series, tmp_path, capsys):
    store = tmp_path / "r.sqlite"
    rc, out, err = _run(capsys, "batch", short_series, "--store", store, "--jobs", "0")
    assert rc == 2 and "none selected" in err and "less than the 150 mm" in err and not store.exists()
    rc, out, err = _run(capsys, "batch", short_series, "--store", store, "--jobs", "0", "--min-extent-mm", "90")
    assert rc == 0, err
    assert "done 1, skipped 0" in out
    rc, out, err = _run(capsys, "index", short_series, "--min-extent-mm", "90")
    assert rc == 0 and "1 series would be scored" in out


def test_selection_option_values_are_checked(short_series, tmp_path, capsys):
    rc, out, err = _run(capsys, "batch", short_series, "--store", tmp_path / "r.sqlite", "--min-extent-mm", "-5")
    assert rc == 2 and "--min-extent-mm must be >= 0 mm, got -5" in err and not (tmp_path / "r.sqlite").exists()


# ----------------------------------------------------------------------------- item 7
def test_errors_name_the_cli_flags(capsys):
    series = SAMPLE / "P001" / "2020-04-01_baseline"
    rc, out, err = _run(capsys, "score", series, "--label-codes", "lungmask")
    assert rc == 2 and "--label-codes is only used with --regions-from FILE" in err
    assert "regions_from" not in err and "label_codes" not in err


def test_label_map_without_codes_names_the_flag(tmp_path, capsys):
    import numpy as np
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.full((4, 8, 8), -800, np.int16))
    sitk.WriteImage(img, str(tmp_path / "ct.nrrd"))
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 8, 8), np.uint8)), str(tmp_path / "lab.nrrd"))
    rc, out, err = _run(capsys, "score", tmp_path / "ct.nrrd", "--regions-from", tmp_path / "lab.nrrd")
    assert rc == 2 and "needs --label-codes" in err and "--label-codes lungmask, totalsegmentator, cip" in err
    assert "label_codes" not in err


def test_index_reasons_name_the_flag():
    from lungdamage.cli._flags import to_cli

    assert to_cli("derived image (ImageType DERIVED/SECONDARY); pass allow_derived=True to accept reformats") == (
        "derived image (ImageType DERIVED/SECONDARY); pass --allow-derived to accept reformats"
    )
    assert to_cli("Potential fix: pass series_uid= (CLI: --series-uid) to choose one") == (
        "Potential fix: pass --series-uid to choose one"
    )


# ----------------------------------------------------------------------------- item 13
@pytest.mark.parametrize(
    "engine, workers, words",
    [("processes", 2, "by 2 worker processes"), ("processes", 1, "by 1 worker process "),
     ("dask", 3, "by 3 Dask workers"), ("inline", 1, "in this process")],
)
def test_summary_wording(engine, workers, words):
    s = BatchSummary(root="a", store="b", engine=engine, workers=workers, selected=4, scored=4, stored=0, elapsed_s=2.0)
    s.failed["read: DicomSeriesError"] = 4
    text = s.text()
    assert "worker(s)" not in text and "scored=" not in text
    assert (f"done 0, skipped 0 (already stored 0, failed before 0), failed 4; "
            f"4 series analysed in this run {words}") in text


# ----------------------------------------------------------------------------- item 14
@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_quick_start_outputs_are_ignored_by_git():
    paths = ["qc/index.html", "study/report.html", "results.sqlite", ".venv/bin/python"]
    kept = ["src/lungdamage/study/report.py", "tests/study/test_e2e.py", "sample_dicom/visits.csv"]
    res = subprocess.run(["git", "-C", str(REPO), "check-ignore", "--no-index", *paths, *kept],
                         capture_output=True, text=True)
    assert sorted(res.stdout.split()) == sorted(paths)


def test_log_lines_name_the_flags_and_repeat_nothing(capsys):
    import logging

    from lungdamage.cli import _configure_logging

    _configure_logging(0, False)
    log = logging.getLogger("lungdamage.batch.runner")
    msg = "S1 failed at segment: no lung. Potential fix: ... or pass regions_from=<label file>."
    log.warning(msg)
    log.warning(msg)
    err = capsys.readouterr().err
    assert err.count("WARNING: S1 failed at segment") == 1 and "pass --regions-from FILE." in err
    assert "regions_from" not in err
