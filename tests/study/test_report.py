"""analyze_study + write_report: files, figures, definitions, blinding."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lungdamage.study import analyze_study, read_manifest, write_report
from lungdamage.study.plots import PIXELS
from lungdamage.study.report import _definition

from .conftest import make_results

VISITS = [0, 7, 14, 60, 120]


def _trial(tmp_path, *, thick_change=True):
    """8 treated + 5 placebo; month-4 damage ~2 % treated vs ~8 % placebo; one out-of-window scan (day 35)."""
    rng = np.random.default_rng(3)
    scans, arms = [], []
    for i in range(13):
        arm = "active drug" if i < 8 else "placebo"
        pid = f"{i + 1:03d}"
        arms.append((pid, arm))
        base = pd.Timestamp("2021-01-04") + pd.Timedelta(days=2 * i)
        res = 0.07 if arm == "active drug" else 0.27
        days = VISITS + ([35] if i == 0 else [])
        for d in days:
            v = 30 * (res + (1 - res) * np.exp(-d / 30)) + rng.normal(0, 0.4)
            thick = 1.25 if (thick_change and i == 2 and d == 120) else 5.0
            scans.append(dict(patient_id=pid, study_date=(base + pd.Timedelta(days=d)).strftime("%Y%m%d"),
                              damage_pct=v, series_uid=f"1.9.{i}.{d}", slice_thickness_mm=thick))
    f = tmp_path / "arms.csv"
    pd.DataFrame(arms, columns=["patient_id", "arm"]).to_csv(f, index=False)
    return make_results(scans, css=True), f


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    results, manifest = _trial(tmp)
    study = analyze_study(results, manifest)
    files = write_report(study, tmp / "out")
    return study, files


def test_study_tables(written):
    study, _ = written
    assert (study.treated, study.control) == ("active drug", "placebo")
    assert len(study.visits) == 13 * 5 and study.visits["patient_id"].nunique() == 13
    a = study.assignments.set_index("series_uid")
    assert not a.loc["1.9.0.35", "used"] and a.loc["1.9.0.35", "flag"].startswith("out of window")
    s = study.summary[(study.summary["metric"] == "damage_pct") & (study.summary["visit"] == "month 4")]
    assert s.set_index("arm")["n"].to_dict() == {"active drug": 8, "placebo": 5}
    c = study.comparison.set_index("quantity")
    assert c.loc["hodges_lehmann", "value"] < -4 and c.loc["hodges_lehmann", "ci_high"] < 0
    assert c.loc["mann_whitney_u", "value"] == 0 and c.loc["mann_whitney_u", "p_value"] < 0.01
    assert set(study.warnings["patient_id"]) == {"003"}
    assert study.mixed is not None and "arm[active drug]:visit[month 4]" in set(study.mixed["term"])


def test_files_and_figures(written):
    _, files = written
    for name in ("report.md", "report.html", "visits.csv", "assignments.csv", "arm_summary.csv", "comparison.csv",
                 "comparability_warnings.csv", "mixed_model.csv", "protocol.csv"):
        assert files[name].is_file() and files[name].stat().st_size > 100, name
    pngs = [p for n, p in files.items() if n.endswith(".png")]
    assert sorted(p.name for p in pngs) == ["arm_medians.png", "distribution_month_4.png", "trajectories.png"]
    for p in pngs:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size == PIXELS
            px = np.asarray(im.convert("L"), dtype=float)
        assert px.std() > 10  # not blank: lines, points and text on a white background
        assert (px < 128).mean() > 0.005


def test_report_names_provenance_and_defines_every_column(written):
    study, files = written
    md = files["report.md"].read_text()
    assert "HU band scheme: covid" in md and "region set: lungs" in md and "Segmentation method: threshold" in md
    assert "slice thickness changed between visits" in md and "003" in md
    assert "out of window: day 35" in md
    assert "Power: With 8 vs 5 patients" in md
    # every column of every table in the report has a definition line
    defs = md.split("## Definitions", 1)[1]
    lines = md.split("## Definitions")[0].splitlines()
    headers = [a for a, b in itertools.pairwise(lines) if b.startswith("|---")]
    cols = {c.strip() for h in headers for c in h.strip("|").split("|")}
    assert {"damage_pct", "css_pan", "damage_pct_change", "p_value", "coef", "flag", "ci_low"} <= cols
    for col in cols:
        assert f"- {col}: " in defs, col
        assert _definition(col) != "see the lungdamage documentation", col
    for q in study.comparison["quantity"]:
        assert f"- {q} (" in defs


def test_html_is_self_contained(written):
    _, files = written
    html = files["report.html"].read_text()
    srcs = re.findall(r'src="([^"]*)"', html)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in html and "https://" not in html and "<link" not in html and "<script" not in html


def test_blinded_report_hides_arm_names(tmp_path):
    results, manifest = _trial(tmp_path, thick_change=False)
    study = analyze_study(results, manifest, blind=True, mixed=False)
    assert sorted(study.visits["arm"].unique()) == ["A", "B"]
    files = write_report(study, tmp_path / "blind")
    for name, path in files.items():
        if path.suffix in (".md", ".html", ".csv"):
            text = path.read_text().lower()
            assert "active drug" not in text and "placebo" not in text, name
    md = files["report.md"].read_text()
    assert "BLINDED REPORT" in md and "key is withheld" in md
    # the comparison is still computed, on the relabelled arms; the unblinded one has the same |difference|
    c = study.comparison.set_index("quantity")
    unblinded = analyze_study(results, read_manifest(manifest), mixed=False).comparison.set_index("quantity")
    assert abs(c.loc["hodges_lehmann", "value"]) == pytest.approx(abs(unblinded.loc["hodges_lehmann", "value"]))
    assert c.loc["mann_whitney_u", "p_value"] == pytest.approx(unblinded.loc["mann_whitney_u", "p_value"])
    assert "Linear mixed model not requested" in md
