"""Score straight from a PACS: DICOMweb (QIDO-RS, WADO-RS, STOW-RS) source and results target.

A DICOMweb server is named by a URL of the form ``dicomweb+http://HOST[:PORT]/PATH``
(or ``dicomweb+https://...``): the DICOMweb base URL with a ``dicomweb+``
prefix, so that it is never mistaken for a folder.  Query filters may follow
as a query string, e.g.
``dicomweb+http://pacs:8042/dicom-web?PatientID=P001,P002&StudyDate=20200101-20201231``
(``PatientID``, ``StudyDate`` (``FROM-TO``, either end optional),
``AccessionNumber``), or be given as a :class:`DicomwebQuery`.

Flow (:func:`scan`, used by :func:`lungdamage.io.catalog.scan` and
:func:`lungdamage.batch.plan_batch` for such URLs)
-------------------------------------------------------------------------------
1. QIDO-RS study search (``ModalitiesInStudy=CT`` plus the filters; one query
   per patient or accession number), then a QIDO-RS series search per study.
2. For every CT series, WADO-RS *metadata* (headers, no pixels) is turned into
   the same :class:`~lungdamage.io.catalog.SeriesInfo` the folder catalog
   builds, so :func:`~lungdamage.io.catalog.select_series` applies the
   unchanged selection policy.  Non-CT series are rejected from their QIDO
   attributes alone; no pixel data is transferred for any rejected series.
3. A chosen series (:class:`RemoteSeriesInfo`) is retrieved with WADO-RS only
   when it is scored (:meth:`RemoteSeriesInfo.fetch`, in the worker): the
   instances are streamed as they are stored on the server (``transfer-syntax=*``,
   byte for byte) into a bounded local cache (``cache_max_bytes`` for the whole
   cache folder), and the series' folder is removed after scoring unless
   ``keep_cache`` (then a complete cached series is reused).

Authentication
--------------
HTTP basic (``LUNGDAMAGE_DICOMWEB_USER`` + ``LUNGDAMAGE_DICOMWEB_PASSWORD``) or a
bearer token (``LUNGDAMAGE_DICOMWEB_TOKEN``) from the environment, or from a
credentials file (TOML/JSON/YAML; path in ``LUNGDAMAGE_DICOMWEB_CONFIG`` or
``DicomwebSource(config=...)``) with top-level ``user``/``password`` or
``token`` and optional per-server tables ``[servers."HOST:PORT"]``.  The
environment wins over the file.  Credentials are never accepted in the URL,
never logged, printed, stored or pickled: they are read in the process that
talks to the server.

Failures
--------
Every request has a timeout; connection errors, timeouts, HTTP 408/429 and
5xx are retried ``retries`` times with exponential backoff
(``backoff_s * 2**attempt``).  A series whose retrieval still fails raises
:class:`DicomwebError`; in a batch that is a failure row (stage ``retrieve``)
and the batch goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

from ..errors import InputError, LungDamageError, MissingDependencyError
from .catalog import SeriesInfo

__all__ = [
    "ENV_CONFIG",
    "ENV_PASSWORD",
    "ENV_TOKEN",
    "ENV_USER",
    "PREFIX",
    "DicomwebError",
    "DicomwebQuery",
    "DicomwebSource",
    "RemoteSeriesInfo",
    "SendResultsHook",
    "as_source",
    "is_dicomweb_url",
    "scan",
    "send_summary",
    "store_instances",
]

log = logging.getLogger(__name__)

#: URL prefix that marks a DICOMweb server (``dicomweb+http://...``).
PREFIX = "dicomweb+"
ENV_USER = "LUNGDAMAGE_DICOMWEB_USER"
ENV_PASSWORD = "LUNGDAMAGE_DICOMWEB_PASSWORD"
ENV_TOKEN = "LUNGDAMAGE_DICOMWEB_TOKEN"
ENV_CONFIG = "LUNGDAMAGE_DICOMWEB_CONFIG"

#: Default size limit of the local retrieval cache (bytes).
DEFAULT_CACHE_MAX_BYTES = 20 * 2**30

_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_CT_IMAGE_SOP = "1.2.840.10008.5.1.4.1.1.2"

T = TypeVar("T")


class DicomwebError(LungDamageError):
    """A DICOMweb request failed (after retries), or a retrieved series is incomplete."""


def is_dicomweb_url(root: Any) -> bool:
    """True for a ``dicomweb+http(s)://`` URL string or a :class:`DicomwebSource`."""
    if isinstance(root, DicomwebSource):
        return True
    return isinstance(root, str) and root.lower().startswith((PREFIX + "http://", PREFIX + "https://"))


