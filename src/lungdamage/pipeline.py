"""``analyze``: read + segment + score one scan, with one set of :class:`AnalysisOptions`.

:class:`AnalysisOptions` is the one options type of the API, the batch runner
(:func:`lungdamage.batch.run_batch`) and the CLI (built from the command line
in :func:`lungdamage.cli._analysis.analysis_options`).

The verbs and what they return:

- :func:`analyze` -- one scheme, a :class:`ScanResult`;
- :func:`analyze_many` -- one or several schemes from one segmentation, a
  :class:`ResultSet`;
- :func:`analyze_scan` -- an :class:`Analysis` (CT, regions, ``result`` and
  ``results``) for review outputs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import InitVar, dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._files import file_sha256
from .errors import InputError, SchemeError
from .regions import RegionMap
from .score import Analysis, ResultSet, ScanResult, Scheme, get_schemes, params_hash, scan_lesions, score_many
from .volume import CTVolume

if TYPE_CHECKING:
    from .privacy import Pseudonymizer
    from .segment.plausibility import QCCheck

__all__ = ["analyze", "analyze_many", "analyze_scan", "Analysis", "AnalysisOptions", "load_ct"]

log = logging.getLogger(__name__)

#: What ``scheme=`` accepts: a preset name, a scheme file path, a Scheme or its dict form, or several of them
#: (a list, or a comma-separated string).
SchemeSpec = str | Scheme | Mapping[str, Any] | Sequence[str | Scheme | Mapping[str, Any]]


@dataclass(frozen=True)
class AnalysisOptions:
    """The analysis options of one scan or a batch (the same for every series of a batch).

    Shared by :func:`analyze_scan`, :func:`~lungdamage.batch.run_batch` and the
    CLI (``score`` and ``batch`` build it in one helper).  Checked when made,
    before anything is read: scheme files are read here, a bad option is one
    :class:`~lungdamage.errors.InputError`.

    Attributes
    ----------
    scheme : tuple of Scheme
        Given as a preset name, scheme file, Scheme, mapping, a list of them or
        a comma-separated string; stored resolved (:attr:`schemes`).
    method : {"threshold", "lungmask"}
        Lung segmentation method.
    region_set : {"lungs", "zones", "lobes"}
        Region set to report.  ``regions=`` is accepted as its deprecated
        former name.
    model, weights : str, optional
        lungmask model name and local weight file (``method="lungmask"``).
    suppress_vessels : bool
        Exclude vessels inside the lung mask before counting (reported as
        ``vessel_ml``); see :func:`lungdamage.score.score`.
    smooth_sigma_mm : float, optional
        Gaussian noise pre-filter inside the lungs (sharp kernels, low dose).
    partial_lobes : bool
        Accept approximate lobes (``lobes-approx``) on a scan that does not
        cover each lung from apex to base (refused by default); every row then
        carries a warning.
    css_approx_lobes : bool
        Compute ``css_pan`` / ``css_chung`` on approximate lobes too (by
        default they are empty there: CT severity scores are defined on true
        lobes).
    pseudonymize : Pseudonymizer, optional
        Replace patient id, UIDs, dates and source path by keyed pseudonyms
        right after reading (:mod:`lungdamage.privacy`; a str is the key, or
        ``@FILE`` / ``env:NAME``).  Only the fact, never the key, enters
        :meth:`identity` and :attr:`run_hash`.

    Examples
    --------
    >>> from lungdamage.pipeline import AnalysisOptions
    >>> options = AnalysisOptions(scheme="covid,lcta", region_set="zones")
    >>> [s.name for s in options.schemes], options.region_set
    (['covid', 'lcta'], 'zones')
    >>> AnalysisOptions(scheme="covid").run_hash == AnalysisOptions(scheme=["covid"]).run_hash
    True
    """

    scheme: Any = "covid"
    method: str = "threshold"
    region_set: str = "lungs"
    model: str | None = None
    weights: str | None = None
    suppress_vessels: bool = False
    smooth_sigma_mm: float | None = None
    partial_lobes: bool = False
    css_approx_lobes: bool = False
    pseudonymize: Pseudonymizer | None = None
    regions: InitVar[str | None] = None  # deprecated name of region_set

    def __post_init__(self, regions: str | None) -> None:
        if regions is not None:
            object.__setattr__(self, "region_set", regions)
        object.__setattr__(self, "scheme", tuple(get_schemes(self.scheme)))
        if self.weights is not None:
            object.__setattr__(self, "weights", os.fspath(self.weights))
        if self.smooth_sigma_mm is not None:
            object.__setattr__(self, "smooth_sigma_mm", float(self.smooth_sigma_mm))
            if not (math.isfinite(self.smooth_sigma_mm) and self.smooth_sigma_mm >= 0):
                # checked here, before anything is scored: a bad option is a usage error, not N failure rows
                raise InputError(
                    f"smooth_sigma_mm must be a finite number >= 0 (mm), got {self.smooth_sigma_mm!r}. "
                    "Potential fix: e.g. 1.0 for a sharp kernel, or leave it out."
                )
        if self.pseudonymize is not None:
            object.__setattr__(self, "pseudonymize", _pseudonymizer(self.pseudonymize))

    @property
    def schemes(self) -> tuple[Scheme, ...]:
        """The resolved schemes, in the order given."""
        return tuple(self.scheme)

    def identity(self) -> dict[str, Any]:
        """Plain-data form hashed by :attr:`run_hash` (weight files by name and size).

        The region set is recorded under its former key ``regions`` so that
        stores written before the rename keep their resume keys.
        """
        weights = None
        if self.weights:
            weights_path = Path(self.weights)
            weights = {"name": weights_path.name,
                       "bytes": weights_path.stat().st_size if weights_path.is_file() else None}
        out = {
            "scheme": [s.to_dict() for s in self.schemes],
            "method": self.method,
            "regions": self.region_set,
            "model": self.model,
            "weights": weights,
            "suppress_vessels": bool(self.suppress_vessels),
            "smooth_sigma_mm": self.smooth_sigma_mm,
            # only when set: default runs keep their hash
            **({"partial_lobes": True} if self.partial_lobes else {}),
            **({"css_approx_lobes": True} if self.css_approx_lobes else {}),
        }
        if self.pseudonymize is not None:  # the fact, never the key
            out["pseudonymized"] = True
        return out

    @property
    def run_hash(self) -> str:
        """Hash of :meth:`identity` (a batch store's resume key, with series UID and version)."""
        return params_hash(self.identity())


def load_ct(
    source: str | PathLike | CTVolume | Sequence[str | PathLike] | Any, *, series_uid: str | None = None
) -> CTVolume:
    """Read a CT from a DICOM folder / file list / catalog entry, or a NIfTI/NRRD/MHA file.

    A :class:`CTVolume` is returned unchanged.
    """
    if isinstance(source, CTVolume):
        return source
    from .io.images import is_image_file, read_image

    if isinstance(source, (str, PathLike)) and is_image_file(os.fspath(source)) and Path(source).is_file():
        return read_image(os.fspath(source))
    from .io.dicom import read_series

    return read_series(source, series_uid=series_uid)


def analyze(source: Any, options: AnalysisOptions | None = None, **option_values: Any) -> ScanResult:
    """Read, segment and score one scan under one scheme; see :func:`analyze_scan` for the arguments.

    Returns
    -------
    ScanResult
        ``result.to_frame()`` gives the tidy per-region table.

    Raises
    ------
    SchemeError
        Several schemes given: use :func:`analyze_many`.
    """
    options = _options(options, option_values)
    if len(options.schemes) > 1:
        raise SchemeError(
            f"analyze() gives one scheme's result, got the schemes {[s.name for s in options.schemes]}. "
            "Potential fix: analyze_many(...) returns one result per scheme from one segmentation."
        )
    return analyze_scan(source, options, **_scan_arguments(option_values)).result


def analyze_many(source: Any, options: AnalysisOptions | None = None, **option_values: Any) -> ResultSet:
    """Read, segment and score one scan under one or several schemes (one segmentation, one kernel pass).

    Arguments as for :func:`analyze_scan`.

    Returns
    -------
    ResultSet
        One :class:`ScanResult` per scheme; ``to_frame()`` concatenates their
        tables, told apart by the ``scheme`` column.

    Examples
    --------
    ``analyze_many("scan/", scheme=["covid", "lcta"]).to_frame()`` -- both
    schemes from one segmentation.
    """
    return analyze_scan(source, options, **option_values).results


def analyze_scan(
    source: str | PathLike | CTVolume | Sequence[str | PathLike] | Any,
    options: AnalysisOptions | None = None,
    *,
    series_uid: str | None = None,
    regions_from: str | PathLike | None = None,
    label_codes: str | None = None,
    **option_values: Any,
) -> Analysis:
    """Read, segment and score one scan, keeping the CT and region map.

    Parameters
    ----------
    source : path, list of paths, catalog entry or CTVolume
        A DICOM series folder (one series, or choose with ``series_uid``), a
        list of DICOM files, or a NIfTI / NRRD / MHA file.
    options : AnalysisOptions, optional
        The analysis options (default: covid scheme, threshold lungs).
    series_uid : str, optional
        Which series to read from a folder holding several.
    regions_from, label_codes :
        Import the region map from a label file instead of segmenting;
        ``label_codes`` names its convention (``lungmask``, ``totalsegmentator``,
        ``cip`` or a JSON file).
    **option_values
        Fields of :class:`AnalysisOptions` (``scheme``, ``method``,
        ``region_set``, ``suppress_vessels``, ...), instead of or on top of
        ``options``.  ``scheme`` may name several schemes (a list or
        ``"covid,lcta"``): they share one segmentation and one kernel pass.

    Returns
    -------
    Analysis
        ``.ct``, ``.regions``, ``.result`` (the first scheme's
        :class:`ScanResult`) and ``.results`` (every scheme, a
        :class:`ResultSet`).
    """
    options = _options(options, option_values)  # fails on a bad scheme or option before the slow steps
    timings_s: dict[str, float] = {}
    t0_s = time.perf_counter()
    ct = load_ct(source, series_uid=series_uid)
    if options.pseudonymize is not None:
        ct = options.pseudonymize.volume(ct)
    timings_s["read_s"] = time.perf_counter() - t0_s
    t0_s = time.perf_counter()
    region_map = _segment(ct, options, regions_from, label_codes)
    timings_s["segment_s"] = time.perf_counter() - t0_s
    t0_s = time.perf_counter()
    params = _run_params(options, regions_from, label_codes)
    if options.pseudonymize is not None and regions_from:
        region_map = _pseudonymous_label_source(region_map, options.pseudonymize, regions_from)
    from ._procs import thread_budget
    from .segment.plausibility import qc_checks

    # the plausibility checks read the CT and the mask only: they run beside the scoring
    # when the scan may use a second core (not in a batch worker that shares the cores)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(qc_checks, ct, region_map) if thread_budget() > 1 else None
        lesion_map = scan_lesions(ct, region_map)  # kept for the review outputs (QC overlay)
        results = score_many(
            ct,
            region_map,
            options.schemes,
            params=params,
            suppress_vessels=options.suppress_vessels,
            smooth_sigma_mm=options.smooth_sigma_mm,
            lesion_map=lesion_map,
        )
        timings_s["score_s"] = time.perf_counter() - t0_s  # the plausibility checks are not scoring
        checks = pending.result() if pending is not None else qc_checks(ct, region_map)
    log.info(
        "%s: read %.2fs, segment %.2fs, score %.2fs",
        ct.meta.key, timings_s["read_s"], timings_s["segment_s"], timings_s["score_s"],
    )
    results = _with_qc(results, region_map, timings_s, checks)
    return Analysis(ct, region_map, results[0], pseudonymize=options.pseudonymize, lesions=lesion_map,
                    results=results)


def _options(options: AnalysisOptions | None, option_values: Mapping[str, Any]) -> AnalysisOptions:
    """``options`` with ``option_values`` (fields of AnalysisOptions) applied; the default options if neither."""
    values = {k: v for k, v in option_values.items() if k not in _SCAN_ARGUMENTS}
    if options is None:
        return AnalysisOptions(**values)
    return dataclasses.replace(options, **values) if values else options


#: Arguments of :func:`analyze_scan` that are about one scan, not options.
_SCAN_ARGUMENTS = ("series_uid", "regions_from", "label_codes")


def _scan_arguments(option_values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in option_values.items() if k in _SCAN_ARGUMENTS}


def _segment(
    ct: CTVolume, options: AnalysisOptions, regions_from: str | PathLike | None, label_codes: str | None
) -> RegionMap:
    """The region map: segmented with ``options.method``, or imported from ``regions_from``."""
    from .segment import segment_lungs

    return segment_lungs(
        ct,
        method=options.method,
        regions=options.region_set,
        model=options.model,
        weights=options.weights,
        regions_from=os.fspath(regions_from) if regions_from is not None else None,
        label_codes=label_codes,
        partial_lobes=options.partial_lobes,
    )


def _run_params(options: AnalysisOptions, regions_from: str | PathLike | None, label_codes: str | None) -> dict:
    """The run parameters recorded (and hashed) in every result (the key ``regions``: see ``identity``)."""
    params: dict[str, Any] = {
        "regions": options.region_set,
        "model": options.model,
        # name and content hash: two different label files with one name are different runs
        "regions_from": f"{Path(regions_from).name}:{_file_hash(regions_from)}" if regions_from else None,
        "label_codes": label_codes,
        # only when set: default runs keep their parameter hash
        **({"partial_lobes": True} if options.partial_lobes else {}),
        **({"css_approx_lobes": True} if options.css_approx_lobes else {}),
    }
    if options.pseudonymize is not None:  # the key itself is never recorded
        params["pseudonymized"] = True
        if regions_from:  # label files are often named after the patient
            name = options.pseudonymize.token(Path(regions_from).name)
            params["regions_from"] = f"{name}:{_file_hash(regions_from)}"
    return params


def _pseudonymous_label_source(region_map: RegionMap, pz: Pseudonymizer, regions_from: str | PathLike) -> RegionMap:
    """``region_map`` with the label file's name (often the patient's) replaced by its pseudonym."""
    name = pz.token(Path(regions_from).name)
    info = {**region_map.info, "source": pz.token(regions_from)}
    return dataclasses.replace(region_map, method=f"labels:{name}", info=info)


def _with_qc(results: ResultSet, region_map: RegionMap, timings_s: dict[str, float],
             checks: Sequence[QCCheck]) -> ResultSet:
    """Every result with the timings, the plausibility flags and their one-sentence warnings."""
    qc_flags = tuple(c.flag for c in checks)
    # the segmentation's own warnings (e.g. one lung only) and one sentence per failed check
    info_warnings = region_map.info.get("warnings", ())
    segmentation_warnings = tuple(info_warnings) if isinstance(info_warnings, (list, tuple)) else ()
    extra_warnings = segmentation_warnings + tuple(f"qc {c.flag}: {c.message}" for c in checks)
    return ResultSet(
        dataclasses.replace(r, timings_s=timings_s, qc_flags=qc_flags, warnings=tuple(r.warnings) + extra_warnings)
        for r in results
    )


def _pseudonymizer(value: Any) -> Pseudonymizer | None:
    """A Pseudonymizer from ``value`` (one, a key string, or None)."""
    if value is None:
        return None
    from .privacy import Pseudonymizer

    return value if isinstance(value, Pseudonymizer) else Pseudonymizer.from_option(str(value))


def _file_hash(path: str | PathLike) -> str:
    """SHA-256 of a file (first 16 hex characters)."""
    return file_sha256(path)[:16]
