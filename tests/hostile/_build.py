"""Builders of hostile inputs (real files written with pydicom, zipfile, SimpleITK, os.mkfifo, ...).

Every builder writes into a case folder ``root`` that already holds ``good/``
(a copy of a small scorable phantom series) and returns the path given to
``lungdamage score``; ``lungdamage batch`` gets ``root`` itself, so each batch
run also shows that the good series is still scored (the batch goes on).
"""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

REPO = Path(__file__).resolve().parents[2]

#: The good phantom series: 64 x 64 pixels, 40 slices of 5 mm (200 mm, enough to be selected).
GOOD_MATRIX, GOOD_SLICES, GOOD_MM = 64, 40, 5.0


def write_good_series(folder: Path) -> list[Path]:
    from lungdamage.phantom import make_phantom, write_dicom_series

    ct = make_phantom(
        matrix=GOOD_MATRIX, slice_thickness_mm=GOOD_MM, n_slices=GOOD_SLICES, noise_hu=0.0, vessels=False,
        truth_samples=2**10,
    ).ct
    return write_dicom_series(ct, folder, patient_id="GOOD", series_description="good phantom")


# ----------------------------------------------------------------------------- helpers
def slices(folder: Path) -> list[Path]:
    return sorted(folder.glob("IM*.dcm"))


def copy_series(src: Path, dst: Path, *, new_uids: bool = True, edit=None) -> list[Path]:
    """Copy a series with fresh study/series/SOP UIDs; ``edit(k, ds)`` may change each slice."""
    from pydicom.uid import generate_uid

    dst.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    out = []
    for k, f in enumerate(slices(src)):
        ds = pydicom.dcmread(f)
        if new_uids:
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.PatientID = "HOSTILE"
        if edit is not None:
            edit(k, ds)
        p = dst / f.name
        ds.save_as(p, enforce_file_format=False)
        out.append(p)
    return out


def dataset_bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def zip_folder(folder: Path, archive: Path, *, method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(archive, "w", method) as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"series/{f.name}")
    return archive


def patch_zip_headers(archive: Path, *, flag_bits: int | None = None, method: int | None = None) -> None:
    """Rewrite the general-purpose flags / compression method of every member, in the local and central headers."""
    data = bytearray(archive.read_bytes())
    for sig, flag_off, meth_off in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        start = 0
        while (i := data.find(sig, start)) >= 0:
            if flag_bits is not None:
                old = struct.unpack_from("<H", data, i + flag_off)[0]
                struct.pack_into("<H", data, i + flag_off, old | flag_bits)
            if method is not None:
                struct.pack_into("<H", data, i + meth_off, method)
            start = i + 4
    archive.write_bytes(bytes(data))


def nested_sequence_bytes(depth: int) -> bytes:
    """Explicit VR little-endian bytes of a sequence nested ``depth`` levels deep (undefined lengths)."""
    open_seq = struct.pack("<HH", 0x0040, 0x0275) + b"SQ\x00\x00" + struct.pack("<I", 0xFFFFFFFF)
    open_item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    close_item = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    close_seq = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return (open_seq + open_item) * depth + (close_item + close_seq) * depth


def good_slice(root: Path) -> pydicom.Dataset:
    return pydicom.dcmread(slices(root / "good")[0])


def one_file_series(folder: Path, ds: pydicom.Dataset, name: str = "IM0001.dcm", raw: bytes | None = None) -> Path:
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientID = "HOSTILE"
    p = folder / name
    p.write_bytes(raw if raw is not None else dataset_bytes(ds))
    return p


# ------------------------------------------------------------------------------ running
@dataclass
class Run:
    """One CLI subprocess: exit code, output, peak RSS (MiB, the child alone) and whether it hung."""

    args: list[str]
    rc: int | None
    stdout: str
    stderr: str
    maxrss_mib: float
    timed_out: bool = False
    signal: int | None = None
    extra: dict = field(default_factory=dict)

    def error_lines(self, command: str) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.startswith(f"lungdamage {command}: error:")]


def cli(args: list[str], *, cwd: Path, timeout_s: float = 180.0, env: dict | None = None) -> Run:
    """Run ``python -m lungdamage ARGS`` with this checkout's sources; a hang is killed at ``timeout_s``.

    The peak RSS is the child's own ``VmHWM``, written by an ``atexit`` handler of the
    child (``--jobs 0`` keeps the batch's work in it).  ``ru_maxrss`` from ``os.wait4``
    is only the fallback (a killed child): Linux carries the parent's peak across
    ``fork``/``exec`` into it, so it would count this test process's own memory.
    """
    full_env = dict(os.environ)
    # LUNGDAMAGE_HOSTILE_SRC: run the table against another source tree (e.g. the code before the fix)
    src = os.environ.get("LUNGDAMAGE_HOSTILE_SRC") or str(REPO / "src")
    full_env["PYTHONPATH"] = os.pathsep.join([src, full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    full_env.update(env or {})
    stamp = time.time_ns()
    out_path, err_path, hwm_path = cwd / f".out-{stamp}", cwd / f".err-{stamp}", cwd / f".hwm-{stamp}"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _RUN_WITH_HWM, str(hwm_path), *args], cwd=cwd, stdout=out, stderr=err,
            stdin=subprocess.DEVNULL, env=full_env,
        )
        deadline = time.monotonic() + timeout_s
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                timed_out = True
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
    rc = proc.returncode
    sig = -rc if rc is not None and rc < 0 else None
    try:
        maxrss_mib = int(hwm_path.read_text().split()[0]) / 1024.0
        hwm_path.unlink()
    except (OSError, ValueError, IndexError):  # killed before its exit handlers ran
        maxrss_mib = usage.ru_maxrss / 1024.0
    run = Run(
        list(args), None if timed_out else rc, out_path.read_text(errors="replace"),
        err_path.read_text(errors="replace"), maxrss_mib, timed_out, sig,
    )
    out_path.unlink()
    err_path.unlink()
    return run


#: ``python -c`` body: ``python -m lungdamage ARGS`` (via runpy), then the process's own peak
#: RSS (``VmHWM``, kB) into the file named by the first argument, at exit.
_RUN_WITH_HWM = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def _hwm():
    try:
        with open('/proc/self/status') as f:
            kb = next(line.split()[1] for line in f if line.startswith('VmHWM:'))
        with open(out, 'w') as f:
            f.write(kb)
    except (OSError, StopIteration):
        pass
atexit.register(_hwm)
sys.argv[0] = 'lungdamage'
runpy.run_module('lungdamage', run_name='__main__', alter_sys=True)
"""


def make_socket(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    return s


def zip_with_big_member(archive: Path, member_ds: pydicom.Dataset, total_bytes: int) -> None:
    """A small archive holding one member of ``total_bytes`` (a DICOM slice followed by zeros), deflated."""
    head = dataset_bytes(member_ds)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("big/IM0001.dcm", "w", force_zip64=True) as fh:
            fh.write(head)
            left = total_bytes - len(head)
            chunk = bytes(1 << 22)
            while left > 0:
                n = min(left, len(chunk))
                fh.write(chunk[:n])
                left -= n


def nifti(path: Path, arr: np.ndarray) -> Path:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.7, 5.0))
    sitk.WriteImage(img, str(path), useCompression=str(path).endswith(".gz"))
    return path


def ct_like(shape=(40, 64, 64)) -> np.ndarray:
    from lungdamage.phantom import make_phantom

    return make_phantom(
        matrix=shape[1], slice_thickness_mm=GOOD_MM, n_slices=shape[0], noise_hu=0.0, vessels=False,
        truth_samples=2**10,
    ).ct.hu


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)
