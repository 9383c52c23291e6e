"""Result store of batch runs: one embedded SQLite file (standard library only).

Design
------
- **One writer.**  Only the process that runs the batch writes the store;
  workers return their results.  An advisory lock file (``<store>.lock``,
  ``fcntl.flock``) refuses a second concurrent writer; the kernel drops it
  when the writer dies, even by ``kill -9``.
- **One transaction per finished series**, WAL journal, ``synchronous=FULL``:
  a series is either completely stored (scan row + all its region rows) or
  not at all, so a batch killed at any moment loses at most the series in
  flight and never leaves half a series behind.
- **Resume key** ``(series_uid, run_hash, version)`` is UNIQUE in ``scans``
  and in ``failures``: ``run_hash`` hashes the analysis options *before* any
  scan is read (:func:`lungdamage.batch.runner.BatchParams.run_hash`), so a
  rerun knows what is done without reading pixels; ``version`` is the
  lungdamage version.  A success deletes any earlier failure of the same key
  in the same transaction.
- **Flexible metrics.**  Each region row keeps the complete
  :meth:`ScanResult.to_frame` row as JSON, so columns added to the table by
  later versions are stored without a schema change; provenance that is
  queried (UIDs, patient, date, kernel, thickness, method, scheme, hashes) is
  also in real columns of ``scans``.  The exact per-region HU histograms are
  kept too (``scans.histograms``, ``.npy`` bytes), so results can be
  re-derived later without re-reading the scans.

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`)
---------------------------------------------------------
``scans``
    one row per stored series: ``scan_id``, key columns, ``study_uid,
    patient_id, study_date, study_time, modality, series_description, kernel,
    slice_thickness_mm, manufacturer, input_hash, source, method, scheme,
    region_set, params_hash`` (the :class:`ScanResult`'s), ``params_json,
    versions_json, warnings_json, timings_json, regions_json, dtypes_json, hist_lo_hu,
    voxel_volume_ml, histograms, hook_json, elapsed_s, worker, run_id,
    finished_at``.
``region_metrics``
    ``(scan_id, row, region, metrics_json)``: one row per scan × region.
``failures``
    ``(series_uid, run_hash, version, stage, error_type, message, source,
    patient_id, study_date, attempts, run_id, finished_at)``.
``excluded``
    series the selection policy left out, with the reason (latest run).
``runs``
    one row per batch run: options, engine, start/end time and counts.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import math
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError

__all__ = [
    "ResultStore",
    "Failure",
    "load_results",
    "load_failures",
    "SCHEMA_VERSION",
    "EXTRA_COLUMNS",
]

log = logging.getLogger(__name__)

#: Schema version written to ``PRAGMA user_version``.
SCHEMA_VERSION = 1

#: Columns :func:`load_results` appends to the ``ScanResult.to_frame()`` columns (unless already there).
EXTRA_COLUMNS = ("study_uid", "study_time", "series_description", "modality", "manufacturer", "run_hash", "scan_id")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id        INTEGER PRIMARY KEY,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    root          TEXT,
    run_hash      TEXT NOT NULL,
    version       TEXT NOT NULL,
    params_json   TEXT NOT NULL,
    engine        TEXT,
    counts_json   TEXT
);
CREATE TABLE IF NOT EXISTS scans (
    scan_id            INTEGER PRIMARY KEY,
    series_uid         TEXT NOT NULL,
    run_hash           TEXT NOT NULL,
    version            TEXT NOT NULL,
    study_uid          TEXT,
    patient_id         TEXT,
    study_date         TEXT,
    study_time         TEXT,
    modality           TEXT,
    series_description TEXT,
    kernel             TEXT,
    slice_thickness_mm REAL,
    manufacturer       TEXT,
    input_hash         TEXT,
    source             TEXT,
    method             TEXT,
    scheme             TEXT,
    region_set         TEXT,
    params_hash        TEXT,
    params_json        TEXT,
    versions_json      TEXT,
    warnings_json      TEXT,
    timings_json       TEXT,
    regions_json       TEXT,
    dtypes_json        TEXT,
    hist_lo_hu         INTEGER,
    voxel_volume_ml    REAL,
    histograms         BLOB,
    hook_json          TEXT,
    elapsed_s          REAL,
    worker             TEXT,
    run_id             INTEGER REFERENCES runs(run_id),
    finished_at        TEXT NOT NULL,
    UNIQUE (series_uid, run_hash, version)
);
CREATE INDEX IF NOT EXISTS scans_patient ON scans (patient_id, study_date);
CREATE TABLE IF NOT EXISTS region_metrics (
    scan_id      INTEGER NOT NULL REFERENCES scans(scan_id) ON DELETE CASCADE,
    row          INTEGER NOT NULL,
    region       TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    PRIMARY KEY (scan_id, row)
);
CREATE TABLE IF NOT EXISTS failures (
    failure_id  INTEGER PRIMARY KEY,
    series_uid  TEXT NOT NULL,
    run_hash    TEXT NOT NULL,
    version     TEXT NOT NULL,
    stage       TEXT NOT NULL,
    error_type  TEXT NOT NULL,
    message     TEXT NOT NULL,
    source      TEXT,
    patient_id  TEXT,
    study_date  TEXT,
    attempts    INTEGER NOT NULL DEFAULT 1,
    run_id      INTEGER REFERENCES runs(run_id),
    finished_at TEXT NOT NULL,
    UNIQUE (series_uid, run_hash, version)
);
CREATE TABLE IF NOT EXISTS excluded (
    series_uid  TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    source      TEXT,
    patient_id  TEXT,
    study_date  TEXT,
    modality    TEXT,
    run_id      INTEGER REFERENCES runs(run_id)
);
"""


