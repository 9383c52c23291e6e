"""Visit protocol, manifest and visit assignment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lungdamage.errors import InputError, ManifestError
from lungdamage.study import (
    SELECTION_RULE,
    assign_visits,
    blind_arms,
    comparability_warnings,
    default_protocol,
    manifest_from_frame,
    read_manifest,
    read_protocol,
    select_results,
    to_dates,
    visit_table,
)


def _date(base: str, day: int) -> str:
    return (pd.Timestamp(base) + pd.Timedelta(days=day)).strftime("%Y%m%d")


# --- protocol -----------------------------------------------------------------
def test_default_protocol_is_the_issue_schedule():
    p = default_protocol()
    assert [(v.name, v.day, v.window_days) for v in p.visits] == [
        ("day 0", 0, 0), ("day 7", 7, 2), ("day 14", 14, 3), ("month 2", 60, 14), ("month 4", 120, 21)]
    assert p.compare == "month 4"
    assert p.baseline.name == "day 0"
    assert p.lookup("Month_4").name == "month 4" and p.lookup("baseline").name == "day 0"
    assert p.lookup("M4").name == "month 4"


def test_protocol_files_toml_and_yaml(tmp_path):
    toml = tmp_path / "v.toml"
    toml.write_text('compare = "w4"\n[[visit]]\nname = "w0"\nday = 0\n[[visit]]\nname = "w4"\nday = 28\nwindow = 5\n')
    p = read_protocol(toml)
    assert p.names == ["w0", "w4"] and p.visits[1].window_days == 5 and p.compare == "w4"
    yaml = tmp_path / "v.yaml"
    yaml.write_text("visit:\n  - {name: base, day: 0, window: 1}\n  - {name: end, day: 90, window: 10}\n")
    q = read_protocol(yaml)
    assert [(v.name, v.day, v.window_days) for v in q.visits] == [("base", 0, 1), ("end", 90, 10)]
    assert q.compare == "end"  # default: last visit


@pytest.mark.parametrize(
    "text, match",
    [
        ('[[visit]]\nname = "a"\nday = 0\nwindow = 5\n[[visit]]\nname = "b"\nday = 7\nwindow = 3\n', "overlap"),
        ('[[visit]]\nname = "a"\nday = 7\n[[visit]]\nname = "b"\nday = 0\n', "increasing day order"),
        ('[[visit]]\nname = "a"\nday = 0\nwindw = 2\n', "unknown key"),
        ('[[visit]]\nname = "a"\n', "needs at least 'name' and 'day'"),
        ('compare = "z"\n[[visit]]\nname = "a"\nday = 0\n', "compare visit 'z'"),
        ("visit = 3\n", "no visit list"),
        ("[[visit]\n", "cannot be parsed"),
    ],
)
def test_bad_protocols_are_refused(tmp_path, text, match):
    f = tmp_path / "p.toml"
    f.write_text(text)
    with pytest.raises(ManifestError, match=match):
        read_protocol(f)


def test_packaged_default_protocol_file_matches_default():
    from importlib.resources import files

    path = files("lungdamage").joinpath("data", "visits_default.toml")
    assert read_protocol(str(path)).visits == default_protocol().visits


# --- dates ----------------------------------------------------------------------
def test_to_dates_accepts_dicom_iso_and_objects():
    got = to_dates(["20200401", "2020-04-01", "2020-04-01T10:00", pd.Timestamp("2020-04-01 13:00"), "", None])
    assert got.iloc[:4].eq(pd.Timestamp("2020-04-01")).all()
    assert got.iloc[4:].isna().all()


@pytest.mark.parametrize("bad", ["20200231", "01/04/2020", "2020-4-1"])
def test_to_dates_refuses_unreadable(bad):
    with pytest.raises(ManifestError, match="Unreadable date"):
        to_dates(["20200101", bad], where="test")


# --- manifest -------------------------------------------------------------------
def test_manifest_sample_format_per_scan_rows(tmp_path):
    """The sample_dicom/visits.csv layout: patient_id, arm, study_date (ISO), visit."""
    f = tmp_path / "visits.csv"
    f.write_text("patient_id,arm,study_date,visit\n007,treated,2020-04-01,day 0\n007,treated,2020-04-08,day 7\n"
                 "012,placebo,2020-04-03,day 0\n")
    m = read_manifest(f)
    assert m.patients["patient_id"].tolist() == ["007", "012"]  # leading zeros kept
    assert m.arm_of() == {"007": "treated", "012": "placebo"}
    assert len(m.overrides) == 3 and m.overrides["study_date"].iloc[1] == pd.Timestamp("2020-04-08")


def test_manifest_patient_rows_with_baseline(tmp_path):
    f = tmp_path / "arms.csv"
    f.write_text("Patient_ID, Arm, Baseline_Date\nA1, MSC, 20200401\nA2, placebo,\n")
    m = read_manifest(f)
    assert m.arms == ["MSC", "placebo"]
    assert m.patients.set_index("patient_id")["baseline_date"]["A1"] == pd.Timestamp("2020-04-01")
    assert pd.isna(m.patients.set_index("patient_id")["baseline_date"]["A2"])
    assert m.overrides.empty


@pytest.mark.parametrize(
    "csv, match",
    [
        ("patient_id,visit\nP1,day 0\n", r"missing column\(s\) \['arm'\]"),
        ("patient_id,arm\nP1,treated\nP1,placebo\n", r"patient 'P1' has arms \['placebo', 'treated'\]"),
        ("patient_id,arm\nP1,\n", "has no arm"),
        ("patient_id,arm,visit\nP1,treated,day 7\n", "neither study_date nor series_uid"),
        ("patient_id,arm,baseline_date\nP1,t,2020-01-01\nP1,t,2020-01-02\n", "baseline dates"),
        ("patient_id,arm,study_date\nP1,t,2020-13-01\n", "Unreadable date"),
    ],
)
def test_bad_manifests_are_refused(tmp_path, csv, match):
    f = tmp_path / "m.csv"
    f.write_text(csv)
    with pytest.raises(ManifestError, match=match):
        read_manifest(f)


def test_blinding_relabels_arms_deterministically_and_not_alphabetically():
    m = manifest_from_frame(pd.DataFrame({"patient_id": ["1", "2", "3"], "arm": ["treated", "placebo", "treated"]}))
    b1, b2 = blind_arms(m), blind_arms(m)
    assert sorted(b1.arms) == ["A", "B"] and b1.blinded
    assert b1.arm_of() == b2.arm_of()
    # patients of one arm stay together
    assert b1.arm_of()["1"] == b1.arm_of()["3"] != b1.arm_of()["2"]
    # a key changes the mapping for some key (it is not fixed by the arm names alone)
    assert {blind_arms(m, key=str(k)).arm_of()["2"] for k in range(8)} == {"A", "B"}


# --- assignment -----------------------------------------------------------------
def _trial_scans():
    """P1: days 0, 6, 15, 35 (out of window), 58, 125; P2: days 0, 7, 8 (two in day-7 window), 120;
    P3: no baseline scan (manifest baseline_date), scans at days 14 and 119."""
    b1, b2, b3 = "2020-04-01", "2020-04-10", "2020-05-01"
    scans = [dict(patient_id="P1", study_date=_date(b1, d), damage_pct=v, series_uid=f"1.1.{d}")
             for d, v in [(0, 30), (6, 25), (15, 20), (35, 15), (58, 10), (125, 4)]]
    scans += [dict(patient_id="P2", study_date=_date(b2, d), damage_pct=v, series_uid=f"2.1.{d}")
              for d, v in [(0, 28), (7, 22), (8, 21), (120, 9)]]
    scans += [dict(patient_id="P3", study_date=_date(b3, d), damage_pct=v, series_uid=f"3.1.{d}")
              for d, v in [(14, 18), (119, 7)]]
    scans.append(dict(patient_id="P9", study_date="20200401", damage_pct=1.0, series_uid="9.9"))  # not in manifest
    manifest = manifest_from_frame(pd.DataFrame({
        "patient_id": ["P1", "P2", "P3"], "arm": ["treated", "placebo", "treated"],
        "baseline_date": ["", "", "2020-05-01"],
    }))
    return scans, manifest


def test_assign_visits_windows_out_of_window_and_duplicates(results_frame):
    scans, manifest = _trial_scans()
    a = assign_visits(results_frame(scans), manifest).set_index("series_uid")
    expect = {"1.1.0": "day 0", "1.1.6": "day 7", "1.1.15": "day 14", "1.1.35": None, "1.1.58": "month 2",
              "1.1.125": "month 4", "2.1.0": "day 0", "2.1.7": "day 7", "2.1.8": "day 7", "2.1.120": "month 4",
              "3.1.14": "day 14", "3.1.119": "month 4"}
    got = {k: (None if pd.isna(v) else v) for k, v in a["visit"].items()}
    assert got == expect
    assert a.loc["1.1.35", "day"] == 35 and not a.loc["1.1.35", "used"]
    assert a.loc["1.1.35", "flag"].startswith("out of window: day 35") and "month 2" in a.loc["1.1.35", "flag"]
    # two scans in the day-7 window: the one on day 7 (distance 0) wins over day 8; both flagged with the rule
    assert a.loc["2.1.7", "used"] and not a.loc["2.1.8", "used"]
    assert SELECTION_RULE in a.loc["2.1.7", "flag"] and SELECTION_RULE in a.loc["2.1.8", "flag"]
    # P3's day comes from the manifest baseline_date, not from its first scan
    assert a.loc["3.1.14", "day"] == 14 and a.loc["3.1.119", "day"] == 119
    assert (a.loc[a["visit"].notna(), "assigned_by"] == "window").all()
    assert "P9" not in set(a["patient_id"])
    assert any("'P9'" in n for n in a.attrs["notes"])


def test_overrides_win_series_then_date(results_frame):
    scans, _ = _trial_scans()
    manifest = manifest_from_frame(pd.DataFrame({
        "patient_id": ["P1", "P1", "P2", "P2", "P3"],
        "arm": ["treated"] * 2 + ["placebo"] * 2 + ["treated"],
        "series_uid": ["1.1.35", "", "", "", ""],
        "study_date": ["", "2020-04-16", _date("2020-04-10", 8), _date("2020-04-10", 9), ""],
        "visit": ["Month 2", "day 7", "day 7", "day 14", ""],
        "baseline_date": ["", "", "", "", "20200501"],
    }))
    a = assign_visits(results_frame(scans), manifest).set_index("series_uid")
    # series override pins the out-of-window scan to month 2; it then beats the in-window day-58 scan
    assert a.loc["1.1.35", "visit"] == "month 2" and a.loc["1.1.35", "assigned_by"] == "override:series_uid"
    assert a.loc["1.1.35", "used"] and not a.loc["1.1.58", "used"]
    # date override: day-15 scan (2020-04-16) declared day 7, wins over the window's day-6 scan
    assert a.loc["1.1.15", "visit"] == "day 7" and a.loc["1.1.15", "assigned_by"] == "override:study_date"
    assert a.loc["1.1.15", "used"] and not a.loc["1.1.6", "used"]
    # P2: the day-8 scan is pinned to day 7 and beats the day-7 scan found by the window
    assert a.loc["2.1.8", "used"] and not a.loc["2.1.7", "used"]
    # an override matching no scan becomes a note, not an error
    assert any("no scored scan" in n and "day 14" in n for n in a.attrs["notes"])


def test_override_with_unknown_visit_or_wrong_patient_is_refused(results_frame):
    scans, _ = _trial_scans()
    bad_visit = manifest_from_frame(pd.DataFrame({"patient_id": ["P1"], "arm": ["t"], "series_uid": ["1.1.0"],
                                                  "visit": ["week 17"]}))
    with pytest.raises(ManifestError, match=r"Unknown visit 'week 17'.*'day 0', 'day 7'"):
        assign_visits(results_frame(scans), bad_visit)
    wrong = manifest_from_frame(pd.DataFrame({"patient_id": ["P2"], "arm": ["t"], "series_uid": ["1.1.0"],
                                              "visit": ["day 0"]}))
    with pytest.raises(ManifestError, match="belongs to patient 'P1'"):
        assign_visits(results_frame(scans), wrong)


def test_visit_table_values_and_change_from_baseline(results_frame):
    scans, manifest = _trial_scans()
    t = visit_table(results_frame(scans, css=True), manifest)
    p1 = t[t["patient_id"] == "P1"].set_index("visit")
    assert p1.index.tolist() == ["day 0", "day 7", "day 14", "month 2", "month 4"]
    assert p1["damage_pct"].tolist() == [30, 25, 20, 10, 4]  # region 'total' (right/left are ±1)
    assert p1["damage_pct_change"].tolist() == [0, -5, -10, -20, -26]
    np.testing.assert_allclose(p1["ggo_pct_change"], 0.7 * np.array([0, -5, -10, -20, -26]))
    assert p1["css_pan"].tolist() == [6, 5, 4, 2, 1]
    # P3 has no baseline scan: no change can be computed
    assert t.loc[t["patient_id"] == "P3", "damage_pct_change"].isna().all()
    right = visit_table(results_frame(scans), manifest, region="right")
    assert right.loc[right["patient_id"] == "P1", "damage_pct"].tolist() == [31, 26, 21, 11, 5]
    assert "css_pan" not in right.columns  # absent CT severity score columns are simply not carried


def test_select_results_refuses_ambiguity_and_unknown_names(results_frame):
    scans, manifest = _trial_scans()
    df = results_frame(scans)
    with pytest.raises(InputError, match=r"region 'RUL'.*\['left', 'right', 'total'\]"):
        select_results(df, region="RUL")
    twice = pd.concat([df, df.assign(params_hash="p1", damage_pct=df["damage_pct"] + 1)])
    with pytest.raises(InputError, match="several parameter sets"):
        select_results(twice)
    assert select_results(twice, params_hash="p1")["damage_pct"].iloc[0] == df["damage_pct"].iloc[2] + 1
    with pytest.raises(InputError, match="Metric 'nope'"):
        visit_table(df, manifest, metric="nope")


def test_comparability_warnings_slice_thickness_and_kernel(results_frame):
    scans, manifest = _trial_scans()
    for s in scans:
        if s["series_uid"] == "1.1.125":
            s["slice_thickness_mm"] = 1.25
        if s["series_uid"] == "2.1.120":
            s["kernel"] = "LUNG"
    w = comparability_warnings(visit_table(results_frame(scans), manifest))
    assert set(zip(w["patient_id"], w["issue"], strict=True)) == {
        ("P1", "slice thickness changed between visits"), ("P2", "reconstruction kernel changed between visits")}
    assert "month 4: 1.25 mm" in w.loc[w["patient_id"] == "P1", "detail"].iloc[0]
    none = comparability_warnings(visit_table(results_frame(_trial_scans()[0]), manifest))
    assert none.empty


SAMPLE_VISITS = __import__("pathlib").Path(__file__).resolve().parents[2] / "sample_dicom" / "visits.csv"


@pytest.mark.skipif(not SAMPLE_VISITS.is_file(), reason="sample_dicom/visits.csv not present")
def test_sample_dicom_visits_csv_is_a_valid_manifest(results_frame):
    m = read_manifest(SAMPLE_VISITS)
    raw = pd.read_csv(SAMPLE_VISITS, dtype=str)
    assert sorted(m.patients["patient_id"]) == sorted(raw["patient_id"].unique())
    assert m.arm_of() == dict(zip(raw["patient_id"], raw["arm"], strict=True))
    assert len(m.overrides) == len(raw)
    p = default_protocol()
    for name in raw["visit"]:
        p.lookup(name)  # every visit name of the sample resolves (e.g. 'baseline', 'month4')
    # scans on the sample's dates land on the declared visits by the date overrides
    scans = [dict(patient_id=r.patient_id, study_date=r.study_date.replace("-", ""), damage_pct=1.0,
                  series_uid=f"9.{i}") for i, r in enumerate(raw.itertuples())]
    a = assign_visits(results_frame(scans), m)
    assert (a["assigned_by"] == "override:study_date").all() and a["used"].all()
    assert a["visit"].tolist() == [p.lookup(v).name for v in raw.sort_values(["patient_id", "study_date"])["visit"]]
