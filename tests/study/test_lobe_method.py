"""Per-lobe change only where the lobe method is the same at every visit (issue 16)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lungdamage.study import (
    analyze_study,
    comparability_warnings,
    manifest_from_frame,
    visit_table,
)


def _frame(make_results):
    scans = [dict(patient_id=p, study_date=d, damage_pct=v, series_uid=f"{p}.{d}")
             for p, d, v in [("P1", "20200401", 30), ("P1", "20200801", 10),
                             ("P2", "20200410", 28), ("P2", "20200808", 12)]]
    df = make_results(scans, regions=("RUL", "RLL", "total"))
    df["region_set"], df["method"] = "lobes-approx", "threshold"
    # P2's month-4 scan got true lobes from lungmask: its lobe boundaries are not the baseline's
    late = df["series_uid"] == "P2.20200808"
    df.loc[late, "region_set"], df.loc[late, "method"] = "lobes", "lungmask:LTRCLobes_R231"
    manifest = manifest_from_frame(pd.DataFrame({"patient_id": ["P1", "P2"], "arm": ["treated", "placebo"]}))
    return df, manifest


def test_lobe_change_only_with_the_same_lobe_method_at_every_visit(results_frame):
    df, manifest = _frame(results_frame)
    t = visit_table(df, manifest, region="RUL").set_index(["patient_id", "visit"])
    assert t.loc[("P1", "month 4"), "damage_pct_change"] == -20
    assert t.loc[("P1", "month 4"), "ggo_pct_change"] == -14
    # the values stay, the change is not reported
    assert t.loc[("P2", "month 4"), "damage_pct"] == 12
    assert np.isnan(t.loc[("P2", "month 4"), "damage_pct_change"])
    assert t.xs("P2")[["damage_pct_change", "ggo_pct_change", "consolidation_pct_change"]].isna().all().all()
    notes = visit_table(df, manifest, region="RUL").attrs["notes"]
    assert any("only for patients whose visits all used the same lobe method" in n for n in notes)
    p2 = [n for n in notes if n.startswith("P2:")]
    assert len(p2) == 1 and "lobes-approx by threshold" in p2[0] and "lobes by lungmask:LTRCLobes_R231" in p2[0]
    # whole-lung rows keep their change; the difference is still reported for the patient
    total = visit_table(df, manifest, region="total").set_index(["patient_id", "visit"])
    assert total.loc[("P2", "month 4"), "damage_pct_change"] == -16
    w = comparability_warnings(visit_table(df, manifest, region="total"))
    assert ("P2", "regions segmented differently between visits") in set(zip(w["patient_id"], w["issue"], strict=True))
    assert "P1" not in set(w["patient_id"])


def test_study_result_says_so(results_frame):
    df, manifest = _frame(results_frame)
    res = analyze_study(df, manifest, region="RLL", mixed=False)
    assert any(n.startswith("P2: RLL change not reported") for n in res.notes)
    assert res.visits.set_index(["patient_id", "visit"])["damage_pct_change"].isna().loc["P2"].all()