@dataclass(frozen=True)
class Failure:
    """Why one series could not be scored.

    Attributes
    ----------
    stage : str
        ``read``, ``segment``, ``score``, ``analyze`` or ``worker`` (the worker
        process died: crash, out of memory, killed).
    error_type : str
        Exception class name (``DicomSeriesError``, ``BrokenProcessPool``...).
    message : str
        The error message (what, where, values seen, potential fix).
    """

    stage: str
    error_type: str
    message: str

    @property
    def reason(self) -> str:
        """Short grouping key for summaries: ``stage: error_type``."""
        return f"{self.stage}: {self.error_type}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _plain(value: Any) -> Any:
    """Standard-JSON-ready Python value: numpy scalars to Python, NaN/inf to None (SQLite's json
    functions reject NaN; :meth:`ResultStore.results` turns numeric columns' None back into NaN)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _dumps(value: Any) -> str:
    return json.dumps(_plain(value), separators=(",", ":"), default=str, allow_nan=False)


def _is_number_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _hist_bytes(hist: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(hist), allow_pickle=False)
    return buf.getvalue()


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


class _WriterLock:
    """Advisory exclusive lock on ``<store>.lock``; released by the kernel if we die."""

    def __init__(self, path: Path):
        self.path = path.with_name(path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        # O_NOFOLLOW: a symbolic link planted at the lock's name is refused, never followed (the
        # truncate below would otherwise empty its target); only a regular file is used as a lock
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK) or os.path.islink(self.path):
                raise StoreError(
                    f"Lock file {self.path} is a symbolic link; refusing to follow it. "
                    "Potential fix: remove the link, or give this run another --store."
                ) from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StoreError(
                f"Lock file {self.path} exists and is not a regular file. "
                "Potential fix: remove it, or give this run another --store."
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"Result store {self.path.with_suffix('')} is being written by another batch "
                f"(lock {self.path} is held). Potential fix: wait for the other run to finish, "
                "or give this run its own --store."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _scan_row(parts: list[Any], frame, uid: str, *, run_hash: str, version: str, source: str,
              elapsed_s: float | None, worker: str, run_id: int | None, hook_value: Any) -> dict[str, Any]:
    """The ``scans`` row of one scored series (``parts``: its result under each scheme)."""
    first = parts[0]
    meta = first.meta
    return {
        "series_uid": uid,
        "run_hash": run_hash,
        "version": version,
        "study_uid": meta.study_uid,
        "patient_id": meta.patient_id,
        "study_date": meta.study_date,
        "study_time": meta.study_time,
        "modality": meta.modality,
        "series_description": meta.series_description,
        "kernel": meta.kernel,
        "slice_thickness_mm": _opt_float(meta.slice_thickness_mm),
        "manufacturer": meta.manufacturer,
        "input_hash": meta.input_hash,
        "source": source or meta.source,
        "method": first.method,
        "scheme": ",".join(r.scheme.name for r in parts),
        "region_set": first.region_set,
        "params_hash": ",".join(dict.fromkeys(r.params_hash for r in parts)),
        "params_json": _dumps([r.params for r in parts] if len(parts) > 1 else first.params),
        "versions_json": _dumps(first.versions),
        "warnings_json": _dumps(list(first.warnings)),
        "timings_json": _dumps(first.timings_s),
        "regions_json": _dumps(list(first.regions)),
        "dtypes_json": _dumps({str(c): frame[c].dtype.kind for c in frame.columns}),
        # one segmentation and one kernel pass: the histograms are those of every scheme
        "hist_lo_hu": int(first.hist_lo_hu),
        "voxel_volume_ml": float(first.voxel_volume_ml),
        "histograms": _hist_bytes(first.histograms),
        "hook_json": None if hook_value is None else _dumps(hook_value),
        "elapsed_s": elapsed_s,
        "worker": worker,
        "run_id": run_id,
        "finished_at": _now(),
    }


def _row_id(cur: sqlite3.Cursor) -> int:
    """The row id of the row an INSERT just added."""
    if cur.lastrowid is None:
        raise StoreError("SQLite returned no row id for an INSERT. Potential fix: report this as a bug.")
    return int(cur.lastrowid)


class ResultStore:
    """SQLite result store of batch runs (see the module docstring for the schema).

    Parameters
    ----------
    path : path
        The ``.sqlite`` file; created with its folder when ``readonly`` is False.
    readonly : bool
        Open for reading only (no lock, no schema creation).

    Raises
    ------
    StoreError
        The file is not a lungdamage store, has a newer schema, or another
        process is writing it.

    Examples
    --------
    >>> with ResultStore("results.sqlite") as store:  # doctest: +SKIP
    ...     store.done_keys(run_hash, version)
    """

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._lock: _WriterLock | None = None
        if readonly:
            if not self.path.is_file():
                raise StoreError(
                    f"Result store {self.path} does not exist. Potential fix: check the path, "
                    "or create it with `lungdamage batch ROOT --store FILE`."
                )
            uri = f"file:{self.path.resolve()}?mode=ro"
            self._conn = self._connect(uri, uri=True)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = _WriterLock(self.path)
            self._lock.acquire()
            try:
                self._conn = self._connect(str(self.path))
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
            except BaseException:
                self._lock.release()
                raise
        self._check_schema()

    def _connect(self, target: str, *, uri: bool = False) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(target, uri=uri, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"Result store {self.path} cannot be opened as SQLite ({exc}). "
                "Potential fix: give a new file name to --store; the file may not be a lungdamage store."
            ) from exc
        return conn

    def _check_schema(self) -> None:
        conn = self._conn
        user_version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if user_version > SCHEMA_VERSION:
            raise StoreError(
                f"Result store {self.path} has schema version {user_version}; this lungdamage "
                f"reads up to {SCHEMA_VERSION}. Potential fix: upgrade lungdamage."
            )
        if user_version == 0 and tables:
            raise StoreError(
                f"{self.path} is an SQLite file but not a lungdamage result store "
                f"(tables {sorted(tables)}). Potential fix: give a new file name to --store."
            )
        if user_version == 0:
            if self.readonly:
                raise StoreError(f"Result store {self.path} is empty. Potential fix: run `lungdamage batch` first.")
            # executescript commits any open transaction first: the script carries its own
            self._conn.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nPRAGMA user_version={SCHEMA_VERSION};\nCOMMIT;")

    # -- plumbing ------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; ``ROLLBACK`` when the block raises (anything, an interrupt too)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection and release the writer lock."""
        conn = vars(self).pop("_conn", None)  # closed: any later query fails at once
        if conn is not None:
            conn.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r}, readonly={self.readonly})"

    # -- runs -------------------------------------------------------------------------
    def begin_run(self, *, root: str, run_hash: str, version: str, params: Mapping[str, Any], engine: str) -> int:
        """Record the start of a batch run; returns its ``run_id``."""
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO runs (started_at, root, run_hash, version, params_json, engine) VALUES (?,?,?,?,?,?)",
                (_now(), root, run_hash, version, _dumps(params), engine),
            )
            return _row_id(cur)

    def end_run(self, run_id: int, counts: Mapping[str, Any]) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE runs SET finished_at=?, counts_json=? WHERE run_id=?", (_now(), _dumps(counts), run_id)
            )

    # -- resume ----------------------------------------------------------------------
    def done_keys(self, run_hash: str, version: str) -> set[str]:
        """Series UIDs already stored for these options and version."""
        rows = self._conn.execute("SELECT series_uid FROM scans WHERE run_hash=? AND version=?", (run_hash, version))
        return {r[0] for r in rows}

    def failed_keys(self, run_hash: str, version: str) -> dict[str, str]:
        """``{series_uid: "stage: error_type"}`` of recorded failures for these options and version."""
        rows = self._conn.execute(
            "SELECT series_uid, stage, error_type FROM failures WHERE run_hash=? AND version=?", (run_hash, version)
        )
        return {r[0]: f"{r[1]}: {r[2]}" for r in rows}

    # -- writing ---------------------------------------------------------------------
    def save_result(
        self,
        result: Any,
        *,
        run_hash: str,
        version: str,
        source: str = "",
        elapsed_s: float | None = None,
        worker: str = "",
        run_id: int | None = None,
        hook_value: Any = None,
        series_uid: str | None = None,
    ) -> int:
        """Store one :class:`ScanResult` (scan row + one row per region) in one transaction.

        An existing row with the same key is replaced (``--force``); an earlier
        failure of the key is deleted.  Returns the new ``scan_id``.
        """
        parts = list(result) if isinstance(result, tuple) else [result]  # ResultSet: one per scheme
        if not parts:
            raise StoreError("Cannot store an empty result set. Potential fix: score with at least one scheme.")
        first = parts[0]
        frame = result.to_frame()
        meta = first.meta
        uid = series_uid or meta.series_uid
        if not uid:
            raise StoreError(
                f"Cannot store the result of {meta.key}: it has no series UID. "
                "Potential fix: batch stores DICOM series only; score image files with `lungdamage score`."
            )
        records = frame.to_dict(orient="records")
        scan_row = _scan_row(parts, frame, uid, run_hash=run_hash, version=version, source=source,
                             elapsed_s=elapsed_s, worker=worker, run_id=run_id, hook_value=hook_value)
        cols = ", ".join(scan_row)
        marks = ", ".join("?" for _ in scan_row)
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM scans WHERE series_uid=? AND run_hash=? AND version=?", (uid, run_hash, version)
            )
            cur = conn.execute(f"INSERT INTO scans ({cols}) VALUES ({marks})", tuple(scan_row.values()))
            scan_id = _row_id(cur)
            conn.executemany(
                "INSERT INTO region_metrics (scan_id, row, region, metrics_json) VALUES (?,?,?,?)",
                [(scan_id, i, str(rec["region"]), _dumps(rec)) for i, rec in enumerate(records)],
            )
            conn.execute(
                "DELETE FROM failures WHERE series_uid=? AND run_hash=? AND version=?", (uid, run_hash, version)
            )
        return scan_id

    def save_failure(
        self,
        series_uid: str,
        failure: Failure,
        *,
        run_hash: str,
        version: str,
        source: str = "",
        patient_id: str = "",
        study_date: str = "",
        run_id: int | None = None,
    ) -> None:
        """Record (or update, counting attempts) the failure of one series, in one transaction."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO failures (series_uid, run_hash, version, stage, error_type, message, source, "
                "patient_id, study_date, attempts, run_id, finished_at) VALUES (?,?,?,?,?,?,?,?,?,1,?,?) "
                "ON CONFLICT (series_uid, run_hash, version) DO UPDATE SET stage=excluded.stage, "
                "error_type=excluded.error_type, message=excluded.message, source=excluded.source, "
                "attempts=failures.attempts+1, run_id=excluded.run_id, finished_at=excluded.finished_at",
                (
                    series_uid, run_hash, version, failure.stage, failure.error_type, failure.message,
                    source, patient_id, study_date, run_id, _now(),
                ),
            )

    def save_excluded(self, rows: Iterable[Mapping[str, Any]], *, run_id: int | None = None) -> None:
        """Record series left out by the selection policy (``series_uid, reason, source, ...``)."""
        rows = list(rows)
        if not rows:
            return
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO excluded (series_uid, reason, source, patient_id, study_date, modality, "
                "run_id) VALUES (?,?,?,?,?,?,?)",
                [
                    (
                        r["series_uid"], r["reason"], r.get("source", ""), r.get("patient_id", ""),
                        r.get("study_date", ""), r.get("modality", ""), run_id,
                    )
                    for r in rows
                ],
            )

    # -- reading ---------------------------------------------------------------------
    def results(self, *, run_hash: str | None = None, version: str | None = None):
        """Region metrics joined with scan provenance: one row per scan × region.

        Columns: those of :meth:`ScanResult.to_frame` (as stored; a column added
        by a later version is NaN for older rows) followed by
        :data:`EXTRA_COLUMNS`.  Sorted by patient, study date, series UID, then
        region order.
        """
        import pandas as pd

        where, args = self._filter(run_hash, version)
        rows = self._conn.execute(
            "SELECT m.metrics_json, s.study_uid, s.study_time, s.series_description, s.modality, "
            "s.manufacturer, s.run_hash, s.scan_id, s.dtypes_json FROM region_metrics m JOIN scans s USING (scan_id)"
            f"{where} ORDER BY s.patient_id, s.study_date, s.series_uid, s.run_hash, s.version, m.row",
            args,
        ).fetchall()
        records = []
        columns: dict[str, None] = {}
        kinds: dict[str, str] = {}
        seen_dtypes: set[str] = set()
        for metrics_json, *extra, dtypes_json in rows:
            if dtypes_json not in seen_dtypes:
                seen_dtypes.add(dtypes_json)
                for name, kind in json.loads(dtypes_json or "{}").items():
                    kinds.setdefault(name, kind)
            rec = json.loads(metrics_json)
            columns.update(dict.fromkeys(rec))
            for name, value in zip(EXTRA_COLUMNS, extra, strict=True):
                rec.setdefault(name, value)
            records.append(rec)
        order = list(columns) + [c for c in EXTRA_COLUMNS if c not in columns]
        if not records:
            return pd.DataFrame(columns=order)
        df = pd.DataFrame.from_records(records, columns=order)
        for name in df.columns[df.dtypes == np.dtype(object)]:
            # float columns come back as None where they were NaN (stored as JSON null)
            if kinds.get(name) == "f" and df[name].map(_is_number_or_none).all():
                df[name] = df[name].astype(float)
        return df

    def hook_values(self, *, run_hash: str | None = None, version: str | None = None) -> list[Any]:
        """What the per-series hook returned (e.g. review-output index rows), in store order."""
        where, args = self._filter(run_hash, version)
        rows = self._conn.execute(
            f"SELECT s.hook_json FROM scans s{where} ORDER BY s.patient_id, s.study_date, s.series_uid", args
        ).fetchall()
        return [json.loads(r[0]) for r in rows if r[0]]

    def count_without_hook(self, *, run_hash: str | None = None, version: str | None = None) -> int:
        """Stored scans whose hook (e.g. ``--qc``) did not run: scored in an earlier run without it."""
        where, args = self._filter(run_hash, version)
        where = f"{where} AND s.hook_json IS NULL" if where else " WHERE s.hook_json IS NULL"
        return int(self._conn.execute(f"SELECT COUNT(*) FROM scans s{where}", args).fetchone()[0])

    def failures(self, *, run_hash: str | None = None, version: str | None = None):
        """Failure rows as a DataFrame (``series_uid, stage, error_type, message, ...``)."""
        import pandas as pd

        where, args = self._filter(run_hash, version, prefix="")
        cur = self._conn.execute(
            "SELECT series_uid, patient_id, study_date, stage, error_type, message, source, attempts, "
            f"run_hash, version, finished_at FROM failures{where} "
            "ORDER BY patient_id, study_date, series_uid",
            args,
        )
        return pd.DataFrame(cur.fetchall(), columns=[d[0] for d in cur.description])

    def excluded(self):
        """Series left out by the selection policy, with the reason."""
        import pandas as pd

        cur = self._conn.execute(
            "SELECT series_uid, reason, source, patient_id, study_date, modality FROM excluded "
            "ORDER BY patient_id, study_date, series_uid"
        )
        return pd.DataFrame(cur.fetchall(), columns=[d[0] for d in cur.description])

    def histograms(self, scan_id: int) -> tuple[tuple[str, ...], int, np.ndarray]:
        """``(regions, hist_lo_hu, histograms)`` stored for one scan (see :class:`ScanResult`)."""
        row = self._conn.execute(
            "SELECT regions_json, hist_lo_hu, histograms FROM scans WHERE scan_id=?", (scan_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"Result store {self.path} has no scan_id {scan_id}. Potential fix: see load_results().")
        return tuple(json.loads(row[0])), int(row[1]), np.load(io.BytesIO(row[2]), allow_pickle=False)

    def counts(self) -> dict[str, int]:
        """Rows per table (``scans, region_metrics, failures, excluded, runs``)."""
        return {
            t: int(self._conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
            for t in ("scans", "region_metrics", "failures", "excluded", "runs")
        }

    @staticmethod
    def _filter(run_hash: str | None, version: str | None, *, prefix: str = "s.") -> tuple[str, tuple]:
        conds, args = [], []
        if run_hash is not None:
            conds.append(f"{prefix}run_hash=?")
            args.append(run_hash)
        if version is not None:
            conds.append(f"{prefix}version=?")
            args.append(version)
        return (" WHERE " + " AND ".join(conds) if conds else ""), tuple(args)


def load_results(store: str | os.PathLike | ResultStore, *, run_hash: str | None = None, version: str | None = None):
    """Scores of a batch result store as one tidy DataFrame.

    Parameters
    ----------
    store : path or ResultStore
        The ``.sqlite`` file written by ``lungdamage batch``.
    run_hash, version : str, optional
        Keep only results of these analysis options / lungdamage version.

    Returns
    -------
    pandas.DataFrame
        One row per scan × region, with the columns of
        :meth:`ScanResult.to_frame` (``series_uid, patient_id, study_date,
        region, region_set, voxels, volume_ml, <band>_ml, <band>_pct,
        damage_pct, ..., method, scheme, params_hash, version,
        slice_thickness_mm, kernel, warnings``) plus ``study_uid, study_time,
        series_description, modality, manufacturer, run_hash, scan_id``.

    Examples
    --------
    >>> import lungdamage as ld
    >>> df = ld.load_results("results.sqlite")  # doctest: +SKIP
    >>> df[df.region == "total"].groupby("patient_id").damage_pct.max()  # doctest: +SKIP
    """
    if isinstance(store, ResultStore):
        return store.results(run_hash=run_hash, version=version)
    with ResultStore(store, readonly=True) as s:
        return s.results(run_hash=run_hash, version=version)


def load_failures(store: str | os.PathLike | ResultStore, *, run_hash: str | None = None, version: str | None = None):
    """Failed series of a result store: ``series_uid, patient_id, study_date, stage, error_type, message, ...``."""
    if isinstance(store, ResultStore):
        return store.failures(run_hash=run_hash, version=version)
    with ResultStore(store, readonly=True) as s:
        return s.failures(run_hash=run_hash, version=version)
