"""Wide and long tables, provenance columns, file formats and the ``lungdamage score`` CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lungdamage import CTVolume, RegionMap, ScanMeta
from lungdamage.cli import main
from lungdamage.io.images import write_label_image
from lungdamage.score import PRESETS, score, score_many

PROVENANCE = ["series_uid", "input_hash", "params_hash", "scheme", "scheme_edges", "method", "model", "version",
              "dependency_versions", "slice_thickness_mm", "kernel", "contrast", "warnings"]


@pytest.fixture
def small_scan():
    rng = np.random.default_rng(3)
    hu = rng.integers(-1000, 150, (4, 8, 8)).astype(np.int16)
    labels = np.zeros(hu.shape, np.uint8)
    labels[:, :, :4], labels[:, :, 4:] = 1, 2
    labels[:, 0, :] = 0
    meta = ScanMeta(series_uid="1.2.840.1", input_hash="abc123", slice_thickness_mm=3.0, kernel="B70f")
    return CTVolume(hu, (3.0, 0.75, 0.75), meta=meta), RegionMap(labels, {1: "right", 2: "left"})


def test_every_row_carries_provenance(small_scan):
    ct, regions = small_scan
    df = score_many(ct, regions, ["covid", "lcta"]).to_frame()
    for col in PROVENANCE:
        assert col in df.columns, col
    assert (df["series_uid"] == "1.2.840.1").all() and (df["input_hash"] == "abc123").all()
    assert df.groupby("scheme")["params_hash"].nunique().eq(1).all() and df["params_hash"].nunique() == 2
    assert df.loc[df.scheme == "lcta", "scheme_edges"].iloc[0].startswith("emphysema [-inf, -950), inflated [-950, -750)")
    assert "numpy=" in df["dependency_versions"].iloc[0] and "SimpleITK=" in df["dependency_versions"].iloc[0]
    assert df["warnings"].str.contains("thick slices").all() and df["warnings"].str.contains("sharp kernel").all()


def test_long_form_matches_wide_form(small_scan):
    ct, regions = small_scan
    result = score(ct, regions, "aeration")
    wide, long = result.to_frame(), result.to_frame(form="long")
    bands = PRESETS["aeration"].band_names
    assert len(long) == len(wide) * len(bands)
    assert list(long["band"].unique()) == list(bands)
    pivot = long.pivot(index="region", columns="band", values="pct")
    for b in bands:
        np.testing.assert_array_equal(pivot.loc[wide["region"], b].to_numpy(), wide[f"{b}_pct"].to_numpy())
    assert long.groupby("region")["voxels"].sum().loc["total"] == wide.set_index("region").loc["total", "voxels"]
    row = long[(long.region == "total") & (long.band == "poorly_aerated")].iloc[0]
    assert (row["lo_hu"], row["hi_hu"], row["is_damage"]) == (-500, -100, True)


@pytest.fixture
def nifti_scan(tmp_path, small_scan):
    import SimpleITK as sitk

    ct, regions = small_scan
    ct_path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ct.to_sitk(), str(ct_path))
    lab_path = write_label_image(tmp_path / "lungs.nii.gz", regions.labels, ct)
    return ct_path, lab_path, ct, regions


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
@pytest.mark.parametrize("form", ["wide", "long"])
def test_cli_writes_every_format_and_form(tmp_path, nifti_scan, capsys, fmt, form):
    ct_path, lab_path, ct, regions = nifti_scan
    out = tmp_path / f"table.{fmt}"
    code = main(["score", str(ct_path), "--regions-from", str(lab_path), "--label-codes", "lungmask-lungs",
                 "--scheme", "covid", "--scheme", "lcta,aeration", "--format", fmt, "--form", form, "-o", str(out)])
    assert code == 0
    df = {"csv": pd.read_csv, "parquet": pd.read_parquet, "json": lambda p: pd.DataFrame(json.loads(p.read_text()))}[fmt](out)
    assert sorted(df["scheme"].unique()) == ["aeration", "covid", "lcta"]
    # the numbers are those of the library on the same arrays
    expected = score_many(ct, regions, ["covid", "lcta", "aeration"]).to_frame(form)
    key = ["scheme", "region"] + (["band"] if form == "long" else [])
    got = df.set_index(key).sort_index()
    exp = expected.set_index(key).sort_index()
    col = "pct" if form == "long" else "damage_pct"
    np.testing.assert_allclose(got[col].to_numpy(float), exp[col].to_numpy(float), rtol=1e-12)


def test_cli_prints_csv_without_output_and_rejects_bad_format(tmp_path, nifti_scan, capsys):
    ct_path, lab_path, *_ = nifti_scan
    args = ["score", str(ct_path), "--regions-from", str(lab_path), "--label-codes", "lungmask-lungs"]
    assert main([*args, "--format", "csv"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("series_uid,") and len(text.splitlines()) == 4
    assert main([*args, "-o", str(tmp_path / "t.xlsx")]) == 2
    assert "unknown format .xlsx" in capsys.readouterr().err
    assert main([*args, "--scheme", "covd"]) == 2
    assert "Allowed: covid, lcta, aeration" in capsys.readouterr().err
