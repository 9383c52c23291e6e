"""Visit protocol, trial manifest and assignment of scans to visits.

A *protocol* lists visits with a nominal day after baseline and a window
(± days).  A *manifest* (CSV) gives each patient's arm, optionally the
baseline date, and optionally per-scan rows that pin a scan (by
``series_uid`` or by ``study_date``) to a visit.  :func:`assign_visits`
places every scored scan at a visit and says, per scan, by which rule.

Arms come only from the manifest: scoring never sees them, so it stays
blind.  Dates are normalised in exactly one place, :func:`to_dates`
(DICOM ``YYYYMMDD`` and ISO ``YYYY-MM-DD`` are both accepted).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._config import ConfigSyntaxError, read_config_file
from ..errors import InputError, ManifestError

__all__ = [
    "Visit",
    "Protocol",
    "Manifest",
    "default_protocol",
    "read_protocol",
    "protocol_from_dict",
    "read_manifest",
    "manifest_from_frame",
    "blind_arms",
    "to_dates",
    "assign_visits",
    "SELECTION_RULE",
    "MEASURES",
    "select_results",
    "visit_table",
    "comparability_warnings",
]

logger = logging.getLogger(__name__)

#: How one scan is chosen when several fall in one patient's visit window.
SELECTION_RULE = (
    "an explicit manifest override first, then the scan closest to the nominal day, "
    "then the earlier date, then the thinner slices, then the lower series UID"
)


def _key(name: Any) -> str:
    """Matching key of a visit name: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


# -----------------------------------------------------------------------------
# dates
# -----------------------------------------------------------------------------
_DICOM_DATE = re.compile(r"^\d{8}$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[ T].*)?$")


def to_dates(values: Iterable[Any], *, where: str = "") -> pd.Series:
    """Normalise study dates to ``datetime64[ns]`` (midnight), the one place this is done.

    Parameters
    ----------
    values : iterable
        DICOM ``YYYYMMDD`` strings, ISO ``YYYY-MM-DD`` strings (a time part
        after ``T`` or a space is ignored), ``datetime``/``date``/``Timestamp``
        objects; empty strings, None and NaN become ``NaT``.
    where : str
        Where the values come from, for the error message.

    Returns
    -------
    pandas.Series of datetime64[ns]
        Same index as ``values`` when it is a Series.

    Raises
    ------
    ManifestError
        A non-empty value matches neither format or is not a real date
        (e.g. ``20200231``).
    """
    s = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    if pd.api.types.is_datetime64_any_dtype(s):
        return pd.to_datetime(s).dt.tz_localize(None).dt.normalize() if getattr(s.dt, "tz", None) else s.dt.normalize()
    text = s.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT else str(v).strip())
    dicom = text.str.match(_DICOM_DATE)
    iso = text.str.match(_ISO_DATE)
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns]")
    if dicom.any():
        out[dicom] = pd.to_datetime(text[dicom], format="%Y%m%d", errors="coerce")
    if iso.any():
        out[iso] = pd.to_datetime(text[iso].str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
    bad = (text != "") & out.isna()
    if bad.any():
        seen = sorted(set(text[bad]))[:5]
        raise ManifestError(
            f"Unreadable date(s) {seen} in {where or 'input'}. "
            "Potential fix: write dates as YYYY-MM-DD (or DICOM YYYYMMDD)."
        )
    return out


# -----------------------------------------------------------------------------
# protocol
# -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Visit:
    """One protocol visit: ``|day - day_nominal| <= window_days`` belongs to it."""

    name: str
    day: int
    window_days: int = 0
    aliases: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.name} (day {self.day} ± {self.window_days})"


