"""Property tests (hypothesis): sums to 100, flip invariance, voxel-size scaling, aggregates = sum of parts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lungdamage import CTVolume, RegionMap
from lungdamage.score import PRESETS, score, score_many

LOBES = {1: "RUL", 2: "RML", 3: "RLL", 4: "LUL", 5: "LLL"}
ZONES = {1: "RUZ", 2: "RMZ", 3: "RLZ", 4: "LUZ", 5: "LMZ", 6: "LLZ"}
LUNGS = {1: "right", 2: "left"}
SETS = {"lobes": LOBES, "zones": ZONES, "lungs": LUNGS}

# lung-like HU: mostly in the lung range, some extremes
hu_values = st.one_of(st.integers(-1100, 300), st.integers(-32768, 32767))


@st.composite
def scans(draw):
    shape = draw(st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6)))
    region_set = draw(st.sampled_from(sorted(SETS)))
    names = SETS[region_set]
    hu = draw(arrays(np.int16, shape, elements=hu_values))
    labels = draw(arrays(np.uint8, shape, elements=st.integers(0, max(names))))
    spacing = draw(st.tuples(*[st.sampled_from([0.5, 0.625, 0.7, 1.0, 1.25, 3.0])] * 3))
    return CTVolume(hu, spacing), RegionMap(labels, names, region_set=region_set)


def numeric(df: pd.DataFrame) -> pd.DataFrame:
    return df.select_dtypes("number").drop(columns=["smooth_sigma_mm"], errors="ignore")


@settings(max_examples=25, deadline=None)
@given(scans(), st.sampled_from(sorted(PRESETS)))
def test_band_percentages_of_every_region_sum_to_100(scan, scheme):
    ct, regions = scan
    df = score(ct, regions, scheme).to_frame()
    pct = df[[f"{b}_pct" for b in PRESETS[scheme].band_names]].sum(axis=1)
    nonempty = df["voxels"] > 0
    np.testing.assert_allclose(pct[nonempty], 100.0, rtol=0, atol=1e-9)
    assert pct[~nonempty].eq(0).all() or df.loc[~nonempty, "damage_pct"].isna().all()
    ml = df[[f"{b}_ml" for b in PRESETS[scheme].band_names]].sum(axis=1)
    np.testing.assert_allclose(ml, df["volume_ml"], rtol=1e-12)


@settings(max_examples=20, deadline=None)
@given(scans(), st.sets(st.integers(0, 2), min_size=1))
def test_results_are_invariant_to_flipping_any_axis(scan, axes):
    ct, regions = scan
    axes = tuple(sorted(axes))
    flipped_ct = CTVolume(np.flip(ct.hu, axes), ct.spacing_mm)
    flipped = RegionMap(np.flip(regions.labels, axes), regions.names, region_set=regions.region_set)
    a, b = numeric(score_many(ct, regions, ["covid", "lcta"]).to_frame()), numeric(
        score_many(flipped_ct, flipped, ["covid", "lcta"]).to_frame()
    )
    # the lesion measure works on a grid of about 2.5-mm cells anchored at one corner of the lungs' box,
    # so a flip moves the cell boundaries (e.g. a 6-row slice in cells of 5 rows: a single dense pixel is
    # part of a lesion one way and not the other): not flip-invariant by design, like its scale
    lesion_cols = [c for c in a.columns if c.startswith("lesion_")]
    pd.testing.assert_frame_equal(a.drop(columns=lesion_cols), b.drop(columns=lesion_cols), check_exact=True)


@settings(max_examples=20, deadline=None)
@given(scans(), st.integers(0, 2), st.sampled_from([0.5, 2.0, 4.0]))
def test_volumes_scale_exactly_with_voxel_size(scan, axis, factor):
    ct, regions = scan
    spacing = list(ct.spacing_mm)
    spacing[axis] *= factor
    a = score(ct, regions).to_frame()
    b = score(CTVolume(ct.hu, tuple(spacing)), regions).to_frame()
    # the lesion measure depends on physical size by design (scales, minimum size in mm): not scale-free
    ml_cols = [c for c in a.columns if c.endswith("_ml") and not c.startswith("lesion_")]
    # power-of-two factors: scaling is exact in floating point
    assert (b[ml_cols].to_numpy() == factor * a[ml_cols].to_numpy()).all()
    pct_cols = [c for c in a.columns if (c.endswith("_pct") or c.endswith("_hu") or c.startswith("css_"))
                and not c.startswith("lesion_")]
    pd.testing.assert_frame_equal(a[pct_cols], b[pct_cols], check_exact=True)


@settings(max_examples=25, deadline=None)
@given(scans())
def test_aggregate_regions_equal_the_sum_of_their_parts(scan):
    ct, regions = scan
    result = score(ct, regions)
    df = result.to_frame().set_index("region")
    count_cols = ["voxels"] + [c for c in df.columns if c.endswith("_ml")]
    groups = regions.groups()
    finest = list(regions.names.values())
    for agg in ("right", "left", "total"):
        parts = [n for n in finest if set(groups[n]) <= set(groups[agg])]
        if agg in finest:
            continue
        np.testing.assert_allclose(
            df.loc[agg, count_cols].to_numpy(float), df.loc[parts, count_cols].to_numpy(float).sum(axis=0), rtol=1e-12
        )
        if regions.region_set != "lungs":
            for col in ("css_pan", "css_chung"):
                expected = df.loc[parts, col].sum(skipna=False)
                assert df.loc[agg, col] == expected or (np.isnan(expected) and np.isnan(df.loc[agg, col]))
    # densitometry of the total equals the voxel-level computation on the union
    inside = regions.labels > 0
    if inside.any():
        assert df.loc["total", "mean_hu"] == pytest.approx(ct.hu[inside].astype(float).mean(), abs=1e-9)
        assert df.loc["total", "laa950_pct"] == pytest.approx(100.0 * np.mean(ct.hu[inside] < -950))


@settings(max_examples=25, deadline=None)
@given(scans())
def test_several_schemes_share_one_pass_and_match_single_runs(scan):
    ct, regions = scan
    both = score_many(ct, regions, "covid,aeration")
    assert both.schemes == ("covid", "aeration")
    assert both["covid"].histograms is both["aeration"].histograms
    for name in ("covid", "aeration"):
        single = score(ct, regions, name).to_frame()
        part = both.to_frame().query("scheme == @name").reset_index(drop=True)[single.columns]
        pd.testing.assert_frame_equal(numeric(single), numeric(part), check_exact=True, check_dtype=False)
