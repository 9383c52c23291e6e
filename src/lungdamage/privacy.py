"""Pseudonymization: keyed hashes instead of patient identifiers in every output.

One :class:`Pseudonymizer` (built from a secret key) is applied once, right
after a scan is read (:func:`lungdamage.pipeline.analyze_scan`,
``pseudonymize=``) or a catalog entry is made (``lungdamage index`` /
``batch``), so the result rows, the store, the QC images and pages and the
study tables only ever see pseudonymous values:

=====================  ==========================================================
patient id             ``pz-`` + 16 hex digits of HMAC-SHA256(key, id)
                       (an empty id stays empty: there is nothing to hide)
names, birth dates     dropped (they never reach a table; the DICOM SEG empties them)
dates (DA, DT)         shifted back by a per-patient offset of 1–365 days derived
                       from HMAC-SHA256(key, original patient id): every date of a
                       patient moves by the same number of days, so the intervals
                       between visits -- and the visit assignment -- are exact
times                  kept (the shift is whole days)
UIDs                   ``2.25.`` + the integer of the first 128 bits of
                       HMAC-SHA256(key, UID): a valid DICOM UID (≤ 44 characters),
                       the same on every run, so resume and manifests still match
source paths           ``src-`` + 12 hex digits of HMAC-SHA256(key, path)
input hash             HMAC-SHA256(key, hash) (an unkeyed hash of UIDs could be
                       checked against a guess)
free text              (reader warnings, failure messages, selection reasons,
                       descriptions) the identifiers above are replaced inside it,
                       and any other UID or absolute path in it is hashed too
=====================  ==========================================================

The key is never written: not to parameters (``params`` only records
``"pseudonymized": true``), their hash, the store, tables, logs or the repr of
any object.  It travels in memory to batch workers as part of the task.

Keys: ``Pseudonymizer.from_option`` accepts the key itself, ``@FILE`` (first
line of a file) or ``env:`` / ``env:NAME`` (environment variable, default
:data:`KEY_ENV`), so the key need not appear on a command line.

The DICOM SEG (:func:`deidentify_dataset`) follows the PS3.15 Basic
Application Level Confidentiality Profile with the *Retain Longitudinal
Temporal Information with Modified Dates* option: it is a de-identified object
whose references (study, series, SOP instance, frame of reference UIDs) are
the pseudonymous UIDs; it lines up with a copy of the source series
de-identified by :func:`deidentify_dataset` with the same key
(:func:`deidentify_series`), not with the original files.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import hmac
import logging
import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = [
    "KEY_ENV",
    "PSEUDONYM_PREFIX",
    "TOKEN_PREFIX",
    "Pseudonymizer",
    "deidentify_dataset",
    "deidentify_series",
    "is_pseudonym",
]

log = logging.getLogger(__name__)

#: Environment variable read by ``--pseudonymize env:``.
KEY_ENV = "LUNGDAMAGE_PSEUDONYMIZE_KEY"
#: Prefix of pseudonymous patient ids.
PSEUDONYM_PREFIX = "pz-"
#: Prefix of source-path tokens.
TOKEN_PREFIX = "src-"
#: Dates move back by 1..MAX_SHIFT_DAYS days (never 0: a shifted date always differs).
MAX_SHIFT_DAYS = 365
#: Shortest accepted key (characters); 16+ random characters are recommended.
MIN_KEY_CHARS = 8

_PSEUDONYM_RE = re.compile(rf"^{re.escape(PSEUDONYM_PREFIX)}[0-9a-f]{{16}}$")
_TOKEN_RE = re.compile(rf"^{re.escape(TOKEN_PREFIX)}[0-9a-f]{{12}}$")
#: A DICOM UID in free text: root 0/1/2 and at least three more components.
_UID_IN_TEXT = re.compile(r"(?<![\w.])[012](?:\.\d+){3,}(?![\w.])")
#: An absolute path in free text (POSIX, Windows drive, or UNC), also ``archive.zip::member``.
_PATH_IN_TEXT = re.compile(r"""(?<![\w.:/\\-])(?:[A-Za-z]:[\\/]|\\\\|/)[^\s'"<>|,;()\[\]{}]+""")

#: ScanMeta / SeriesInfo / table fields holding UIDs.
_UID_FIELDS = ("series_uid", "study_uid", "frame_of_reference_uid", "sop_instance_uid")
#: Table columns holding paths.
_PATH_FIELDS = ("source", "root", "path", "file")
#: Table columns holding dates (shifted per patient).
_DATE_FIELDS = ("study_date", "baseline_date", "series_date", "acquisition_date", "content_date")
#: Table columns of free text (identifiers inside are replaced).
_TEXT_FIELDS = ("warnings", "message", "reason", "issues", "notes", "series_description", "error")


def is_pseudonym(value: Any) -> bool:
    """True for a pseudonymous patient id (``pz-`` + 16 hex digits)."""
    return isinstance(value, str) and bool(_PSEUDONYM_RE.match(value))


def _is_token(value: Any) -> bool:
    return isinstance(value, str) and bool(_TOKEN_RE.match(value))


def _name_terms(name: str) -> dict[str, str]:
    """The patient's name and its parts (3+ characters) -> a placeholder, for names typed into free text."""
    parts = {name, *re.split(r"[\^\s,=]+", name or "")}
    return {p: "[name removed]" for p in parts if len(p) >= 3}


def _patient_name_of(source: str) -> str:
    """PatientName of one DICOM file (header only), or "" when it cannot be read."""
    from .io.sources import read_source_header

    try:
        ds = read_source_header(source, tags=["PatientName"])
        return str(ds.get("PatientName", "") or "")
    except Exception:  # noqa: BLE001 -- a listing never fails on one unreadable file
        return ""


def _missing(value: Any) -> bool:
    """None, NaN or NaT (a table cell with no value)."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == "NaT"


class Pseudonymizer:
    """Keyed (HMAC-SHA256) pseudonyms for patient ids, UIDs, dates and paths.

    Parameters
    ----------
    key : str or bytes
        The secret.  At least :data:`MIN_KEY_CHARS` characters; keep it (the
        same key gives the same pseudonyms, so later batches, resumes and
        studies line up), never share it with the outputs.

    Examples
    --------
    >>> pz = Pseudonymizer("correct horse battery staple")
    >>> pz.patient_id("P001").startswith("pz-"), len(pz.patient_id("P001"))
    (True, 19)
    >>> a, b = pz.shift_date("20200401", "P001"), pz.shift_date("20200801", "P001")
    >>> (_dt.date.fromisoformat(f"{b[:4]}-{b[4:6]}-{b[6:]}") - _dt.date.fromisoformat(f"{a[:4]}-{a[4:6]}-{a[6:]}")).days
    122
    >>> pz.uid("1.2.3.4").startswith("2.25.")
    True
    """

    __slots__ = ("_key", "_made")

    def __init__(self, key: str | bytes):
        raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        if len(raw.strip()) < MIN_KEY_CHARS:
            raise InputError(
                f"Pseudonymization key is too short ({len(raw.strip())} characters; at least {MIN_KEY_CHARS}). "
                f"Potential fix: use 16 or more random characters, e.g. from `python -c \"import secrets; "
                f"print(secrets.token_urlsafe(24))\"`, kept in a file (--pseudonymize @FILE) or in {KEY_ENV}."
            )
        self._key = raw
        self._made: set[str] = set()

    # -- construction --------------------------------------------------------------
    @classmethod
    def from_option(cls, value: str | None) -> Pseudonymizer | None:
        """A Pseudonymizer from a CLI value: the key, ``@FILE`` or ``env:[NAME]`` (None stays None)."""
        if value is None:
            return None
        if value.startswith("@"):
            path = Path(value[1:]).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(
                    f"Cannot read the pseudonymization key file {path}: {type(exc).__name__}. "
                    "Potential fix: check the path and its permissions (the key is the file's first line)."
                ) from None
            lines = text.splitlines()
            return cls(lines[0].strip() if lines else "")
        if value.startswith("env:"):
            name = value[4:] or KEY_ENV
            key = os.environ.get(name)
            if not key:
                raise InputError(
                    f"Environment variable {name} holding the pseudonymization key is not set or empty. "
                    f"Potential fix: export {name}=<your key>, or pass --pseudonymize @FILE."
                )
            return cls(key)
        return cls(value)

    def __repr__(self) -> str:
        return "Pseudonymizer(<key hidden>)"

    def __getstate__(self):
        return {"_key": self._key}

    def __setstate__(self, state) -> None:
        self._key = state["_key"]
        self._made = set()

    # -- primitives ----------------------------------------------------------------
    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._key, f"{kind}\x00{value}".encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    def patient_id(self, patient_id: str) -> str:
        """``pz-`` + 16 hex digits; empty and already pseudonymous ids are returned unchanged."""
        pid = "" if patient_id is None else str(patient_id)
        if not pid or is_pseudonym(pid):
            return pid
        return PSEUDONYM_PREFIX + self._digest("patient", pid).hex()[:16]

    def date_offset_days(self, patient_id: str) -> int:
        """Days (1..365) every date of this patient moves back; keyed on the *original* id."""
        d = self._digest("date-shift", "" if patient_id is None else str(patient_id))
        return 1 + int.from_bytes(d[:8], "big") % MAX_SHIFT_DAYS

    def shift_date(self, value: Any, patient_id: str) -> Any:
        """``value`` moved back by :meth:`date_offset_days`, in the same form.

        Accepts ``YYYYMMDD`` and ``YYYY-MM-DD`` strings, DICOM DT strings
        (date part shifted, the rest kept), :class:`datetime.date` /
        ``datetime``, pandas ``Timestamp`` and ``YYYYMMDD`` numbers (a CSV
        read by pandas).  Empty/NaT values stay empty;
        a text that is no full date (``"2020"``) becomes ``""`` (dropped, as
        it cannot be shifted exactly).
        """
        if _missing(value):
            return value
        days = _dt.timedelta(days=self.date_offset_days(patient_id))
        if isinstance(value, (_dt.date, _dt.datetime)):  # includes pandas Timestamp
            return value - days
        if isinstance(value, numbers.Real) and not isinstance(value, bool):  # 20200401 read from a CSV as a number
            number = float(value)
            if number.is_integer():
                shifted = self.shift_date(str(int(number)), patient_id)
                return type(value)(int(shifted)) if shifted else None  # type: ignore[call-arg]
            return None
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text:
            return value
        m = re.fullmatch(r"(\d{4})(-?)(\d{2})\2(\d{2})(.*)", text)
        if not m:
            return ""
        try:
            day = _dt.date(int(m.group(1)), int(m.group(3)), int(m.group(4)))
        except ValueError:
            return ""
        new = day - days
        sep = m.group(2)
        return f"{new.year:04d}{sep}{new.month:02d}{sep}{new.day:02d}{m.group(5)}"

    def uid(self, uid: str) -> str:
        """``2.25.<int>`` from the first 128 bits of the HMAC (valid DICOM UID); empty stays empty."""
        u = "" if uid is None else str(uid).strip()
        if not u or u in self._made:
            return u
        if u.startswith("path:"):  # batch key of a series without a UID
            return self.token(u[5:])
        out = "2.25." + str(int.from_bytes(self._digest("uid", u)[:16], "big"))
        self._made.add(out)
        return out

    def token(self, path: Any) -> str:
        """``src-`` + 12 hex digits for a path (or any other text); empty stays empty."""
        p = "" if path is None else os.fspath(path) if isinstance(path, os.PathLike) else str(path)
        if not p or _is_token(p):
            return p
        return TOKEN_PREFIX + self._digest("path", p).hex()[:12]

    def keyed_hash(self, value: str) -> str:
        """Keyed replacement of an (unkeyed) content hash, same length (≤ 64 hex digits)."""
        if not value:
            return value
        return self._digest("hash", value).hex()[: len(value)]

    # -- free text ------------------------------------------------------------------
    def scrub(self, text: Any, terms: Mapping[str, str] | None = None) -> Any:
        """Replace identifiers inside free text.

        ``terms`` maps known identifiers (patient id, UIDs, paths, folder
        names) to their replacements; they are replaced first (longest first,
        whole words).  Then any remaining DICOM UID is replaced by its keyed
        hash and any absolute path by its token.
        """
        if not isinstance(text, str) or not text:
            return text
        out = text
        mapping = dict(terms or {})
        for original in sorted((t for t in mapping if t), key=len, reverse=True):
            if original in out:
                pattern = rf"(?<![\w.]){re.escape(original)}(?![\w])"
                out = re.sub(pattern, mapping[original].replace("\\", "\\\\"), out)
        out = _UID_IN_TEXT.sub(lambda m: m.group(0) if _well_known_uid(m.group(0)) else self.uid(m.group(0)), out)
        out = _PATH_IN_TEXT.sub(lambda m: self.token(m.group(0)), out)
        return out

    def _path_terms(self, paths: Iterable[str]) -> dict[str, str]:
        """Each path, its folders and their names (4+ characters) -> tokens."""
        terms: dict[str, str] = {}
        for p in paths:
            if not p:
                continue
            p = str(p)
            terms[p] = self.token(p)
            outer = p.split("::")[0]
            parent = os.path.dirname(outer)
            for _ in range(3):  # the series folder and two above it (patient, study folders)
                if not parent or parent in (os.sep, "."):
                    break
                terms.setdefault(parent, self.token(parent))
                name = os.path.basename(parent)
                if len(name) >= 4:
                    terms.setdefault(name, self.token(name))
                parent = os.path.dirname(parent)
        return terms

    def _terms(self, patient_id: str, uids: Iterable[str], paths: Iterable[str]) -> dict[str, str]:
        terms = self._path_terms(paths)
        for u in uids:
            if u:
                terms[u] = self.uid(u)
        if patient_id and not is_pseudonym(patient_id):
            terms[patient_id] = self.patient_id(patient_id)
        return terms

    def terms_for(self, item: Any) -> dict[str, str]:
        """Identifier -> replacement for a ScanMeta, SeriesInfo or task (for :meth:`scrub`)."""
        series = getattr(item, "series", None)
        if series is not None and hasattr(series, "files"):
            item = series
        pid = str(getattr(item, "patient_id", "") or "")
        uids = [str(getattr(item, f, "") or "") for f in _UID_FIELDS]
        files = list(getattr(item, "files", ()) or ())
        extra = getattr(item, "extra", None) or {}
        files += list(extra.get("files", ()) if isinstance(extra, Mapping) else ())
        source = str(getattr(item, "source", "") or "")
        terms = self._terms(pid, uids, [source, *files])
        name = str(extra.get("patient_name", "") or "") if isinstance(extra, Mapping) else ""
        return {**terms, **_name_terms(name)}

    # -- objects ------------------------------------------------------------------
    def meta(self, meta):
        """A pseudonymous copy of a :class:`~lungdamage.volume.ScanMeta` (idempotent).

        ``extra["files"]`` keeps the original file paths in memory: the
        DICOM SEG writer needs them to read the source headers.  They are
        never written to an output.
        """
        extra = dict(meta.extra or {})
        if extra.get("pseudonymized"):
            return meta
        pid = meta.patient_id
        if is_pseudonym(pid):  # already de-identified with a key (deidentify_series): keep ids, UIDs, dates
            self._keep(meta.series_uid, meta.study_uid, meta.frame_of_reference_uid)
        terms = self.terms_for(meta)
        keep = is_pseudonym(pid)
        extra["pseudonymized"] = True
        extra.pop("patient_name", None)
        return dataclasses.replace(
            meta,
            source=self.token(meta.source),
            series_uid=meta.series_uid if keep else self.uid(meta.series_uid),
            study_uid=meta.study_uid if keep else self.uid(meta.study_uid),
            frame_of_reference_uid=meta.frame_of_reference_uid if keep else self.uid(meta.frame_of_reference_uid),
            patient_id=self.patient_id(pid),
            study_date=meta.study_date if keep else self.shift_date(meta.study_date, pid),
            series_description=self.scrub(meta.series_description, terms),
            input_hash=self.keyed_hash(meta.input_hash),
            warnings=tuple(self.scrub(w, terms) for w in meta.warnings),
            extra=extra,
        )

    def _keep(self, *uids: str) -> None:
        """Treat ``uids`` as pseudonymous already (left unchanged by :meth:`uid` and :meth:`scrub`)."""
        self._made.update(u for u in uids if u)

    def volume(self, ct):
        """The :class:`~lungdamage.volume.CTVolume` with :meth:`meta` applied (same arrays)."""
        new = self.meta(ct.meta)
        return ct if new is ct.meta else dataclasses.replace(ct, meta=new)

    def series_info(self, info):
        """A pseudonymous copy of a catalog :class:`~lungdamage.io.catalog.SeriesInfo` (for listings).

        ``files`` become tokens: the copy is for tables and printing, not for reading.
        """
        if is_pseudonym(info.patient_id):  # already de-identified: only the paths
            self._keep(info.series_uid, info.study_uid, info.frame_of_reference_uid)
            terms = self.terms_for(info)
            return dataclasses.replace(
                info, files=tuple(self.token(f) for f in info.files),
                issues=tuple(self.scrub(i, terms) for i in info.issues),
            )
        terms = {**self.terms_for(info), **_name_terms(_patient_name_of(info.files[0]) if info.files else "")}
        pid = info.patient_id
        return dataclasses.replace(
            info,
            patient_id=self.patient_id(pid),
            study_uid=self.uid(info.study_uid),
            series_uid=self.uid(info.series_uid),
            frame_of_reference_uid=self.uid(info.frame_of_reference_uid),
            study_date=self.shift_date(info.study_date, pid),
            series_description=self.scrub(info.series_description, terms),
            files=tuple(self.token(f) for f in info.files),
            issues=tuple(self.scrub(i, terms) for i in info.issues),
        )

    def task(self, task):
        """A batch ``SeriesTask`` with pseudonymous key, source, patient and date.

        ``task.series`` (the catalog entry with the original files) is kept so
        the worker can read the series; nothing of it reaches an output.
        """
        if _is_token(task.source):
            return task
        if is_pseudonym(task.patient_id):  # already de-identified: only the path
            self._keep(task.series_uid)
            return dataclasses.replace(task, source=self.token(task.source))
        return dataclasses.replace(
            task,
            series_uid=self.uid(task.series_uid),
            source=self.token(task.source),
            patient_id=self.patient_id(task.patient_id),
            study_date=self.shift_date(task.study_date, task.patient_id),
        )

    def row(self, row: Mapping[str, Any], terms: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A pseudonymous copy of one table row (dict); rows already pseudonymous pass unchanged."""
        out = dict(row)
        pid = out.get("patient_id")
        pid = "" if _missing(pid) else str(pid)
        if is_pseudonym(pid) or (not pid and any(_is_token(out.get(c)) for c in _PATH_FIELDS)):
            for c in _PATH_FIELDS:  # already pseudonymous (or a de-identified copy): only paths remain to hide
                if isinstance(out.get(c), str):
                    out[c] = self.token(out[c])
            return out
        uids = [str(out[c]) for c in out if c.endswith("_uid") and isinstance(out[c], str)]
        paths = [str(out[c]) for c in _PATH_FIELDS if isinstance(out.get(c), str)]
        all_terms = {**self._terms(pid, uids, paths), **(terms or {})}
        for c, v in out.items():
            if c == "patient_id":
                out[c] = self.patient_id(pid)
            elif c.endswith("_uid") and isinstance(v, str):
                out[c] = self.uid(v)
            elif c in _DATE_FIELDS:
                out[c] = self.shift_date(v, pid)
            elif c in _PATH_FIELDS and isinstance(v, str):
                out[c] = self.token(v)
            elif c == "input_hash" and isinstance(v, str):
                out[c] = self.keyed_hash(v)
            elif (c in _TEXT_FIELDS or c.endswith("_json")) and isinstance(v, str):
                out[c] = self.scrub(v, all_terms)
        return out

    def frame(self, df):
        """A pseudonymous copy of a table (results, failures, exclusions, catalog, visits).

        Columns: ``patient_id``; every ``*_uid``; dates (``study_date``,
        ``baseline_date``, ...) shifted by the row's patient; ``source`` /
        ``root`` / ``path`` tokens; ``input_hash`` keyed; free text
        (``warnings``, ``message``, ``reason``, ``issues``, ``*_json``)
        scrubbed.  Rows whose ``patient_id`` is already pseudonymous are
        left as they are, so applying it twice (or to a store written with
        ``--pseudonymize``) changes nothing.
        """
        import pandas as pd

        if df is None or len(df) == 0:
            if df is not None and "source" in df.columns:
                return df.copy()
            return df
        records = [self.row(r) for r in df.to_dict(orient="records")]
        out = pd.DataFrame.from_records(records, columns=list(df.columns), index=df.index)
        for c in df.columns:  # keep dtypes of untouched columns (dates stay datetime64)
            if c in out.columns and out[c].dtype != df[c].dtype:
                try:
                    out[c] = out[c].astype(df[c].dtype)
                except (TypeError, ValueError):
                    pass
        out.attrs = dict(df.attrs)
        return out

    def manifest(self, manifest):
        """A pseudonymous :class:`~lungdamage.study.visits.Manifest` (ids, series UIDs, shifted dates)."""
        import pandas as pd

        patients = manifest.patients.copy()
        orig = patients["patient_id"].astype(str)
        patients["baseline_date"] = pd.to_datetime(
            [self.shift_date(d, p) if not is_pseudonym(p) else d
             for d, p in zip(patients["baseline_date"], orig, strict=True)]
        )
        patients["patient_id"] = [self.patient_id(p) for p in orig]
        ov = manifest.overrides.copy()
        if len(ov):
            pids = ov["patient_id"].astype(str).tolist()
            ov["study_date"] = pd.to_datetime(
                [self.shift_date(d, p) if not is_pseudonym(p) else d
                 for d, p in zip(ov["study_date"], pids, strict=True)]
            )
            ov["series_uid"] = [
                u if is_pseudonym(p) else self.uid(u) for u, p in zip(ov["series_uid"], pids, strict=True)
            ]
            ov["patient_id"] = [self.patient_id(p) for p in pids]
        return dataclasses.replace(manifest, patients=patients, overrides=ov)

    def dataset(self, ds, *, patient_id: str | None = None) -> Any:
        """De-identify a pydicom Dataset in place (see :func:`deidentify_dataset`); returns it."""
        return deidentify_dataset(ds, self, patient_id=patient_id)


# --------------------------------------------------------------------------- DICOM (PS3.15 E.1)

#: Attributes emptied (type 2 in the IODs: present, zero length) -- Basic Profile action Z.
_EMPTY = (
    "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "ReferringPhysicianName",
    "ContentCreatorName",
)
#: Attributes removed -- Basic Profile action X (identifying or free text that may identify).
_REMOVE = (
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthTime", "PatientBirthName",
    "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers", "PatientAge", "PatientSize",
    "PatientWeight", "PatientComments", "PatientReligiousPreference", "EthnicGroup", "Occupation",
    "MilitaryRank", "BranchOfService", "MedicalRecordLocator", "MedicalAlerts", "Allergies",
    "AdditionalPatientHistory", "PregnancyStatus", "SmokingStatus", "LastMenstrualDate", "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence", "PatientInsurancePlanCodeSequence", "PatientState",
    "CountryOfResidence", "RegionOfResidence", "PatientInstitutionResidence", "ResponsiblePerson",
    "ResponsibleOrganization", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "InstitutionCodeSequence", "StationName", "DeviceSerialNumber", "DetectorID", "GantryID", "PlateID",
    "CassetteID", "PerformingPhysicianName", "PerformingPhysicianIdentificationSequence",
    "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "PhysiciansReadingStudyIdentificationSequence",
    "OperatorsName", "OperatorIdentificationSequence", "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers", "ReferringPhysicianIdentificationSequence", "RequestingPhysician",
    "RequestingService", "RequestAttributesSequence", "RequestedProcedureID", "RequestedProcedureDescription",
    "ScheduledProcedureStepID", "PerformedProcedureStepID", "PerformedProcedureStepDescription",
    "PerformedLocation", "PerformedStationName", "ScheduledStationName", "AdmissionID", "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence", "ReasonForStudy", "ReasonForTheRequestedProcedure", "CurrentPatientLocation",
    "StudyDescription", "SeriesDescription", "ProtocolName", "ImageComments", "AcquisitionComments",
    "DerivationDescription", "StudyComments", "InterpretationText", "TextComments", "TextString",
    "ReferencedPatientSequence", "ReferencedPatientAliasSequence", "ModifiedAttributesSequence",
    "OriginalAttributesSequence", "DigitalSignaturesSequence", "ClinicalTrialSponsorName",
    "ClinicalTrialSiteName", "ClinicalTrialSubjectReadingID", "ClinicalTrialSubjectID",
    "ClinicalTrialProtocolName", "ClinicalTrialCoordinatingCenterName", "ServiceEpisodeID",
    "ServiceEpisodeDescription", "PatientTransportArrangements", "SpecialNeeds", "VisitComments",
    "DataSetTrailingPadding",
)

#: Deidentification method codes written into the SEG (DICOM CID 7050).
DEID_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
)
#: DeidentificationMethod values (LO, at most 64 characters each).
DEID_METHOD = (
    "PS3.15 Basic Application Level Confidentiality Profile",
    "lungdamage keyed HMAC-SHA256 pseudonyms for patient ID and UIDs",
    "dates shifted per patient by a keyed offset; intervals kept",
    "names, birth date and other identifying attributes removed",
)


