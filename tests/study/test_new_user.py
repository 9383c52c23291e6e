"""Study report issues a new user hit (issue 15): off-window overrides, a CI that cannot exist,
page width, date format, the two meanings of "method", zero-based percentage plots."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from PIL import Image

from lungdamage.study import analyze_study, write_report

from .conftest import make_results


def _manifest(tmp_path, rows):
    f = tmp_path / "manifest.csv"
    pd.DataFrame(rows, columns=["patient_id", "arm", "study_date", "visit"]).to_csv(f, index=False)
    return f


@pytest.fixture(scope="module")
def off_window(tmp_path_factory):
    """4 patients; the manifest puts "month 4" at day 12 (P1) and day 51 (P3); window is days 99-141."""
    tmp = tmp_path_factory.mktemp("offwin")
    base = pd.Timestamp("2020-04-01")
    m4_day = {"P1": 12, "P2": 120, "P3": 51, "P4": 118}
    arms = {"P1": "treated", "P2": "treated", "P3": "placebo", "P4": "placebo"}
    scans, rows = [], []
    for i, (pid, d) in enumerate(m4_day.items()):
        for day, visit, dmg in ((0, "baseline", 20.0 + i), (d, "month4", 6.0 + i)):
            date = (base + pd.Timedelta(days=day)).strftime("%Y-%m-%d")
            scans.append(dict(patient_id=pid, study_date=date.replace("-", ""), damage_pct=dmg,
                              series_uid=f"1.9.{i}.{day}"))
            rows.append((pid, arms[pid], date, visit))
    study = analyze_study(make_results(scans), _manifest(tmp, rows), mixed=False)
    files = write_report(study, tmp / "out")
    return study, files


def test_off_window_overrides_are_flagged(off_window):
    study, files = off_window
    a = study.assignments.set_index("series_uid")
    assert a["off_window"].to_dict() == {
        "1.9.0.0": False, "1.9.0.12": True, "1.9.1.0": False, "1.9.1.120": False,
        "1.9.2.0": False, "1.9.2.51": True, "1.9.3.0": False, "1.9.3.118": False,
    }
    assert a.loc["1.9.0.12", "used"] and a.loc["1.9.0.12", "flag"].startswith(
        "off window: the manifest places day 12 at visit 'month 4', whose window is days 99–141")
    assert study.off_window_at_compare == 2
    md = files["report.md"].read_text()
    assert "No scan was out of window" not in md
    assert "OFF WINDOW: 2 scan(s)" in md and "P1 month 4 (day 12)" in md and "P3 month 4 (day 51)" in md
    assert "2 of the 4 scans at month 4 are off-window manifest overrides" in md


def test_in_window_overrides_are_not_flagged(tmp_path):
    scans = [dict(patient_id="P1", study_date="20200401", damage_pct=20.0, series_uid="1.1"),
             dict(patient_id="P1", study_date="20200801", damage_pct=5.0, series_uid="1.2")]
    rows = [("P1", "treated", "2020-04-01", "baseline"), ("P1", "treated", "2020-08-01", "month4")]
    study = analyze_study(make_results(scans), _manifest(tmp_path, rows), mixed=False)
    assert not study.assignments["off_window"].any() and study.off_window_at_compare == 0


@pytest.fixture(scope="module")
def one_per_arm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oneper")
    scans = [dict(patient_id="P1", study_date="20200401", damage_pct=11.0, series_uid="1.1"),
             dict(patient_id="P1", study_date="20200801", damage_pct=4.6, series_uid="1.2"),
             dict(patient_id="P2", study_date="20200510", damage_pct=12.7, series_uid="1.3"),
             dict(patient_id="P2", study_date="20200910", damage_pct=8.6, series_uid="1.4")]
    rows = [("P1", "treated", "2020-04-01", "baseline"), ("P1", "treated", "2020-08-01", "month4"),
            ("P2", "placebo", "2020-05-10", "baseline"), ("P2", "placebo", "2020-09-10", "month4")]
    study = analyze_study(make_results(scans, extra={"warnings": "thick slices (5 mm > 2.5 mm): partial volume"}),
                          _manifest(tmp, rows), mixed=False)
    return study, write_report(study, tmp / "out")


def test_interval_not_estimable_is_said_plainly(one_per_arm):
    study, files = one_per_arm
    md = files["report.md"].read_text()
    assert "( to ," not in md and "nan" not in md.lower()
    words = next(line for line in md.splitlines() if line.startswith("In words:"))
    assert "damage_pct is -4 (" in words  # 4.6 - 8.6: the only pair
    assert "95% CI not estimable at this sample size (1 vs 1 patients)" in words
    hl = study.comparison.set_index("quantity").loc["hodges_lehmann"]
    assert "not estimable" in hl["method"] and pd.isna(hl["ci_low"])


def test_method_columns_are_defined_by_their_meaning(one_per_arm):
    _, files = one_per_arm
    md = files["report.md"].read_text()
    header = next(line for line in md.splitlines() if line.startswith("| quantity |"))
    assert "| statistical_method |" in header and "| method |" not in header
    assert "- statistical_method: how the value and its interval" in md
    assert "- method: lung segmentation method" not in md  # no table shown has a segmentation-method column


def test_per_patient_table_puts_values_first_and_references_warnings(one_per_arm):
    _, files = one_per_arm
    md = files["report.md"].read_text()
    sec = md.split("## Per-patient values by visit")[1].split("## Definitions")[0]
    header = next(line for line in sec.splitlines() if line.startswith("| patient_id"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols.index("damage_pct") < 8 and cols[-1] == "series_uid" and "warning_ref" in cols
    assert "- W1: thick slices (5 mm > 2.5 mm): partial volume" in sec
    assert sec.count("thick slices") == 1
    # ISO dates everywhere in the report
    assert re.findall(r"\b20200[0-9]{3}\b", md) == [] and "2020-04-01" in md


def test_distribution_plot_y_axis_starts_at_zero(one_per_arm):
    _, files = one_per_arm
    # highest value shown: 8.6 at month 4 (distribution), 12.7 at baseline (the others)
    for name, top in (("distribution_month_4.png", 8.6), ("trajectories.png", 12.7), ("arm_medians.png", 12.7)):
        with Image.open(files[name]) as im:
            lo, hi = (float(v) for v in im.text["ylim"].split(";")[0].split(","))
        assert lo == 0.0 and hi > top, (name, lo, hi)


@pytest.mark.slow
def test_study_report_fits_1400px(one_per_arm, off_window, page_width):
    for _, files in (one_per_arm, off_window):
        doc_w, view_w, shot = page_width(files["report.html"])
        assert doc_w <= view_w, (doc_w, view_w)
        with Image.open(shot) as im:
            assert im.size[0] == 1400
