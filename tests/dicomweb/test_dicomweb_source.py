"""DICOMweb source against a real Orthanc: catalog, selection, batch, resume, failures, credentials."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import pandas as pd
import pytest
from _orthanc import FaultProxy

from lungdamage.batch import (
    InlineEngine,
    ResultStore,
    load_failures,
    load_results,
    run_batch,
)
from lungdamage.cli import main
from lungdamage.errors import InputError, MissingDependencyError
from lungdamage.io.catalog import scan, select_series
from lungdamage.io.dicomweb import (
    DicomwebError,
    DicomwebQuery,
    DicomwebSource,
    RemoteSeriesInfo,
)


class MustNotScore(InlineEngine):
    def __enter__(self):
        raise AssertionError("the engine was started on a complete resume")


def _comparable(info) -> dict:
    d = {f.name: getattr(info, f.name) for f in dataclasses.fields(info) if f.name not in ("files", "remote", "transfer_syntax")}
    return d


def test_catalog_over_dicomweb_equals_the_folder_catalog(dicomweb_env, sample_root):
    remote = scan(dicomweb_env.url)
    local = scan(sample_root)
    ct_remote = [s for s in remote if s.modality == "CT"]
    assert all(isinstance(s, RemoteSeriesInfo) for s in remote)
    # every header fact the selection policy uses comes out the same as from the files
    assert [_comparable(s) for s in ct_remote] == [_comparable(s) for s in local]
    sel_r = [(s.series_uid, s.selected) for s in select_series(ct_remote)]
    sel_l = [(s.series_uid, s.selected) for s in select_series(local)]
    assert sel_r == sel_l and sum(x for _, x in sel_l) == 4


def test_query_filters(dicomweb_env, sample_root, tmp_path):
    def uids(src):
        return {(s.patient_id, s.study_date) for s in scan(src) if s.modality == "CT"}

    url = dicomweb_env.url
    assert uids(f"{url}?PatientID=P002") == {("P002", "20200510"), ("P002", "20200910")}
    assert uids(f"{url}?StudyDate=20200701-") == {("P001", "20200801"), ("P002", "20200910")}
    assert uids(DicomwebSource(url, query=DicomwebQuery(patient_ids=("P001",), date_to="20200601"))) == {
        ("P001", "20200401")
    }
    manifest = tmp_path / "visits.csv"
    manifest.write_text("patient_id,arm,study_date,visit\nP001,a,2020-08-01,month4\nP002,b,,\n")
    q = DicomwebQuery.from_manifest(manifest)
    assert uids(DicomwebSource(url, query=q)) == {("P001", "20200801"), ("P002", "20200510"), ("P002", "20200910")}
    assert uids(f"{url}?PatientID=NOBODY") == set()


@pytest.mark.slow
def test_batch_over_dicomweb_identical_to_disk_and_resumes(dicomweb_env, sample_root, tmp_path):
    cache = tmp_path / "cache"
    src = DicomwebSource(dicomweb_env.url, cache_dir=str(cache))
    s_web = run_batch(src, tmp_path / "web.sqlite", engine=InlineEngine())
    s_disk = run_batch(sample_root, tmp_path / "disk.sqlite", engine=InlineEngine())
    assert (s_web.stored, s_web.n_failed) == (4, 0) and (s_disk.stored, s_disk.n_failed) == (4, 0)
    web, disk = load_results(tmp_path / "web.sqlite"), load_results(tmp_path / "disk.sqlite")
    assert web["source"].str.startswith(dicomweb_env.url + "/studies/").all()
    pd.testing.assert_frame_equal(web.drop(columns="source"), disk.drop(columns="source"))
    # the cache is bounded and emptied after scoring
    assert cache.is_dir() and not any(cache.iterdir())
    # rerun: everything is skipped without starting an engine
    again = run_batch(src, tmp_path / "web.sqlite", engine=MustNotScore())
    assert (again.skipped_done, again.scored) == (4, 0)


@pytest.mark.slow
def test_server_error_on_one_series_is_a_failure_row(dicomweb_env, sample_root, tmp_path):
    victim = next(s for s in scan(sample_root) if s.patient_id == "P002" and s.study_date == "20200510")

    def fail(method, path):  # WADO-RS retrieval of one series, not its metadata
        return method == "GET" and f"/series/{victim.series_uid}" in path and not path.endswith("/metadata")

    with FaultProxy(dicomweb_env.port, fail) as proxy:
        src = DicomwebSource(proxy.url, retries=2, backoff_s=0.01, cache_dir=str(tmp_path / "cache"))
        summary = run_batch(src, tmp_path / "s.sqlite", engine=InlineEngine())
        assert len(proxy.hits) == 3  # first try + 2 retries
    assert (summary.stored, summary.n_failed, summary.exit_code) == (3, 1, 1)
    failures = load_failures(tmp_path / "s.sqlite")
    assert failures["series_uid"].tolist() == [victim.series_uid]
    row = failures.iloc[0]
    assert row["stage"] == "retrieve" and row["error_type"] == "DicomwebError"
    assert "HTTP 500" in row["message"] and "after 3 attempts" in row["message"]
    assert set(load_results(tmp_path / "s.sqlite")["series_uid"]) == {
        s.series_uid for s in scan(sample_root)
    } - {victim.series_uid}
    # the server is healthy again: --retry-failed completes the store
    again = run_batch(DicomwebSource(dicomweb_env.url), tmp_path / "s.sqlite", engine=InlineEngine(), retry_failed=True)
    assert (again.stored, again.skipped_done, again.exit_code) == (1, 3, 0)


def test_server_stopped_is_one_clear_error(dicomweb_env, tmp_path, capsys):
    from _orthanc import free_port

    url = f"dicomweb+http://127.0.0.1:{free_port()}/dicom-web"  # nothing listens there
    code = main(["index", url, "--dicomweb-retries", "1", "--dicomweb-timeout", "2"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "ConnectionError" in err and "after 2 attempts" in err


def test_cache_limit_fails_the_series_not_the_batch(dicomweb_env, tmp_path):
    src = DicomwebSource(
        f"{dicomweb_env.url}?PatientID=P001", cache_dir=str(tmp_path / "c"), cache_max_bytes=100_000, retries=0
    )
    summary = run_batch(src, tmp_path / "s.sqlite", engine=InlineEngine())
    assert (summary.stored, summary.n_failed) == (0, 2)
    msg = load_failures(tmp_path / "s.sqlite")["message"].iloc[0]
    assert "cache limit" in msg and "--cache-max-gb" in msg


def test_wrong_password_is_one_clear_line(orthanc, monkeypatch, capsys):
    monkeypatch.setenv("LUNGDAMAGE_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("LUNGDAMAGE_DICOMWEB_PASSWORD", "not-the-password")
    code = main(["index", orthanc.url])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "HTTP 401" in err and "LUNGDAMAGE_DICOMWEB_USER" in err and "not-the-password" not in err


def test_credentials_in_the_url_are_refused_without_echoing_them(orthanc):
    with pytest.raises(InputError) as info:
        DicomwebSource(f"dicomweb+http://{orthanc.user}:{orthanc.password}@127.0.0.1:{orthanc.port}/dicom-web")
    assert orthanc.password not in str(info.value) and "LUNGDAMAGE_DICOMWEB_PASSWORD" in str(info.value)


def test_credentials_file(orthanc, monkeypatch, tmp_path):
    for k in ("LUNGDAMAGE_DICOMWEB_USER", "LUNGDAMAGE_DICOMWEB_PASSWORD", "LUNGDAMAGE_DICOMWEB_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    cfg = tmp_path / "pacs.toml"
    cfg.write_text(f'[servers."127.0.0.1:{orthanc.port}"]\nuser = "{orthanc.user}"\npassword = "{orthanc.password}"\n')
    assert {s.patient_id for s in scan(DicomwebSource(orthanc.url, config=str(cfg)))} == {"P001", "P002"}
    with pytest.raises(DicomwebError, match="HTTP 401"):
        scan(DicomwebSource(orthanc.url, retries=0))


@pytest.mark.slow
def test_credentials_appear_in_no_output_log_or_store(dicomweb_env, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    store = tmp_path / "s.sqlite"
    qc = tmp_path / "qc"
    url = f"{dicomweb_env.url}?PatientID=P001"
    codes = [
        main(["-vv", "index", url, "-o", str(tmp_path / "index.csv")]),
        main(["-vv", "batch", url, "--store", str(store), "--jobs", "0", "--qc", str(qc), "--keep-cache",
              "--cache-dir", str(tmp_path / "cache"), "--send-results", dicomweb_env.url]),
        main(["-vv", "export", "--store", str(store), "-o", str(tmp_path / "out.csv")]),
    ]
    assert codes == [0, 0, 0]
    out = capsys.readouterr()
    secret = dicomweb_env.password
    texts = {"stdout": out.out, "stderr": out.err, "log": caplog.text}
    for path in [store, *tmp_path.rglob("*")]:
        if Path(path).is_file() and "cache" not in Path(path).parts:
            texts[str(path)] = Path(path).read_bytes().decode("latin-1")
    assert len(texts) > 10 and any(name.endswith("_sr.dcm") for name in texts)
    assert "results sent: 2 series" in out.out and (qc / "index.html").is_file()
    leaks = [name for name, text in texts.items() if secret in text or f"{dicomweb_env.user}:" in text]
    assert leaks == []
    with ResultStore(store, readonly=True) as s:
        assert s.counts()["scans"] == 2


def test_missing_client_names_the_extra(monkeypatch, orthanc):
    import sys

    monkeypatch.setitem(sys.modules, "dicomweb_client", None)
    with pytest.raises(MissingDependencyError, match=r"lungdamage\[dicomweb\]"):
        scan(orthanc.url)


@pytest.mark.slow
def test_server_stopped_mid_run(tmp_path, sample_root, monkeypatch):
    """A second, private Orthanc is stopped after the first series is stored: the next is a failure row."""
    from _orthanc import OrthancServer

    pytest.importorskip("dicomweb_client")
    server = OrthancServer(tmp_path / "orthanc2")
    server.start()
    try:
        server.upload(sample_root / "P001")
        monkeypatch.setenv("LUNGDAMAGE_DICOMWEB_USER", server.user)
        monkeypatch.setenv("LUNGDAMAGE_DICOMWEB_PASSWORD", server.password)

        class StopAfterFirst:
            def start(self, total, *, skipped=0):
                pass

            def advance(self, outcome):
                server.stop()

            def close(self):
                pass

        src = DicomwebSource(server.url, retries=1, backoff_s=0.01, timeout_s=5, cache_dir=str(tmp_path / "c"))
        summary = run_batch(src, tmp_path / "s.sqlite", engine=InlineEngine(), progress=StopAfterFirst())
    finally:
        server.stop()
    assert (summary.stored, summary.n_failed) == (1, 1)
    (msg,) = load_failures(tmp_path / "s.sqlite")["message"]
    assert "ConnectionError" in msg and "after 2 attempts" in msg
    assert len(load_results(tmp_path / "s.sqlite")["series_uid"].unique()) == 1


@pytest.mark.slow
def test_keep_cache_reuses_complete_series(dicomweb_env, tmp_path):
    cache = tmp_path / "cache"
    url = f"{dicomweb_env.url}?PatientID=P001"
    first = run_batch(DicomwebSource(url, cache_dir=str(cache), keep_cache=True), tmp_path / "s.sqlite", engine=InlineEngine())
    kept = sorted(p.name for p in cache.iterdir())
    assert first.stored == 2 and len(kept) == 2 and all(len(list((cache / k).glob("*.dcm"))) == 64 for k in kept)

    def fail(method, path):  # any pixel retrieval now fails: a rescore must come from the cache
        return method == "GET" and "/series/" in path and not path.endswith("/metadata")

    with FaultProxy(dicomweb_env.port, fail) as proxy:
        src = DicomwebSource(proxy.url + "?PatientID=P001", cache_dir=str(cache), keep_cache=True, retries=0)
        again = run_batch(src, tmp_path / "s.sqlite", engine=InlineEngine(), force=True)
        assert proxy.hits == []
    assert (again.stored, again.n_failed) == (2, 0)


@pytest.mark.slow
def test_worker_processes_get_the_credentials(dicomweb_env, tmp_path, monkeypatch):
    """A forkserver started before the credentials were set must not leave the workers without them."""
    import multiprocessing

    from lungdamage.batch import ProcessEngine

    for k in ("LUNGDAMAGE_DICOMWEB_USER", "LUNGDAMAGE_DICOMWEB_PASSWORD"):
        monkeypatch.delenv(k)
    p = multiprocessing.get_context("forkserver").Process(target=os.getpid)  # the forkserver starts now, without them
    p.start()
    p.join()
    monkeypatch.setenv("LUNGDAMAGE_DICOMWEB_USER", dicomweb_env.user)
    monkeypatch.setenv("LUNGDAMAGE_DICOMWEB_PASSWORD", dicomweb_env.password)
    src = DicomwebSource(f"{dicomweb_env.url}?PatientID=P001&StudyDate=20200401", retries=0, cache_dir=str(tmp_path / "c"))
    summary = run_batch(src, tmp_path / "s.sqlite", engine=ProcessEngine(1))
    assert (summary.stored, summary.n_failed) == (1, 0), load_failures(tmp_path / "s.sqlite").to_dict("records")


def test_query_matching_nothing_is_one_clear_line_and_no_store(dicomweb_env, tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    code = main(["batch", dicomweb_env.url, "--patient-id", "NOBODY", "--store", str(store), "--jobs", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and not store.exists()
    assert "No study with a CT series on the DICOMweb server" in err and "patients NOBODY" in err
    assert main(["index", str(tmp_path), "--patient-id", "P001"]) == 2  # a filter with a folder is refused
    assert "--patient-id filter a DICOMweb query" in capsys.readouterr().err
