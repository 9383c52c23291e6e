"""Result store: failure isolation, stored values, schema, export, writer lock."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
from _batchdata import N_CT_GOOD, PATIENTS, VISITS

import lungdamage as ld
from lungdamage.batch import ResultStore, load_failures, load_results
from lungdamage.batch.store import SCHEMA_VERSION
from lungdamage.cli import main
from lungdamage.errors import StoreError

#: columns the study analysis reads from load_results()
STUDY_COLUMNS = [
    "patient_id", "study_date", "series_uid", "region", "damage_pct", "ggo_pct", "consolidation_pct",
    "region_set", "method", "scheme", "slice_thickness_mm", "kernel", "css_pan", "css_chung",
]


def test_failure_isolation(archive, reference_store):
    root, info = archive
    df = load_results(reference_store)
    # every good series stored exactly once, with its three regions
    per_series = df.groupby("series_uid").region.apply(tuple)
    assert set(per_series.index) == set(info["good"])
    assert all(regions == ("right", "left", "total") for regions in per_series)
    assert len(df) == 3 * N_CT_GOOD
    fails = load_failures(reference_store).set_index("series_uid")
    assert set(fails.index) == {info["broken"], info["nolung"]}
    broken = fails.loc[info["broken"]]
    assert (broken.stage, broken.error_type) == ("read", "DicomSeriesError")
    assert "cannot decode pixel data" in broken.message and info["broken"] in broken.message
    assert broken.patient_id == "P05"
    nolung = fails.loc[info["nolung"]]
    assert (nolung.stage, nolung.error_type) == ("segment", "SegmentationError")
    assert "Potential fix" in nolung.message
    with ResultStore(reference_store, readonly=True) as store:
        excluded = store.excluded()
    assert excluded.series_uid.tolist() == [info["mr"]]
    assert "modality MR" in excluded.reason.iloc[0]


def test_stored_values_match_direct_analysis_and_truth(archive, reference_store):
    """Stored rows equal a direct analyze() of the same series; damage follows the planted lesion burden."""
    from lungdamage.io.catalog import scan

    root, info = archive
    df = load_results(reference_store)
    by_uid = {s.series_uid: s for s in scan(root)}
    for uid in list(info["good"])[:: len(VISITS) * 2][:2] + [next(u for u, v in info["good"].items() if v[0] == "P04")]:
        direct = ld.analyze(by_uid[uid]).to_frame()
        stored = df[df.series_uid == uid].reset_index(drop=True)[direct.columns]
        pd.testing.assert_frame_equal(stored, direct, check_dtype=False)
    total = df[df.region == "total"].set_index("series_uid")
    for pid in PATIENTS:
        uids = [u for u, v in info["good"].items() if v[0] == pid]
        scale = [info["good"][u][2] for u in uids]
        damage = [total.loc[u, "damage_pct"] for u in uids]
        # more planted lesion volume -> more measured damage, per patient
        assert np.argsort(scale).tolist() == np.argsort(damage).tolist()
        assert total.loc[uids, "patient_id"].eq(pid).all()
    assert set(total.study_date) == {d for d, _ in VISITS}


def test_schema_and_columns(reference_store):
    df = load_results(reference_store)
    assert [c for c in STUDY_COLUMNS if c not in df.columns] == []
    assert df.slice_thickness_mm.eq(5.0).all() and df.kernel.eq("STANDARD").all()
    assert df.run_hash.nunique() == 1 and df.version.eq(ld.__version__).all()
    con = sqlite3.connect(reference_store)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # histograms kept: their voxel sums equal the stored region voxels
        scan_id, voxels = con.execute(
            "SELECT s.scan_id, json_extract(m.metrics_json, '$.voxels') FROM scans s JOIN region_metrics m "
            "USING (scan_id) WHERE m.region='total' LIMIT 1"
        ).fetchone()
    finally:
        con.close()
    with ResultStore(reference_store, readonly=True) as store:
        regions, lo, hist = store.histograms(scan_id)
    assert regions == ("right", "left", "total") and int(hist[2].sum()) == voxels
    assert lo <= -900


def test_lazy_public_api(reference_store):
    df = ld.load_results(reference_store)
    assert len(df) == 3 * N_CT_GOOD


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_export_cli(reference_store, tmp_path, suffix, capsys):
    out = tmp_path / f"results{suffix}"
    fails = tmp_path / "failures.csv"
    assert main(["-q", "export", "--store", str(reference_store), "-o", str(out), "--failures", str(fails)]) == 0
    if suffix == ".parquet":
        back = pd.read_parquet(out)
    else:
        back = pd.read_csv(out, dtype={"study_date": str, "patient_id": str})
    ref = load_results(reference_store)
    assert back.shape == ref.shape
    np.testing.assert_allclose(back.damage_pct.to_numpy(), ref.damage_pct.to_numpy(), rtol=1e-12)
    assert back.series_uid.tolist() == ref.series_uid.tolist()
    assert len(pd.read_csv(fails)) == 2
    assert "36 rows (12 scans); 2 failed" in capsys.readouterr().err


def test_single_writer_lock(tmp_path):
    path = tmp_path / "s.sqlite"
    with ResultStore(path):
        with pytest.raises(StoreError, match="being written by another batch"):
            ResultStore(path)
        with ResultStore(path, readonly=True) as reader:  # readers are welcome
            assert reader.counts()["scans"] == 0
    ResultStore(path).close()  # lock released


def test_rejects_foreign_sqlite(tmp_path):
    path = tmp_path / "other.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a lungdamage result store"):
        ResultStore(path)
    with pytest.raises(StoreError, match="does not exist"):
        load_results(tmp_path / "missing.sqlite")
