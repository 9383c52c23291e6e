"""read_series with several reader threads (blocks of slices read in parallel into one array) and with
decoder processes (compressed series)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless

from lungdamage.io.dicom import OUTSIDE_FIELD_HU, read_series

N_SLICES = 53  # several blocks of 16 slices and a short last block


@pytest.mark.parametrize("threads", ["1", "3"])
def test_threads_give_the_same_volume(tmp_path, series_writer, phantom, monkeypatch, threads):
    """Files in reverse order, one RLE-compressed slice and outside-field values in one block only:
    every slice lands at its position and the per-block value ranges still trigger the air fix."""
    monkeypatch.setenv("LUNGDAMAGE_READ_THREADS", threads)
    hu = phantom(shape=(N_SLICES, 7, 5), seed=3)
    hu[40, 2:4, 1:3] = -3024  # outside the reconstruction field, in the third block only
    series_writer(tmp_path, hu[::-1], origin=(-100, -120, -50 + (N_SLICES - 1) * 2.5), spacing=(-2.5, 0.7, 0.8),
                  intercept=-3072.0)
    ds = pydicom.dcmread(tmp_path / "IM0020.dcm")
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "IM0020.dcm")
    ct = read_series(tmp_path)
    want = np.where(hu <= OUTSIDE_FIELD_HU, -1024, hu)
    np.testing.assert_array_equal(ct.hu, want)


def test_decoder_error_in_a_thread_is_one_clear_line(tmp_path, series_writer, phantom, monkeypatch):
    monkeypatch.setenv("LUNGDAMAGE_READ_THREADS", "2")
    series_writer(tmp_path, phantom(shape=(40, 7, 5)))
    ds = pydicom.dcmread(tmp_path / "IM0033.dcm")
    ds.compress(RLELossless)
    ds.PixelData = ds.PixelData[:40]  # a truncated RLE stream
    ds.save_as(tmp_path / "IM0033.dcm")
    from lungdamage.errors import DicomSeriesError

    with pytest.raises(DicomSeriesError, match="cannot decode pixel data of .*IM0033.dcm"):
        read_series(tmp_path)


# ------------------------------------------------------------------------- decoder processes
def _rle_series(folder, series_writer, hu, *, keep_raw=()):
    """``hu`` as a series whose files are RLE-compressed, except the indices in ``keep_raw``."""
    paths = series_writer(folder, hu, origin=(-100, -120, -50), spacing=(2.5, 0.7, 0.8), intercept=-1024.0)
    for k, p in enumerate(paths):
        if k not in keep_raw:
            ds = pydicom.dcmread(p)
            ds.compress(RLELossless)
            ds.save_as(p)
    return paths


def _decoder_pids(caplog) -> list[int]:
    import re

    found = [r.getMessage() for r in caplog.records if "decoded by processes" in r.getMessage()]
    assert found, "the frames were not decoded by worker processes"
    return [int(x) for x in re.findall(r"\d+", found[-1].split("processes", 1)[1])]


def test_decoder_processes_give_the_same_volume(tmp_path, series_writer, phantom, monkeypatch, caplog):
    """A compressed series (one slice left uncompressed) decoded by two worker processes: every slice at
    its position, identical to the phantom, and decoded outside this process."""
    import logging
    import os

    import lungdamage.io.dicom as dicom

    monkeypatch.setattr(dicom, "DECODE_PROCESS_MIN_FRAMES", 8)
    monkeypatch.setenv("LUNGDAMAGE_READ_THREADS", "2")
    hu = phantom(shape=(N_SLICES, 9, 7), seed=4)
    _rle_series(tmp_path, series_writer, hu, keep_raw=(17,))
    with caplog.at_level(logging.INFO, logger="lungdamage.io.dicom"):
        ct = read_series(tmp_path)
    np.testing.assert_array_equal(ct.hu, hu)
    pids = _decoder_pids(caplog)
    assert pids and os.getpid() not in pids


def test_decoder_process_error_is_one_clear_line(tmp_path, series_writer, phantom, monkeypatch):
    import lungdamage.io.dicom as dicom
    from lungdamage.errors import DicomSeriesError

    monkeypatch.setattr(dicom, "DECODE_PROCESS_MIN_FRAMES", 8)
    monkeypatch.setenv("LUNGDAMAGE_READ_THREADS", "2")
    paths = _rle_series(tmp_path, series_writer, phantom(shape=(40, 7, 5)))
    ds = pydicom.dcmread(paths[33])
    ds.PixelData = ds.PixelData[:40]  # a truncated RLE stream
    ds.save_as(paths[33])
    with pytest.raises(DicomSeriesError, match=f"cannot decode pixel data of .*{paths[33].name}") as caught:
        read_series(tmp_path)
    # raised in a decoder process (concurrent.futures chains the worker's traceback), not in this one
    assert type(caught.value.__cause__).__name__ == "_RemoteTraceback"


class _ExitsWhenUnpickled(str):
    """A file name that ends the process unpickling it (a decoder process dying mid-series, as the OOM
    killer or a crashing codec would make it): pickled as a call to ``os._exit``."""

    def __reduce__(self):
        import os

        return os._exit, (70,)


def test_a_dead_decoder_process_is_one_clear_line(tmp_path, series_writer, phantom, monkeypatch):
    """One decoder process dies while the series is decoded: one DicomSeriesError, not a hang or a
    BrokenProcessPool traceback, and no decoder process left behind."""
    import dataclasses
    from multiprocessing import active_children

    import lungdamage.io.dicom as dicom
    from lungdamage.errors import DicomSeriesError

    monkeypatch.setattr(dicom, "DECODE_PROCESS_MIN_FRAMES", 8)
    monkeypatch.setenv("LUNGDAMAGE_READ_THREADS", "2")
    _rle_series(tmp_path, series_writer, phantom(shape=(80, 9, 7), seed=2))
    read_headers = dicom.read_headers

    def one_deadly_file(*args, **kwargs):
        hs = read_headers(*args, **kwargs)
        return [dataclasses.replace(h, source=_ExitsWhenUnpickled(h.source)) if k == 50 else h
                for k, h in enumerate(hs)]

    monkeypatch.setattr(dicom, "read_headers", one_deadly_file)
    with pytest.raises(DicomSeriesError, match="a decoder process died"):
        read_series(tmp_path)
    server = getattr(__import__("multiprocessing.forkserver").forkserver._forkserver, "_forkserver_pid", None)
    if server:
        with open(f"/proc/{server}/task/{server}/children") as f:
            assert f.read().split() == [], "decoder processes left behind"
    assert active_children() == [] or all(p.name.startswith("ForkServer") for p in active_children())


def _run_script(tmp_path, name: str, body: str):
    """``body`` as the script ``name`` in ``tmp_path``, run with this checkout's sources and two reader threads."""
    import subprocess
    import sys
    from pathlib import Path

    import lungdamage.io.dicom as dicom

    script = tmp_path / name
    script.write_text(body)
    env = {"PYTHONPATH": str(Path(dicom.__file__).parents[2]), "LUNGDAMAGE_READ_THREADS": "2", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


def test_unguarded_script_decodes_in_its_own_process(tmp_path, series_writer, phantom):
    """A script calling read_series from unguarded top-level code: worker processes would import the
    script again (and read the series again, and start workers again...); it decodes in its own process."""
    hu = phantom(shape=(24, 9, 7), seed=5)
    _rle_series(tmp_path / "series", series_writer, hu)
    run = _run_script(
        tmp_path, "unguarded.py",
        "import logging, numpy as np\n"
        "import lungdamage.io.dicom as dicom\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "dicom.DECODE_PROCESS_MIN_FRAMES = 8\n"
        f"ct = dicom.read_series({str(tmp_path / 'series')!r})\n"
        "np.save('out.npy', ct.hu)\n",
    )
    assert run.returncode == 0, run.stderr
    assert "decoded by processes" not in run.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), hu)


