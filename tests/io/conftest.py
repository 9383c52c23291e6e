"""Fixtures that write real DICOM files with pydicom (and GDCM for codecs)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"

#: (slices, rows, columns) of the default test volume; rows != columns to catch swaps.
SHAPE = (6, 7, 5)


def phantom_hu(shape=SHAPE, seed: int = 0) -> np.ndarray:
    """Distinct HU per voxel in [-1000, 1500): each slice differs from all others."""
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1000, 1400, size=shape).astype(np.int32)
    hu[:, 0, 0] = np.arange(shape[0]) * 10 - 900  # slice signature
    return hu


def write_series(
    folder: Path,
    hu: np.ndarray,
    *,
    spacing: Sequence[float] = (2.5, 0.7, 0.8),
    origin: Sequence[float] = (-100.0, -120.0, -50.0),
    iop: Sequence[float] = (1, 0, 0, 0, 1, 0),
    positions: np.ndarray | None = None,
    slope: float | Sequence[float] = 1.0,
    intercept: float | Sequence[float] = -1024.0,
    pixel_representation: int = 0,
    bits_stored: int = 16,
    stored: np.ndarray | None = None,
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_uid: str | None = None,
    patient_id: str = "P1",
    instance_numbers: Sequence[int] | None = None,
    per_slice: Callable[[int, Dataset], None] | None = None,
    prefix: str = "IM",
    **attrs,
) -> list[Path]:
    """Write ``hu`` (slice, row, column) as a CT series, one file per slice.

    Slice ``k`` is at ``origin + k * spacing[0] * normal`` unless ``positions``
    (n, 3) is given; stored values are ``(hu - intercept) / slope`` unless
    ``stored`` is given.  ``attrs`` are set on every slice; ``per_slice(k, ds)``
    may modify each dataset before it is written.

    Kept apart from :func:`lungdamage.phantom.write_dicom_series` (the one writer of
    ordinary CT series) on purpose: the reader's tests need per-slice rescale,
    arbitrary positions and instance numbers, raw stored values and per-slice hooks.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n, rows, cols = hu.shape
    iop = np.asarray(iop, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    if positions is None:
        positions = np.asarray(origin, float) + np.outer(np.arange(n) * spacing[0], normal)
    slopes = np.broadcast_to(np.asarray(slope, float), (n,))
    inters = np.broadcast_to(np.asarray(intercept, float), (n,))
    if stored is None:
        stored = np.rint((hu - inters[:, None, None]) / slopes[:, None, None]).astype(np.int64)
    dtype = np.int16 if pixel_representation else np.uint16
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    paths = []
    for k in range(n):
        fm = FileMetaDataset()
        sop = generate_uid()
        fm.MediaStorageSOPClassUID = CTImageStorage
        fm.MediaStorageSOPInstanceUID = sop
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = fm
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientID = patient_id
        ds.StudyDate = "20200401"
        ds.StudyTime = "101500"
        ds.Modality = "CT"
        ds.Manufacturer = "TestVendor"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesDescription = "test series"
        ds.SeriesNumber = 1
        ds.ConvolutionKernel = "B30f"
        ds.InstanceNumber = int(instance_numbers[k]) if instance_numbers is not None else k + 1
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = pixel_representation
        ds.PixelSpacing = [f"{spacing[1]:g}", f"{spacing[2]:g}"]
        ds.SliceThickness = f"{spacing[0]:g}"
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in positions[k]]
        ds.RescaleSlope = f"{slopes[k]:g}"
        ds.RescaleIntercept = f"{inters[k]:g}"
        for key, value in attrs.items():
            setattr(ds, key, value)
        ds.PixelData = stored[k].astype(dtype).tobytes()
        if per_slice is not None:
            per_slice(k, ds)
        path = folder / f"{prefix}{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def series_writer():
    return write_series


_GDCM_SCRIPT = r"""
import sys, gdcm
src, dst, ts = sys.argv[1:4]
r = gdcm.ImageReader(); r.SetFileName(src)
assert r.Read()
c = gdcm.ImageChangeTransferSyntax()
c.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(ts)))
c.SetInput(r.GetImage())
assert c.Change()
w = gdcm.ImageWriter(); w.SetFile(r.GetFile()); w.SetImage(c.GetOutput()); w.SetFileName(dst)
assert w.Write()
print("ok", flush=True)
"""


def gdcm_transcode(src: Path, dst: Path, transfer_syntax: str) -> None:
    """Re-encode one file with GDCM (a real encoder) in a subprocess.

    A subprocess because python-gdcm may abort at interpreter exit after
    several transcodes; the written file is checked instead of the exit code.
    """
    out = subprocess.run(
        [sys.executable, "-c", _GDCM_SCRIPT, str(src), str(dst), transfer_syntax],
        capture_output=True, text=True, timeout=60,
    )
    if "ok" not in out.stdout or not dst.is_file():
        pytest.skip(f"GDCM could not encode {transfer_syntax}: {out.stderr[-300:]}")
    ts = pydicom.dcmread(dst, stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert ts == transfer_syntax


@pytest.fixture
def phantom():
    return phantom_hu


@pytest.fixture
def transcode():
    return gdcm_transcode


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata is absent")
    return REALDATA