def _require_client():
    try:
        import dicomweb_client  # noqa: F401
        import requests  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "Reading from and sending to a DICOMweb server", "dicomweb-client", "dicomweb"
        ) from exc


def _dicom_date(text: str, what: str) -> str:
    t = text.strip().replace("-", "")
    if t and not re.fullmatch(r"\d{8}", t):
        raise InputError(
            f"{what}: {text!r} is not a date. Potential fix: write YYYYMMDD or YYYY-MM-DD."
        )
    return t


# ------------------------------------------------------------------------------------- query
@dataclass(frozen=True)
class DicomwebQuery:
    """QIDO-RS filters (all optional; no filter = every study with a CT series).

    Attributes
    ----------
    patient_ids : tuple of str
        PatientID values (one study query each).
    date_from, date_to : str
        Study date range, ``YYYYMMDD`` (either end may be empty).
    accession_numbers : tuple of str
        AccessionNumber values (one study query each).
    studies : tuple of (patient_id, study_date)
        Patients and dates of a study manifest; ``study_date`` ``""`` = every
        date of that patient.
    """

    patient_ids: tuple[str, ...] = ()
    date_from: str = ""
    date_to: str = ""
    accession_numbers: tuple[str, ...] = ()
    studies: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "patient_ids", tuple(str(p) for p in self.patient_ids))
        object.__setattr__(self, "accession_numbers", tuple(str(a) for a in self.accession_numbers))
        object.__setattr__(self, "date_from", _dicom_date(self.date_from or "", "study date range start"))
        object.__setattr__(self, "date_to", _dicom_date(self.date_to or "", "study date range end"))
        object.__setattr__(
            self, "studies", tuple((str(p), _dicom_date(d or "", f"manifest date of {p}")) for p, d in self.studies)
        )

    @classmethod
    def from_params(cls, params: dict[str, list[str]]) -> DicomwebQuery:
        """From URL query parameters (``PatientID``, ``StudyDate``, ``AccessionNumber``)."""
        known = {"patientid", "studydate", "accessionnumber"}
        unknown = [k for k in params if k.lower() not in known]
        if unknown:
            raise InputError(
                f"Unknown DICOMweb URL filter(s) {unknown}. Potential fix: use PatientID, StudyDate "
                "(FROM-TO) or AccessionNumber."
            )
        get = {k.lower(): ",".join(v) for k, v in params.items()}
        date = get.get("studydate", "")
        lo, hi = date.split("-", 1) if "-" in date else (date, date)
        return cls(
            patient_ids=tuple(p for p in get.get("patientid", "").split(",") if p),
            date_from=lo,
            date_to=hi,
            accession_numbers=tuple(a for a in get.get("accessionnumber", "").split(",") if a),
        )

    @classmethod
    def from_manifest(cls, path: str | os.PathLike) -> DicomwebQuery:
        """Patients (and their study dates, where given) of a trial manifest CSV."""
        from ..study.visits import read_manifest

        m = read_manifest(Path(path))
        pairs: list[tuple[str, str]] = []
        dated = set()
        for row in m.overrides.itertuples():
            if row.study_date is not None and str(row.study_date) != "NaT":
                pairs.append((row.patient_id, row.study_date.strftime("%Y%m%d")))
                dated.add(row.patient_id)
        for pid in m.patients["patient_id"]:
            if pid not in dated:
                pairs.append((pid, ""))
        return cls(studies=tuple(dict.fromkeys(pairs)))

    def merged(self, other: DicomwebQuery) -> DicomwebQuery:
        """Filters of both (lists joined; the other's dates win where set)."""
        return DicomwebQuery(
            patient_ids=tuple(dict.fromkeys(self.patient_ids + other.patient_ids)),
            date_from=other.date_from or self.date_from,
            date_to=other.date_to or self.date_to,
            accession_numbers=tuple(dict.fromkeys(self.accession_numbers + other.accession_numbers)),
            studies=tuple(dict.fromkeys(self.studies + other.studies)),
        )

    def study_searches(self) -> list[dict[str, str]]:
        """QIDO-RS study search filters, one dict per query."""
        base = {"ModalitiesInStudy": "CT"}
        if self.date_from or self.date_to:
            base["StudyDate"] = f"{self.date_from}-{self.date_to}"
        searches: list[dict[str, str]] = []
        for pid in self.patient_ids:
            searches.append({**base, "PatientID": pid})
        for acc in self.accession_numbers:
            searches.append({**base, "AccessionNumber": acc})
        for pid, date in self.studies:
            f = {**base, "PatientID": pid}
            if date:
                f["StudyDate"] = date
            searches.append(f)
        return searches or [base]

    def describe(self) -> str:
        parts = []
        if self.patient_ids:
            parts.append(f"patients {', '.join(self.patient_ids)}")
        if self.date_from or self.date_to:
            parts.append(f"study dates {self.date_from or '...'}-{self.date_to or '...'}")
        if self.accession_numbers:
            parts.append(f"accession numbers {', '.join(self.accession_numbers)}")
        if self.studies:
            parts.append(f"{len(self.studies)} manifest patient/date pair(s)")
        return "; ".join(parts) or "all CT studies"