def _well_known_uid(value: str) -> bool:
    from pydicom.uid import UID_dictionary

    return value in UID_dictionary


def deidentify_dataset(ds, pz: Pseudonymizer, *, patient_id: str | None = None):
    """De-identify a pydicom Dataset in place (PS3.15 Basic Profile, modified dates option).

    - private elements and overlays/curves are removed;
    - ``PatientID`` becomes :meth:`Pseudonymizer.patient_id`; names (every
      ``PN``), birth date, sex, accession number, study ID emptied; the other
      identifying attributes of the profile (addresses, institution, station,
      device serial, physicians, operators, descriptions, comments, ...) removed;
    - every UID that is not a well-known DICOM UID (SOP classes, transfer
      syntaxes) becomes :meth:`Pseudonymizer.uid`, in sequences and file meta too;
    - every ``DA`` and the date part of every ``DT`` move back by the
      patient's offset; times are kept;
    - ``PatientIdentityRemoved=YES``, ``DeidentificationMethod`` and
      ``DeidentificationMethodCodeSequence`` (113100, 113107) and
      ``LongitudinalTemporalInformationModified=MODIFIED`` are set.

    Parameters
    ----------
    ds : pydicom.Dataset
    pz : Pseudonymizer
    patient_id : str, optional
        The *original* patient id (date offset); default the dataset's PatientID.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    if str(ds.get("PatientIdentityRemoved", "")).upper() == "YES" and is_pseudonym(str(ds.get("PatientID", ""))):
        return ds
    pid = str(ds.get("PatientID", "") if patient_id is None else patient_id)
    _clean_elements(ds, pz, pid)
    fm = getattr(ds, "file_meta", None)
    if fm is not None:
        for kw in ("MediaStorageSOPInstanceUID",):
            if kw in fm and fm[kw].value and not _well_known_uid(str(fm[kw].value)):
                fm[kw].value = pz.uid(str(fm[kw].value))
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = list(DEID_METHOD)
    seq = Sequence()
    for value, meaning in DEID_CODES:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        seq.append(item)
    ds.DeidentificationMethodCodeSequence = seq
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    return ds


def _clean_elements(d, pz: Pseudonymizer, pid: str) -> None:
    """The element-by-element part of :func:`deidentify_dataset`, into sequences (``d`` modified)."""
    d.remove_private_tags()
    for tag in list(d.keys()):
        if 0x5000 <= tag.group <= 0x50FF or 0x6000 <= tag.group <= 0x60FF:  # curves, overlays (may hold text)
            del d[tag]
            continue
        elem = d[tag]
        kw = elem.keyword
        if kw in _REMOVE:
            del d[tag]
            continue
        if kw == "PatientID":
            elem.value = pz.patient_id(pid)
        elif kw in _EMPTY or elem.VR == "PN":
            elem.value = ""
        elif elem.VR == "SQ":
            for item in elem.value:
                _clean_elements(item, pz, pid)
        elif elem.VR == "UI" and elem.value:
            vals = elem.value if elem.VM > 1 else [elem.value]
            new = [str(v) if _well_known_uid(str(v)) else pz.uid(str(v)) for v in vals]
            elem.value = new if elem.VM > 1 else new[0]
        elif elem.VR in ("DA", "DT") and elem.value:
            vals = elem.value if elem.VM > 1 else [elem.value]
            new = [pz.shift_date(str(v), pid) for v in vals]
            elem.value = new if elem.VM > 1 else new[0]


def deidentify_series(
    files: Iterable[str | os.PathLike], out_dir: str | os.PathLike, pz: Pseudonymizer
) -> list[Path]:
    """Write de-identified copies of DICOM files (pixels unchanged) to ``out_dir``.

    The copies carry the same pseudonymous UIDs, patient id and shifted dates
    as every other output made with ``pz``, so a DICOM SEG written with
    ``--pseudonymize`` lines up with them in a viewer.  Files are named by the
    pseudonymous SOP Instance UID.  Burned-in text in the pixels is not
    detected (CT axial images rarely carry any).
    """
    import pydicom

    from .io._dicom_headers import open_source

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f in files:
        ds = pydicom.dcmread(open_source(os.fspath(f)))
        deidentify_dataset(ds, pz)
        path = out / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written
