"""Engines: local processes, a dying worker, kill -9 of the batch, a real Dask cluster."""

from __future__ import annotations

import functools
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest
from _batchdata import N_CT_GOOD, run_cli

from lungdamage.batch import ProcessEngine, load_failures, load_results, plan_batch, run_batch

KEY = ["series_uid", "scheme", "region"]
#: columns that legitimately differ between two runs of the same series
RUN_COLUMNS = ["scan_id"]


def same_results(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Identical stored values (every column but the row ids), whatever the completion order."""
    a = a.drop(columns=RUN_COLUMNS).sort_values(KEY).reset_index(drop=True)
    b = b.drop(columns=RUN_COLUMNS).sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def same_failures(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = ["series_uid", "stage", "error_type", "message"]
    pd.testing.assert_frame_equal(a[cols].sort_values("series_uid").reset_index(drop=True),
                                  b[cols].sort_values("series_uid").reset_index(drop=True))


def test_process_workers_cli(archive, reference_store, tmp_path):
    root, _ = archive
    store = tmp_path / "p.sqlite"
    proc = run_cli("batch", str(root), "--store", str(store), "--jobs", "2", "--progress-interval", "0")
    assert proc.returncode == 1, proc.stderr  # the two broken series
    assert f"done {N_CT_GOOD}, skipped 0" in proc.stdout and "analysed in this run by 2 worker processes in" in proc.stdout
    assert "failed 1: read: DicomSeriesError" in proc.stdout
    # plain progress lines (stderr is not a terminal): count, rate and ETA
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("batch: ")]
    assert lines[0] == "batch: 14 series to score"
    assert lines[-1].startswith("batch: 14/14 (100%), 2 failed,") and "series/min" in lines[-1] and "ETA" in lines[-1]
    same_results(load_results(store), load_results(reference_store))
    same_failures(load_failures(store), load_failures(reference_store))
    workers = {r[0] for r in sqlite3.connect(store).execute("SELECT worker FROM scans")}
    assert len(workers) == 2 and os.getpid() not in {int(w.split(":")[1]) for w in workers}


def _kill_own_worker(series_uid: str, analysis) -> None:
    """QC hook that makes the worker die (as an out-of-memory kill would) on one series."""
    if analysis.result.meta.series_uid == series_uid:
        os.kill(os.getpid(), signal.SIGKILL)


def test_dead_worker_becomes_failure_row(archive, reference_store, tmp_path):
    root, info = archive
    tasks = [t for t in plan_batch(root)[0] if t.series_uid in info["good"]][:4]
    victim = tasks[1].series_uid
    store = tmp_path / "w.sqlite"
    summary = run_batch(
        None, store, tasks=tasks, engine=ProcessEngine(2), hook=functools.partial(_kill_own_worker, victim)
    )
    assert summary.failed == {"worker: BrokenProcessPool": 1}
    assert summary.stored == 3
    fails = load_failures(store)
    assert fails.series_uid.tolist() == [victim]
    assert "worker process died while scoring this series alone" in fails.message[0]
    df = load_results(store)
    assert set(df.series_uid) == {t.series_uid for t in tasks} - {victim}
    ref = load_results(reference_store)
    same_results(df, ref[ref.series_uid.isin(df.series_uid)])


def _count(store) -> int:
    try:
        con = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT count(*) FROM scans").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_kill_9_then_rerun(archive, reference_store, tmp_path):
    root, _ = archive
    store = tmp_path / "k.sqlite"
    cmd = [sys.executable, "-m", "lungdamage", "-q", "batch", str(root), "--store", str(store), "--jobs", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while _count(store) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the batch and its workers, mid-run
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    stored_at_kill = _count(store)
    assert 3 <= stored_at_kill < N_CT_GOOD
    rerun = run_cli("batch", str(root), "--store", str(store), "--jobs", "1")
    assert rerun.returncode == 1, rerun.stderr
    assert f"already stored {stored_at_kill}" in rerun.stdout
    con = sqlite3.connect(store)
    try:
        dup = con.execute("SELECT series_uid, count(*) FROM scans GROUP BY series_uid, run_hash, version HAVING count(*) > 1")
        assert dup.fetchall() == []
        orphans = con.execute("SELECT count(*) FROM region_metrics WHERE scan_id NOT IN (SELECT scan_id FROM scans)")
        assert orphans.fetchone()[0] == 0
    finally:
        con.close()
    df = load_results(store)
    assert df.groupby("series_uid").size().eq(3).all() and df.series_uid.nunique() == N_CT_GOOD
    same_results(df, load_results(reference_store))
    same_failures(load_failures(store), load_failures(reference_store))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster(tmp_path):
    """A real `distributed` scheduler and two single-thread workers, as separate processes on 127.0.0.1."""
    pytest.importorskip("distributed")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path, start_new_session=True,
        )
    ]
    try:
        for i in range(2):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1", "--nthreads", "1",
                     "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}", "--local-directory", str(tmp_path)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path, start_new_session=True,
                )
            )
        from distributed import Client

        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, timeout=5) as client:
                    client.wait_for_workers(2, timeout=max(1.0, deadline - time.monotonic()))
                break
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@pytest.mark.slow
def test_dask_scheduler_same_results(archive, reference_store, dask_cluster, tmp_path):
    root, _ = archive
    store = tmp_path / "d.sqlite"
    proc = run_cli("batch", str(root), "--store", str(store), "--scheduler", dask_cluster, "--progress-interval", "0")
    assert proc.returncode == 1, proc.stderr
    assert f"done {N_CT_GOOD}, skipped 0" in proc.stdout and "analysed in this run by 2 Dask workers in" in proc.stdout
    same_results(load_results(store), load_results(reference_store))
    same_failures(load_failures(store), load_failures(reference_store))
    workers = {r[0] for r in sqlite3.connect(store).execute("SELECT worker FROM scans")}
    assert len(workers) == 2  # both Dask workers scored series