# ------------------------------------------------------------------------------ credentials
class _Credentials:
    """User/password or token; repr and str never show them."""

    __slots__ = ("origin", "password", "token", "user")

    def __init__(self, user: str = "", password: str = "", token: str = "", origin: str = "none"):
        self.user, self.password, self.token, self.origin = user, password, token, origin

    def __repr__(self) -> str:
        kind = "token" if self.token else ("basic" if self.user else "none")
        return f"<credentials {kind} from {self.origin}>"

    __str__ = __repr__

    def __reduce__(self):  # never pickled into a worker or a store
        raise TypeError("DICOMweb credentials are not picklable; they are read in each process")


def _read_credentials(http_url: str, config: str | None) -> _Credentials:
    env_user, env_pw, env_token = (os.environ.get(k, "") for k in (ENV_USER, ENV_PASSWORD, ENV_TOKEN))
    if env_token:
        return _Credentials(token=env_token, origin=f"${ENV_TOKEN}")
    if env_user:
        return _Credentials(user=env_user, password=env_pw, origin=f"${ENV_USER}")
    path = config or os.environ.get(ENV_CONFIG, "")
    if not path:
        return _Credentials()
    from .._config import ConfigSyntaxError, read_config_file

    try:
        data = read_config_file(path)
    except FileNotFoundError:
        raise InputError(
            f"DICOMweb credentials file {path} does not exist. Potential fix: check the path "
            f"(--dicomweb-config or ${ENV_CONFIG})."
        ) from None
    except ConfigSyntaxError as exc:
        # the parser's message may quote a line of the file: say only where
        line = re.search(r"line \d+", str(exc))
        raise InputError(
            f"DICOMweb credentials file {path} does not parse ({line.group(0) if line else 'syntax error'}). "
            "Potential fix: fix the file (TOML: user = \"...\", password = \"...\" or token = \"...\")."
        ) from None
    except ValueError as exc:
        raise InputError(
            f"DICOMweb credentials file {path}: {exc}. Potential fix: use .toml, .json or .yaml."
        ) from None
    if not isinstance(data, dict):
        raise InputError(f"DICOMweb credentials file {path} must hold a table. Potential fix: user = \"...\".")
    parts = urlsplit(http_url)
    servers = data.get("servers") or {}
    entry = servers.get(parts.netloc) or servers.get(parts.hostname or "") or data
    if not isinstance(entry, dict):
        raise InputError(f"DICOMweb credentials file {path}: servers entry for {parts.netloc} is not a table.")
    return _Credentials(
        user=str(entry.get("user", "") or ""),
        password=str(entry.get("password", "") or ""),
        token=str(entry.get("token", "") or ""),
        origin=str(path),
    )


# ---------------------------------------------------------------------------------- source
def _split_url(url: str) -> tuple[str, DicomwebQuery]:
    """``(http_url, filters)`` of a ``dicomweb+http(s)://`` URL; refuses credentials in it."""
    if not is_dicomweb_url(url):
        raise InputError(
            f"{url!r} is not a DICOMweb URL. Potential fix: write dicomweb+http://HOST:PORT/PATH "
            "(e.g. dicomweb+http://localhost:8042/dicom-web)."
        )
    parts = urlsplit(url[len(PREFIX):])
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        host = parts.netloc.rsplit("@", 1)[-1]
        raise InputError(
            f"The DICOMweb URL for {parts.scheme}://{host}{parts.path} contains credentials; they are not "
            f"accepted on the command line. Potential fix: drop them from the URL and set {ENV_USER} and "
            f"{ENV_PASSWORD} (or {ENV_TOKEN}) in the environment, or use a credentials file."
        )
    if not parts.hostname:
        raise InputError(f"DICOMweb URL {url!r} has no host. Potential fix: dicomweb+http://HOST:PORT/PATH.")
    http_url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    query = DicomwebQuery.from_params(parse_qs(parts.query)) if parts.query else DicomwebQuery()
    return http_url, query


