"""The hostile-input table: one :class:`Case` per broken or hostile input (issue 14).

Each case builds its input inside ``root`` (which already holds ``good/``, a
scorable phantom series) and names the expected outcome of ``lungdamage
score`` and of ``lungdamage batch``:

score
    ``error``: exit 2 and one line ``lungdamage score: error: ...`` matching ``expect``;
    ``warn``: exit 0 and the row's ``warnings`` match ``expect``;
    ``ok``: exit 0 (the input is read correctly; ``check`` verifies the numbers).
batch (``--jobs 0``; ``root`` holds the case and the good series)
    ``failrow``: exit 1, a failure row whose message matches ``expect``, and the
    good series stored (the batch went on);
    ``warn``: exit 0, the hostile series stored with a warning matching ``expect``;
    ``ok``: exit 0, everything stored;
    ``ignored``: exit 0, the good series stored; the input is not a batch input
    (NIfTI: batches catalog DICOM only) and is counted as non-DICOM;
    ``error``: exit 2 and one error line matching ``expect``.
"""

from __future__ import annotations

import os
import shutil
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from _build import (
    copy_series,
    ct_like,
    dataset_bytes,
    good_slice,
    make_socket,
    nested_sequence_bytes,
    nifti,
    one_file_series,
    patch_zip_headers,
    slices,
    zip_folder,
    zip_with_big_member,
)


@dataclass(frozen=True)
class Case:
    name: str
    defect: str
    build: Callable[[Path], Path]
    score: str
    batch: str
    expect: str = ""
    batch_expect: str = ""
    memory: bool = False
    score_args: tuple[str, ...] = ()
    batch_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    skip_if_root: bool = False

    @property
    def batch_pattern(self) -> str:
        return self.batch_expect or self.expect


def hostile(root: Path, edit=None) -> Path:
    copy_series(root / "good", root / "hostile", edit=edit)
    return root / "hostile"


def on_slice(k0: int, **attrs):
    def edit(k, ds):
        if k == k0:
            for key, value in attrs.items():
                setattr(ds, key, value)
    return edit


def every_slice(**attrs):
    def edit(k, ds):
        for key, value in attrs.items():
            setattr(ds, key, value)
    return edit


# ------------------------------------------------------------------ 1: FIFOs, devices, sockets
def b_fifo(root):
    d = hostile(root)
    os.mkfifo(d / "IM9999.dcm")
    return d


def b_fifo_zip(root):
    d = hostile(root)
    os.mkfifo(d / "archive.zip")
    return d


def b_fifo_alone(root):
    (root / "pipe").mkdir()
    os.mkfifo(root / "pipe" / "IM0001.dcm")
    return root / "pipe"


_SOCKETS = []


def b_socket(root):
    d = hostile(root)
    _SOCKETS.append(make_socket(d / "IM9999.dcm"))
    return d


def b_device(root):
    d = hostile(root)
    (d / "IM9999.dcm").symlink_to("/dev/zero")
    return d


def b_broken_symlink(root):
    d = hostile(root)
    (d / "IM9998.dcm").symlink_to(root / "does-not-exist.dcm")
    return d


def b_symlink_loop(root):
    d = hostile(root)
    (d / "loop.dcm").symlink_to(d / "loop.dcm")
    return d


def b_unreadable_folder(root):
    d = hostile(root)
    sub = d / "locked"
    sub.mkdir()
    shutil.copy(slices(d)[0], sub / "X.dcm")
    sub.chmod(0)
    return d


# --------------------------------------------------------------- 2: sizes declared in headers
def b_zip_big_member(root):
    """A 40-slice zipped series; one member is a slice followed by 1 GiB of zeros (about 1 MB deflated)."""
    d = hostile(root)
    big = pydicom.dcmread(slices(d)[0])
    archive = root / "big.zip"
    zip_with_big_member(archive, big, 2**30)
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as zf:
        for f in slices(d)[1:]:
            zf.write(f, f"big/{f.name}")
    shutil.rmtree(d)
    return archive


def b_frames_2e8(root):
    ds = good_slice(root)
    ds.NumberOfFrames = 200_000_000
    one_file_series(root / "frames", ds)
    return root / "frames"


def b_rows_60000(root):
    ds = good_slice(root)
    ds.Rows = ds.Columns = 60000
    one_file_series(root / "huge", ds)
    return root / "huge"


def b_slices_over_budget(root):
    return hostile(root, every_slice(Rows=8192, Columns=8192))


