"""Approximate lobes that respect anatomy (issue 16).

Truth used here, written out independently of lungdamage:

- lobar volumes of healthy adults, percent of the total lung volume, supine
  inspiratory CT (Yamada et al. 2020, Respiration 99(7):598, PMC7490509,
  Table 3; 32 volunteers): observed range (min, max) per lobe;
- the phantom's own lobe truth (``make_phantom(adult_lobes=True)``);
- anatomy: the oblique fissure runs from posterior-superior to
  anterior-inferior, so the lower lobe is posterior and its share of each
  axial section grows towards the base.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _segdata import REALDATA, dice

from lungdamage import phantom
from lungdamage.pipeline import analyze_scan
from lungdamage.score.metrics import css_chung, css_pan
from lungdamage.segment import approx_lobes, segment_lungs
from lungdamage.segment.lobes import LobeCoverageError

# Yamada 2020 Table 3, supine: (min, max) % of the total lung volume
ADULT_RANGE_PCT = {"RUL": (11.8, 22.7), "RML": (6.6, 13.8), "RLL": (22.3, 34.0), "LUL": (18.1, 26.6),
                   "LLL": (19.4, 28.7)}
NAMES = ("RUL", "RML", "RLL", "LUL", "LLL")  # codes 1..5
SAMPLE = Path(__file__).resolve().parents[2] / "sample_dicom"


def lobe_pct(labels: np.ndarray) -> dict[str, float]:
    counts = np.bincount(labels.ravel(), minlength=6)[1:6].astype(float)
    return {n: 100.0 * c / counts.sum() for n, c in zip(NAMES, counts, strict=True)}


def assert_adult(pct: dict[str, float]) -> None:
    out = {n: round(p, 1) for n, p in pct.items() if not ADULT_RANGE_PCT[n][0] <= p <= ADULT_RANGE_PCT[n][1]}
    assert not out, f"outside the adult ranges {ADULT_RANGE_PCT}: {out}"


@pytest.fixture(scope="module")
def adult5():
    return phantom.make_phantom(slice_thickness_mm=5.0, vessels=False, seed=0, adult_lobes=True)


def test_adult_phantom_truth_is_adult(adult5):
    assert_adult(lobe_pct(adult5.truth.lobes))


def test_lobe_shares_within_adult_ranges_and_dice(adult5):
    lobes = segment_lungs(adult5.ct, regions="lobes")
    assert lobes.region_set == "lobes-approx"
    assert_adult(lobe_pct(lobes.labels))  # measured RUL 17.8, RML 7.9, RLL 25.1, LUL 24.5, LLL 24.6
    ds = [dice(lobes.labels == c, adult5.truth.lobes == c) for c in range(1, 6)]
    assert min(ds) >= 0.85, ds  # measured 0.958 / 0.901 / 0.982 / 0.978 / 0.979


def test_oblique_fissure_runs_posterior_superior_to_anterior_inferior(adult5):
    lobes = segment_lungs(adult5.ct, regions="lobes").labels
    y_post = adult5.ct.origin_lps[1] + adult5.ct.spacing_mm[1] * np.arange(lobes.shape[1])  # rows: + posterior
    for upper, lower in (((1, 2), 3), ((4,), 5)):
        up = np.isin(lobes, upper)
        lo = lobes == lower
        n_up, n_lo = up.sum(axis=(1, 2)), lo.sum(axis=(1, 2))
        both = (n_up > 20) & (n_lo > 20)
        assert both.sum() >= 5
        # within each section the lower lobe lies behind the upper side
        y_up = (up.sum(axis=2) * y_post).sum(axis=1)[both] / n_up[both]
        y_lo = (lo.sum(axis=2) * y_post).sum(axis=1)[both] / n_lo[both]
        assert (y_lo > y_up).all()
        # and takes a larger share of the section towards the base (slice 0 is most inferior)
        share = n_lo[both] / (n_lo[both] + n_up[both])
        assert np.all(np.diff(share) <= 0.02), share
        assert share[0] > 0.6 and share[-1] < 0.4


def test_bases_only_is_refused_or_flagged_on_every_row(adult5):
    ct = adult5.ct
    k = int(0.45 * ct.shape[0])  # the lower 45 % of the scan: lung bases, no apex
    bases = type(ct)(ct.hu[:k], ct.spacing_mm, ct.origin_lps, ct.direction, ct.meta)
    with pytest.raises(LobeCoverageError, match=r"right lung: apex not in the scan; left lung: apex not in the scan"):
        segment_lungs(bases, regions="lobes")
    df = analyze_scan(bases, regions="lobes", partial_lobes=True).result.to_frame()
    assert (df["region_set"] == "lobes-approx").all()
    assert df["warnings"].str.contains("lobes-approx on a partial scan").all()
    # zones and lungs stay available on the same scan
    assert segment_lungs(bases, regions="zones").region_set == "zones"


def test_severity_scores_only_on_true_lobes_unless_asked(adult5):
    df = analyze_scan(adult5.ct, regions="lobes").result.to_frame().set_index("region")
    assert df["css_pan"].isna().all() and df["css_chung"].isna().all()
    assert df["css_region_set"].str.startswith("none: lobes-approx").all()
    opt = analyze_scan(adult5.ct, regions="lobes", css_approx_lobes=True).result.to_frame().set_index("region")
    lob = list(NAMES)
    assert opt.loc[lob, "css_pan"].tolist() == css_pan(opt.loc[lob, "damage_pct"].to_numpy()).tolist()
    assert opt.loc[lob, "css_chung"].tolist() == css_chung(opt.loc[lob, "damage_pct"].to_numpy()).tolist()
    assert opt.loc["total", "css_pan"] == opt.loc[lob, "css_pan"].sum() > 0
    assert set(opt["css_region_set"]) == {"lobes-approx"}
    # true lobes (the phantom's, as an imported label map) are scored by default
    from lungdamage.score import score

    true = score(adult5.ct, adult5.truth.lobe_regions()).to_frame().set_index("region")
    assert true.loc[lob, "css_pan"].notna().all() and set(true["css_region_set"]) == {"lobes"}


def test_original_model_kept_on_request(adult5):
    """``lobe_shares=None``: the fixed-height model of before, lower lobes far too small."""
    lungs = segment_lungs(adult5.ct)
    pct = lobe_pct(approx_lobes(adult5.ct, lungs, lobe_shares=None).labels)
    assert pct["RLL"] < 10 and pct["LLL"] < 10


@pytest.mark.skipif(not (SAMPLE / "visits.csv").is_file(), reason="sample_dicom not generated")
def test_sample_series_lobe_shares_are_adult():
    from lungdamage.io.dicom import read_series

    ct = read_series(SAMPLE / "P001" / "2020-04-01_baseline")
    assert_adult(lobe_pct(segment_lungs(ct, regions="lobes").labels))


@pytest.mark.slow
def test_refined_onto_visible_fissures_stays_adult():
    ph = phantom.make_phantom(slice_thickness_mm=1.25, vessels=True, seed=0, fissures=True, adult_lobes=True)
    lobes = segment_lungs(ph.ct, regions="lobes")
    assert "refined onto the visible right oblique, right horizontal, left oblique" in lobes.info["lobes"]
    assert_adult(lobe_pct(lobes.labels))
    ds = [dice(lobes.labels == c, ph.truth.lobes == c) for c in range(1, 6)]
    assert min(ds) >= 0.98, ds  # measured 0.997 / 0.987 / 0.995 / 0.995 / 0.995


@pytest.mark.realdata
@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata not present")
def test_cip_ct64_lobe_shares_are_adult():
    from lungdamage.io.images import read_image

    ct = read_image(REALDATA / "cip" / "ct-64.nrrd")
    assert_adult(lobe_pct(segment_lungs(ct, regions="lobes").labels))  # before: RLL 13.2, LLL 12.6 %


@pytest.mark.realdata
@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata not present")
def test_totalsegmentator_bases_only_refused_with_one_line(capsys):
    from lungdamage.cli import main

    path = REALDATA / "totalsegmentator" / "example_ct_sm.nii.gz"
    assert main(["score", str(path), "--regions", "lobes"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "apex not in the scan" in err and "--partial-lobes" in err
    assert main(["score", str(path), "--regions", "lobes", "--partial-lobes", "--format", "csv"]) == 0
    # the scan's own TotalSegmentator lobes are true lobes: scored, no partial-lobes warning
    df = analyze_scan(path, regions="lobes", regions_from=path.with_name("example_seg_fast.nii.gz"),
                      label_codes="totalsegmentator").result.to_frame()
    assert df["region_set"].eq("lobes").all() and not df["warnings"].str.contains("lobes-approx on a partial scan").any()


@pytest.mark.skipif(not (SAMPLE / "visits.csv").is_file(), reason="sample_dicom not generated")
def test_cli_severity_scores_on_approx_lobes_only_with_the_flag(capsys):
    import io

    import pandas as pd

    from lungdamage.cli import main

    series = str(SAMPLE / "P001" / "2020-04-01_baseline")
    assert main(["score", series, "--regions", "lobes", "--format", "csv"]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert df["css_pan"].isna().all() and df["css_region_set"].str.startswith("none: lobes-approx").all()
    assert main(["score", series, "--regions", "lobes", "--format", "csv", "--css-approx-lobes"]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("region")
    assert df.loc[list(NAMES), "css_pan"].notna().all() and set(df["css_region_set"]) == {"lobes-approx"}
    assert df.loc["total", "css_pan"] == df.loc[list(NAMES), "css_pan"].sum()


def test_lobes_follow_the_direction_matrix_not_the_array_order(adult5):
    """Slices stored apex first and rows anterior last: the same anatomy, the same lobes."""
    ct = adult5.ct
    hu = ct.hu[::-1, ::-1, :]
    d = ct.direction.copy()
    d[:, 0] *= -1  # slices now run inferior
    d[:, 1] *= -1  # rows now run anterior
    last = ct.index_to_lps([ct.shape[0] - 1, ct.shape[1] - 1, 0])
    flipped = type(ct)(np.ascontiguousarray(hu), ct.spacing_mm, tuple(last), d, ct.meta)
    a = segment_lungs(ct, regions="lobes").labels
    b = segment_lungs(flipped, regions="lobes").labels[::-1, ::-1, :]
    assert (a == b).mean() > 0.999  # a few voxels may differ where the lung mask does
    assert_adult(lobe_pct(b))


@pytest.mark.parametrize("slab", [1, 3, 24])
def test_fissure_hessian_in_slabs_equals_the_whole_grid(slab):
    """The fissure search's Hessian, computed slab by slab on crops around the band, equals (bit for bit,
    in the same order) the straightforward filtering of the whole grid read at the band's voxels."""
    from scipy.ndimage import gaussian_filter

    from lungdamage.segment.lobes import _hessian_in_slabs

    rng = np.random.default_rng(7)
    grid = rng.normal(-800, 60, (40, 37, 33)).astype(np.float32)
    z, y, _x = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij", sparse=True)
    band = np.broadcast_to(np.abs(z - 0.6 * y - 8) <= 4, grid.shape).copy()  # an oblique band
    band[:, :, :3] = False
    spl = np.array([1.5, 1.4, 1.3])
    sigma = np.maximum(1.0 / spl, 0.7)
    got = _hessian_in_slabs(grid, sigma, band, spl, slab=slab)
    for (i, j), values in got.items():
        order = [0, 0, 0]
        order[i] += 1
        order[j] += 1
        expected = gaussian_filter(grid, sigma, order=order)[band] / np.float32(spl[i] * spl[j])
        assert np.array_equal(values, expected), (i, j)
    assert len(got) == 6


def test_closed_form_eigenvalues_equal_lapack():
    """The fissure search's closed-form 3x3 eigenvalues (ascending) against LAPACK's, including
    diagonal, repeated and zero matrices."""
    from lungdamage.segment.lobes import _sym3_eigvals

    rng = np.random.default_rng(3)
    n = 2000
    comp = {k: rng.normal(0, 50, n).astype(np.float32) for k in [(0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (0, 2)]}
    for k in [(0, 1), (1, 2), (0, 2)]:
        comp[k][:30] = 0  # diagonal matrices
    for k in [(0, 0), (1, 1), (2, 2)]:
        comp[k][:10] = 7  # 7 I: one triple eigenvalue
        comp[k][10:20] = 0  # the zero matrix
    h = np.empty((n, 3, 3))
    for (i, j), v in comp.items():
        h[:, i, j] = h[:, j, i] = v
    got = _sym3_eigvals(comp)
    assert got.shape == (3, n)
    np.testing.assert_allclose(got.T, np.linalg.eigvalsh(h), atol=1e-6 * 150)
