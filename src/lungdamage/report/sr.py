"""DICOM Structured Report (TID 1500 Measurement Report) of a scored series, and reading it back.

:func:`write_sr` writes one Comprehensive 3D SR per scored DICOM series, built
with highdicom (:class:`highdicom.sr.Comprehensive3DSR` holding a
:class:`highdicom.sr.MeasurementReport`):

- evidence: every source CT image and the DICOM SEG (the SR joins the CT's
  study, with the CT's patient and study identity);
- one measurement group per reported region and scheme.  A region with a
  segment in the SEG (lungs, lobes, zones) is a *volumetric ROI* group
  (TID 1411) referencing that segment and the source series; an aggregate
  (``right``/``left`` of lobes or zones, ``total``) is a TID 1501 group.
  The tracking identifier is the region name; the finding site its SNOMED CT
  code (lobes: upper/middle/lower lobe of right/left lung; zones: upper /
  middle / lower zone of lung with laterality);
- measurements with UCUM units: ``volume_ml`` (SNOMED CT 118565006 *Volume*,
  ``ml``), and in ``%`` every ``<band>_pct`` of the scheme, ``damage_pct``,
  and the lesion columns when the table has them (``lesion_pct`` ... ;
  ``lesion_ml`` in ``ml``).  Percentages have no standard concept: they use
  the private coding scheme ``99LUNGDMG`` (as the SEG's HU bands do), whose
  code meaning starts with the table's column name;
- algorithm identification on every group and measurement: ``lungdamage``,
  its version, and the parameters ``method=``, ``scheme=``, ``bands=``,
  ``damage=``, ``region_set=``; the group's *method* is the scheme.

Values are written as DICOM decimal strings (16 characters: about 12
significant digits); :func:`read_sr` returns them as a table with the columns
of :meth:`lungdamage.score.ScanResult.to_frame` they came from.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["OPTIONAL_COLUMNS", "SR_SCHEME_DESIGNATOR", "read_sr", "read_srs", "write_sr"]

log = logging.getLogger(__name__)

#: Private coding scheme of the measurement concepts without a standard code (shared with the SEG bands).
SR_SCHEME_DESIGNATOR = "99LUNGDMG"

#: Lesion columns written when present and finite (another analysis adds them), with their UCUM unit; any
#: other ``lesion*_pct`` / ``lesion*_ml`` column of the table is written too (``%`` / ``ml``).
OPTIONAL_COLUMNS: dict[str, str] = {
    "lesion_pct": "%",
    "lesion_ml": "ml",
    "lesion_volume_ml": "ml",
    "lesion_ggo_pct": "%",
    "lesion_consolidation_pct": "%",
}

_UNITS = {"ml": ("ml", "milliliter"), "%": ("%", "percent")}
_LOINC_CT_CHEST = ("24627-2", "LN", "CT Chest")


def _lesion_columns(row: dict) -> list[str]:
    """Lesion columns of a table row (``lesion*_pct`` in %, ``lesion*_ml`` in ml), known ones first."""
    found = [c for c in row if c.startswith("lesion") and c.endswith(("_pct", "_ml"))]
    return [c for c in OPTIONAL_COLUMNS if c in found] + sorted(c for c in found if c not in OPTIONAL_COLUMNS)


def _unit(hd, unit: str):
    value, meaning = _UNITS[unit]
    return hd.sr.CodedConcept(value, "UCUM", meaning)


def _column_concept(hd, column: str, description: str):
    """Private concept for a table column: code value (max 16 characters) and meaning ``"<column>: ..."``."""
    value = column.upper().replace("_PCT", "%").replace("_ML", "ML")[:16]
    return hd.sr.CodedConcept(value, SR_SCHEME_DESIGNATOR, f"{column}: {description}"[:64])


def _finding_site(hd, region: str):
    from pydicom.sr.codedict import codes

    from .seg import REGION_CODES_SCT

    name = "lung" if region == "total" else region
    value, meaning = REGION_CODES_SCT.get(name, REGION_CODES_SCT["lung"])
    laterality = None
    if len(name) == 3 and name.endswith("Z"):
        laterality = codes.SCT.Right if name[0] == "R" else codes.SCT.Left
    return hd.sr.FindingSite(hd.sr.CodedConcept(value, "SCT", meaning), laterality=laterality)


def _segment_numbers(seg) -> dict[str, int]:
    """Region name -> segment number of the region segments of a lungdamage SEG."""
    out: dict[str, int] = {}
    for item in getattr(seg, "SegmentSequence", []):
        category = item.SegmentedPropertyCategoryCodeSequence[0]
        if str(category.CodeValue) != "91723000":  # anatomical structure (not an HU band)
            continue
        out[str(item.SegmentLabel).split(" ")[0]] = int(item.SegmentNumber)
    return out


def write_sr(
    ct,
    result,
    path: str | os.PathLike,
    *,
    seg: str | os.PathLike | Any | None = None,
    source_files: Sequence[str | os.PathLike] | None = None,
    series_number: int = 991,
    pseudonymize=None,
) -> Path:
    """Write the TID 1500 Measurement Report of one scored DICOM series.

    Parameters
    ----------
    ct : CTVolume
        The CT (read from DICOM; its source images are the SR's evidence).
    result : ScanResult or ResultSet
        The scores (every scheme of a ResultSet is reported).
    path : path
        Output ``.dcm`` file.
    seg : path or pydicom.Dataset, optional
        The series' DICOM SEG (from :func:`~lungdamage.report.seg.write_seg`):
        regions with a segment reference it.  Without it every group is a
        TID 1501 group referencing the source series only through the evidence.
    source_files : sequence of paths, optional
        The series' files (default: as recorded by the reader).
    series_number : int
        SeriesNumber of the SR series.
    pseudonymize : Pseudonymizer, optional
        Write a de-identified SR, as :func:`~lungdamage.report.seg.write_seg`
        does: the evidence is the de-identified source headers, and the SR
        carries the PS3.15 profile attributes.

    Returns
    -------
    Path

    Raises
    ------
    InputError
        The CT was not read from DICOM, or its source images cannot be found.
    """
    import highdicom as hd
    import pydicom

    from .seg import _fit_for_seg, _save_derived, source_datasets

    results = list(result) if isinstance(result, tuple) else [result]
    # as for the SEG: empty Type 2 patient/study attributes
    sources = _fit_for_seg(source_datasets(ct, source_files, pseudonymize=pseudonymize))
    seg_ds = pydicom.dcmread(os.fspath(seg), stop_before_pixels=True) if isinstance(seg, (str, os.PathLike)) else seg
    groups = _measurement_groups(hd, results, seg_ds, hd.sr.SourceSeriesForSegmentation(ct.meta.series_uid))
    if not groups:
        raise InputError(
            f"Nothing to report in the SR of {ct.meta.key}: the result has no region. Potential fix: check the scoring."
        )
    evidence = list(sources) + ([seg_ds] if seg_ds is not None else [])
    sr = _sr_dataset(hd, groups, evidence, series_number,
                     f"lungdamage measurements ({', '.join(r.scheme.name for r in results)})"[:64])
    path = _save_derived(sr, path, sources[0], deidentified=pseudonymize is not None)
    log.debug("wrote DICOM SR %s (%d measurement groups)", path, len(groups))
    return path


def _measurement_groups(hd, results: Sequence[Any], seg_ds, source_series) -> list[Any]:
    """One measurement group per region and scheme: a volumetric ROI group (TID 1411) referencing the
    region's segment when the SEG has one, else a TID 1501 group."""
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from .._version import __version__

    seg_numbers = _segment_numbers(seg_ds) if seg_ds is not None else {}
    groups: list[Any] = []
    for res in results:
        scheme = res.scheme
        params = [
            f"method={res.method}",
            f"scheme={scheme.name}",
            f"bands={', '.join(str(b) for b in scheme.bands)}"[:64],
            f"damage={'+'.join(scheme.damage)}",
            f"region_set={res.region_set}",
        ]
        algo = hd.sr.AlgorithmIdentification(name="lungdamage", version=__version__, parameters=params)
        method = hd.sr.CodedConcept(scheme.name[:16], SR_SCHEME_DESIGNATOR, f"lungdamage scheme {scheme.name}"[:64])
        for row in res.to_frame().to_dict("records"):
            region = str(row["region"])
            common = {
                "tracking_identifier": hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=region),
                "finding_type": codes.SCT.Lung,
                "method": method,
                "algorithm_id": algo,
                "finding_sites": [_finding_site(hd, region)],
                "measurements": _measurements(hd, row, scheme, algo),
            }
            if region in seg_numbers and seg_ds is not None:
                ref = hd.sr.ReferencedSegment(
                    sop_class_uid=seg_ds.SOPClassUID,
                    sop_instance_uid=seg_ds.SOPInstanceUID,
                    segment_number=seg_numbers[region],
                    source_series=source_series,
                )
                groups.append(
                    hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=ref, **common)
                )
            else:
                groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(**common))
    return groups


