"""DICOM Segmentation (SEG) of regions and HU bands, referencing the source CT series.

One BINARY segment per region of the region map (lungs, lobes or zones, with
SNOMED CT codes) and one per non-empty HU band of the scheme (inside the
lungs).  Bands are not findings: they use a private coding scheme
(``99LUNGDMG``) whose code meaning states the HU range, so no viewer mistakes
"HU in [-700, -300)" for a diagnosis of ground-glass opacity.

The SEG frames reference the source CT images: the CT's slice ``k`` (sorted
along the slice normal) is matched to the source image at that position, so
the SEG is only written when every CT slice is an unmodified source image
(not for volumes resampled across gaps, irregular spacing or gantry tilt, and
not for NIfTI inputs).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io._dicom_headers import open_source
from ..regions import RegionMap
from ..score.schemes import Scheme
from ..volume import CTVolume
from ._colors import band_colors, region_color
from .masks import band_map

__all__ = ["write_seg", "source_datasets", "REGION_CODES_SCT", "BAND_SCHEME_DESIGNATOR"]

log = logging.getLogger(__name__)

#: Private coding scheme of HU-band segments.
BAND_SCHEME_DESIGNATOR = "99LUNGDMG"

#: SNOMED CT (value, meaning) of each canonical region.
REGION_CODES_SCT: dict[str, tuple[str, str]] = {
    "right": ("3341006", "Right lung"),
    "left": ("44029006", "Left lung"),
    "lung": ("39607008", "Lung"),
    "RUL": ("42400003", "Upper lobe of right lung"),
    "RML": ("72481006", "Middle lobe of right lung"),
    "RLL": ("266005", "Lower lobe of right lung"),
    "LUL": ("44714003", "Upper lobe of left lung"),
    "LLL": ("41224006", "Lower lobe of left lung"),
    "RUZ": ("281392002", "Upper zone of lung"),
    "RMZ": ("281393007", "Middle zone of lung"),
    "RLZ": ("281394001", "Lower zone of lung"),
    "LUZ": ("281392002", "Upper zone of lung"),
    "LMZ": ("281393007", "Middle zone of lung"),
    "LLZ": ("281394001", "Lower zone of lung"),
}

_ZONE_WORDS = {"U": "upper", "M": "middle", "L": "lower"}


def _region_label(name: str) -> str:
    if len(name) == 3 and name.endswith("Z"):
        side = "right" if name[0] == "R" else "left"
        return f"{name} ({side} lung, {_ZONE_WORDS[name[1]]} third)"
    return name


def _iter_files(root: Path):
    if root.is_file():
        yield root
        return
    for dirpath, _dirs, files in os.walk(root):
        for f in sorted(files):
            yield Path(dirpath) / f


def source_datasets(
    ct: CTVolume,
    source_files: Sequence[str | os.PathLike] | None = None,
    *,
    tolerance_mm: float | None = None,
) -> list:
    """Source CT datasets (headers, no pixels) in the CT's slice order.

    Parameters
    ----------
    ct : CTVolume
        Read from DICOM (``ct.meta.series_uid`` set).
    source_files : sequence of paths, optional
        The series' files; default: every file under ``ct.meta.source``.
    tolerance_mm : float, optional
        Largest distance between a CT slice and its source image along the
        slice normal (default: 10 % of the slice spacing).

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
    import pydicom
    from pydicom.errors import InvalidDicomError

    uid = ct.meta.series_uid
    if not uid:
        raise InputError(
            f"Cannot write a DICOM SEG for {ct.meta.key}: the CT was not read from DICOM (no series UID). "
            "Potential fix: use the NIfTI / .seg.nrrd masks."
        )
    if source_files is None and ct.meta.extra.get("files"):
        source_files = ct.meta.extra["files"]  # recorded by read_series, in slice order
    if source_files is None:
        src = ct.meta.source
        if not src or "::" in src or not Path(src).exists():
            raise InputError(
                f"Cannot find the source files of series {uid} (meta.source={src!r}). "
                "Potential fix: pass source_files= (the series' DICOM files)."
            )
        candidates = list(_iter_files(Path(src)))
    else:
        candidates = [str(f) for f in source_files]
    tags = ["SeriesInstanceUID", "ImagePositionPatient", "NumberOfFrames", "SOPInstanceUID"]
    found: list[tuple[Path, np.ndarray, str]] = []
    for f in candidates:
        try:
            h = pydicom.dcmread(open_source(f), stop_before_pixels=True, specific_tags=tags)
        except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError):
            continue
        if str(h.get("SeriesInstanceUID", "")) != uid or "ImagePositionPatient" not in h:
            continue
        if int(h.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError(
                f"Series {uid} is stored as multi-frame images ({f}); writing a DICOM SEG for "
                "multi-frame sources is not supported. Potential fix: use the NIfTI / .seg.nrrd masks."
            )
        found.append((f, np.asarray(h.ImagePositionPatient, float), str(h.SOPInstanceUID)))
    if not found:
        raise InputError(
            f"No DICOM image of series {uid} found among {len(candidates)} file(s) under {ct.meta.source!r}. "
            "Potential fix: pass source_files= (the series' DICOM files)."
        )
    normal = ct.direction[:, 0]
    sp = ct.spacing_mm[0]
    tol = 0.1 * sp if tolerance_mm is None else tolerance_mm
    origin = np.asarray(ct.origin_lps)
    # slice k of the CT lies at origin + k * sp * normal; source images must sit there exactly
    pos = np.array([p for _, p, _ in found])
    along = (pos - origin) @ normal / sp
    k = np.rint(along).astype(np.int64)
    inplane = (pos - origin) - np.outer(along * sp, normal)
    ok = (np.abs(along - k) * sp <= tol) & (np.linalg.norm(inplane, axis=1) <= max(tol, 0.05)) & (k >= 0) & (k < ct.shape[0])
    chosen: dict[int, Path] = {}
    for idx in np.flatnonzero(ok):
        chosen.setdefault(int(k[idx]), found[idx][0])  # duplicates at one position: keep the first
    missing = [s for s in range(ct.shape[0]) if s not in chosen]
    if missing:
        raise InputError(
            f"Series {uid}: {len(missing)} of {ct.shape[0]} CT slices have no source image at their position "
            f"(e.g. slice {missing[0]}); the volume was probably resampled (gaps, irregular spacing or gantry "
            "tilt), so DICOM SEG frames cannot reference source images. "
            "Potential fix: use the NIfTI / .seg.nrrd masks, which are on the CT grid."
        )
    return [pydicom.dcmread(open_source(chosen[s]), stop_before_pixels=True) for s in range(ct.shape[0])]


def write_seg(
    ct: CTVolume,
    regions: RegionMap,
    scheme: Scheme,
    path: str | Path,
    *,
    source_files: Sequence[str | os.PathLike] | None = None,
    include_regions: bool = True,
    include_bands: bool = True,
    series_number: int = 990,
    method: str | None = None,
) -> Path:
    """Write a DICOM SEG with one segment per region and per non-empty HU band.

    Parameters
    ----------
    ct, regions, scheme :
        The CT (read from DICOM), its region map and the scoring scheme.
    path : path
        Output ``.dcm`` file.
    source_files : sequence of paths, optional
        Files of the source series (default: found under ``ct.meta.source``).
    include_regions, include_bands : bool
        Which segments to write.
    series_number : int
        SeriesNumber of the new SEG series.
    method : str, optional
        Segmentation method recorded as the algorithm (default ``regions.method``).

    Returns
    -------
    Path

    Raises
    ------
    InputError
        The source images cannot be matched to the CT slices (see
        :func:`source_datasets`).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from .._version import __version__

    regions.check_grid(ct.shape, where=ct.meta.key)
    sources = _fit_for_seg(source_datasets(ct, source_files))
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    if (rows, cols) != ct.shape[1:]:
        raise InputError(
            f"Series {ct.meta.series_uid}: source images are {rows}x{cols} but the CT slices are "
            f"{ct.shape[1]}x{ct.shape[2]}. Potential fix: use the NIfTI / .seg.nrrd masks."
        )
    if any(not ds.get("FrameOfReferenceUID") for ds in sources):
        raise InputError(
            f"Series {ct.meta.series_uid}: the source images have no FrameOfReferenceUID, which a DICOM SEG "
            "must reference. Potential fix: use the NIfTI / .seg.nrrd masks, which are on the CT grid."
        )
    method = method or regions.method
    family = codes.cid7162.ArtificialIntelligence if method.startswith("lungmask") else codes.cid7162.MorphologicalOperations
    region_algo = hd.AlgorithmIdentificationSequence(
        name=f"lungdamage {method}", family=family, version=__version__
    )
    band_algo = hd.AlgorithmIdentificationSequence(
        name="lungdamage HU bands", family=codes.cid7162.HistogramAnalysis, version=__version__,
        parameters={"scheme": scheme.name},
    )
    masks: list[np.ndarray] = []
    descriptions = []

    def lab(rgb):
        return hd.color.CIELabColor.from_rgb(*rgb)

    if include_regions:
        for code, name in sorted(regions.names.items()):
            m = regions.labels == code
            if not m.any():
                log.info("SEG of %s: region %s is empty; no segment written", ct.meta.key, name)
                continue
            value, meaning = REGION_CODES_SCT.get(name, REGION_CODES_SCT["lung"])
            side = "right" if name.startswith("R") or name == "right" else "left"
            anatomic = None
            if name.endswith("Z") and len(name) == 3:
                side_value, side_meaning = REGION_CODES_SCT[side]
                anatomic = [hd.sr.CodedConcept(value=side_value, scheme_designator="SCT", meaning=side_meaning)]
            masks.append(m)
            descriptions.append(
                hd.seg.SegmentDescription(
                    segment_number=len(descriptions) + 1,
                    segment_label=_region_label(name),
                    segmented_property_category=codes.SCT.AnatomicalStructure,
                    segmented_property_type=hd.sr.CodedConcept(value, "SCT", meaning),
                    algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                    algorithm_identification=region_algo,
                    anatomic_regions=anatomic,
                    display_color=lab(region_color(name)),
                )
            )
    if include_bands:
        bands = band_map(ct, regions, scheme)
        colors = band_colors(scheme)
        edges = {b.name: str(b) for b in scheme.bands}
        for k, name in enumerate(scheme.band_names, start=1):
            m = bands == k
            if not m.any():
                continue
            text = edges.get(name, f"{name} (HU in no band)")
            meaning = f"Lung voxels, HU band {text}"[:64]
            masks.append(m)
            descriptions.append(
                hd.seg.SegmentDescription(
                    segment_number=len(descriptions) + 1,
                    segment_label=f"{name} HU band"[:64],
                    segmented_property_category=codes.SCT.Tissue,
                    segmented_property_type=hd.sr.CodedConcept(name[:16], BAND_SCHEME_DESIGNATOR, meaning),
                    algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                    algorithm_identification=band_algo,
                    anatomic_regions=[codes.SCT.Lung],
                    display_color=lab(colors[name]),
                )
            )
    if not masks:
        raise InputError(
            f"Nothing to write in the DICOM SEG of {ct.meta.key}: every region and band is empty. "
            "Potential fix: check the segmentation."
        )
    pixel_array = np.stack(masks, axis=-1).astype(np.uint8)  # (frames, rows, cols, segments)
    with warnings.catch_warnings():
        # highdicom copies the patient's name from the source images and warns when an
        # anonymised archive uses a one-component name ("P001"): a property of the input, not an error.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name", category=UserWarning)
        seg = _build_seg(hd, sources, pixel_array, descriptions, series_number, regions, scheme, generate_uid)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    log.debug("wrote DICOM SEG %s (%d segments)", path, len(descriptions))
    return path


#: Type 2 attributes highdicom copies from the source images into the SEG (must be present, may be empty).
_TYPE2_COPIED = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
    "ReferringPhysicianName", "StudyDate", "StudyTime",
)


def _fit_for_seg(sources: list) -> list:
    """The source headers with what highdicom needs from them made valid.

    Anonymised archives drop Type 2 patient/study attributes (e.g. no
    PatientID); they are added empty, as the standard allows.  An unknown
    SpecificCharacterSet (pydicom already decoded the text with its default)
    is replaced by UTF-8 (``ISO_IR 192``) so the SEG is written in a
    character set every reader knows.  Only these in-memory copies change.
    """
    import pydicom.charset

    for ds in sources:
        for keyword in _TYPE2_COPIED:
            if keyword not in ds:
                setattr(ds, keyword, "")
        charset = ds.get("SpecificCharacterSet")
        if charset:
            values = [charset] if isinstance(charset, str) else list(charset)
            known = all(not v or v.strip() in pydicom.charset.python_encoding for v in values)
            if not known:
                log.info("SEG: unknown SpecificCharacterSet %r in the source; the SEG is written as UTF-8", charset)
                ds.SpecificCharacterSet = "ISO_IR 192"
    return sources


def _build_seg(hd, sources, pixel_array, descriptions, series_number, regions, scheme, generate_uid):
    from .._version import __version__

    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="lungdamage",
        manufacturer_model_name="lungdamage",
        software_versions=__version__,
        device_serial_number="0",
        content_description=f"Lung regions ({regions.region_set}) and HU bands ({scheme.name})"[:64],
        content_label="LUNGDAMAGE",
        series_description=f"lungdamage {regions.region_set} + {scheme.name} bands"[:64],
    )