@dataclass(frozen=True)
class Protocol:
    """Ordered visits; the first one is the baseline.

    Attributes
    ----------
    visits : tuple of Visit
        Sorted by nominal day, windows not overlapping.
    compare : str
        Visit of the between-arm comparison (default: the last visit).
    source : str
        File the protocol was read from, or ``"default"``.
    """

    visits: tuple[Visit, ...]
    compare: str = ""
    source: str = "default"

    def __post_init__(self) -> None:
        problems = []
        if not self.visits:
            problems.append("no visits")
        keys: dict[str, str] = {}
        for v in self.visits:
            if not str(v.name).strip():
                problems.append("a visit has an empty name")
            if v.window_days < 0:
                problems.append(f"visit {v.name!r} has a negative window {v.window_days}")
            for alias in (v.name, *v.aliases):
                k = _key(alias)
                if k in keys and keys[k] != v.name:
                    problems.append(f"name/alias {alias!r} of {v.name!r} also names {keys[k]!r}")
                keys[k] = v.name
        for a, b in itertools.pairwise(self.visits):
            if b.day <= a.day:
                problems.append(f"visits not in increasing day order: {a.name!r} day {a.day}, {b.name!r} day {b.day}")
            elif a.day + a.window_days >= b.day - b.window_days:
                problems.append(
                    f"windows of {a} and {b} overlap (day {b.day - b.window_days}..{a.day + a.window_days})"
                )
        if self.compare and _key(self.compare) not in keys:
            problems.append(f"compare visit {self.compare!r} is not one of {self.names}")
        if problems:
            raise ManifestError(
                f"Visit protocol {self.source} is invalid: " + "; ".join(problems)
                + ". Potential fix: list visits in increasing nominal day with non-overlapping windows "
                "([[visit]] name, day, window)."
            )
        if not self.compare:
            object.__setattr__(self, "compare", self.visits[-1].name)
        else:
            object.__setattr__(self, "compare", self.lookup(self.compare).name)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.visits]

    @property
    def baseline(self) -> Visit:
        return self.visits[0]

    def lookup(self, name: str, *, where: str = "") -> Visit:
        """The visit called ``name`` (or one of its aliases; case, spaces, '-' and '_' ignored).

        Raises
        ------
        ManifestError
            No visit has that name; the message lists the visit names.
        """
        k = _key(name)
        for v in self.visits:
            if k in {_key(a) for a in (v.name, *v.aliases)}:
                return v
        raise ManifestError(
            f"Unknown visit {name!r}{' in ' + where if where else ''}; the protocol ({self.source}) has "
            f"{', '.join(repr(n) for n in self.names)}. Potential fix: use one of these names, or add an "
            "alias to the protocol file."
        )

    def order(self, name: str) -> int:
        return self.names.index(self.lookup(name).name)

    def to_frame(self) -> pd.DataFrame:
        """One row per visit: ``visit, day, window_days, first_day, last_day``."""
        return pd.DataFrame(
            {
                "visit": self.names,
                "day": [v.day for v in self.visits],
                "window_days": [v.window_days for v in self.visits],
                "first_day": [v.day - v.window_days for v in self.visits],
                "last_day": [v.day + v.window_days for v in self.visits],
            }
        )


def protocol_from_dict(data: Mapping[str, Any], *, source: str = "<dict>") -> Protocol:
    """Build a :class:`Protocol` from ``{"visit": [{"name", "day", "window"}, ...], "compare": ...}``.

    ``visits`` is accepted for ``visit`` and ``window_days`` for ``window``.
    """
    rows = data.get("visit", data.get("visits"))
    if not isinstance(rows, list) or not rows:
        raise ManifestError(
            f"Visit protocol {source}: no visit list found (keys: {sorted(data)}). "
            "Potential fix: add [[visit]] tables with name, day and window."
        )
    visits = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, Mapping) or "name" not in row or "day" not in row:
            raise ManifestError(
                f"Visit protocol {source}: visit #{i} is {row!r}; it needs at least 'name' and 'day'. "
                "Potential fix: write e.g. {name = \"day 7\", day = 7, window = 2}."
            )
        unknown = set(row) - {"name", "day", "window", "window_days", "aliases"}
        if unknown:
            raise ManifestError(
                f"Visit protocol {source}: visit {row['name']!r} has unknown key(s) {sorted(unknown)}. "
                "Potential fix: allowed keys are name, day, window, aliases."
            )
        try:
            day = int(row["day"])
            window = int(row.get("window", row.get("window_days", 0)))
        except (TypeError, ValueError):
            raise ManifestError(
                f"Visit protocol {source}: visit {row['name']!r} day/window must be integers, got "
                f"{row.get('day')!r}/{row.get('window', row.get('window_days'))!r}. Potential fix: write whole days."
            ) from None
        aliases = row.get("aliases", ())
        if isinstance(aliases, str):
            aliases = (aliases,)
        visits.append(Visit(str(row["name"]).strip(), day, window, tuple(str(a) for a in aliases)))
    return Protocol(tuple(visits), compare=str(data.get("compare", "") or ""), source=source)


def default_protocol() -> Protocol:
    """Day 0, day 7 ± 2, day 14 ± 3, month 2 (day 60 ± 14), month 4 (day 120 ± 21)."""
    from importlib.resources import files

    text = files("lungdamage").joinpath("data", "visits_default.toml").read_text(encoding="utf-8")
    import tomllib

    return protocol_from_dict(tomllib.loads(text), source="default (lungdamage/data/visits_default.toml)")