def _measurements(hd, row: dict, scheme, algo) -> list[Any]:
    """The finite values of one table row: volume, every band's %, damage %, the lesion columns."""
    from pydicom.sr.codedict import codes

    measurements: list[Any] = []

    def add(column: str, unit: str, name=None, description: str = "") -> None:
        value = row.get(column)
        if value is None or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            return
        concept = name or _column_concept(hd, column, description or column)
        measurements.append(hd.sr.Measurement(name=concept, value=float(value), unit=_unit(hd, unit),
                                              algorithm_id=algo))

    edges = {b.name: str(b) for b in scheme.bands}
    add("volume_ml", "ml", name=codes.SCT.Volume)
    for band in scheme.band_names:
        add(f"{band}_pct", "%", description=f"percent of region volume, HU band {edges.get(band, 'other')}")
    add("damage_pct", "%", description=f"percent of region volume in {'+'.join(scheme.damage)}")
    for column in _lesion_columns(row):
        add(column, OPTIONAL_COLUMNS.get(column, "%" if column.endswith("_pct") else "ml"),
            description=column.replace("_", " "))
    return measurements


def _sr_dataset(hd, groups: list[Any], evidence: list, series_number: int, series_description: str):
    """The Comprehensive 3D SR holding the measurement report of ``groups``."""
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from .._version import __version__

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name="lungdamage", manufacturer_name="lungdamage", model_name=__version__
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=hd.sr.CodedConcept(*_LOINC_CT_CHEST),
        imaging_measurements=groups,
    )
    with warnings.catch_warnings():
        # as for the SEG: a one-component patient name ("P001") of an anonymised archive is not an error
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name",
                                category=UserWarning)
        return hd.sr.Comprehensive3DSR(
            evidence=evidence,
            content=report,
            series_instance_uid=generate_uid(),
            series_number=series_number,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="lungdamage",
            is_complete=True,
            series_description=series_description,
        )


