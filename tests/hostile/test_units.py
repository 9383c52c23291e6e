"""In-process regression tests of issue 14 that the CLI table cannot show directly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile

import pandas as pd
import pytest
from _build import REPO, copy_series

from lungdamage.errors import StoreError


def test_zip_catalog_opens_each_archive_once(tmp_path, good_series, monkeypatch):
    """Cataloguing and reading a zip is linear: the archive is opened once, not once per member."""
    from lungdamage.io import _dicom_headers
    from lungdamage.io.catalog import scan
    from lungdamage.io.dicom import read_series

    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(good_series.glob("*.dcm")):
            zf.write(f, f"s/{f.name}")
        for k in range(500):
            zf.writestr(f"other/{k}.txt", b"not dicom")
    opened = []
    real_init = zipfile.ZipFile.__init__

    def counting_init(self, file, *args, **kwargs):
        opened.append(str(file))
        real_init(self, file, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "__init__", counting_init)
    _dicom_headers._ZIP_CACHE.clear()
    series = scan(archive)
    ct = read_series(series[0])
    assert ct.shape[0] == 40
    assert len(opened) <= 2, f"archive opened {len(opened)} times for {540} members"


def test_duplicate_member_names_are_distinct_sources(tmp_path, good_series):
    from lungdamage.io._dicom_headers import iter_sources, read_source_bytes

    files = sorted(good_series.glob("*.dcm"))[:3]
    archive = tmp_path / "d.zip"
    import warnings

    with zipfile.ZipFile(archive, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for f in files:
            zf.write(f, "x.dcm")
    sources = [s for s, _ in iter_sources(archive)]
    assert sources == [f"{archive}::x.dcm", f"{archive}::x.dcm::#2", f"{archive}::x.dcm::#3"]
    assert [read_source_bytes(s) for s in sources] == [f.read_bytes() for f in files]


def test_lock_file_symlink_is_refused(tmp_path):
    from lungdamage.batch import ResultStore

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "s.sqlite.lock").symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link"):
        ResultStore(tmp_path / "s.sqlite")
    assert victim.read_text() == "precious\n"


def test_escape_formulas_text_only():
    from lungdamage.io.safe import escape_formulas

    df = pd.DataFrame({"t": ["=1+1", "+x", "-y", "@z", "ok", None], "n": [-1.5, 2, -3, 4, 5, 6]})
    out = escape_formulas(df)
    assert out["t"].tolist()[:5] == ["'=1+1", "'+x", "'-y", "'@z", "ok"]
    assert pd.isna(out["t"].iloc[5])
    assert out["n"].tolist() == df["n"].tolist()
    assert df["t"].iloc[0] == "=1+1"  # the input is not modified


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_batch_workers_exit_when_batch_is_killed(tmp_path, good_series, sig):
    root = tmp_path / "root"
    for k in range(6):
        copy_series(good_series, root / f"s{k}")
    src = os.environ.get("LUNGDAMAGE_HOSTILE_SRC") or str(REPO / "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lungdamage", "batch", str(root), "--store", str(tmp_path / "s.sqlite"), "--jobs", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            workers = _descendants(proc.pid)
            if len(workers) >= 2:  # the forkserver and at least one worker
                time.sleep(1.0)
                workers = _descendants(proc.pid)
                break
            time.sleep(0.2)
        assert proc.poll() is None and workers, "the batch finished before its workers could be observed"
        proc.send_signal(sig)
        proc.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        left = [p for p in workers if _alive(p)]
        assert not left, f"worker processes still running after the batch was killed: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in _descendants(proc.pid) | workers:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_cli_message_for_unexpected_errors():
    import sqlite3
    import zlib

    from lungdamage.cli import unexpected_error_text

    assert "result store" in unexpected_error_text(sqlite3.OperationalError("attempt to write a readonly database"))
    assert "out of memory" in unexpected_error_text(MemoryError())
    assert "compressed" in unexpected_error_text(zlib.error("invalid distance"))
    assert "OverflowError" in unexpected_error_text(OverflowError("int too large"))
    assert "\n" not in unexpected_error_text(ValueError("a\nb"))


def test_text_is_cut(tmp_path):
    from lungdamage.io._dicom_headers import MAX_TEXT_CHARS, shorten

    assert shorten("abc") == "abc"
    long = shorten("x" * 2_000_000)
    assert len(long) < MAX_TEXT_CHARS + 40 and long.endswith("chars cut]")



@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM needs Linux /proc")
def test_table_memory_is_the_childs_own(tmp_path):
    """The table's peak RSS is the child's own, whatever this test process holds (``ru_maxrss`` after
    ``fork``/``exec`` would report this process's peak: 1.2 GiB here, over the table's 1 GiB limit)."""
    import numpy as np
    from _build import cli

    ballast = np.ones(1200 * 2**20, np.uint8)  # touched: 1.2 GiB resident in this process
    run = cli(["--version"], cwd=tmp_path)
    assert run.rc == 0, run.stderr
    # an independent bound: python with the CLI imported is about 100 MiB, far below the ballast
    assert 10 < run.maxrss_mib < 400, run.maxrss_mib
    del ballast
