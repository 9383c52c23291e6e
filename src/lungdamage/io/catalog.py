"""Catalog DICOM archives (headers only) and choose the series to score per study.

:func:`scan` walks a folder tree recursively, including ``.zip`` archives
(members are named ``"archive.zip::member/path"``, a form
:func:`lungdamage.io.dicom.read_series` understands) and folders with a
DICOMDIR (the directory file itself is recognised and skipped; the image files
it references are found by the walk).  Only headers are parsed; non-DICOM files
are skipped and counted.

:func:`select_series` applies a documented :class:`SelectionPolicy` to every
study and returns one :class:`Selection` per series: chosen or rejected, each
with its reason.

Default policy, in order (each step is a field of :class:`SelectionPolicy`):

1. modality CT only (``modalities``);
2. no localizer/scout, dose report, secondary capture or other non-CT-image SOP
   class; ORIGINAL/PRIMARY only unless ``allow_derived`` (derived MPR,
   reformats);
3. axial acquisitions only (slice normal within 30° of the patient's
   head-foot axis) unless ``require_axial=False``;
4. z-extent ≥ ``min_extent_mm`` (150 mm: enough to cover both lungs) and
   regular spacing without gaps;
5. among the remaining candidates of a study: slices no thicker than
   ``max_preferred_thickness_mm`` first, then the preferred kernel family
   (``prefer_kernel="soft"``: standard/soft-tissue kernels over sharp lung
   kernels, or ``"lung"``), then thinner slices, then more slices.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import InputError
from ._dicom_headers import UNCOMPRESSED_LE, DicomHeader, iter_sources, read_headers

__all__ = [
    "SeriesInfo",
    "ScanSummary",
    "scan",
    "scan_frame",
    "catalog_frame",
    "SelectionPolicy",
    "Selection",
    "select_series",
    "selection_frame",
    "kernel_family",
]

logger = logging.getLogger(__name__)

#: SOP classes that are images but never a scorable CT volume.
_NON_CT_IMAGE_SOP = {
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.1": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.2": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.4": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.88.67": "X-ray radiation dose report",
    "1.2.840.10008.5.1.4.1.1.88.22": "structured report",
    "1.2.840.10008.5.1.4.1.1.88.33": "structured report",
    "1.2.840.10008.5.1.4.1.1.11.1": "presentation state",
    "1.2.840.10008.5.1.4.1.1.66": "raw data",
    "1.2.840.10008.5.1.4.1.1.104.1": "encapsulated PDF",
}
_CT_SOP = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}


@dataclass(frozen=True)
class SeriesInfo:
    """Header-only facts about one series found on disk.

    ``files`` are paths, or ``"archive.zip::member"`` for zip members; pass the
    SeriesInfo itself to :func:`~lungdamage.io.dicom.read_series`.
    ``spacing_mm`` is the median step between slice positions along the slice
    normal (NaN with fewer than two positions); ``z_extent_mm`` is the distance
    from the first to the last slice position plus one spacing (or slice
    thickness for a single slice).
    """

    patient_id: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    study_date: str
    study_time: str
    modality: str
    sop_class_uid: str
    image_type: tuple[str, ...]
    series_description: str
    series_number: int | None
    n_files: int
    n_slices: int
    rows: int
    columns: int
    slice_thickness_mm: float | None
    spacing_mm: float
    z_extent_mm: float
    pixel_spacing_mm: tuple[float, float] | None
    orientation: str
    regular_spacing: bool
    kernel: str
    manufacturer: str
    contrast: bool | None
    transfer_syntax: str
    files: tuple[str, ...] = field(repr=False)
    issues: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return self.series_uid


@dataclass(frozen=True)
class ScanSummary:
    """Counts of what :func:`scan` looked at."""

    root: str
    n_files: int
    n_dicom: int
    n_non_dicom: int
    n_dicomdir: int
    n_unreadable: int
    n_truncated: int
    n_special: int = 0
    #: ``(source, reason)`` of every input that could not be read (unreadable folders, FIFOs and
    #: devices, damaged or nested zip archives, damaged headers, truncated files).
    problems: tuple[tuple[str, str], ...] = ()


def scan(root: str | os.PathLike, *, summary: dict | None = None, workers: int | None = None) -> list[SeriesInfo]:
    """Catalog every DICOM series under ``root`` from headers only.

    Parameters
    ----------
    root : path
        Folder (walked recursively, ``.zip`` archives expanded), zip archive or file;
        or a ``dicomweb+http(s)://`` URL (see :mod:`lungdamage.io.dicomweb`).
    summary : dict, optional
        Receives the :class:`ScanSummary` fields (counts of files, non-DICOM, ...).
    workers : int, optional
        Processes parsing headers of large archives (default: all cores; 1 = in
        this process).  Small trees are always parsed in this process.

    Returns
    -------
    list of SeriesInfo
        Sorted by patient, study date/time, study UID, series number.

    Raises
    ------
    InputError
        ``root`` does not exist.
    """
    if isinstance(root, str) and root.lower().startswith("dicomweb+") or type(root).__name__ == "DicomwebSource":
        from . import dicomweb  # a PACS: QIDO-RS + WADO-RS metadata, no pixels

        return list(dicomweb.scan(root, summary=summary))  # type: ignore[arg-type]
    root = os.fspath(root)
    if not os.path.exists(root) and "::" not in root:
        raise InputError(f"Catalog root {root!r} does not exist. Potential fix: check the path.")
    counts: dict = {}
    sources = list(iter_sources(root, counts=counts))
    headers = read_headers(sources, counts=counts, workers=workers)
    truncated = [h for h in headers if _is_truncated(h)]
    n_truncated_headers = counts.get("truncated", 0)
    for h in truncated:
        reason = f"truncated DICOM file ({h.size_bytes} bytes, its pixel data needs more); skipped"
        logger.warning("%s: %s", h.source, reason)
        counts.setdefault("problems", []).append((h.source, reason))
    bad = {id(h) for h in truncated}
    groups: dict[tuple[str, str], list[DicomHeader]] = {}
    for h in headers:
        if id(h) in bad:
            continue
        # files without a SeriesInstanceUID are grouped by folder
        key = (h.series_uid, "" if h.series_uid else os.path.dirname(h.source))
        groups.setdefault(key, []).append(h)
    trunc_by_series: dict[str, list[str]] = {}
    for h in truncated:
        trunc_by_series.setdefault(h.series_uid, []).append(h.source)
    out = [_series_info(g, trunc_by_series.get(k[0], [])) for k, g in groups.items()]
    out.sort(key=lambda s: (s.patient_id, s.study_date, s.study_time, s.study_uid, s.series_number or 0, s.series_uid))
    n_other = counts.get("non_dicom", 0)
    logger.info(
        "scanned %s: %d files, %d DICOM, %d non-DICOM skipped, %d truncated, %d series",
        root, len(sources), counts.get("dicom", 0), n_other, len(truncated) + n_truncated_headers, len(out),
    )
    if summary is not None:
        summary.update(
            asdict(
                ScanSummary(
                    root=root,
                    n_files=len(sources),
                    n_dicom=counts.get("dicom", 0),
                    n_non_dicom=n_other,
                    n_dicomdir=counts.get("dicomdir", 0),
                    n_unreadable=counts.get("unreadable", 0),
                    n_truncated=len(truncated) + n_truncated_headers,
                    n_special=counts.get("special", 0),
                    problems=tuple(counts.get("problems", ())),
                )
            )
        )
    return out


def _is_truncated(h: DicomHeader) -> bool:
    """Uncompressed image whose file is too short for its pixel data (cheap size check)."""
    if not h.is_image or h.transfer_syntax not in UNCOMPRESSED_LE or h.size_bytes < 0:
        return False
    need = h.rows * h.columns * h.samples_per_pixel * max(h.bits_allocated, 8) // 8 * h.n_frames
    return h.size_bytes < need


def _orientation_name(normal: np.ndarray) -> str:
    if not np.isfinite(normal).all():
        return "unknown"
    a = np.abs(normal)
    k = int(np.argmax(a))
    if a[k] < np.cos(np.radians(30)):
        return "oblique"
    return ("sagittal", "coronal", "axial")[k]


def _series_info(hs: list[DicomHeader], truncated: list[str]) -> SeriesInfo:
    h0 = hs[0]
    images = [h for h in hs if h.is_image]
    issues: list[str] = []
    if truncated:
        issues.append(f"{len(truncated)} truncated file(s) skipped, e.g. {truncated[0]}")
    # copies of the same instance (same SOP Instance UID, e.g. an export written twice) are
    # dropped by read_series with a warning: count each instance once here too
    unique: dict[str, DicomHeader] = {}
    for h in images:
        # one SOP Instance UID at two different positions is not a copy: both stay, and
        # read_series refuses the series (as `score` does), so batch and score agree
        key = h.sop_instance_uid or h.source
        first = unique.get(key)
        if first is not None and (
            first.positions.shape != h.positions.shape
            or not np.allclose(first.positions, h.positions, equal_nan=True, atol=1e-3)
        ):
            key = f"{key}|{h.source}"
        unique.setdefault(key, h)
    if len(unique) < len(images):
        issues.append(f"{len(images) - len(unique)} duplicate copy(ies) of the same instance, read once")
        images = list(unique.values())
    pos = np.concatenate([h.positions for h in images]) if images else np.empty((0, 3))
    ori = np.concatenate([h.orientations for h in images]) if images else np.empty((0, 6))
    n_slices = int(pos.shape[0])
    spacing = float("nan")
    extent = float("nan")
    regular = False
    orientation = "unknown"
    if n_slices and np.isfinite(ori[0]).all():
        normal = np.cross(ori[0, :3], ori[0, 3:])
        # a damaged (not orthonormal) orientation is refused by read_series: classify by its
        # direction so that the series fails there (a failure row) instead of looking oblique
        norm = float(np.linalg.norm(normal))
        normal = normal / norm if norm > 1e-6 else normal
        orientation = _orientation_name(normal)
        if np.abs(ori - ori[0]).max() > 1e-3:
            issues.append("mixed orientations")
            orientation = "mixed"
        if np.isfinite(pos).all():
            d = np.unique(np.round(pos @ normal, 3))
            if len(d) < n_slices:
                issues.append(f"{n_slices - len(d)} duplicate position(s)")
            if len(d) >= 2:
                steps = np.diff(d)
                spacing = float(np.median(steps))
                regular = bool(np.abs(steps - spacing).max() <= 0.05 and spacing > 0)
                if steps.max() > 1.5 * spacing:
                    issues.append(f"gap of {steps.max():.2f} mm (median spacing {spacing:.2f} mm)")
                extent = float(d[-1] - d[0] + spacing)
            elif len(d) == 1:
                regular = True
                extent = float(h0.slice_thickness_mm or h0.spacing_between_slices_mm or 0.0)
    sizes = {(h.rows, h.columns) for h in images}
    if len(sizes) > 1:
        issues.append(f"mixed matrix sizes {sorted(sizes)}")
    ps = images[0].pixel_spacing[0] if images else np.full(2, np.nan)
    contrast = None
    if h0.contrast_agent is not None:
        contrast = h0.contrast_agent.strip().upper() not in ("", "NONE", "NO", "N")
    files = tuple(h.source for h in sorted(hs, key=lambda h: (h.instance_number or 0, h.source)))
    return SeriesInfo(
        patient_id=h0.patient_id,
        study_uid=h0.study_uid,
        series_uid=h0.series_uid,
        frame_of_reference_uid=h0.frame_of_reference_uid,
        study_date=h0.study_date,
        study_time=h0.study_time,
        modality=h0.modality,
        sop_class_uid=h0.sop_class_uid,
        image_type=h0.image_type,
        series_description=h0.series_description,
        series_number=h0.series_number,
        n_files=len(hs),
        n_slices=n_slices,
        rows=h0.rows,
        columns=h0.columns,
        slice_thickness_mm=h0.slice_thickness_mm,
        spacing_mm=spacing,
        z_extent_mm=extent,
        pixel_spacing_mm=None if not np.isfinite(ps).all() else (float(ps[0]), float(ps[1])),
        orientation=orientation,
        regular_spacing=regular,
        kernel=h0.kernel,
        manufacturer=h0.manufacturer,
        contrast=contrast,
        transfer_syntax=h0.transfer_syntax,
        files=files,
        issues=tuple(issues),
    )


def catalog_frame(series: Iterable[SeriesInfo]):
    """One row per series (pandas DataFrame); ``files`` becomes a file count column only."""
    import pandas as pd

    rows = []
    for s in series:
        d = asdict(s)
        d.pop("files")
        d["image_type"] = "\\".join(s.image_type)
        d["issues"] = "; ".join(s.issues)
        d["kernel_family"] = kernel_family(s.kernel)
        rows.append(d)
    cols = [f for f in SeriesInfo.__dataclass_fields__ if f != "files"] + ["kernel_family"]
    return pd.DataFrame(rows, columns=cols)


def scan_frame(root: str | os.PathLike):
    """``catalog_frame(scan(root))``."""
    return catalog_frame(scan(root))


# --------------------------------------------------------------------------- selection

#: Kernel name fragments (upper case) of sharp / lung / bone reconstructions.
_SHARP_WORDS = ("LUNG", "BONE", "SHARP", "DETAIL", "EDGE", "HIGH", "HR", "YA", "YB", "YC", "YD", "L")
#: Kernel name fragments of standard / soft-tissue reconstructions.
_SOFT_WORDS = ("STANDARD", "STD", "SOFT", "BODY", "ABDOMEN", "MEDIASTIN", "A", "B", "C", "D", "FC0", "FC1")


def kernel_family(kernel: str) -> str:
    """Classify a ConvolutionKernel as ``"soft"``, ``"lung"`` (sharp) or ``"unknown"``.

    Rules (first match wins), on the first value of a multi-valued kernel:

    - Siemens ``B/Br/I/Bl/Bv/Qr`` + number (``B30f``, ``Br40d``, ``I70f``): number
      ≥ 50 is sharp (``lung``), else ``soft``;
    - Toshiba/Canon ``FCnn``: nn ≥ 50 (``FC51``, ``FC86``) sharp, else soft;
    - words: LUNG, BONE, SHARP, DETAIL, EDGE, HR and Philips ``L``/``YA``–``YD`` are
      sharp; STANDARD, SOFT, BODY and Philips ``A``–``D`` are soft.
    """
    import re

    k = (kernel or "").split("\\")[0].strip().upper()
    if not k:
        return "unknown"
    m = re.fullmatch(r"(?:BR|BL|BV|QR|HR|B|I|J|D)(\d{2})[A-Z]?\d?", k.replace(" ", ""))
    if m:
        return "lung" if int(m.group(1)) >= 50 else "soft"
    m = re.fullmatch(r"FC(\d{1,2})", k.replace(" ", ""))
    if m:
        return "lung" if int(m.group(1)) >= 50 else "soft"
    words = re.split(r"[^A-Z0-9]+", k)
    for w in words:
        if w in _SHARP_WORDS or any(w.startswith(s) for s in ("LUNG", "BONE", "SHARP", "DETAIL", "EDGE")):
            return "lung"
    for w in words:
        if w in _SOFT_WORDS or any(w.startswith(s) for s in ("STAND", "SOFT", "BODY")):
            return "soft"
    return "unknown"


@dataclass(frozen=True)
class SelectionPolicy:
    """Which series of a study to score (see the module docstring for the order).

    Attributes
    ----------
    modalities : tuple of str
        Accepted modalities.
    allow_derived : bool
        Accept DERIVED/SECONDARY image types (reformats, MPR).
    allow_localizer : bool
        Accept LOCALIZER/scout images (never useful for scoring; for listing).
    require_axial : bool
        Only series whose slice normal is within 30° of head-foot.
    min_extent_mm : float
        Minimum z-extent of the series (lungs are ~200–300 mm long).
    require_regular : bool
        Reject series with gaps, duplicates or irregular spacing.
    max_preferred_thickness_mm : float
        Series with slices at most this thick are preferred over thicker ones.
    prefer_kernel : {"soft", "lung"}
        Kernel family preferred among candidates of equal thickness class.
    """

    modalities: tuple[str, ...] = ("CT",)
    allow_derived: bool = False
    allow_localizer: bool = False
    require_axial: bool = True
    min_extent_mm: float = 150.0
    require_regular: bool = True
    max_preferred_thickness_mm: float = 3.0
    prefer_kernel: str = "soft"

    def __post_init__(self) -> None:
        if self.prefer_kernel not in ("soft", "lung"):
            raise InputError(
                f"SelectionPolicy.prefer_kernel must be 'soft' or 'lung', got {self.prefer_kernel!r}. "
                "Potential fix: use one of the allowed values."
            )


@dataclass(frozen=True)
class Selection:
    """Outcome for one series: ``selected`` or not, and why."""

    series: SeriesInfo
    selected: bool
    reason: str
    rank: int | None = None

    @property
    def series_uid(self) -> str:
        return self.series.series_uid


def _reject_reason(s: SeriesInfo, p: SelectionPolicy) -> str | None:
    unavailable = [i for i in s.issues if i.startswith("unavailable:")]  # e.g. DICOMweb metadata failed
    if unavailable:
        return unavailable[0]
    if s.modality not in p.modalities:
        return f"modality {s.modality or '<none>'} is not one of {', '.join(p.modalities)}"
    sop_kind = _NON_CT_IMAGE_SOP.get(s.sop_class_uid)
    if sop_kind and not ("SECONDARY" in s.image_type and p.allow_derived and sop_kind == "secondary capture"):
        return f"{sop_kind} (SOP class {s.sop_class_uid}), not a CT image"
    if s.n_slices == 0 or s.rows == 0:
        return "no image data (e.g. dose report or other non-image object)"
    if not p.allow_localizer and ("LOCALIZER" in s.image_type or "SCOUT" in s.series_description.upper()):
        return f"localizer/scout (ImageType {'/'.join(s.image_type)})"
    if not p.allow_derived and s.image_type and (s.image_type[0] != "ORIGINAL" or "SECONDARY" in s.image_type[:2]):
        return f"derived image (ImageType {'/'.join(s.image_type)}); pass allow_derived=True to accept reformats"
    if s.sop_class_uid and s.sop_class_uid not in _CT_SOP:
        return f"SOP class {s.sop_class_uid} is not a CT image storage class"
    if p.require_axial and s.orientation != "axial":
        return f"not axial (orientation {s.orientation})"
    if not np.isfinite(s.z_extent_mm) or s.z_extent_mm < p.min_extent_mm:
        return (
            f"covers {s.z_extent_mm:.1f} mm in z ({s.n_slices} slices), less than the {p.min_extent_mm:g} mm "
            "needed to cover the lungs"
        )
    # a skipped broken file or a second copy of an instance is only noted; mixed matrix sizes within
    # one series are damage, not a choice: the series is read (and fails there, as a failure row)
    blocking = [i for i in s.issues if "truncated" not in i and "same instance" not in i and "matrix sizes" not in i]
    if p.require_regular and (not s.regular_spacing or blocking):
        why = "; ".join(blocking) or "irregular slice spacing"
        return f"irregular series: {why}"
    return None


def _thickness(s: SeriesInfo) -> float:
    t = s.slice_thickness_mm
    if t is None or not np.isfinite(t) or t <= 0:
        t = s.spacing_mm
    return float(t) if np.isfinite(t) else 99.0


def select_series(series: Sequence[SeriesInfo], policy: SelectionPolicy | None = None) -> list[Selection]:
    """Choose at most one series per study and explain every decision.

    Parameters
    ----------
    series : sequence of SeriesInfo
        Typically ``scan(root)``.
    policy : SelectionPolicy, optional
        Defaults to ``SelectionPolicy()``.

    Returns
    -------
    list of Selection
        One per input series, in input order; per study at most one has
        ``selected=True``.  ``reason`` says why it was chosen, rejected, or
        ranked below the chosen one.
    """
    p = policy or SelectionPolicy()
    by_study: dict[str, list[SeriesInfo]] = {}
    for s in series:
        by_study.setdefault(s.study_uid, []).append(s)
    decided: dict[int, Selection] = {}
    want = p.prefer_kernel

    def key(s: SeriesInfo):
        fam = kernel_family(s.kernel)
        fam_rank = 0 if fam == want else (1 if fam == "unknown" else 2)
        t = _thickness(s)
        return (0 if t <= p.max_preferred_thickness_mm + 1e-6 else 1, fam_rank, t, -s.n_slices, s.series_uid)

    for items in by_study.values():
        candidates = []
        for s in items:
            why = _reject_reason(s, p)
            if why:
                decided[id(s)] = Selection(s, False, f"rejected: {why}")
            else:
                candidates.append(s)
        candidates.sort(key=key)
        for rank, s in enumerate(candidates):
            fam = kernel_family(s.kernel)
            desc = (
                f"CT {'/'.join(s.image_type[:3])} {s.orientation}, {s.n_slices} slices over {s.z_extent_mm:.0f} mm, "
                f"{_thickness(s):g} mm slices, kernel {s.kernel or '<none>'} ({fam})"
            )
            if rank == 0:
                others = len(candidates) - 1
                tail = f"; best of {len(candidates)} candidates" if others else "; the only candidate"
                pref = (
                    f" (preference: slices <= {p.max_preferred_thickness_mm:g} mm, then {want} kernel, "
                    "then thinner, then more slices)"
                    if others
                    else ""
                )
                decided[id(s)] = Selection(s, True, f"selected: {desc}{tail}{pref}", rank=0)
            else:
                best = candidates[0]
                why = _why_lower(best, s, p, key)
                decided[id(s)] = Selection(
                    s, False, f"not selected: {desc}; ranked below {best.series_uid} ({why})", rank=rank
                )
    return [decided[id(s)] for s in series]


def _why_lower(best: SeriesInfo, s: SeriesInfo, p: SelectionPolicy, key) -> str:
    kb, ks = key(best), key(s)
    if kb[0] != ks[0]:
        return f"its slices are thicker than {p.max_preferred_thickness_mm:g} mm"
    if kb[1] != ks[1]:
        return f"kernel {s.kernel or '<none>'} is not the preferred {p.prefer_kernel} family"
    if kb[2] != ks[2]:
        return f"thicker slices ({_thickness(s):g} vs {_thickness(best):g} mm)"
    if kb[3] != ks[3]:
        return f"fewer slices ({s.n_slices} vs {best.n_slices})"
    return "tie broken by series UID"


def selection_frame(selections: Iterable[Selection]):
    """Tidy table of selections: one row per series with ``selected`` and ``reason``."""
    import pandas as pd

    rows = []
    for sel in selections:
        s = sel.series
        rows.append(
            {
                "patient_id": s.patient_id,
                "study_uid": s.study_uid,
                "study_date": s.study_date,
                "series_uid": s.series_uid,
                "series_description": s.series_description,
                "modality": s.modality,
                "n_slices": s.n_slices,
                "slice_thickness_mm": s.slice_thickness_mm,
                "kernel": s.kernel,
                "selected": sel.selected,
                "rank": sel.rank,
                "reason": sel.reason,
            }
        )
    return pd.DataFrame(rows)