@dataclass(frozen=True)
class DicomwebSource:
    """A DICOMweb server to read series from (picklable; holds no credentials).

    Parameters
    ----------
    url : str
        ``dicomweb+http(s)://HOST[:PORT]/PATH[?filters]``.
    query : DicomwebQuery, optional
        Filters, merged with those of the URL.
    cache_dir : str, optional
        Local retrieval cache (default ``$TMPDIR/lungdamage-dicomweb-cache``).
    cache_max_bytes : int
        Size limit of the whole cache folder (bytes).
    keep_cache : bool
        Keep retrieved series after scoring (and reuse complete ones).
    timeout_s : float
        Timeout of every HTTP request (connect and read), seconds.
    retries : int
        Retries of a failed request (connection error, timeout, 408/429/5xx).
    backoff_s : float
        First retry delay; doubles per retry.
    config : str, optional
        Credentials file (else ``$LUNGDAMAGE_DICOMWEB_CONFIG``).
    """

    url: str
    query: DicomwebQuery = field(default_factory=DicomwebQuery)
    cache_dir: str | None = None
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES
    keep_cache: bool = False
    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 1.0
    config: str | None = None

    def __post_init__(self) -> None:
        http_url, url_query = _split_url(self.url)
        object.__setattr__(self, "query", url_query.merged(self.query))
        object.__setattr__(self, "_http_url", http_url)
        if self.retries < 0 or self.timeout_s <= 0 or self.cache_max_bytes <= 0:
            raise InputError(
                f"DICOMweb options out of range: retries={self.retries}, timeout={self.timeout_s} s, "
                f"cache limit={self.cache_max_bytes} bytes. Potential fix: retries >= 0, positive timeout and limit."
            )

    @property
    def http_url(self) -> str:
        """The DICOMweb base URL (``http(s)://HOST:PORT/PATH``, no filters)."""
        return self._http_url  # type: ignore[attr-defined]

    @property
    def name(self) -> str:
        """Printable form: ``dicomweb+`` base URL (never credentials)."""
        return PREFIX + self.http_url

    def series_url(self, study_uid: str, series_uid: str) -> str:
        return f"{self.name}/studies/{study_uid}/series/{series_uid}"

    @property
    def cache_root(self) -> Path:
        return Path(self.cache_dir or os.path.join(tempfile.gettempdir(), "lungdamage-dicomweb-cache"))

    def client(self):
        """A ``dicomweb_client.DICOMwebClient`` with credentials, timeout and no built-in retries."""
        _require_client()
        import requests
        from dicomweb_client.api import DICOMwebClient

        creds = _read_credentials(self.http_url, self.config)
        session = requests.Session()
        if creds.token:
            session.headers["Authorization"] = f"Bearer {creds.token}"
        elif creds.user:
            session.auth = (creds.user, creds.password)
        client = DICOMwebClient(self.http_url, session=session, timeout=self.timeout_s)
        client.set_http_retry_params(retry=False)  # retries (with backoff) are ours, for every error kind
        log.debug("DICOMweb client for %s (%r)", self.http_url, creds)
        return client

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one request with retries and backoff; failures become :class:`DicomwebError`."""
        return _with_retries(what, fn, self.retries, self.backoff_s, self.http_url)

    def scan(self) -> list[RemoteSeriesInfo]:
        """Catalog the server's CT studies matching the filters (see :func:`scan`)."""
        return scan(self)


def as_source(root: Any, **options: Any) -> DicomwebSource:
    """A :class:`DicomwebSource` for a URL string (options as its fields), or the source itself."""
    if isinstance(root, DicomwebSource):
        return dataclasses.replace(root, **options) if options else root
    return DicomwebSource(str(root), **options)


def _status(exc: BaseException) -> int | None:
    resp = getattr(exc, "response", None)
    return getattr(resp, "status_code", None)


def _describe(exc: BaseException) -> str:
    status = _status(exc)
    if status is not None:
        reason = getattr(getattr(exc, "response", None), "reason", "") or ""
        return f"HTTP {status} {reason}".strip()
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    # urllib3 messages repeat the URL and connection object: keep the cause
    m = re.search(r"\(Caused by (\w+)\(", text)
    if m:
        return f"{name} ({m.group(1)})"
    return f"{name}: {text[:200]}" if text else name