def read_protocol(path: Protocol | str | Path | None = None) -> Protocol:
    """Read a visit protocol from a TOML or YAML file; ``None`` gives :func:`default_protocol`
    (a :class:`Protocol` is returned as it is).

    Raises
    ------
    ManifestError
        Missing file, unknown format, syntax error or invalid visit list.
    """
    if path is None:
        return default_protocol()
    if isinstance(path, Protocol):
        return path
    path = Path(path)
    try:
        data = read_config_file(path, allowed=(".toml", ".yaml", ".yml"))
    except FileNotFoundError:
        raise ManifestError(f"Visit protocol {path} does not exist. Potential fix: check the path.") from None
    except ConfigSyntaxError as exc:
        raise ManifestError(
            f"Visit protocol {path} cannot be parsed: it {exc}. Potential fix: fix the syntax."
        ) from None
    except ValueError as exc:
        raise ManifestError(f"Visit protocol {path}: {exc}. Potential fix: use a .toml or .yaml file.") from None
    if not isinstance(data, Mapping):
        raise ManifestError(f"Visit protocol {path}: expected a table of visits, got {type(data).__name__}.")
    return protocol_from_dict(data, source=str(path))


# -----------------------------------------------------------------------------
# manifest
# -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Manifest:
    """Arms, baselines and per-scan visit overrides of a trial.

    Attributes
    ----------
    patients : DataFrame
        One row per patient: ``patient_id`` (str), ``arm`` (str),
        ``baseline_date`` (datetime64, NaT when not given).
    overrides : DataFrame
        Per-scan rows: ``patient_id, series_uid, study_date, visit, line``;
        ``series_uid`` / ``visit`` are ``""`` and ``study_date`` NaT when absent.
    source : str
        File the manifest was read from.
    blinded : bool
        True when the arms were relabelled by :func:`blind_arms`.
    """

    patients: pd.DataFrame
    overrides: pd.DataFrame
    source: str = "<frame>"
    blinded: bool = False

    @property
    def arms(self) -> list[str]:
        return sorted(self.patients["arm"].unique())

    def arm_of(self) -> dict[str, str]:
        return dict(zip(self.patients["patient_id"], self.patients["arm"], strict=True))

    def __repr__(self) -> str:
        counts = self.patients["arm"].value_counts().sort_index()
        arms = ", ".join(f"{a}: {n}" for a, n in counts.items())
        return f"Manifest({self.source!r}, {len(self.patients)} patients ({arms}), {len(self.overrides)} scan rows)"


_MANIFEST_COLUMNS = ("patient_id", "arm", "baseline_date", "study_date", "series_uid", "visit")


def manifest_from_frame(df: pd.DataFrame, *, source: str = "<frame>") -> Manifest:
    """Validate a manifest table (see :func:`read_manifest`) and build a :class:`Manifest`."""
    df = df.copy()
    df.columns = [re.sub(r"[\s\-]+", "_", str(c).strip().lower()) for c in df.columns]
    missing = [c for c in ("patient_id", "arm") if c not in df.columns]
    if missing:
        raise ManifestError(
            f"Manifest {source}: missing column(s) {missing}; columns seen {list(df.columns)}. "
            "Potential fix: the header needs patient_id and arm (optional: baseline_date, study_date, "
            "series_uid, visit)."
        )
    unknown = [c for c in df.columns if c not in _MANIFEST_COLUMNS]
    if unknown:
        logger.info("Manifest %s: ignoring column(s) %s", source, unknown)
    for c in _MANIFEST_COLUMNS:
        if c not in df.columns:
            df[c] = ""
    for c in ("patient_id", "arm", "series_uid", "visit"):
        df[c] = df[c].map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip())
    df["line"] = np.arange(len(df)) + 2  # header is line 1
    if (df["patient_id"] == "").any():
        lines = df.loc[df["patient_id"] == "", "line"].tolist()[:5]
        raise ManifestError(f"Manifest {source}: empty patient_id on line(s) {lines}. Potential fix: fill it in.")
    df["baseline_date"] = to_dates(df["baseline_date"], where=f"manifest {source} column baseline_date")
    df["study_date"] = to_dates(df["study_date"], where=f"manifest {source} column study_date")

    patients = []
    for pid, g in df.groupby("patient_id", sort=True):
        arms = sorted(set(g["arm"]) - {""})
        if len(arms) != 1:
            raise ManifestError(
                f"Manifest {source}: patient {pid!r} has {'no arm' if not arms else f'arms {arms}'} "
                f"(lines {g['line'].tolist()}). Potential fix: give every patient exactly one arm."
            )
        baselines = sorted(set(g["baseline_date"].dropna()))
        if len(baselines) > 1:
            raise ManifestError(
                f"Manifest {source}: patient {pid!r} has baseline dates "
                f"{[d.date().isoformat() for d in baselines]}. Potential fix: keep one baseline_date per patient."
            )
        patients.append((pid, arms[0], baselines[0] if baselines else pd.NaT))
    patients_df = pd.DataFrame(patients, columns=["patient_id", "arm", "baseline_date"])
    patients_df["baseline_date"] = pd.to_datetime(patients_df["baseline_date"])

    scan_rows = df[(df["series_uid"] != "") | df["study_date"].notna()]
    no_visit = scan_rows["visit"] == ""
    overrides = scan_rows.loc[~no_visit, ["patient_id", "series_uid", "study_date", "visit", "line"]]
    orphan_visits = df[(df["visit"] != "") & (df["series_uid"] == "") & df["study_date"].isna()]
    if len(orphan_visits):
        raise ManifestError(
            f"Manifest {source}: lines {orphan_visits['line'].tolist()[:5]} give a visit but neither "
            "study_date nor series_uid. Potential fix: say which scan the visit is for."
        )
    dup = overrides[overrides["series_uid"] != ""].duplicated("series_uid", keep=False)
    if dup.any():
        rows = overrides[overrides["series_uid"] != ""][dup]
        raise ManifestError(
            f"Manifest {source}: series UID(s) {sorted(set(rows['series_uid']))[:3]} listed more than once "
            f"(lines {rows['line'].tolist()[:6]}). Potential fix: one visit per series."
        )
    return Manifest(patients_df, overrides.reset_index(drop=True), source=source)


