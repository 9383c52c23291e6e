"""``analyze``: several schemes from one segmentation; options reach the scores."""

from __future__ import annotations

import numpy as np
import pytest

from lungdamage import CTVolume
from lungdamage.errors import SchemeError
from lungdamage.pipeline import Analysis, analyze, analyze_many, analyze_scan
from lungdamage.score import ResultSet, ScanResult, score


@pytest.fixture(scope="module")
def labelled_scan(tmp_path_factory):
    """A small CT and its lung labels as NIfTI files (imported regions: no segmentation model involved)."""
    import SimpleITK as sitk

    from lungdamage.io.images import write_label_image

    rng = np.random.default_rng(5)
    hu = rng.integers(-1000, 120, (6, 10, 10)).astype(np.int16)
    labels = np.zeros(hu.shape, np.uint8)
    labels[:, 1:9, 1:5], labels[:, 1:9, 5:9] = 1, 2
    ct = CTVolume(hu, (2.0, 0.8, 0.8))
    d = tmp_path_factory.mktemp("scan")
    sitk.WriteImage(ct.to_sitk(), str(d / "ct.nii.gz"))
    write_label_image(d / "lungs.nii.gz", labels, ct)
    return d / "ct.nii.gz", d / "lungs.nii.gz", hu, labels


def test_several_schemes_share_one_segmentation(labelled_scan):
    ct_path, lab_path, hu, labels = labelled_scan
    a = analyze_scan(ct_path, scheme=["covid", "lcta"], regions_from=lab_path, label_codes="lungmask-lungs")
    assert isinstance(a, Analysis) and isinstance(a.results, ResultSet) and a.result is a.results[0]
    assert a.results.schemes == ("covid", "lcta")
    assert a.results["covid"].histograms is a.results["lcta"].histograms
    df = a.results.to_frame()
    assert df.groupby("scheme").size().to_dict() == {"covid": 3, "lcta": 3}
    # independent truth: counts straight from the arrays
    lung = labels > 0
    total = df[(df.scheme == "lcta") & (df.region == "total")].iloc[0]
    assert total["voxels"] == lung.sum()
    assert total["infiltration_pct"] == pytest.approx(100 * np.mean((hu[lung] >= -750) & (hu[lung] < -400)))
    assert total["mean_hu"] == pytest.approx(hu[lung].mean())
    assert set(a.results["covid"].timings_s) == {"read_s", "segment_s", "score_s"}


def test_single_scheme_returns_a_scan_result_and_options_reach_the_score(labelled_scan):
    ct_path, lab_path, hu, labels = labelled_scan
    r = analyze(ct_path, regions_from=lab_path, label_codes="lungmask-lungs", suppress_vessels=True,
                smooth_sigma_mm=1.0)
    assert isinstance(r, ScanResult)
    row = r.to_frame().iloc[-1]
    assert row["vessel_suppression"] and row["smooth_sigma_mm"] == 1.0
    assert r.params["regions_from"].startswith("lungs.nii.gz:")
    assert len(r.params["regions_from"]) == len("lungs.nii.gz:") + 16
    a = analyze_scan(ct_path, regions_from=lab_path, label_codes="lungmask-lungs")
    direct = score(a.ct, a.regions, suppress_vessels=True, smooth_sigma_mm=1.0).to_frame().iloc[-1]
    assert row["damage_pct"] == direct["damage_pct"] and row["vessel_ml"] == direct["vessel_ml"]


def test_comma_separated_schemes(labelled_scan):
    ct_path, lab_path, *_ = labelled_scan
    r = analyze_many(ct_path, scheme="covid,aeration", regions_from=lab_path, label_codes="lungmask-lungs")
    assert isinstance(r, ResultSet) and r.schemes == ("covid", "aeration")
    with pytest.raises(SchemeError, match=r"analyze_many"):
        analyze(ct_path, scheme="covid,aeration", regions_from=lab_path, label_codes="lungmask-lungs")


def test_options_are_checked_once_and_the_old_name_regions_still_works():
    from lungdamage.errors import InputError
    from lungdamage.pipeline import AnalysisOptions

    options = AnalysisOptions(scheme="covid,lcta", regions="zones", weights=None)
    assert options.region_set == "zones" and [s.name for s in options.schemes] == ["covid", "lcta"]
    assert options.identity()["regions"] == "zones"  # the stored key: resume keys of existing stores hold
    assert AnalysisOptions(region_set="zones").run_hash == AnalysisOptions(regions="zones").run_hash
    assert AnalysisOptions(region_set="zones").run_hash != AnalysisOptions().run_hash
    with pytest.raises(InputError, match="smooth_sigma_mm"):
        AnalysisOptions(smooth_sigma_mm=float("nan"))
    with pytest.raises(SchemeError):
        AnalysisOptions(scheme="no-such-scheme")


def test_analyze_scan_takes_an_options_object(labelled_scan):
    from lungdamage.pipeline import AnalysisOptions

    ct_path, lab_path, *_ = labelled_scan
    options = AnalysisOptions(scheme="aeration", suppress_vessels=True)
    a = analyze_scan(ct_path, options, regions_from=lab_path, label_codes="lungmask-lungs")
    b = analyze_scan(ct_path, scheme="aeration", suppress_vessels=True, regions_from=lab_path,
                     label_codes="lungmask-lungs")
    assert a.result.scheme.name == "aeration" and a.result.params_hash == b.result.params_hash
    np.testing.assert_array_equal(a.result.histograms, b.result.histograms)
    # keyword values apply on top of the options object
    c = analyze_scan(ct_path, options, suppress_vessels=False, regions_from=lab_path, label_codes="lungmask-lungs")
    assert c.result.vessel_voxels is None and a.result.vessel_voxels is not None
