"""Oracle: per-lobe volume and mean HU equal TotalSegmentator's own statistics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"
TS = REALDATA / "totalsegmentator"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not TS.is_dir(), reason="../shared/realdata/totalsegmentator not present"),
]

TS_NAMES = {
    "LUL": "lung_upper_lobe_left",
    "LLL": "lung_lower_lobe_left",
    "RUL": "lung_upper_lobe_right",
    "RML": "lung_middle_lobe_right",
    "RLL": "lung_lower_lobe_right",
}


def test_lobe_volume_and_mean_hu_equal_totalsegmentator_statistics():
    from lungdamage.io.images import read_image, read_label_image
    from lungdamage.regions import translate_labels
    from lungdamage.score import score

    ct = read_image(TS / "example_ct_sm.nii.gz")
    labels = read_label_image(TS / "example_seg_fast.nii.gz", ct)
    regions = translate_labels(labels, "totalsegmentator", method="labels:example_seg_fast")
    stats = json.loads((TS / "example_seg_fast_statistics.json").read_text())
    df = score(ct, regions).to_frame().set_index("region")
    assert regions.region_set == "lobes"
    checked = 0
    for lobe, ts_name in TS_NAMES.items():
        expected = stats[ts_name]
        # TotalSegmentator: volume = voxels * voxel volume (mm^3); intensity = mean CT value, 5 decimals
        assert df.loc[lobe, "volume_ml"] * 1000 == pytest.approx(expected["volume"], abs=1e-6), lobe
        if expected["volume"] > 0:
            assert df.loc[lobe, "mean_hu"] == pytest.approx(expected["intensity"], abs=5e-6), lobe
            checked += 1
        else:  # absent lobe: no voxels, mean undefined (TotalSegmentator writes 0.0)
            assert df.loc[lobe, "voxels"] == 0
    assert checked == 3
    # totals are the sums of the lobes, and the absent lobes make the severity total undefined
    assert df.loc["total", "volume_ml"] * 1000 == pytest.approx(sum(s["volume"] for s in (stats[n] for n in TS_NAMES.values())))
    assert df.loc[["LUL", "LLL", "RLL"], "css_pan"].notna().all()