def _retryable(exc: BaseException) -> bool:
    import requests

    if isinstance(exc, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
        return True
    status = _status(exc)
    return status in _RETRY_STATUS


def _with_retries(what: str, fn: Callable[[], T], retries: int, backoff_s: float, where: str) -> T:
    import requests

    attempt = 0
    while True:
        try:
            return fn()
        except (requests.RequestException, ValueError) as exc:
            if isinstance(exc, ValueError) and not isinstance(exc, requests.RequestException):
                raise DicomwebError(
                    f"{what} from {where}: the server's answer is malformed ({_describe(exc)}). "
                    "Potential fix: check that the URL is the DICOMweb root (e.g. .../dicom-web)."
                ) from None
            status = _status(exc)
            if status in (401, 403):
                raise DicomwebError(
                    f"{what} from {where} was refused (HTTP {status}): authentication failed or not allowed. "
                    f"Potential fix: set {ENV_USER}/{ENV_PASSWORD} or {ENV_TOKEN}, or a credentials file."
                ) from None
            if attempt >= retries or not _retryable(exc):
                tries = f" after {attempt + 1} attempts" if attempt else ""
                raise DicomwebError(
                    f"{what} from {where} failed{tries}: {_describe(exc)}. Potential fix: check that the "
                    "server is up and the URL is right; rerun (with --retry-failed for failed series)."
                ) from None
            delay = backoff_s * 2**attempt
            log.info("%s from %s: %s; retry %d/%d in %.1f s", what, where, _describe(exc), attempt + 1, retries, delay)
            time.sleep(delay)
            attempt += 1


# ---------------------------------------------------------------------------- catalog
def _first(item: dict, tag: str, default: Any = "") -> Any:
    v = item.get(tag, {}).get("Value")
    if not v:
        return default
    x = v[0]
    if isinstance(x, dict):  # person name
        return x.get("Alphabetic", default)
    return x


def _headers_from_metadata(meta: Sequence[dict], source_prefix: str):
    """:class:`~lungdamage.io._dicom_headers.DicomHeader` per instance from DICOM JSON (no pixels)."""
    import pydicom

    from ._dicom_headers import header_from_dataset

    headers = []
    for item in meta:
        has_pixels = "7FE00010" in item or "7FE00008" in item or "7FE00009" in item
        ds = _header_dataset(item, pydicom)
        sop = str(ds.get("SOPInstanceUID", ""))
        headers.append(header_from_dataset(ds, f"{source_prefix}/instances/{sop}", -1, has_pixels=has_pixels))
    return headers


#: Attributes the catalog reads (``_dicom_headers.header_from_dataset``); the rest of the metadata is not parsed.
_HEADER_KEYWORDS = (
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
    "FrameOfReferenceUID", "PatientID", "PatientName", "StudyDate", "StudyTime", "SeriesDate", "SeriesNumber",
    "InstanceNumber", "AcquisitionNumber", "Modality", "ImageType", "FrameType", "SeriesDescription",
    "StudyDescription", "ConvolutionKernel", "SliceThickness", "SpacingBetweenSlices", "Manufacturer",
    "ContrastBolusAgent", "ContrastBolusUsageSequence", "Rows", "Columns", "BitsAllocated", "BitsStored",
    "PixelRepresentation", "PhotometricInterpretation", "SamplesPerPixel", "NumberOfFrames", "PixelPaddingValue",
    "PixelPaddingRangeLimit", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope",
    "RescaleIntercept", "GantryDetectorTilt", "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence",
)
_HEADER_TAGS: dict[str, int] = {}


def _header_dataset(item: dict, pydicom):
    """A header-only Dataset of the attributes the catalog reads, from one DICOM JSON object.

    Plain values are set directly (``Dataset.from_json`` costs ~20 ms per CT
    instance); sequences (enhanced CT functional groups) go through
    ``from_json``.  Bulk data is never fetched.
    """
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import DataElement

    if not _HEADER_TAGS:
        tags = [tag_for_keyword(k) for k in _HEADER_KEYWORDS]
        _HEADER_TAGS.update({f"{tag:08X}": tag for tag in tags if tag is not None})
    ds = pydicom.Dataset()
    for key, tag in _HEADER_TAGS.items():
        e = item.get(key)
        if not e:
            continue
        vr = e.get("vr", "UN")
        if vr == "SQ":
            ds.update(pydicom.Dataset.from_json({key: e}, bulk_data_uri_handler=lambda *a: b""))
            continue
        values = e.get("Value")
        if not values:
            ds.add(DataElement(tag, vr, None))
            continue
        if vr == "PN":
            values = [v.get("Alphabetic", "") if isinstance(v, dict) else v for v in values]
        elif vr == "DS":  # JSON numbers: kept as binary floats (a 17-digit repr is no valid DS string)
            vr, values = "FD", [float(v) for v in values]
        elif vr == "IS":
            vr, values = "SL", [int(float(v)) for v in values]
        ds.add(DataElement(tag, vr, values[0] if len(values) == 1 else list(values)))
    return ds


@dataclass(frozen=True)
class RemoteSeriesInfo(SeriesInfo):
    """A catalog entry of a series on a DICOMweb server.

    ``files`` name the instances by URL; :meth:`fetch` retrieves them.
    """

    remote: DicomwebSource | None = field(default=None, repr=False)

    @property
    def source_url(self) -> str:
        """``dicomweb+http(s)://.../studies/<uid>/series/<uid>`` (no credentials)."""
        assert self.remote is not None
        return self.remote.series_url(self.study_uid, self.series_uid)

    @contextlib.contextmanager
    def fetch(self) -> Iterator[list[str]]:
        """Retrieve the series with WADO-RS into the cache; yields its local files.

        The series' cache folder is removed on exit unless ``keep_cache``.

        Raises
        ------
        DicomwebError
            Retrieval failed after retries, the series is incomplete, or the
            cache limit would be exceeded.
        """
        assert self.remote is not None
        src = self.remote
        dest = src.cache_root / re.sub(r"[^0-9A-Za-z.]+", "_", self.series_uid)
        complete = dest / ".complete"
        if src.keep_cache and complete.is_file() and int(complete.read_text() or -1) == self.n_files:
            log.info("series %s: using the cached copy in %s", self.series_uid, dest)
            files = sorted(str(p) for p in dest.glob("*.dcm"))
        else:
            files = _retrieve_series(src, self.study_uid, self.series_uid, self.n_files, dest)
        try:
            yield files
        finally:
            if not src.keep_cache:
                shutil.rmtree(dest, ignore_errors=True)


def _dir_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(dirpath, f))
    return total