def test_unguarded_script_reading_from_threads_decodes_in_its_own_process(tmp_path, series_writer, phantom):
    """The same script reading two series from a thread pool at its top level: the reading threads'
    own stacks do not show the unguarded top-level code; the main thread's does."""
    hu = phantom(shape=(24, 9, 7), seed=6)
    for name in ("a", "b"):
        _rle_series(tmp_path / name, series_writer, hu)
    run = _run_script(
        tmp_path, "unguarded_threads.py",
        "import logging, numpy as np\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "import lungdamage.io.dicom as dicom\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "dicom.DECODE_PROCESS_MIN_FRAMES = 8\n"
        "with ThreadPoolExecutor(2) as ex:\n"
        f"    cts = list(ex.map(dicom.read_series, [{str(tmp_path / 'a')!r}, {str(tmp_path / 'b')!r}]))\n"
        "np.save('out.npy', np.stack([ct.hu for ct in cts]))\n",
    )
    assert run.returncode == 0, run.stderr
    assert "decoded by processes" not in run.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), np.stack([hu, hu]))


def test_guarded_script_reading_from_threads_uses_decoder_processes(tmp_path, series_writer, phantom):
    """Under the guard, reading from threads still gets decoder processes (the main thread's stack shows
    the guard)."""
    hu = phantom(shape=(24, 9, 7), seed=7)
    _rle_series(tmp_path / "a", series_writer, hu)
    run = _run_script(
        tmp_path, "guarded_threads.py",
        "import logging, numpy as np\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "import lungdamage.io.dicom as dicom\n"
        "if __name__ == '__main__':\n"
        "    logging.basicConfig(level=logging.INFO)\n"
        "    dicom.DECODE_PROCESS_MIN_FRAMES = 8\n"
        "    with ThreadPoolExecutor(1) as ex:\n"
        f"        ct = ex.submit(dicom.read_series, {str(tmp_path / 'a')!r}).result()\n"
        "    np.save('out.npy', ct.hu)\n",
    )
    assert run.returncode == 0, run.stderr
    assert "decoded by processes" in run.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), hu)


