"""The source DICOM files of a CT read by :func:`lungdamage.io.dicom.read_series`.

Review outputs that reference the source images (DICOM SEG and SR) and
imports that are placed on them (a DICOM SEG of this series) open the files
through here.  A source is a file path or an ``archive.zip::member`` string
(series read from zip archives).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..volume import CTVolume
from ._dicom_headers import open_source

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = ["open_source", "read_source_header", "source_datasets"]


def read_source_header(source: str | os.PathLike, *, tags: Sequence[str] | None = None) -> Dataset:
    """The header (no pixel data) of one source file or zip member.

    Parameters
    ----------
    source : path or str
        A file path, or ``archive.zip::member``.
    tags : sequence of str, optional
        Read only these keywords (faster); default: every element.

    Raises
    ------
    pydicom.errors.InvalidDicomError, OSError
        Not a readable DICOM file.
    """
    import pydicom

    from ._dicom_headers import open_member, split_zip_source

    specific = list(tags) if tags is not None else None
    if split_zip_source(str(source)) is not None:
        # streamed: a member of any size costs no memory (the header ends before the pixels)
        with open_member(str(source)) as stream:
            return pydicom.dcmread(stream, stop_before_pixels=True, specific_tags=specific)
    return pydicom.dcmread(source, stop_before_pixels=True, specific_tags=specific)


@dataclass(frozen=True)
class _SourceImage:
    source: str
    position_lps_mm: np.ndarray  # ImagePositionPatient
    sop_instance_uid: str


def source_datasets(
    ct: CTVolume,
    source_files: Sequence[str | os.PathLike] | None = None,
    *,
    tolerance_mm: float | None = None,
    pseudonymize: Any = None,
) -> list[Dataset]:
    """Source CT datasets (headers, no pixels) in the CT's slice order.

    Parameters
    ----------
    ct : CTVolume
        Read from DICOM (``ct.meta.series_uid`` set).
    source_files : sequence of paths, optional
        The series' files; default: the files ``read_series`` recorded, else
        every file under ``ct.meta.source``.
    tolerance_mm : float, optional
        Largest distance between a CT slice and its source image along the
        slice normal (default: 10 % of the slice spacing).
    pseudonymize : Pseudonymizer, optional
        ``ct.meta`` is pseudonymous: source files match when the keyed hash of
        their series UID is ``ct.meta.series_uid``, and the returned datasets
        are de-identified (:func:`lungdamage.privacy.deidentify_dataset`).

    Returns
    -------
    list of pydicom.Dataset
        ``result[k]`` is the source image of CT slice ``k``.

    Raises
    ------
    InputError
        No series UID, no matching files, multi-frame sources, or a CT slice
        with no source image at its position (the volume was resampled).
    """
    uid = ct.meta.series_uid
    if not uid:
        raise InputError(
            f"Cannot write a DICOM SEG for {ct.meta.key}: the CT was not read from DICOM (no series UID). "
            "Potential fix: use the NIfTI / .seg.nrrd masks."
        )
    candidates = _candidate_files(ct, source_files)
    images = _series_images(candidates, uid, pseudonymize)
    if not images:
        raise InputError(
            f"No DICOM image of series {uid} found among {len(candidates)} file(s) under {ct.meta.source!r}. "
            "Potential fix: pass source_files= (the series' DICOM files)."
        )
    by_slice = _match_slices(ct, images, tolerance_mm)
    datasets = [read_source_header(by_slice[k]) for k in range(ct.shape[0])]
    if pseudonymize is not None:
        from ..privacy import deidentify_dataset

        for ds in datasets:
            deidentify_dataset(ds, pseudonymize)
    return datasets


def _iter_files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, _dirs, files in os.walk(root):
        for name in sorted(files):
            yield Path(dirpath) / name


def _candidate_files(ct: CTVolume, source_files: Sequence[str | os.PathLike] | None) -> list[str]:
    """The files to look in: given, recorded by ``read_series`` (in slice order), or under ``ct.meta.source``."""
    if source_files is None and ct.meta.extra.get("files"):
        source_files = ct.meta.extra["files"]
    if source_files is not None:
        return [str(f) for f in source_files]
    src = ct.meta.source
    if not src or "::" in src or not Path(src).exists():
        raise InputError(
            f"Cannot find the source files of series {ct.meta.series_uid} (meta.source={src!r}). "
            "Potential fix: pass source_files= (the series' DICOM files)."
        )
    return [str(f) for f in _iter_files(Path(src))]


def _series_images(candidates: Sequence[str], uid: str, pseudonymize: Any) -> list[_SourceImage]:
    """The single-frame images of series ``uid`` among ``candidates`` (unreadable files are skipped)."""
    from pydicom.errors import InvalidDicomError

    tags = ["SeriesInstanceUID", "ImagePositionPatient", "NumberOfFrames", "SOPInstanceUID"]
    images = []
    for source in candidates:
        try:
            header = read_source_header(source, tags=tags)
        except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError):
            continue
        file_uid = str(header.get("SeriesInstanceUID", ""))
        if pseudonymize is not None and file_uid != uid:  # equal: the files are a de-identified copy already
            file_uid = pseudonymize.uid(file_uid)
        if file_uid != uid or "ImagePositionPatient" not in header:
            continue
        if int(header.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError(
                f"Series {uid} is stored as multi-frame images ({source}); writing a DICOM SEG for "
                "multi-frame sources is not supported. Potential fix: use the NIfTI / .seg.nrrd masks."
            )
        images.append(_SourceImage(source, np.asarray(header.ImagePositionPatient, float), str(header.SOPInstanceUID)))
    return images


def _match_slices(ct: CTVolume, images: Sequence[_SourceImage], tolerance_mm: float | None) -> dict[int, str]:
    """CT slice index -> the source image at its position (the first of duplicates).

    Slice ``k`` of the CT lies at ``origin + k * spacing * normal``; a source
    image matches when it sits there within ``tolerance_mm`` along the normal
    and 0.05 mm (or the tolerance) in plane.
    """
    normal = ct.direction[:, 0]
    slice_spacing_mm = ct.spacing_mm[0]
    tol_mm = 0.1 * slice_spacing_mm if tolerance_mm is None else tolerance_mm
    offset_mm = np.array([im.position_lps_mm for im in images]) - np.asarray(ct.origin_lps)
    along_slices = offset_mm @ normal / slice_spacing_mm
    slice_index = np.rint(along_slices).astype(np.int64)
    inplane_mm = offset_mm - np.outer(along_slices * slice_spacing_mm, normal)
    matches = (
        (np.abs(along_slices - slice_index) * slice_spacing_mm <= tol_mm)
        & (np.linalg.norm(inplane_mm, axis=1) <= max(tol_mm, 0.05))
        & (slice_index >= 0)
        & (slice_index < ct.shape[0])
    )
    by_slice: dict[int, str] = {}
    for idx in np.flatnonzero(matches):
        # duplicates at one position: keep the first
        by_slice.setdefault(int(slice_index[idx]), images[int(idx)].source)
    missing = [k for k in range(ct.shape[0]) if k not in by_slice]
    if missing:
        raise InputError(
            f"Series {ct.meta.series_uid}: {len(missing)} of {ct.shape[0]} CT slices have no source image at their "
            f"position (e.g. slice {missing[0]}); the volume was probably resampled (gaps, irregular spacing or "
            "gantry tilt), so DICOM SEG frames cannot reference source images. "
            "Potential fix: use the NIfTI / .seg.nrrd masks, which are on the CT grid."
        )
    return by_slice
