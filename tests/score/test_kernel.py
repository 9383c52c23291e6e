"""The scoring kernel against a straightforward masked-count reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lungdamage import CTVolume, RegionMap
from lungdamage.errors import GeometryError
from lungdamage.score import PRESETS, score
from lungdamage.score.kernels import HU_OFFSET, region_histograms


def reference_counts(hu, labels, codes, scheme):
    """Masked counting, one band and one region at a time (the obvious way)."""
    out = {}
    for name, cs in codes.items():
        in_region = np.isin(labels, cs)
        row = []
        for band in scheme.bands:
            in_band = np.logical_and(hu >= band.lo_hu, hu < band.hi_hu)
            row.append(int(np.count_nonzero(np.logical_and(in_region, in_band))))
        if scheme.has_gaps:
            row.append(int(np.count_nonzero(in_region)) - sum(row))
        out[name] = row
    return out


volumes = st.tuples(st.integers(1, 4), st.integers(1, 7), st.integers(1, 7)).flatmap(
    lambda shape: st.tuples(
        arrays(np.int16, shape, elements=st.integers(-32768, 32767)),
        arrays(np.uint8, shape, elements=st.integers(0, 5)),
    )
)


@settings(max_examples=150, deadline=None)
@given(volumes, st.sampled_from(sorted(PRESETS)))
def test_kernel_equals_masked_count_reference(vol, scheme_name):
    hu, labels = vol
    # edge values of every scheme are over-represented: put some exactly on the edges
    edges = [e for b in PRESETS[scheme_name].bands for e in (b.lo_hu, b.hi_hu) if math.isfinite(e)]
    flat = hu.reshape(-1).copy()
    flat[: len(edges)] = np.array(edges[: flat.size], dtype=np.int16)[: flat.size]
    hu = flat.reshape(hu.shape)
    names = {1: "RUL", 2: "RML", 3: "RLL", 4: "LUL", 5: "LLL"}
    regions = RegionMap(labels, names, region_set="lobes")
    ct = CTVolume(hu, (2.0, 0.5, 0.75))
    result = score(ct, regions, scheme_name)
    expected = reference_counts(hu, labels, {n: list(c) for n, c in regions.groups().items()}, PRESETS[scheme_name])
    got = result.band_voxels()
    for i, name in enumerate(result.regions):
        assert got[i].tolist() == expected[name], name
    df = result.to_frame().set_index("region")
    for name, row in expected.items():
        n = sum(row)
        assert df.loc[name, "voxels"] == n
        assert df.loc[name, "volume_ml"] == pytest.approx(n * 2.0 * 0.5 * 0.75 / 1000)
        if n:
            in_region = np.isin(labels, regions.groups()[name])
            assert df.loc[name, "mean_hu"] == pytest.approx(hu[in_region].astype(float).mean(), abs=1e-9)
            assert df.loc[name, "perc15_hu"] == np.percentile(hu[in_region], 15, method="inverted_cdf")
            pct = [df.loc[name, f"{b}_pct"] for b in PRESETS[scheme_name].band_names]
            assert sum(pct) == pytest.approx(100.0)


def test_histogram_bins_are_hu_values():
    hu = np.array([[[-32768, -1024, -1, 0, 32767]]], np.int16)
    lab = np.ones_like(hu, dtype=np.uint8)
    h = region_histograms(hu, lab)
    assert [int(v) - HU_OFFSET for v in np.flatnonzero(h[1])] == [-32768, -1024, -1, 0, 32767]
    assert h[0].sum() == 0


@settings(max_examples=60, deadline=None)
@given(volumes, st.integers(1, 40), st.integers(0, 3))
def test_kernel_in_slabs_of_a_box_view_equals_per_code_bincount(vol, chunk_vox, margin):
    """Counted slab by slab (any slab size) on a bounding-box view of a larger volume: the same exact
    histograms as one ``np.bincount`` of each code's voxels."""
    hu, labels = vol
    big_hu = np.full(tuple(n + 2 * margin for n in hu.shape), 123, np.int16)
    big_lab = np.zeros(big_hu.shape, np.uint8)
    box = tuple(slice(margin, margin + n) for n in hu.shape)
    big_hu[box], big_lab[box] = hu, labels
    h = region_histograms(big_hu[box], big_lab[box], chunk_vox=chunk_vox)
    n_codes = int(labels.max()) + 1
    assert h.shape == (n_codes, 65536)
    for code in range(1, n_codes):
        expected = np.bincount(hu[labels == code].astype(np.int64) + HU_OFFSET, minlength=65536)
        assert np.array_equal(h[code], expected), code
    assert h[0].sum() == 0


def test_band_edges_are_half_open():
    # covid: ggo [-700, -300), consolidation [-300, 100)
    hu = np.array([[[-701, -700, -301, -300, 99, 100]]], np.int16)
    ct = CTVolume(hu, (1, 1, 1))
    regions = RegionMap(np.ones(hu.shape, np.uint8), {1: "right"})
    df = score(ct, regions).to_frame().set_index("region")
    r = df.loc["right"]
    assert r["aerated_pct"] == pytest.approx(100 / 6)
    assert r["ggo_pct"] == pytest.approx(200 / 6)
    assert r["consolidation_pct"] == pytest.approx(200 / 6)
    assert r["dense_pct"] == pytest.approx(100 / 6)
    assert r["damage_pct"] == pytest.approx(400 / 6)


def test_aeration_scheme_counts_out_of_band_voxels_as_other():
    hu = np.array([[[-950, -600, -300, 0, 500]]], np.int16)
    ct = CTVolume(hu, (1, 1, 1))
    regions = RegionMap(np.ones(hu.shape, np.uint8), {1: "left"})
    df = score(ct, regions, "aeration").to_frame().set_index("region")
    assert df.loc["left", "other_pct"] == pytest.approx(20.0)
    assert df.loc["left", "damage_pct"] == pytest.approx(40.0)


def test_regions_off_grid_raise_geometry_error():
    ct = CTVolume(np.zeros((2, 4, 4), np.int16), (1, 1, 1))
    regions = RegionMap(np.ones((2, 4, 5), np.uint8), {1: "right"})
    with pytest.raises(GeometryError, match=r"shape \(2, 4, 5\).*\(2, 4, 4\)"):
        score(ct, regions)


def test_frame_has_the_documented_columns():
    ct = CTVolume(np.full((1, 2, 2), -800, np.int16), (1, 1, 1))
    regions = RegionMap(np.array([[[1, 1], [2, 0]]], np.uint8), {1: "right", 2: "left"})
    df = score(ct, regions).to_frame()
    for col in ("series_uid", "patient_id", "study_date", "region", "volume_ml", "ggo_pct", "ggo_ml",
                "consolidation_pct", "consolidation_ml", "damage_pct", "method", "scheme", "version"):
        assert col in df.columns
    assert df["region"].tolist() == ["right", "left", "total"]
    assert df.set_index("region").loc["total", "voxels"] == 3