def test_without_semaphores_the_series_is_decoded_in_this_process(tmp_path, series_writer, phantom, monkeypatch,
                                                                  caplog):
    """Where multiprocessing has no semaphores (AWS Lambda, containers without /dev/shm: creating one
    raises ENOSYS), the reader decodes with threads instead of failing."""
    import errno
    import logging
    from multiprocessing import synchronize

    import lungdamage.io.dicom as dicom

    monkeypatch.setattr(dicom, "DECODE_PROCESS_MIN_FRAMES", 8)
    monkeypatch.setenv("LUNGDAMAGE_READ_THREADS", "2")

    def no_semaphores(self, *args, **kwargs):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(synchronize.SemLock, "__init__", no_semaphores)
    hu = phantom(shape=(24, 9, 7), seed=8)
    _rle_series(tmp_path, series_writer, hu)
    with caplog.at_level(logging.INFO, logger="lungdamage.io.dicom"):
        ct = read_series(tmp_path)
    np.testing.assert_array_equal(ct.hu, hu)
    assert any("decoder processes unavailable" in r.getMessage() for r in caplog.records)


def test_warning_categories_cross_the_process_boundary():
    """A decoder process's warnings are raised again with their own category (filters keep working)."""
    import pydicom.errors

    from lungdamage.io.dicom import _warning_category

    assert _warning_category("builtins", "DeprecationWarning") is DeprecationWarning
    assert _warning_category("lungdamage.io.dicom", "DicomReadWarning").__name__ == "DicomReadWarning"
    assert _warning_category("no.such.module", "X") is UserWarning
    assert _warning_category("pydicom.errors", "InvalidDicomError") is UserWarning  # not a Warning
    assert pydicom.errors.InvalidDicomError