def b_pixels_short(root):
    """One slice declares 65 rows but holds 64 rows of pixels."""
    return hostile(root, on_slice(10, Rows=65))


def b_nifti_huge(root):
    p = nifti(root / "huge.nii", np.zeros((2, 4, 4), np.int16))
    data = bytearray(p.read_bytes())
    struct.pack_into("<8h", data, 40, 3, 30000, 30000, 10, 1, 1, 1, 1)
    p.write_bytes(bytes(data))
    return p


def b_j2k_siz(root):
    """A JPEG 2000 series; one slice's codestream claims 60000 x 60000 pixels (header says 64 x 64)."""
    from pydicom.uid import JPEG2000Lossless

    d = hostile(root)
    for k, f in enumerate(slices(d)):
        ds = pydicom.dcmread(f)
        ds.compress(JPEG2000Lossless)
        if k == 20:
            frags = bytearray(ds.PixelData)
            i = frags.find(b"\xff\x4f\xff\x51")
            struct.pack_into(">II", frags, i + 8, 60000, 60000)
            ds.PixelData = bytes(frags)
        ds.save_as(f, enforce_file_format=False)
    return d


# ------------------------------------------------------------------ 3: silently wrong numbers
def b_slope_nan(root):
    return hostile(root, on_slice(7, RescaleSlope="nan"))


def b_intercept_inf(root):
    return hostile(root, on_slice(3, RescaleIntercept="inf"))


def b_slope_zero(root):
    return hostile(root, on_slice(12, RescaleSlope="0"))


def b_iop_dot(root):
    return hostile(root, every_slice(ImageOrientationPatient=[1, 0, 0, 0.8, 0.6, 0]))


def b_iop_not_unit(root):
    return hostile(root, every_slice(ImageOrientationPatient=[2, 0, 0, 0, 1, 0]))


def _nifti_float(root, name, bad_value):
    arr = ct_like().astype(np.float32)
    arr[20, 30, 30:34] = bad_value
    return nifti(root / name, arr)


def b_nifti_nan(root):
    return _nifti_float(root, "nan.nii.gz", np.nan)


def b_nifti_inf(root):
    return _nifti_float(root, "inf.nii", np.inf)


def _nifti_cut(root, name):
    p = nifti(root / name, ct_like())
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * 0.8)])
    return p


def b_nifti_cut(root):
    return _nifti_cut(root, "cut.nii")


def b_niftigz_cut(root):
    return _nifti_cut(root, "cut.nii.gz")


# ----------------------------------------------------------- 4: any exception reading one file
def _deep_file(root) -> bytes:
    ds = good_slice(root)
    del ds.PixelData
    return dataset_bytes(ds) + nested_sequence_bytes(5000)


def b_deep_alone(root):
    one_file_series(root / "deep", good_slice(root), raw=None)
    (root / "deep" / "IM0001.dcm").write_bytes(_deep_file(root))
    return root / "deep"


def b_deep_in_series(root):
    d = hostile(root)
    (d / "deep.dcm").write_bytes(_deep_file(root))
    return d


def b_damaged_header(root):
    d = hostile(root)
    raw = slices(d)[0].read_bytes()
    (d / "damaged.dcm").write_bytes(raw[:132] + np.random.default_rng(5).bytes(4000))
    return d


def _zipped(root, method=zipfile.ZIP_DEFLATED) -> Path:
    d = hostile(root)
    archive = zip_folder(d, root / "series.zip", method=method)
    shutil.rmtree(d)
    return archive


def b_zip_no_directory(root):
    archive = _zipped(root)
    data = bytearray(archive.read_bytes())
    i = data.rfind(b"PK\x01\x02")
    data[i:] = np.random.default_rng(1).bytes(len(data) - i)
    archive.write_bytes(bytes(data))
    return archive


def b_zip_encrypted(root):
    archive = _zipped(root)
    patch_zip_headers(archive, flag_bits=0x1)
    return archive


def b_zip_method(root):
    archive = _zipped(root)
    patch_zip_headers(archive, method=98)  # PPMd: not supported by zipfile
    return archive


def b_zip_bad_crc(root):
    archive = _zipped(root, method=zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("series/IM0020.dcm")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + info.file_size - 100] ^= 0xFF  # one pixel byte
    archive.write_bytes(bytes(data))
    return archive


