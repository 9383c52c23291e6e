"""The phantom's DICOM writer: a CT volume as a single-frame CT Image Storage series.

It is also the test suite's one writer of ordinary CT series (tests that need
deliberately broken DICOM write their own).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ..errors import InputError
from ..volume import CTVolume

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _SeriesIds:
    """Identifiers and descriptive values of the series to write."""

    patient_id: str
    study_date: str  # YYYYMMDD
    series_description: str
    kernel: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str


def _fmt(value: float) -> str:
    """A decimal string (DS) without trailing zeros; never ``-0``."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _series_ids(ct: CTVolume, *, patient_id, study_date, study_uid, series_uid, frame_of_reference_uid,
                series_description, series_number, kernel) -> _SeriesIds:
    """Given values, else ``ct.meta``'s, else defaults; UIDs derived deterministically."""
    meta = ct.meta
    pid = patient_id or meta.patient_id or "PHANTOM"
    date = (study_date or meta.study_date or "20200101").replace("-", "")
    if len(date) != 8 or not date.isdigit():
        raise InputError(
            f"write_dicom_series: study_date {study_date!r} is not YYYYMMDD or YYYY-MM-DD. "
            "Potential fix: pass e.g. '2020-04-01'."
        )
    desc = series_description or meta.series_description or "lungdamage phantom"
    study_uid = study_uid or meta.study_uid or generate_uid(entropy_srcs=["study", pid, date])
    series_uid = series_uid or meta.series_uid or generate_uid(
        entropy_srcs=["series", pid, date, str(series_number), desc, ct.content_hash()]
    )
    for_uid = frame_of_reference_uid or meta.frame_of_reference_uid or generate_uid(
        entropy_srcs=["frame", study_uid, series_uid]
    )
    return _SeriesIds(pid, date, desc, kernel or meta.kernel or "STANDARD", study_uid, series_uid, for_uid)


def _orthonormal_direction(ct: CTVolume) -> np.ndarray:
    direction = np.asarray(ct.direction, float)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError(
            f"write_dicom_series: direction of {ct.meta.key} is not orthonormal: {direction.tolist()}. "
            "Potential fix: resample the volume onto an orthogonal grid first."
        )
    return direction


def _stored_pixels(ct: CTVolume) -> tuple[np.ndarray, int, int]:
    """Stored values (HU + 1024), PixelRepresentation and BitsStored."""
    stored = ct.hu.astype(np.int32) + 1024
    stored_min, stored_max = int(stored.min()), int(stored.max())
    if stored_min >= 0 and stored_max <= 4095:
        return stored.astype(np.uint16), 0, 12
    if -32768 <= stored_min and stored_max <= 32767:
        return stored.astype(np.int16), 1, 16
    raise InputError(
        f"write_dicom_series: HU range [{stored_min - 1024}, {stored_max - 1024}] of {ct.meta.key} does not fit "
        "16 bits with intercept -1024. Potential fix: clip the volume to [-1024, 31743]."
    )