def read_manifest(path: str | Path) -> Manifest:
    """Read a trial manifest CSV.

    Columns (header names are case-insensitive):

    - ``patient_id`` (required) -- as in the DICOM PatientID of the scans;
    - ``arm`` (required) -- treatment arm; one per patient (may repeat on
      every row of the patient);
    - ``baseline_date`` (optional) -- day 0 of the patient; default: the
      date of the scan placed at the baseline visit by an override, else the
      patient's first scan;
    - ``study_date`` or ``series_uid`` with ``visit`` (optional) -- per-scan
      rows pinning a scan to a visit; these win over the date windows.

    Dates may be ``YYYY-MM-DD`` or ``YYYYMMDD``.  All values are read as
    text, so patient ids keep leading zeros.

    Raises
    ------
    ManifestError
        Missing file or columns, a patient with zero or several arms, an
        unreadable date, a visit row that names no scan.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"Manifest {path} does not exist. Potential fix: check the path.")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, comment="#")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestError(
            f"Manifest {path} cannot be read as CSV: {exc}. Potential fix: save it as CSV (UTF-8)."
        ) from exc
    return manifest_from_frame(df, source=str(path))


def blind_arms(manifest: Manifest, *, key: str = "") -> Manifest:
    """Relabel the arms ``A``, ``B``, ... so a report can be read blind.

    The order is that of ``sha256(key + arm name)``: deterministic (the same
    manifest and key give the same labels), but not the alphabetical order
    of the arm names, so ``A`` does not reveal ``placebo``.  Pass a private
    ``key`` to make the mapping unguessable.  The mapping is not returned or
    written anywhere; rerun without blinding to unblind.
    """
    arms = manifest.arms
    order = sorted(arms, key=lambda a: hashlib.sha256(f"{key}\x00{a}".encode()).hexdigest())
    labels = {a: chr(ord("A") + i) if i < 26 else f"arm{i + 1}" for i, a in enumerate(order)}
    patients = manifest.patients.assign(arm=manifest.patients["arm"].map(labels))
    return Manifest(patients, manifest.overrides, source=manifest.source, blinded=True)


# -----------------------------------------------------------------------------
# assignment
# -----------------------------------------------------------------------------
def _scans_of(results: pd.DataFrame) -> pd.DataFrame:
    """One row per series from a results table (several regions per series allowed)."""
    need = ["series_uid", "patient_id", "study_date"]
    missing = [c for c in need if c not in results.columns]
    if missing:
        raise InputError(
            f"Results table lacks column(s) {missing}; columns seen {list(results.columns)[:12]}... "
            "Potential fix: pass lungdamage.load_results(store) or ScanResult.to_frame() rows."
        )
    cols = need + [c for c in ("slice_thickness_mm", "kernel") if c in results.columns]
    scans = results[cols].drop_duplicates("series_uid").copy()
    scans["patient_id"] = scans["patient_id"].fillna("").astype(str).str.strip()
    scans["series_uid"] = scans["series_uid"].astype(str)
    if "slice_thickness_mm" not in scans:
        scans["slice_thickness_mm"] = np.nan
    scans["slice_thickness_mm"] = pd.to_numeric(scans["slice_thickness_mm"], errors="coerce")
    return scans.reset_index(drop=True)


def assign_visits(
    results: pd.DataFrame,
    manifest: Manifest,
    *,
    protocol: Protocol | None = None,
) -> pd.DataFrame:
    """Place every scan of the manifest's patients at a protocol visit.

    Parameters
    ----------
    results : DataFrame
        Scored scans, one or more rows per ``series_uid`` (as from
        :func:`lungdamage.load_results`); needs ``series_uid, patient_id,
        study_date``.
    manifest : Manifest
    protocol : Protocol, optional
        Default: :func:`default_protocol`.

    Returns
    -------
    DataFrame
        One row per scan of a manifest patient, sorted by patient and date:
        ``patient_id, arm, series_uid, study_date, baseline_date, day,
        visit, visit_day, assigned_by, used, off_window, flag, slice_thickness_mm,
        kernel``.  ``day`` = study date − baseline date (days).
        ``off_window`` is True for a scan a manifest override places at a
        visit whose window does not hold its day (used, and flagged).
        ``assigned_by`` is ``override:series_uid``, ``override:study_date``,
        ``window`` or ``none``; ``used`` is False for scans outside every
        window, without a date, or not chosen among several in one window
        (:data:`SELECTION_RULE`); ``flag`` explains every such case.
        ``attrs["notes"]`` lists manifest rows that matched no scan and
        scans of patients missing from the manifest.

    Raises
    ------
    ManifestError
        An override names a visit the protocol does not have, or a series
        of another patient.
    """
    protocol = read_protocol(protocol)
    scans, owner, notes = _manifest_scans(_scans_of(results), manifest)
    _apply_overrides(scans, manifest, protocol, owner, notes)
    _add_baseline_and_day(scans, manifest, protocol)
    _flag_off_window_overrides(scans, protocol)
    _assign_by_window(scans, protocol)
    scans["visit_day"] = scans["visit"].map({v.name: v.day for v in protocol.visits}).astype("Int64")
    scans["used"] = scans["visit"].notna()
    _choose_one_per_visit(scans)

    order = ["patient_id", "arm", "series_uid", "study_date", "baseline_date", "day", "visit", "visit_day",
             "assigned_by", "used", "off_window", "flag", "slice_thickness_mm", "kernel"]
    if "kernel" not in scans:
        scans["kernel"] = ""
    out = scans[order].sort_values(["patient_id", "study_date", "series_uid"]).reset_index(drop=True)
    out.attrs["notes"] = notes
    for n in notes:
        logger.warning("%s", n)
    return out


def _manifest_scans(scans: pd.DataFrame, manifest: Manifest) -> tuple[pd.DataFrame, dict, list[str]]:
    """The scans of manifest patients with empty assignment columns, every scan's owner, and notes
    on patients seen on one side only."""
    notes: list[str] = []
    arm_of = manifest.arm_of()
    unknown = sorted(set(scans["patient_id"]) - set(arm_of))
    if unknown:
        n = int(scans["patient_id"].isin(unknown).sum())
        notes.append(
            f"{n} scan(s) of {len(unknown)} patient(s) not in the manifest were ignored: "
            f"{', '.join(repr(p) for p in unknown[:10])}{' ...' if len(unknown) > 10 else ''}."
        )
    owner = dict(zip(scans["series_uid"], scans["patient_id"], strict=True))
    scans = scans[scans["patient_id"].isin(set(arm_of))].copy()
    no_scans = sorted(set(arm_of) - set(scans["patient_id"]))
    if no_scans:
        notes.append(f"{len(no_scans)} manifest patient(s) have no scored scan: {', '.join(no_scans[:10])}.")
    scans["arm"] = scans["patient_id"].map(arm_of)
    scans["study_date"] = to_dates(scans["study_date"], where="results column study_date")
    scans["visit"] = pd.Series([None] * len(scans), index=scans.index, dtype=object)
    scans["assigned_by"] = "none"
    scans["flag"] = ""
    return scans, owner, notes


def _apply_overrides(scans: pd.DataFrame, manifest: Manifest, protocol: Protocol, owner: dict,
                     notes: list[str]) -> None:
    """Explicit manifest overrides (``scans`` modified): series UID first, then (patient, study date)."""
    for row in manifest.overrides.itertuples(index=False):
        where = f"manifest {manifest.source} line {row.line}"
        visit = protocol.lookup(row.visit, where=where).name
        if row.series_uid:
            if owner.get(row.series_uid, row.patient_id) != row.patient_id:
                raise ManifestError(
                    f"{where}: series {row.series_uid} belongs to patient {owner[row.series_uid]!r}, not "
                    f"{row.patient_id!r}. Potential fix: correct the patient_id or the series_uid."
                )
            hit = scans["series_uid"] == row.series_uid
            how = "override:series_uid"
        else:
            hit = (scans["patient_id"] == row.patient_id) & (scans["study_date"] == row.study_date)
            hit &= ~scans["assigned_by"].eq("override:series_uid")
            how = "override:study_date"
        if not hit.any():
            what = row.series_uid or row.study_date.date().isoformat()
            notes.append(f"{where}: no scored scan of patient {row.patient_id!r} matches {what} (visit {visit!r}).")
            continue
        scans.loc[hit, "visit"] = visit
        scans.loc[hit, "assigned_by"] = how


def _add_baseline_and_day(scans: pd.DataFrame, manifest: Manifest, protocol: Protocol) -> None:
    """``baseline_date`` per patient (manifest > scan pinned to the baseline visit > first scan) and
    ``day`` since it."""
    baseline = manifest.patients.set_index("patient_id")["baseline_date"]
    pinned = scans[scans["visit"] == protocol.baseline.name].groupby("patient_id")["study_date"].min()
    first = scans.groupby("patient_id")["study_date"].min()
    base = baseline.reindex(first.index).fillna(pinned.reindex(first.index)).fillna(first)
    scans["baseline_date"] = scans["patient_id"].map(base)
    scans["day"] = (scans["study_date"] - scans["baseline_date"]).dt.days.astype("Int64")


def _flag_off_window_overrides(scans: pd.DataFrame, protocol: Protocol) -> None:
    """A manifest override decides the visit, but one outside that visit's window is flagged, never silent."""
    scans["off_window"] = False
    spec = {v.name: v for v in protocol.visits}
    pinned_rows = scans.index[scans["assigned_by"].str.startswith("override") & scans["day"].notna()]
    for i in pinned_rows:
        v, day = spec[scans.at[i, "visit"]], int(scans.at[i, "day"])
        if abs(day - v.day) > v.window_days:
            scans.at[i, "off_window"] = True
            scans.at[i, "flag"] = (
                f"off window: the manifest places day {day} at visit {v.name!r}, whose window is days "
                f"{v.day - v.window_days}–{v.day + v.window_days}; used as the manifest says"
            )


