"""The public API names other code calls, after every subpackage has been imported."""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest

import lungdamage as ld


def test_public_names_resolve_and_score_stays_a_function():
    for sub in ("io.dicom", "io.catalog", "segment", "score.schemes", "score.kernels", "batch.store",
                "study", "report", "phantom", "pipeline"):
        importlib.import_module(f"lungdamage.{sub}")
    for name in ld.__all__:
        assert getattr(ld, name) is not None, name
    for verb in ("read_series", "read_image", "segment_lungs", "score", "score_many", "analyze", "analyze_many",
                 "analyze_scan", "load_results"):
        assert inspect.isfunction(getattr(ld, verb)), verb
    assert ld.StoreError.__module__ == ld.ManifestError.__module__ == "lungdamage.errors"
    ct = ld.CTVolume(np.array([[[-850, -500, 0, 40]]], np.int16), (1.0, 1.0, 1.0))
    lungs = ld.RegionMap(np.array([[[1, 1, 2, 0]]], np.uint8), {1: "right", 2: "left"})
    df = ld.score(ct, lungs, scheme="covid").to_frame().set_index("region")
    assert df.loc["right", "damage_pct"] == pytest.approx(50.0)
    assert df.loc["left", "damage_pct"] == pytest.approx(100.0)
    from lungdamage.score.schemes import PRESETS

    assert PRESETS["covid"].damage == ("ggo", "consolidation")


def test_the_stub_lists_every_public_name():
    """``__init__.pyi`` (read by IDEs and type checkers) and the runtime ``__all__`` name the same API."""
    from pathlib import Path

    stub = (Path(ld.__file__).with_suffix(".pyi")).read_text()
    for name in ld.__all__:
        assert f" as {name}\n" in stub, name


def test_one_return_type_per_verb():
    ct = ld.CTVolume(np.array([[[-850, -500, 0, 40]]], np.int16), (1.0, 1.0, 1.0))
    lungs = ld.RegionMap(np.array([[[1, 1, 2, 0]]], np.uint8), {1: "right", 2: "left"})
    assert isinstance(ld.score(ct, lungs), ld.ScanResult)
    assert isinstance(ld.score_many(ct, lungs, "covid"), ld.ResultSet)
    with pytest.raises(ld.SchemeError, match="score_many"):
        ld.score(ct, lungs, ["covid", "lcta"])
    one = ld.score_many(ct, lungs, ["covid"])
    pd_testing = pytest.importorskip("pandas").testing
    pd_testing.assert_frame_equal(one.to_frame(), ld.score(ct, lungs).to_frame())


def test_analyze_on_a_phantom_nifti_matches_truth(tmp_path):
    """read_image -> segment_lungs -> score through the one-call API, against phantom truth."""
    import SimpleITK as sitk

    ph = ld.phantom.make_phantom(matrix=128, slice_thickness_mm=2.5, vessels=False, seed=3)
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ph.ct.to_sitk(), str(path))
    df = ld.analyze(path).to_frame().set_index("region")
    for side in ("right", "left", "total"):
        truth = ph.truth.fractions[side]
        assert df.loc[side, "damage_pct"] == pytest.approx(truth["damage_pct"], abs=2.0), side
