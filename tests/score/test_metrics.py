"""CT severity score bins at every edge, opacity metrics and comparability rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lungdamage import CTVolume, RegionMap, ScanMeta
from lungdamage.score import score
from lungdamage.score.metrics import comparability_warnings, css_chung, css_pan, is_sharp_kernel

EPS = 1e-9

# (percent involved, Pan/Francone 0-5, Chung/Li 0-4): every edge, just below and just above
EDGE_TABLE = [
    (0.0, 0, 0),
    (EPS, 1, 1),
    (1.0, 1, 1),
    (5 - EPS, 1, 1),
    (5.0, 2, 1),
    (5 + EPS, 2, 1),
    (25 - EPS, 2, 1),
    (25.0, 2, 1),
    (25 + EPS, 3, 2),
    (50 - EPS, 3, 2),
    (50.0, 3, 2),
    (50 + EPS, 4, 3),
    (75 - EPS, 4, 3),
    (75.0, 4, 3),
    (75 + EPS, 5, 4),
    (100.0, 5, 4),
]


@pytest.mark.parametrize(("pct", "pan", "chung"), EDGE_TABLE)
def test_severity_bins_at_every_edge(pct, pan, chung):
    assert css_pan(pct) == pan
    assert css_chung(pct) == chung


def test_severity_of_nan_is_nan():
    assert math.isnan(css_pan(np.nan)) and math.isnan(css_chung(np.nan))


def lobes_with_damage(counts_per_lobe, n=20):
    """One lobe per slice of ``n`` voxels; lobe k has counts_per_lobe[k] voxels at 0 HU (damage)."""
    hu = np.full((5, 1, n), -850, np.int16)
    for k, c in enumerate(counts_per_lobe):
        hu[k, 0, :c] = 0
    labels = np.repeat(np.arange(1, 6, dtype=np.uint8), n).reshape(5, 1, n)
    names = {1: "RUL", 2: "RML", 3: "RLL", 4: "LUL", 5: "LLL"}
    return CTVolume(hu, (1, 1, 1)), RegionMap(labels, names, region_set="lobes")


def test_scores_from_exact_voxel_fractions_and_totals():
    # 20-voxel lobes: 1 voxel = 5 % exactly, 5 = 25 %, 10 = 50 %, 15 = 75 %, 16 = 80 %
    ct, regions = lobes_with_damage([1, 5, 10, 15, 16])
    df = score(ct, regions).to_frame().set_index("region")
    assert df.loc[["RUL", "RML", "RLL", "LUL", "LLL"], "damage_pct"].tolist() == [5.0, 25.0, 50.0, 75.0, 80.0]
    assert df.loc[["RUL", "RML", "RLL", "LUL", "LLL"], "css_pan"].tolist() == [2, 2, 3, 4, 5]
    assert df.loc[["RUL", "RML", "RLL", "LUL", "LLL"], "css_chung"].tolist() == [1, 1, 2, 3, 4]
    assert df.loc["right", "css_pan"] == 7 and df.loc["left", "css_pan"] == 9
    assert df.loc["total", "css_pan"] == 16 and df.loc["total", "css_chung"] == 11
    assert set(df["css_region_set"]) == {"lobes"}


def test_zero_damage_scores_zero_and_full_damage_scores_max():
    ct, regions = lobes_with_damage([0, 0, 0, 0, 0])
    df = score(ct, regions).to_frame().set_index("region")
    assert df.loc["total", "css_pan"] == 0 and df.loc["total", "css_chung"] == 0
    ct, regions = lobes_with_damage([20] * 5)
    df = score(ct, regions).to_frame().set_index("region")
    assert df.loc["total", "css_pan"] == 25 and df.loc["total", "css_chung"] == 20


def test_lungs_region_set_has_no_lobe_score():
    ct = CTVolume(np.array([[[-850, 0, -850, 0]]], np.int16), (1, 1, 1))
    regions = RegionMap(np.array([[[1, 1, 2, 2]]], np.uint8), {1: "right", 2: "left"})
    df = score(ct, regions).to_frame()
    assert df["css_pan"].isna().all() and df["css_chung"].isna().all()
    assert set(df["css_region_set"]) == {"none"}


def test_zones_are_scored_and_named():
    hu = np.full((6, 1, 4), -850, np.int16)
    hu[:, 0, 0] = 0  # 25 % of each zone
    labels = np.repeat(np.arange(1, 7, dtype=np.uint8), 4).reshape(6, 1, 4)
    names = {1: "RUZ", 2: "RMZ", 3: "RLZ", 4: "LUZ", 5: "LMZ", 6: "LLZ"}
    df = score(CTVolume(hu, (1, 1, 1)), RegionMap(labels, names, region_set="zones")).to_frame().set_index("region")
    assert df.loc["total", "css_pan"] == 12 and df.loc["total", "css_chung"] == 6
    assert df.loc["RUZ", "css_region_set"] == "zones"


def test_opacity_high_opacity_and_laa_edges():
    # one voxel each at the edges: opacity [-700, 100), high opacity -200 < HU < 100, LAA HU < -950
    values = [-951, -950, -701, -700, -200, -199, 99, 100]
    ct = CTVolume(np.array([[values]], np.int16), (1, 1, 1))
    regions = RegionMap(np.ones((1, 1, len(values)), np.uint8), {1: "right"})
    r = score(ct, regions).to_frame().set_index("region").loc["right"]
    n = len(values)
    assert r["opacity_pct"] == 100.0 * 4 / n  # -700, -200, -199, 99 (not -701, not 100)
    assert r["high_opacity_pct"] == 100.0 * 2 / n  # -199, 99
    assert r["laa950_pct"] == 100.0 * 1 / n  # -951 only
    assert r["opacity_pct"] == r["damage_pct"]  # covid damage bands = opacity range


@pytest.mark.parametrize(
    ("kernel", "sharp"),
    [("B60f", True), ("B70f", True), ("I50f\\3", True), ("Br59", True), ("Bl57", True), ("LUNG", True),
     ("BONE", True), ("YA", True), ("FC51", True), ("FC86", True), ("SHARP", True),
     ("B30f", False), ("B31f", False), ("STANDARD", False), ("SOFT", False), ("FC08", False), ("Br40", False),
     ("I40f\\3", False), ("", False), (None, False)],
)
def test_sharp_kernel_rule(kernel, sharp):
    assert is_sharp_kernel(kernel) is sharp


def test_comparability_warnings_column():
    meta = ScanMeta(series_uid="1.2.3", slice_thickness_mm=5.0, kernel="B70f", contrast=True)
    ct = CTVolume(np.full((1, 1, 2), -850, np.int16), (5, 1, 1), meta=meta)
    df = score(ct, RegionMap(np.ones((1, 1, 2), np.uint8), {1: "right"})).to_frame()
    w = df["warnings"].iloc[0]
    assert "thick slices (5 mm" in w and "sharp kernel (B70f)" in w and "contrast" in w
    assert comparability_warnings(slice_thickness_mm=2.5, kernel="B30f", contrast=False) == []
    assert comparability_warnings(slice_thickness_mm=2.6, kernel=None, contrast=None)[0].startswith("thick slices")