def _assign_by_window(scans: pd.DataFrame, protocol: Protocol) -> None:
    """Date windows for the scans no override placed (vectorised over scans × visits)."""
    free = (scans["assigned_by"] == "none") & scans["day"].notna()
    nominal_day = np.array([v.day for v in protocol.visits])
    window_days = np.array([v.window_days for v in protocol.visits])
    if free.any():
        day = scans.loc[free, "day"].to_numpy(dtype=np.int64)[:, None]
        distance_days = np.abs(day - nominal_day[None, :])
        inside = distance_days <= window_days[None, :]
        best = np.where(inside, distance_days, np.iinfo(np.int64).max).argmin(axis=1)
        ok = inside.any(axis=1)
        idx = scans.index[free]
        scans.loc[idx[ok], "visit"] = np.array(protocol.names, dtype=object)[best[ok]]
        scans.loc[idx[ok], "assigned_by"] = "window"
        outside_days = np.maximum(distance_days - window_days[None, :], 0)  # days from each window's edge
        for i, d, b in zip(idx[~ok], day[~ok, 0], outside_days[~ok].argmin(axis=1), strict=True):
            v = protocol.visits[b]
            scans.loc[i, "flag"] = (
                f"out of window: day {d} is outside every visit window (nearest window: {v}); not used"
            )
    undated = scans["day"].isna() & (scans["assigned_by"] == "none")
    scans.loc[undated, "flag"] = "no study date and no manifest override; not used"


