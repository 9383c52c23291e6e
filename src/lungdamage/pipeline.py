"""``analyze``: read + segment + score one scan."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from ._files import file_sha256
from .regions import RegionMap
from .score import ResultSet, ScanResult, Scheme, get_schemes, scan_lesions, score
from .score.schemes import is_scheme_list
from .volume import CTVolume

__all__ = ["analyze", "analyze_scan", "Analysis", "load_ct"]

log = logging.getLogger(__name__)


def load_ct(source: str | PathLike | CTVolume | Sequence[str | PathLike] | Any, *, series_uid: str | None = None) -> CTVolume:
    """Read a CT from a DICOM folder / file list / catalog entry, or a NIfTI/NRRD/MHA file.

    A :class:`CTVolume` is returned unchanged.
    """
    if isinstance(source, CTVolume):
        return source
    from .io.images import is_image_file, read_image

    if isinstance(source, (str, PathLike)) and is_image_file(source) and Path(source).is_file():
        return read_image(source)
    from .io.dicom import read_series

    return read_series(source, series_uid=series_uid)


@dataclasses.dataclass(frozen=True, eq=False)
class Analysis:
    """Everything one scan's analysis made: the CT, its regions and the scores.

    Kept together for review outputs (QC images, masks) that need the arrays;
    :func:`analyze` returns only the (small) :class:`ScanResult`.  With
    several schemes ``result`` is a :class:`~lungdamage.score.ResultSet`
    (one :class:`ScanResult` per scheme, one segmentation, one kernel pass).
    """

    ct: CTVolume
    regions: RegionMap
    result: ScanResult | ResultSet
    #: The :class:`~lungdamage.privacy.Pseudonymizer` applied to ``ct.meta`` (None: not pseudonymized);
    #: review outputs use it to de-identify the DICOM SEG.
    pseudonymize: Any = None
    #: The :class:`~lungdamage.score.lesion.LesionMap` the scores were made from (None: not computed);
    #: the QC overlay draws its classes instead of running the lesion filter again.
    lesions: Any = None


def analyze(source, **options: Any) -> ScanResult | ResultSet:
    """Read, segment and score one scan; see :func:`analyze_scan` for the options.

    Returns
    -------
    ScanResult, or ResultSet when several schemes are given
        ``result.to_frame()`` gives the tidy per-region table.

    Examples
    --------
    ``analyze("scan/", scheme=["covid", "lcta"]).to_frame()`` -- both
    schemes from one segmentation, told apart by the ``scheme`` column.
    """
    return analyze_scan(source, **options).result


def analyze_scan(
    source: str | PathLike | CTVolume | Sequence[str | PathLike] | Any,
    *,
    scheme: str | Scheme | Mapping[str, Any] | Sequence[str | Scheme] = "covid",
    method: str = "threshold",
    regions: str = "lungs",
    series_uid: str | None = None,
    model: str | None = None,
    weights: str | PathLike | None = None,
    regions_from: str | PathLike | None = None,
    label_codes: str | None = None,
    suppress_vessels: bool = False,
    smooth_sigma_mm: float | None = None,
    partial_lobes: bool = False,
    css_approx_lobes: bool = False,
    pseudonymize: Any = None,
) -> Analysis:
    """Read, segment and score one scan, keeping the CT and region map.

    Parameters
    ----------
    source : path, list of paths, catalog entry or CTVolume
        A DICOM series folder (one series, or choose with ``series_uid``), a
        list of DICOM files, or a NIfTI / NRRD / MHA file.
    scheme : str, Scheme, mapping, or a list of them
        HU band scheme (``covid`` default; ``lcta``, ``aeration`` or a file).
        Several (a list or ``"covid,lcta"``) share one segmentation and one
        kernel pass; the result is then a ``ResultSet``.
    method : {"threshold", "lungmask"}
        Lung segmentation method.
    regions : {"lungs", "zones", "lobes"}
        Region set to report.
    series_uid : str, optional
        Which series to read from a folder holding several.
    model, weights :
        lungmask model name and local weight file (``method="lungmask"``).
    regions_from, label_codes :
        Import the region map from a label file instead of segmenting;
        ``label_codes`` names its convention (``lungmask``, ``totalsegmentator``,
        ``cip`` or a JSON file).
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
    pseudonymize : Pseudonymizer or str, optional
        Replace patient id, UIDs, dates and source path by keyed pseudonyms
        right after reading (:mod:`lungdamage.privacy`; a str is the key, or
        ``@FILE`` / ``env:NAME``).  Everything downstream -- result rows,
        review outputs -- sees only pseudonymous values.

    Returns
    -------
    Analysis
        ``.ct``, ``.regions`` and ``.result`` (a :class:`ScanResult`).
    """
    from .segment import segment_lungs

    schemes = get_schemes(scheme)  # fail on a bad scheme before the slow steps
    scheme_arg = list(schemes) if is_scheme_list(scheme) else schemes[0]
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ct = load_ct(source, series_uid=series_uid)
    pz = _pseudonymizer(pseudonymize)
    if pz is not None:
        ct = pz.volume(ct)
    timings["read_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    region_map = segment_lungs(
        ct,
        method=method,
        regions=regions,
        model=model,
        weights=weights,
        regions_from=regions_from,
        label_codes=label_codes,
        partial_lobes=partial_lobes,
    )
    timings["segment_s"] = time.perf_counter() - t0
    from .segment.plausibility import qc_checks

    checks = qc_checks(ct, region_map)
    qc = {
        "qc_flags": tuple(c.flag for c in checks),
        # the segmentation's own warnings (e.g. one lung only) and one sentence per failed check
        "extra_warnings": tuple(region_map.info.get("warnings", ())) + tuple(f"qc {c.flag}: {c.message}" for c in checks),
    }
    t0 = time.perf_counter()
    params = {
        "regions": regions,
        "model": model,
        # name and content hash: two different label files with one name are different runs
        "regions_from": f"{Path(regions_from).name}:{_file_hash(regions_from)}" if regions_from else None,
        "label_codes": label_codes,
        # only when set: default runs keep their parameter hash
        **({"partial_lobes": True} if partial_lobes else {}),
        **({"css_approx_lobes": True} if css_approx_lobes else {}),
    }
    if pz is not None:  # the key itself is never recorded
        params["pseudonymized"] = True
        if regions_from:  # label files are often named after the patient
            name = pz.token(Path(regions_from).name)
            params["regions_from"] = f"{name}:{_file_hash(regions_from)}"
            region_map = dataclasses.replace(
                region_map, method=f"labels:{name}", info={**region_map.info, "source": pz.token(regions_from)}
            )
    lesion_map = scan_lesions(ct, region_map)  # kept for the review outputs (QC overlay)
    result = score(
        ct,
        region_map,
        scheme_arg,
        params=params,
        suppress_vessels=suppress_vessels,
        smooth_sigma_mm=smooth_sigma_mm,
        lesion_map=lesion_map,
    )
    timings["score_s"] = time.perf_counter() - t0
    log.info(
        "%s: read %.2fs, segment %.2fs, score %.2fs",
        ct.meta.key, timings["read_s"], timings["segment_s"], timings["score_s"],
    )

    def _finish(r: ScanResult) -> ScanResult:
        return dataclasses.replace(r, timings_s=timings, qc_flags=qc["qc_flags"],
                                   warnings=tuple(r.warnings) + qc["extra_warnings"])

    if isinstance(result, ResultSet):
        result = ResultSet(_finish(r) for r in result)
    else:
        result = _finish(result)
    return Analysis(ct, region_map, result, pseudonymize=pz, lesions=lesion_map)


def _pseudonymizer(value: Any):
    """A Pseudonymizer from ``value`` (one, a key string, or None)."""
    if value is None:
        return None
    from .privacy import Pseudonymizer

    return value if isinstance(value, Pseudonymizer) else Pseudonymizer.from_option(str(value))


def _file_hash(path: str | PathLike) -> str:
    """SHA-256 of a file (first 16 hex characters)."""
    return file_sha256(path)[:16]