def _retrieve_series(src: DicomwebSource, study_uid: str, series_uid: str, n_expected: int, dest: Path) -> list[str]:
    from dicomweb_client.web import _Transaction

    shutil.rmtree(dest, ignore_errors=True)
    src.cache_root.mkdir(parents=True, exist_ok=True)
    used = _dir_bytes(src.cache_root)
    budget = src.cache_max_bytes - used
    what = f"WADO-RS retrieval of series {series_uid}"
    if budget <= 0:
        raise DicomwebError(
            f"{what}: the cache {src.cache_root} already holds {used / 2**20:.0f} MiB, at its limit of "
            f"{src.cache_max_bytes / 2**20:.0f} MiB. Potential fix: raise --cache-max-gb, or clear the cache "
            "(series kept by --keep-cache)."
        )
    client = src.client()
    url = client._get_series_url(_Transaction.RETRIEVE, study_uid, series_uid)
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'

    def attempt() -> list[str]:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        written = 0
        files = []
        response = client._http_get(url, headers={"Accept": accept}, stream=True)
        for k, part in enumerate(client._decode_multipart_message(response, stream=True)):
            written += len(part)
            if written > budget:
                response.close()
                raise _CacheFull(written)
            path = dest / f"{k:06d}.dcm"
            with open(path, "wb") as fh:
                fh.write(part)
            files.append(str(path))
        return files

    try:
        files = src.call(what, attempt)
    except _CacheFull as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise DicomwebError(
            f"{what}: more than {exc.args[0] / 2**20:.0f} MiB would exceed the cache limit of "
            f"{src.cache_max_bytes / 2**20:.0f} MiB ({used / 2**20:.0f} MiB already used in {src.cache_root}). "
            "Potential fix: raise --cache-max-gb or lower --jobs."
        ) from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    if n_expected and len(files) != n_expected:
        shutil.rmtree(dest, ignore_errors=True)
        raise DicomwebError(
            f"{what} from {src.http_url}: received {len(files)} of the {n_expected} instances its metadata lists. "
            "Potential fix: rerun with --retry-failed; check the server's storage."
        )
    (dest / ".complete").write_text(str(len(files)))
    log.debug("retrieved series %s: %d instances", series_uid, len(files))
    return files


class _CacheFull(Exception):
    pass