def _choose_one_per_visit(scans: pd.DataFrame) -> None:
    """Several scans in one patient's visit: keep one by :data:`SELECTION_RULE`, flag every one."""
    scans["_override"] = scans["assigned_by"].str.startswith("override").astype(int)
    scans["_dist"] = (scans["day"] - scans["visit_day"]).abs().astype("float").fillna(np.inf)
    scans["_thick"] = scans["slice_thickness_mm"].fillna(np.inf)
    scans["_date"] = scans["study_date"].fillna(pd.Timestamp.max)
    ranked = scans[scans["used"]].sort_values(
        ["patient_id", "visit", "_override", "_dist", "_date", "_thick", "series_uid"],
        ascending=[True, True, False, True, True, True, True],
    )
    n_in = ranked.groupby(["patient_id", "visit"])["series_uid"].transform("size")
    rank = ranked.groupby(["patient_id", "visit"]).cumcount()
    for i in ranked.index[(n_in > 1).to_numpy()]:
        k, n, visit = int(rank[i]), int(n_in[i]), scans.at[i, "visit"]
        if k == 0:
            why = f"chosen among {n} scans at visit {visit!r} (rule: {SELECTION_RULE})"
        else:
            scans.at[i, "used"] = False
            why = f"not used: another of {n} scans at visit {visit!r} was chosen (rule: {SELECTION_RULE})"
        scans.at[i, "flag"] = "; ".join(f for f in (scans.at[i, "flag"], why) if f)


# -----------------------------------------------------------------------------
# per-patient x visit table
# -----------------------------------------------------------------------------
#: Measures carried into the visit table when the results have them.
MEASURES = ("damage_pct", "ggo_pct", "consolidation_pct", "lesion_pct")
_PROVENANCE = ("scheme", "region_set", "method", "params_hash", "version")