def b_unknown_syntax(root):
    def edit(k, ds):
        if k == 5:
            ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6"
    return hostile(root, edit)


def b_bits_allocated(root):
    return hostile(root, on_slice(9, BitsAllocated=7))


# ------------------------------------------------------------------------------- 10: skipped
def b_zip_truncated(root):
    archive = _zipped(root)
    data = archive.read_bytes()
    archive.write_bytes(data[: int(len(data) * 0.8)])
    return archive


def b_zip_nested(root):
    inner = _zipped(root)
    outer = root / "outer.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.write(inner, "inner/series.zip")
    inner.unlink()
    return outer


def b_truncated_slice(root):
    d = hostile(root)
    f = slices(d)[17]
    f.write_bytes(f.read_bytes()[: int(f.stat().st_size * 0.6)])
    return d


# ------------------------------------------------------------------------------ 11, 12: text
def b_long_description(root):
    return hostile(root, every_slice(SeriesDescription="x" * (2 * 2**20)))


def b_formula_text(root):
    return hostile(
        root, every_slice(SeriesDescription='=HYPERLINK("http://evil.example/","click")', PatientID="@SUM(1+1)",
                          ConvolutionKernel="+B30f")
    )


def b_duplicate_member_names(root):
    """A zipped series in which every slice is stored under the same member name."""
    d = hostile(root)
    archive = root / "dups.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": the point of the case
            for f in slices(d):
                zf.write(f, "series/IM.dcm")
    shutil.rmtree(d)
    return archive


def b_duplicate_sop(root):
    uids = {}

    def edit(k, ds):
        uids[k] = ds.SOPInstanceUID
        if k == 6:
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uids[5]
    return hostile(root, edit)


def b_many_members(root):
    """A zip of the series plus 8,000 small non-DICOM members."""
    d = hostile(root)
    archive = root / "many.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for f in slices(d):
            zf.write(f, f"series/{f.name}")
        for k in range(8000):
            zf.writestr(f"other/note{k:05d}.txt", b"not dicom")
    shutil.rmtree(d)
    return archive


# -------------------------------------------------------------------- 5, 7: stores and outputs
def b_good_copy(root):
    return hostile(root)


def b_lock_symlink(root):
    victim = root / "victim.txt"
    victim.write_text("precious\n")
    (root / "store.sqlite.lock").symlink_to(victim)
    return hostile(root)


def b_store_garbage(root):
    (root / "store.sqlite").write_bytes(b"this is not an SQLite file" * 100)
    return hostile(root)


def b_store_directory(root):
    (root / "store.sqlite").mkdir()
    return hostile(root)


def b_qc_links(root):
    """Symbolic links planted at the predictable review-output names, pointing at files to protect."""
    import re

    d = hostile(root)
    ds = pydicom.dcmread(slices(d)[0])
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{ds.PatientID}_{ds.StudyDate}_{ds.SeriesInstanceUID[-12:]}").strip("-.")
    for qc in ("qc", "qcb"):
        (root / qc).mkdir()
        for k, name in enumerate((f"{stem}_report.html", f"{stem}_qc.png", "index.html")):
            victim = root / f"victim-{qc}-{k}.txt"
            victim.write_text("precious\n")
            (root / qc / name).symlink_to(victim)
    return d