def _patient_study_series(ds: Dataset, ids: _SeriesIds, *, study_time: str, accession_number: str,
                          manufacturer: str, patient_name: str | None, patient_birth_date: str,
                          patient_sex: str) -> None:
    """Patient, study, series and equipment elements of the template (in writing order)."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2"  # set per slice
    ds.StudyDate = ids.study_date
    ds.SeriesDate = ids.study_date
    ds.ContentDate = ids.study_date
    ds.StudyTime = study_time
    ds.SeriesTime = study_time
    ds.ContentTime = study_time
    ds.AccessionNumber = accession_number
    ds.Modality = "CT"
    ds.Manufacturer = manufacturer
    ds.InstitutionName = "synthetic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CHEST CT (synthetic)"
    ds.SeriesDescription = ids.series_description
    ds.ManufacturerModelName = "lungdamage.phantom"
    ds.PatientName = patient_name or ids.patient_id
    ds.PatientID = ids.patient_id
    ds.PatientBirthDate = patient_birth_date.replace("-", "")
    ds.PatientSex = patient_sex
    ds.BodyPartExamined = "CHEST"


def _image_plane_pixels(ds: Dataset, ct: CTVolume, ids: _SeriesIds, direction: np.ndarray, *, bits_stored: int,
                        pixel_representation: int, series_number: int, window_center: float,
                        window_width: float) -> None:
    """Acquisition, geometry and pixel-description elements of the template (in writing order)."""
    slice_mm, row_mm, column_mm = ct.spacing_mm
    ds.SliceThickness = _fmt(ct.meta.slice_thickness_mm or slice_mm)
    ds.SpacingBetweenSlices = _fmt(slice_mm)
    ds.KVP = "120"
    ds.ConvolutionKernel = ids.kernel
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = ids.study_uid
    ds.SeriesInstanceUID = ids.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = int(series_number)
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [0, 0, 0]
    # row direction = increasing column index (direction column 2), then the column direction
    ds.ImageOrientationPatient = [_fmt(v) for v in (*direction[:, 2], *direction[:, 1])]
    ds.FrameOfReferenceUID = ids.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ct.shape[1]
    ds.Columns = ct.shape[2]
    ds.PixelSpacing = [_fmt(row_mm), _fmt(column_mm)]
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = pixel_representation
    ds.WindowCenter = _fmt(window_center)
    ds.WindowWidth = _fmt(window_width)
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.PixelData = b""


def _write_slices(ds: Dataset, ct: CTVolume, pixels: np.ndarray, direction: np.ndarray, folder: Path,
                  filename_pattern: str) -> list[Path]:
    """Write one file per slice from the template ``ds``; only the per-slice elements change."""
    origin_mm = np.asarray(ct.origin_lps, float)
    slice_dir = direction[:, 0]
    slice_mm = ct.spacing_mm[0]
    paths = []
    for k in range(ct.shape[0]):
        sop_uid = generate_uid(entropy_srcs=["sop", ds.SeriesInstanceUID, str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        position_mm = origin_mm + slice_dir * (k * slice_mm)
        ds.ImagePositionPatient = [_fmt(v) for v in position_mm]
        ds.SliceLocation = _fmt(float(position_mm @ slice_dir))
        ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
        path = folder / filename_pattern.format(k + 1)
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def write_dicom_series(
    ct: CTVolume,
    folder: str | Path,
    *,
    patient_id: str | None = None,
    patient_name: str | None = None,
    study_date: str | None = None,
    study_time: str = "090000",
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_description: str | None = None,
    series_number: int = 1,
    kernel: str | None = None,
    manufacturer: str = "lungdamage-phantom",
    window_center: float = -600.0,
    window_width: float = 1500.0,
    accession_number: str = "",
    filename_pattern: str = "IM{:04d}.dcm",
    patient_birth_date: str = "",
    patient_sex: str = "O",
) -> list[Path]:
    """Write a CT volume as a single-frame CT Image Storage series.

    One file per slice (``IM0001.dcm`` ...), Explicit VR Little Endian,
    uncompressed; stored value = HU + 1024 (RescaleIntercept -1024, slope 1),
    unsigned 12-bit when HU fit [-1024, 3071], else signed 16-bit.  UIDs not
    given are derived deterministically (``pydicom.uid.generate_uid`` with
    entropy from the patient, study date, series number/description and the
    volume's content hash), so writing the same volume twice gives identical
    files.

    Parameters
    ----------
    ct : CTVolume
        Volume to write; its direction must be orthonormal (any orientation).
    folder : path
        Created if needed.  Existing files with the same names are replaced.
    patient_id, study_date, series_description, kernel : str, optional
        Default to ``ct.meta`` fields (or ``'PHANTOM'``, ``'20200101'``, ...).
        ``study_date`` accepts ``YYYYMMDD`` or ``YYYY-MM-DD``.
    patient_name, accession_number, patient_birth_date, patient_sex : str, optional
        Identifying header values (e.g. to test de-identification); by
        default the name is the patient id, birth date and accession number
        are empty and the sex is ``O``.

    Returns
    -------
    list of Path
        Written files in slice order (slice 0 first).
    """
    ids = _series_ids(ct, patient_id=patient_id, study_date=study_date, study_uid=study_uid,
                      series_uid=series_uid, frame_of_reference_uid=frame_of_reference_uid,
                      series_description=series_description, series_number=series_number, kernel=kernel)
    direction = _orthonormal_direction(ct)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pixels, pixel_representation, bits_stored = _stored_pixels(ct)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    _patient_study_series(ds, ids, study_time=study_time, accession_number=accession_number,
                          manufacturer=manufacturer, patient_name=patient_name,
                          patient_birth_date=patient_birth_date, patient_sex=patient_sex)
    _image_plane_pixels(ds, ct, ids, direction, bits_stored=bits_stored,
                        pixel_representation=pixel_representation, series_number=series_number,
                        window_center=window_center, window_width=window_width)
    paths = _write_slices(ds, ct, pixels, direction, folder, filename_pattern)
    logger.debug("wrote %d slices of series %s to %s", len(paths), ids.series_uid, folder)
    return paths