def _column_of(concept) -> tuple[str, str]:
    """Table column of a measurement concept (``volume_ml`` or the private meaning's prefix)."""
    if str(concept.scheme_designator) == "SCT" and str(concept.value) == "118565006":
        return "volume_ml", ""
    if str(concept.scheme_designator) == SR_SCHEME_DESIGNATOR:
        return str(concept.meaning).split(":", 1)[0], ""
    return "", str(concept.meaning)


def read_sr(path: str | os.PathLike | Any):
    """One lungdamage SR back as a table: one row per region and scheme.

    Parameters
    ----------
    path : path or pydicom.Dataset

    Returns
    -------
    pandas.DataFrame
        ``series_uid`` (the source CT series), ``study_uid, patient_id,
        study_date, scheme, region, sr_sop_instance_uid, seg_sop_instance_uid,
        segment_number``, then one column per measurement (``volume_ml``,
        ``<band>_pct``, ``damage_pct``, lesion columns), and ``method,
        version`` from the algorithm identification.

    Raises
    ------
    InputError
        Not a lungdamage measurement report.
    """
    import highdicom as hd
    import pandas as pd
    import pydicom

    ds = pydicom.dcmread(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else path
    try:
        sr = hd.sr.Comprehensive3DSR.from_dataset(ds, copy=False)
        content: Any = sr.content  # a MeasurementReport (typed as its base class)
        groups = list(content.get_volumetric_roi_measurement_groups()) + list(content.get_image_measurement_groups())
    except (AttributeError, ValueError, TypeError, KeyError) as exc:
        raise InputError(
            f"{getattr(ds, 'filename', path)} is not a TID 1500 measurement report ({exc}). "
            "Potential fix: pass an SR written by lungdamage."
        ) from None
    source_series = _source_ct_series(ds)
    rows = []
    for g in groups:
        row: dict[str, Any] = {
            "series_uid": source_series,
            "study_uid": str(ds.StudyInstanceUID),
            "patient_id": str(ds.get("PatientID", "")),
            "study_date": str(ds.get("StudyDate", "")),
            "region": str(g.tracking_identifier),
            "sr_sop_instance_uid": str(ds.SOPInstanceUID),
            "seg_sop_instance_uid": "",
            "segment_number": None,
        }
        ref = getattr(g, "referenced_segment", None)
        if ref is not None:
            row["seg_sop_instance_uid"] = str(ref.referenced_sop_instance_uid)
            row["segment_number"] = int(ref.referenced_segment_numbers[0]) if ref.referenced_segment_numbers else None
        algo, params = _algorithm_of(g)
        for m in g.get_measurements():
            column, other = _column_of(m.name)
            if not column:
                log.info("SR %s: measurement %r not a lungdamage column; skipped", row["sr_sop_instance_uid"], other)
                continue
            row[column] = float(m.value)
        row["scheme"] = params.get("scheme", str(g.method.value) if g.method is not None else "")
        row["method"] = params.get("method", "")
        row["version"] = algo.get("version", "")
        rows.append(row)
    return pd.DataFrame(rows)


def _source_ct_series(ds) -> str:
    """SeriesInstanceUID of the CT images in the SR's evidence ("" if none)."""
    source_series = ""
    for item in getattr(ds, "CurrentRequestedProcedureEvidenceSequence", []):
        for se in item.ReferencedSeriesSequence:
            sops = [str(r.ReferencedSOPClassUID) for r in se.ReferencedSOPSequence]
            if any(s.startswith("1.2.840.10008.5.1.4.1.1.2") for s in sops):
                source_series = str(se.SeriesInstanceUID)
    return source_series


def _algorithm_of(group) -> tuple[dict[str, str], dict[str, str]]:
    """The group's algorithm identification (TID 4019: DCM 111001 name, 111003 version, 111002
    parameter) as ``({"name", "version"}, {parameter: value})``."""
    algo: dict[str, str] = {}
    params: dict[str, str] = {}
    items = group[0].ContentSequence if len(group) == 1 and group[0].get("ValueType") == "CONTAINER" else group
    for item in items:
        code = str(item.ConceptNameCodeSequence[0].CodeValue) if "ConceptNameCodeSequence" in item else ""
        if item.get("ValueType") == "TEXT" and code in ("111001", "111003", "111002"):
            text = str(item.TextValue)
            if code == "111001":
                algo["name"] = text
            elif code == "111003":
                algo["version"] = text
            elif "=" in text:
                key, value = text.split("=", 1)
                params[key] = value
    return algo, params


def read_srs(paths: Sequence[str | os.PathLike]):
    """:func:`read_sr` of several files (e.g. every ``*_sr.dcm`` of a review folder), concatenated."""
    import pandas as pd

    frames = [read_sr(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