CASES: list[Case] = [
    # 1
    Case("fifo_in_series", "1", b_fifo, "warn", "failrow", "named pipe"),
    Case("fifo_named_zip", "1", b_fifo_zip, "warn", "failrow", "named pipe"),
    Case("fifo_as_input", "1", b_fifo_alone, "error", "failrow", "named pipe"),
    Case("socket_in_series", "1", b_socket, "warn", "failrow", "socket"),
    Case("device_in_series", "1", b_device, "warn", "failrow", "device"),
    # 10 (and 1): what the walk cannot read is reported
    Case("broken_symlink", "10", b_broken_symlink, "warn", "failrow", "cannot be read"),
    Case("symlink_loop", "10", b_symlink_loop, "warn", "failrow", "cannot be read"),
    Case("unreadable_folder", "10", b_unreadable_folder, "warn", "failrow", "folder cannot be read", skip_if_root=True),
    Case("zip_truncated", "10", b_zip_truncated, "error", "failrow", "damaged or truncated zip"),
    Case("zip_nested", "10", b_zip_nested, "error", "failrow", "inside a zip"),
    Case("truncated_slice", "10", b_truncated_slice, "error", "failrow", "holds only|gap", batch_expect="truncated"),
    # 2
    Case("zip_member_1gib", "2", b_zip_big_member, "error", "failrow", "LUNGDAMAGE_MAX_MEMBER_BYTES", memory=True),
    Case("frames_2e8", "2", b_frames_2e8, "error", "failrow", "NumberOfFrames is 200000000", memory=True),
    Case("rows_60000", "2", b_rows_60000, "error", "failrow", "budget", batch_expect="truncated", memory=True),
    Case("slices_over_budget", "2", b_slices_over_budget, "error", "failrow", "budget", batch_expect="truncated",
         memory=True),
    Case("pixels_short", "2", b_pixels_short, "error", "failrow", "matrix sizes|holds only", batch_expect="matrix sizes|truncated",
         memory=True),
    Case("nifti_dims_huge", "2", b_nifti_huge, "error", "ignored", "budget", memory=True),
    Case("voxel_budget_env", "2", b_good_copy, "error", "failed", "LUNGDAMAGE_MAX_VOXELS", memory=True,
         env=(("LUNGDAMAGE_MAX_VOXELS", "100000"),)),
    # 8
    Case("j2k_siz_60000", "8", b_j2k_siz, "error", "failrow", "JPEG 2000 codestream", memory=True),
    # 3
    Case("slope_nan", "3", b_slope_nan, "error", "failrow", "RescaleSlope nan"),
    Case("intercept_inf", "3", b_intercept_inf, "error", "failrow", "RescaleIntercept inf"),
    Case("slope_zero", "3", b_slope_zero, "error", "failrow", "RescaleSlope 0.0"),
    Case("iop_dot_0.8", "3", b_iop_dot, "error", "failrow", "orthonormal"),
    Case("iop_not_unit", "3", b_iop_not_unit, "error", "failrow", "orthonormal"),
    Case("nifti_nan", "3", b_nifti_nan, "error", "ignored", "non-finite"),
    Case("nifti_inf", "3", b_nifti_inf, "error", "ignored", "non-finite"),
    Case("nifti_cut_80", "3", b_nifti_cut, "error", "ignored", "truncated"),
    Case("niftigz_cut_80", "3", b_niftigz_cut, "error", "ignored", "truncated"),
    # 4
    Case("deep_sequence_alone", "4", b_deep_alone, "error", "failrow", "RecursionError"),
    Case("deep_sequence_in_series", "4", b_deep_in_series, "warn", "failrow", "RecursionError"),
    Case("damaged_header", "4", b_damaged_header, "warn", "failrow", "damaged.dcm"),
    Case("zip_no_directory", "4", b_zip_no_directory, "error", "failrow", "damaged or truncated zip"),
    Case("zip_encrypted", "4", b_zip_encrypted, "error", "failrow", "encrypted"),
    Case("zip_unsupported_method", "4", b_zip_method, "error", "failrow", "compression method 98"),
    Case("zip_bad_crc", "4", b_zip_bad_crc, "error", "failrow", "CRC"),
    Case("unknown_transfer_syntax", "4", b_unknown_syntax, "error", "failrow", "cannot decode"),
    Case("bits_allocated_7", "4", b_bits_allocated, "error", "failrow", "IM0010"),
    # 6
    Case("zip_8000_members", "6", b_many_members, "ok", "ok"),
    # 11, 12
    Case("description_2mb_qc", "11", b_long_description, "warn", "warn", "cut", score_args=("--qc", "qc"),
         batch_args=("--qc", "qcb")),
    Case("formula_text", "12", b_formula_text, "ok", "ok"),
    Case("duplicate_member_names", "12", b_duplicate_member_names, "ok", "ok"),
    Case("duplicate_sop_uid", "12", b_duplicate_sop, "error", "failrow", "SOP Instance UID"),
    # 5, 7
    Case("lock_symlink", "5", b_lock_symlink, "ok", "error", "symbolic link"),
    Case("qc_symlink", "5", b_qc_links, "ok", "ok", score_args=("--qc", "qc"), batch_args=("--qc", "qcb")),
    Case("store_not_sqlite", "7", b_store_garbage, "ok", "error", "store"),
    Case("store_is_directory", "7", b_store_directory, "ok", "error", "store"),
    Case("option_nan", "7", b_good_copy, "error", "error", "smooth", score_args=("--smooth-sigma-mm", "nan"),
         batch_args=("--smooth-sigma-mm", "nan")),
]
