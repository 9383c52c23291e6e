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
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.sources import source_datasets
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
    pseudonymize=None,
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
    pseudonymize : Pseudonymizer, optional
        Write a de-identified SEG (PS3.15 Basic Application Level
        Confidentiality Profile, modified dates option): the source headers are
        de-identified before the SEG copies them, so it references the
        pseudonymous UIDs and carries the pseudonymous patient id and shifted
        dates (see :mod:`lungdamage.privacy`).

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
    from pydicom.uid import generate_uid

    regions.check_grid(ct.shape, where=ct.meta.key)
    sources = _fit_for_seg(source_datasets(ct, source_files, pseudonymize=pseudonymize))
    _check_sources(ct, sources)
    segments: list[tuple[np.ndarray, Any]] = []
    if include_regions:
        segments += _region_segments(ct, regions, method or regions.method)
    if include_bands:
        segments += _band_segments(ct, regions, scheme, first_number=len(segments) + 1)
    if not segments:
        raise InputError(
            f"Nothing to write in the DICOM SEG of {ct.meta.key}: every region and band is empty. "
            "Potential fix: check the segmentation."
        )
    pixel_array = np.stack([mask for mask, _ in segments], axis=-1).astype(np.uint8)  # (frames, rows, cols, segments)
    descriptions = [description for _, description in segments]
    with warnings.catch_warnings():
        # highdicom copies the patient's name from the source images and warns when an
        # anonymised archive uses a one-component name ("P001"): a property of the input, not an error.
        warnings.filterwarnings(
            "ignore", message=".*unlikely to represent the intended person name", category=UserWarning
        )
        seg = _build_seg(hd, sources, pixel_array, descriptions, series_number, regions, scheme, generate_uid)
    path = _save_derived(seg, path, sources[0], deidentified=pseudonymize is not None)
    log.debug("wrote DICOM SEG %s (%d segments)", path, len(descriptions))
    return path


def _check_sources(ct: CTVolume, sources: Sequence[Any]) -> None:
    """The source images must have the CT's slice size and a frame of reference (which a SEG references)."""
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


def _lab(rgb: tuple[int, int, int]) -> Any:
    import highdicom as hd

    return hd.color.CIELabColor.from_rgb(*rgb)


def _region_segments(ct: CTVolume, regions: RegionMap, method: str) -> list[tuple[np.ndarray, Any]]:
    """(mask, SegmentDescription) of every non-empty region, SNOMED CT coded, numbered from 1."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from .._version import __version__

    family = (
        codes.cid7162.ArtificialIntelligence if method.startswith("lungmask") else codes.cid7162.MorphologicalOperations
    )
    algorithm = hd.AlgorithmIdentificationSequence(name=f"lungdamage {method}", family=family, version=__version__)
    segments: list[tuple[np.ndarray, Any]] = []
    for code, name in sorted(regions.names.items()):
        mask = regions.labels == code
        if not mask.any():
            log.info("SEG of %s: region %s is empty; no segment written", ct.meta.key, name)
            continue
        value, meaning = REGION_CODES_SCT.get(name, REGION_CODES_SCT["lung"])
        side = "right" if name.startswith("R") or name == "right" else "left"
        anatomic = None
        if name.endswith("Z") and len(name) == 3:
            side_value, side_meaning = REGION_CODES_SCT[side]
            anatomic = [hd.sr.CodedConcept(value=side_value, scheme_designator="SCT", meaning=side_meaning)]
        description = hd.seg.SegmentDescription(
            segment_number=len(segments) + 1,
            segment_label=_region_label(name),
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=hd.sr.CodedConcept(value, "SCT", meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=anatomic,
            display_color=_lab(region_color(name)),
        )
        segments.append((mask, description))
    return segments


def _band_segments(
    ct: CTVolume, regions: RegionMap, scheme: Scheme, first_number: int = 1
) -> list[tuple[np.ndarray, Any]]:
    """(mask, SegmentDescription) of every non-empty HU band inside the lungs (private coding scheme)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from .._version import __version__

    algorithm = hd.AlgorithmIdentificationSequence(
        name="lungdamage HU bands", family=codes.cid7162.HistogramAnalysis, version=__version__,
        parameters={"scheme": scheme.name},
    )
    bands = band_map(ct, regions, scheme)
    colors = band_colors(scheme)
    edges = {b.name: str(b) for b in scheme.bands}
    segments: list[tuple[np.ndarray, Any]] = []
    for band_code, name in enumerate(scheme.band_names, start=1):
        mask = bands == band_code
        if not mask.any():
            continue
        text = edges.get(name, f"{name} (HU in no band)")
        meaning = f"Lung voxels, HU band {text}"[:64]
        description = hd.seg.SegmentDescription(
            segment_number=first_number + len(segments),
            segment_label=f"{name} HU band"[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=hd.sr.CodedConcept(name[:16], BAND_SCHEME_DESIGNATOR, meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[codes.SCT.Lung],
            display_color=_lab(colors[name]),
        )
        segments.append((mask, description))
    return segments


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


def _save_derived(ds, path: str | os.PathLike, source, *, deidentified: bool) -> Path:
    """Write a derived object (SEG, SR) to ``path``, marked de-identified when it copied pseudonymous headers."""
    if deidentified:
        _mark_deidentified(ds, source)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


def _mark_deidentified(seg, source) -> None:
    """Profile attributes of a de-identified SEG; its own dates are the (shifted) study date, not today."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from ..privacy import DEID_CODES, DEID_METHOD

    study_date = str(source.get("StudyDate", "") or "")
    for kw in ("SeriesDate", "ContentDate", "InstanceCreationDate", "AcquisitionDate"):
        if kw in seg:
            setattr(seg, kw, study_date)
    seg.PatientIdentityRemoved = "YES"
    seg.DeidentificationMethod = list(DEID_METHOD)
    seq = Sequence()
    for value, meaning in DEID_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        seq.append(item)
    seg.DeidentificationMethodCodeSequence = seq
    seg.LongitudinalTemporalInformationModified = "MODIFIED"