def select_results(
    results: pd.DataFrame,
    *,
    region: str = "total",
    params_hash: str | None = None,
) -> pd.DataFrame:
    """Rows of one region, one row per series, from a results table.

    Rows with a non-empty ``error`` column (failed scans of a batch) are
    dropped.

    Raises
    ------
    InputError
        The region is absent, or a series was scored under several parameter
        sets and ``params_hash`` does not say which to use.
    """
    df = results
    if "error" in df.columns:
        df = df[df["error"].fillna("").astype(str).str.strip() == ""]
    if "region" not in df.columns:
        raise InputError(
            f"Results table has no 'region' column (columns: {list(results.columns)[:12]}). "
            "Potential fix: pass lungdamage.load_results(store) or ScanResult.to_frame() rows."
        )
    present = sorted(df["region"].dropna().astype(str).unique())
    sel = df[df["region"] == region]
    if sel.empty:
        raise InputError(
            f"No results for region {region!r}; regions present: {present}. Potential fix: choose one of these "
            "(e.g. --region total)."
        )
    if params_hash is not None and "params_hash" in sel.columns:
        hashes = sorted(sel["params_hash"].astype(str).unique())
        sel = sel[sel["params_hash"].astype(str) == params_hash]
        if sel.empty:
            raise InputError(
                f"No results with params_hash {params_hash!r}; present: {hashes}. Potential fix: use one of these."
            )
    dup = sel["series_uid"].duplicated(keep=False)
    if dup.any():
        for col in ("params_hash", "run_hash"):
            if col in sel.columns and sel.loc[dup].groupby("series_uid")[col].nunique().max() > 1:
                counts = sel[col].astype(str).value_counts().to_dict()
                raise InputError(
                    f"Some series were scored under several parameter sets ({col}: scans {counts}). "
                    f"Potential fix: pass params_hash= (CLI --params-hash) or load_results(run_hash=...) "
                    "(CLI --run-hash) to choose one."
                )
        logger.info("%d duplicate result rows of the same series and parameters; keeping the last", int(dup.sum()))
        sel = sel.drop_duplicates("series_uid", keep="last")
    return sel.reset_index(drop=True)


