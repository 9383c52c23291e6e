"""--send-results: SEG and SR stored on a real Orthanc with STOW-RS, found by QIDO-RS, read back."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import requests
from _orthanc import FaultProxy

from lungdamage.batch import load_results
from lungdamage.cli import main
from lungdamage.report.sr import read_sr


def _client(server):
    from dicomweb_client.api import DICOMwebClient

    s = requests.Session()
    s.auth = server.auth
    return DICOMwebClient(f"{server.http}/dicom-web", session=s)


@pytest.mark.slow
def test_sent_sr_and_seg_are_found_and_read_back_to_the_table(dicomweb_env, tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    url = f"{dicomweb_env.url}?PatientID=P002"
    code = main(["batch", url, "--store", str(store), "--jobs", "0", "--send-results", dicomweb_env.url])
    out = capsys.readouterr().out
    assert code == 0 and "results sent: 2 series (SEG + SR)" in out
    assert not (tmp_path / "s.sqlite.outbox").exists()  # sent files are not kept
    table = load_results(store)
    ct_series = dict(zip(table["study_uid"], table["series_uid"], strict=True))
    client = _client(dicomweb_env)
    found = {}
    for modality in ("SR", "SEG"):
        hits = client.search_for_series(search_filters={"Modality": modality, "PatientID": "P002"})
        found[modality] = [(h["0020000D"]["Value"][0], h["0020000E"]["Value"][0]) for h in hits]
        assert sorted(s for s, _ in found[modality]) == sorted(ct_series)  # one per scored study
    segs = {}
    for study, series in found["SEG"]:
        (seg,) = client.retrieve_series(study, series)
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_series[study]
        segs[study] = str(seg.SOPInstanceUID)
    for study, series in found["SR"]:
        (sr,) = client.retrieve_series(study, series)
        back = read_sr(sr).set_index("region")
        assert set(back["series_uid"]) == {ct_series[study]}
        assert set(back["seg_sop_instance_uid"]) - {""} == {segs[study]}
        rows = table[table["series_uid"] == ct_series[study]].set_index("region")
        cols = ["volume_ml", "ggo_pct", "consolidation_pct", "damage_pct"]
        np.testing.assert_allclose(back.loc[rows.index, cols].to_numpy(float), rows[cols].to_numpy(float), rtol=1e-10)


@pytest.mark.slow
def test_failed_send_is_retried_recorded_and_loses_nothing(dicomweb_env, tmp_path, capsys):
    store = tmp_path / "s.sqlite"

    def fail(method, path):
        return method == "POST"

    with FaultProxy(dicomweb_env.port, fail) as proxy:
        code = main([
            "batch", f"{dicomweb_env.url}?PatientID=P001", "--store", str(store), "--jobs", "0",
            "--send-results", proxy.url, "--dicomweb-retries", "1",
        ])
        assert len(proxy.hits) == 4  # 2 series x (1 try + 1 retry)
    out = capsys.readouterr().out
    assert code == 1 and "NOT sent: 2 series" in out
    assert "done 2" in out and len(load_results(store)["series_uid"].unique()) == 2  # the results are stored
    with sqlite3.connect(store) as db:
        sends = [json.loads(r[0])["send"] for r in db.execute("SELECT hook_json FROM scans")]
    assert [s["status"] for s in sends] == ["failed", "failed"]
    assert all("HTTP 500" in s["error"] for s in sends)
    kept = sorted((tmp_path / "s.sqlite.outbox").glob("*.dcm"))
    assert len(kept) == 4 and {p.name.rsplit("_", 1)[1] for p in kept} == {"seg.dcm", "sr.dcm"}
    assert sorted(str(p) for s in sends for p in s["files"]) == [str(p) for p in kept]