def scan(source: str | DicomwebSource, *, summary: dict | None = None) -> list[RemoteSeriesInfo]:
    """Catalog the CT studies of a DICOMweb server (QIDO-RS + WADO-RS metadata, no pixels).

    Parameters
    ----------
    source : str or DicomwebSource
        ``dicomweb+http(s)://...`` URL (filters in its query string) or a source.
    summary : dict, optional
        Receives the keys of :class:`~lungdamage.io.catalog.ScanSummary` (instances as
        files) and ``n_studies, n_series, n_metadata`` (metadata requests made).

    Returns
    -------
    list of RemoteSeriesInfo
        Every series of the matching studies, sorted like
        :func:`lungdamage.io.catalog.scan`.  Non-CT series carry only their
        QIDO attributes; a CT series whose metadata cannot be retrieved carries
        an ``unavailable:`` issue (the selection rejects it, saying why).
    """
    from .catalog import _series_info

    src = as_source(source)
    client = src.client()
    studies: dict[str, dict] = {}
    for filters in src.query.study_searches():
        found = _paged(
            src, "QIDO-RS study search", "0020000D",
            functools.partial(_search_studies, client, filters),
        )
        for st in found:
            studies.setdefault(_first(st, "0020000D"), st)
    out: list[RemoteSeriesInfo] = []
    n_meta = 0
    for study_uid, st in studies.items():
        series = _paged(
            src, f"QIDO-RS series search of study {study_uid}", "0020000E",
            functools.partial(_search_series, client, study_uid),
        )
        for se in series:
            series_uid = _first(se, "0020000E")
            modality = str(_first(se, "00080060")).upper()
            prefix = src.series_url(study_uid, series_uid)
            info = None
            if modality == "CT":
                n_meta += 1
                try:
                    meta = src.call(
                        f"WADO-RS metadata of series {series_uid}",
                        functools.partial(client.retrieve_series_metadata, study_uid, series_uid),
                    )
                    headers = _headers_from_metadata(meta, prefix)
                    if headers:
                        base = _series_info(headers, [])
                        info = RemoteSeriesInfo(**_fields(base), remote=src)
                except DicomwebError as exc:
                    log.warning("%s", exc)
                    info = _qido_only(src, st, se, issue=f"unavailable: {exc}")
                except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
                    msg = (
                        f"metadata of series {series_uid} from {src.http_url} is unreadable "
                        f"({type(exc).__name__}: {exc})"
                    )
                    log.warning("%s", msg)
                    info = _qido_only(src, st, se, issue=f"unavailable: {msg}")
            if info is None:
                info = _qido_only(src, st, se)
            out.append(info)
    out.sort(key=lambda s: (s.patient_id, s.study_date, s.study_time, s.study_uid, s.series_number or 0, s.series_uid))
    log.info("DICOMweb %s (%s): %d studies, %d series", src.name, src.query.describe(), len(studies), len(out))
    if summary is not None:
        n_instances = sum(s.n_files for s in out)
        summary.update(
            root=src.name, n_files=n_instances, n_dicom=n_instances, n_non_dicom=0, n_dicomdir=0, n_unreadable=0,
            n_truncated=0, n_studies=len(studies), n_series=len(out), n_metadata=n_meta, query=src.query.describe(),
        )
    return out


#: QIDO-RS page size (limit/offset paging).
_PAGE = 500


def _search_studies(client: Any, filters: dict[str, Any], offset: int) -> list[dict]:
    """One page of a QIDO-RS study search."""
    return client.search_for_studies(search_filters=filters, limit=_PAGE, offset=offset)


def _search_series(client: Any, study_uid: str, offset: int) -> list[dict]:
    """One page of a QIDO-RS series search within a study."""
    fields = ["Modality", "SeriesDescription", "SeriesNumber", "NumberOfSeriesRelatedInstances"]
    return client.search_for_series(study_instance_uid=study_uid, limit=_PAGE, offset=offset, fields=fields)


def _paged(src: DicomwebSource, what: str, uid_tag: str, get: Callable[[int], list[dict]]) -> list[dict]:
    """Every result of a QIDO-RS search, page by page (stops when a server ignores ``offset``)."""
    out: list[dict] = []
    seen: set[str] = set()
    offset = 0
    while True:
        page = src.call(what, functools.partial(get, offset))
        new = [r for r in page if _first(r, uid_tag) not in seen]
        seen.update(_first(r, uid_tag) for r in new)
        out.extend(new)
        if len(page) < _PAGE or not new:
            return out
        offset += len(page)


def _fields(info: SeriesInfo) -> dict[str, Any]:
    return {f.name: getattr(info, f.name) for f in dataclasses.fields(SeriesInfo)}


def _qido_only(src: DicomwebSource, st: dict, se: dict, *, issue: str = "") -> RemoteSeriesInfo:
    """A catalog entry from QIDO attributes alone (series never looked into)."""
    study_uid, series_uid = _first(st, "0020000D"), _first(se, "0020000E")
    number = _first(se, "00200011", None)
    n = int(_first(se, "00201209", 0) or 0)
    return RemoteSeriesInfo(
        patient_id=str(_first(st, "00100020")),
        study_uid=study_uid,
        series_uid=series_uid,
        frame_of_reference_uid="",
        study_date=str(_first(st, "00080020")),
        study_time=str(_first(st, "00080030")),
        modality=str(_first(se, "00080060")).upper(),
        sop_class_uid="",
        image_type=(),
        series_description=str(_first(se, "0008103E")),
        series_number=int(number) if number not in (None, "") else None,
        n_files=n,
        n_slices=0,
        rows=0,
        columns=0,
        slice_thickness_mm=None,
        spacing_mm=float("nan"),
        z_extent_mm=float("nan"),
        pixel_spacing_mm=None,
        orientation="unknown",
        regular_spacing=False,
        kernel="",
        manufacturer="",
        contrast=None,
        transfer_syntax="",
        files=(),
        issues=(issue,) if issue else (),
        remote=src,
    )