def visit_table(
    results: pd.DataFrame,
    manifest: Manifest,
    *,
    protocol: Protocol | None = None,
    region: str = "total",
    metric: str = "damage_pct",
    params_hash: str | None = None,
    assignments: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per-patient × visit values and their change from baseline.

    Parameters
    ----------
    results : DataFrame
        Results table (:func:`lungdamage.load_results`), one row per scan × region.
    manifest : Manifest
    protocol : Protocol, optional
    region : str
        Region whose values are tabled (``total``, ``right``, ``RUL``, ...).
    metric : str
        Primary metric (a numeric results column); always included.
    params_hash : str, optional
        Which parameter set to use when the store holds several.
    assignments : DataFrame, optional
        Output of :func:`assign_visits` (computed when not given).

    Returns
    -------
    DataFrame
        One row per patient and visit with a used scan, ordered by patient
        and nominal day: ``patient_id, arm, visit, visit_day, day,
        study_date, series_uid``, the measures (``metric``, ``damage_pct``,
        ``ggo_pct``, ``consolidation_pct`` and any ``css_*`` CT severity
        score columns present), ``<measure>_change`` (value − the patient's
        baseline-visit value; NaN without a baseline scan), then
        ``slice_thickness_mm, kernel`` and the provenance columns present
        (``scheme, region_set, method, params_hash, version``),
        ``scan_warnings``, ``flag`` and ``off_window``.

    Raises
    ------
    InputError
        Unknown region or metric, or ambiguous parameter sets.
    """
    protocol = read_protocol(protocol)
    sel = select_results(results, region=region, params_hash=params_hash)
    if metric not in sel.columns or not pd.api.types.is_numeric_dtype(sel[metric]):
        numeric = [c for c in sel.columns if pd.api.types.is_numeric_dtype(sel[c])]
        raise InputError(
            f"Metric {metric!r} is not a numeric results column. Potential fix: choose one of {numeric}."
        )
    if assignments is None:
        assignments = assign_visits(sel, manifest, protocol=protocol)
    used = assignments[assignments["used"]]
    measures = [metric] + [m for m in MEASURES if m != metric and m in sel.columns]
    measures += sorted(c for c in sel.columns if c.startswith("css") and c not in measures
                       and pd.api.types.is_numeric_dtype(sel[c]))
    extra = [c for c in _PROVENANCE if c in sel.columns]
    right = sel[["series_uid", *measures, *extra] + (["warnings"] if "warnings" in sel.columns else [])]
    right = right.rename(columns={"warnings": "scan_warnings"})
    table = used.drop(columns=["used", "assigned_by", "baseline_date"]).merge(right, on="series_uid", how="left")
    base = table[table["visit"] == protocol.baseline.name].set_index("patient_id")[measures]
    for m in measures:
        table[f"{m}_change"] = table[m] - table["patient_id"].map(base[m])
    notes = list(assignments.attrs.get("notes", []))
    if region in _LOBES:
        notes += _same_lobe_method(table, measures, region)
    table["study_date"] = table["study_date"].dt.strftime("%Y-%m-%d")
    if "scan_warnings" not in table:
        table["scan_warnings"] = ""
    table["scan_warnings"] = table["scan_warnings"].fillna("")
    cols = ["patient_id", "arm", "visit", "visit_day", "day", "study_date", "series_uid", *measures,
            *[f"{m}_change" for m in measures], "slice_thickness_mm", "kernel", *extra, "scan_warnings", "flag",
            "off_window"]
    table = table[cols].sort_values(["patient_id", "visit_day"]).reset_index(drop=True)
    table.attrs["notes"] = notes
    table.attrs["measures"] = measures
    return table


_LOBES = ("RUL", "RML", "RLL", "LUL", "LLL")


def _lobe_method(table: pd.DataFrame) -> pd.Series:
    """``region_set by method`` of each row (``lobes by lungmask:LTRCLobes_R231``, ``lobes-approx by threshold``)."""
    rs = table["region_set"].fillna("?").astype(str) if "region_set" in table else pd.Series("?", table.index)
    me = table["method"].fillna("?").astype(str) if "method" in table else pd.Series("?", table.index)
    return rs + " by " + me


def _same_lobe_method(table: pd.DataFrame, measures: list[str], region: str) -> list[str]:
    """Blank the per-lobe changes of patients whose visits used different lobe methods; notes saying so.

    A lobe boundary that moves between visits because the method changed
    (true lobes at one visit, ``lobes-approx`` at another) is not a change of
    the lung.
    """
    kind = _lobe_method(table)
    n_kinds = kind.groupby(table["patient_id"]).transform("nunique")
    mixed = n_kinds > 1
    notes = [f"Per-lobe change ({region}) is reported only for patients whose visits all used the same lobe "
             "method (region set and segmentation method)."]
    if mixed.any():
        for m in measures:
            table.loc[mixed, f"{m}_change"] = np.nan
        for pid, g in table[mixed].groupby("patient_id", sort=True):
            detail = ", ".join(f"{v}: {k}" for v, k in zip(g["visit"], kind[g.index], strict=True))
            notes.append(f"{pid}: {region} change not reported, the lobe method differs between visits ({detail}).")
    return notes


def comparability_warnings(table: pd.DataFrame) -> pd.DataFrame:
    """Things that make visits or patients less comparable.

    Per patient: slice thickness or reconstruction kernel changed between
    the visits used.  Study-wide (``patient_id`` ``*``): more than one
    scheme, region set, segmentation method, parameter hash or version among
    the rows; and each distinct warning recorded at scoring time, with the
    scans it concerns.

    Returns
    -------
    DataFrame
        ``patient_id, issue, detail``; empty when nothing was found.
    """
    rows: list[tuple[str, str, str]] = []
    for col, what in (("scheme", "scheme"), ("region_set", "region set"), ("method", "segmentation method"),
                      ("params_hash", "parameter hash"), ("version", "lungdamage version")):
        if col in table.columns:
            vals = sorted(set(table[col].dropna().astype(str)) - {""})
            if len(vals) > 1:
                rows.append(("*", f"{what} differs between scans", ", ".join(vals)))
    for pid, g in table.groupby("patient_id", sort=True):
        kind = _lobe_method(g)
        if kind.nunique() > 1:
            detail = ", ".join(f"{v}: {k}" for v, k in zip(g["visit"], kind, strict=True))
            rows.append((pid, "regions segmented differently between visits", detail))
        thick = g["slice_thickness_mm"].astype(float)
        if thick.dropna().round(2).nunique() > 1:
            detail = ", ".join(f"{v}: {t:g} mm" for v, t in zip(g["visit"], thick, strict=True) if np.isfinite(t))
            rows.append((pid, "slice thickness changed between visits", detail))
        kern = g["kernel"].fillna("").astype(str).str.strip()
        if kern[kern != ""].nunique() > 1:
            detail = ", ".join(f"{v}: {k or '?'}" for v, k in zip(g["visit"], kern, strict=True))
            rows.append((pid, "reconstruction kernel changed between visits", detail))
    if "scan_warnings" in table.columns:
        # one row per distinct message (they are usually the same on every scan of a protocol)
        per_msg: dict[str, list[str]] = {}
        warnings_text = table["scan_warnings"].astype(str)
        for pid, visit, text in zip(table["patient_id"], table["visit"], warnings_text, strict=True):
            for msg in filter(None, (m.strip() for m in text.split(";"))):
                per_msg.setdefault(msg, []).append(f"{pid} {visit}")
        for msg, where in per_msg.items():
            scope = "every scan" if len(where) == len(table) else (
                ", ".join(where[:8]) + (f" and {len(where) - 8} more" if len(where) > 8 else ""))
            rows.append(("*", f"scoring warning on {len(where)} of {len(table)} scans", f"{msg} ({scope})"))
    return pd.DataFrame(rows, columns=["patient_id", "issue", "detail"])
