"""Fixtures of the study tests: results tables with known values.

``results_frame`` builds a table in the :func:`lungdamage.load_results`
format (one row per scan × region) from ``(patient, date, value)`` specs, so
visit assignment and statistics can be checked against values chosen here.
"""

from __future__ import annotations

import pandas as pd
import pytest


def make_results(scans, *, regions=("right", "left", "total"), css=False, extra=None) -> pd.DataFrame:
    """Results rows for ``scans`` = iterable of dicts with ``patient_id, study_date, damage_pct`` (+ optional
    ``series_uid, slice_thickness_mm, kernel, params_hash``).  GGO = 70 % and consolidation = 30 % of damage;
    the ``right`` and ``left`` rows carry damage ± 1 so that region selection is observable."""
    rows = []
    for i, s in enumerate(scans):
        uid = s.get("series_uid", f"1.2.826.0.1.3680043.8.498.{i + 1}")
        for reg in regions:
            d = float(s["damage_pct"]) + {"right": 1.0, "left": -1.0}.get(reg, 0.0)
            row = dict(
                series_uid=uid, patient_id=s["patient_id"], study_date=s["study_date"], region=reg,
                region_set="lungs", voxels=1000, volume_ml=4000.0, ggo_pct=0.7 * d, consolidation_pct=0.3 * d,
                damage_pct=d, mean_hu=-700.0, method="threshold", scheme="covid",
                scheme_edges="emphysema [-inf, -950), ...", params_hash=s.get("params_hash", "p0"),
                input_hash="h", version="0.1.0", slice_thickness_mm=s.get("slice_thickness_mm", 5.0),
                kernel=s.get("kernel", "STANDARD"), warnings=s.get("warnings", ""),
            )
            if css:
                row.update(css_pan=round(d / 5), css_chung=round(d / 6))
            row.update(extra or {})
            rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture
def results_frame():
    return make_results