# ------------------------------------------------------------------------------- STOW-RS
def store_instances(target: str | DicomwebSource, paths: Sequence[str | os.PathLike]) -> list[str]:
    """Send DICOM files to a DICOMweb server with STOW-RS (with retries).

    Returns
    -------
    list of str
        SOP Instance UIDs stored.

    Raises
    ------
    DicomwebError
        The server refused or could not be reached after retries.
    """
    import pydicom

    src = as_source(target)
    client = src.client()
    datasets = [pydicom.dcmread(os.fspath(p)) for p in paths]
    what = f"STOW-RS of {len(datasets)} instance(s)"
    answer = src.call(what, lambda: client.store_instances(datasets))
    failed = list(getattr(answer, "FailedSOPSequence", None) or [])
    if failed:  # HTTP 200/202 with a Failed SOP Sequence: the server refused some instances
        reasons = sorted({str(item.get("FailureReason", "?")) for item in failed})
        raise DicomwebError(
            f"{what} to {src.http_url}: the server refused {len(failed)} instance(s) (failure reason(s) "
            f"{', '.join(reasons)}). Potential fix: check the server's log and that it accepts SEG and SR objects."
        )
    return [str(ds.SOPInstanceUID) for ds in datasets]


# ------------------------------------------------------------------------- send results
@dataclass(frozen=True)
class SendResultsHook:
    """Batch hook (runs in the worker): write the series' DICOM SEG and SR, then STOW them.

    Parameters
    ----------
    target : DicomwebSource
        Server to store the results on (``--send-results``).
    out_dir : str
        Where the SEG and SR are written: the ``--qc`` folder (with every other
        review output when ``review``), else an outbox folder from which sent
        files are removed again.
    review : bool
        Also write the review outputs (``--qc``); the return value is then the
        index-page row.

    A failed send (after the target's retries) never fails the series: the
    local result is stored as usual, the files stay in ``out_dir``, and the
    hook's value (``scans.hook_json``) records ``send = {"status": "failed",
    "error": ..., "files": [...]}``; a successful one records the SOP
    Instance UIDs sent.
    """

    target: DicomwebSource
    out_dir: str
    review: bool = False

    def __call__(self, analysis) -> dict:
        from ..errors import ReviewError
        from ..report import index_row, write_review

        error = ""
        try:
            if self.review:
                files = write_review(analysis, self.out_dir)
            else:
                files = write_review(analysis, self.out_dir, qc=False, masks=False, html=False)
        except ReviewError as exc:  # the scan is scored; send what was written, say what is missing
            files, error = exc.files, " ".join(str(exc).split())
        if self.review:
            row = {k: (str(v) if isinstance(v, Path) else v) for k, v in index_row(analysis, files).items()}
        else:
            row = {"series_uid": analysis.ct.meta.series_uid}
        if error:
            row["review_error"] = error
        paths = [files[k] for k in ("seg", "sr") if k in files]
        if not paths:
            row["send"] = {"status": "nothing to send", "target": self.target.name}
            return row
        try:
            uids = store_instances(self.target, paths)
        except DicomwebError as exc:
            log.warning("results of %s not sent: %s (kept in %s)", analysis.ct.meta.key, exc, self.out_dir)
            row["send"] = {"status": "failed", "target": self.target.name, "error": str(exc),
                           "files": [str(p) for p in paths]}
            return row
        row["send"] = {"status": "sent", "target": self.target.name, "sop_instance_uids": uids,
                       "kinds": [k for k in ("seg", "sr") if k in files]}
        if not self.review:
            for p in paths:
                with contextlib.suppress(OSError):
                    os.remove(p)
        return row


def send_summary(hook_values: Sequence[Any]) -> dict[str, int]:
    """Counts of ``send`` statuses among stored hook values (``sent``, ``failed``, ``nothing to send``)."""
    counts: dict[str, int] = {}
    for v in hook_values:
        if isinstance(v, dict) and isinstance(v.get("send"), dict):
            status = str(v["send"].get("status", ""))
            counts[status] = counts.get(status, 0) + 1
    return counts
