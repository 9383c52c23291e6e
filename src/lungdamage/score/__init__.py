"""Scoring: HU band schemes, the vectorized kernel and :class:`ScanResult`.

``lungdamage.score`` is both this subpackage (``lungdamage.score.schemes``)
and the public verb ``lungdamage.score(ct, regions, scheme="covid")``: the
module object is callable and calls :func:`score`.  (Python binds a
subpackage to its parent's attribute on import, so a plain function of the
same name would be replaced; a callable module keeps both names working.)
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..regions import RegionMap
from ..volume import CTVolume
from .kernels import HU_OFFSET, region_histograms
from .metrics import slice_spacing_warnings
from .lesion import LesionMap, LesionParams, find_lesions, lesion_counts, lesion_params
from .prefilter import find_vessels, smooth_lungs
from .result import ResultSet, ScanResult, dependency_versions, params_hash
from .schemes import PRESETS, Band, Scheme, get_scheme, get_schemes, is_scheme_list

__all__ = [
    "score",
    "Scheme",
    "Band",
    "ScanResult",
    "ResultSet",
    "PRESETS",
    "get_scheme",
    "get_schemes",
    "params_hash",
    "dependency_versions",
    "find_vessels",
    "smooth_lungs",
    "find_lesions",
    "scan_lesions",
    "LesionParams",
]


def score(
    ct: CTVolume,
    regions: RegionMap,
    scheme: str | Scheme | Mapping[str, Any] | Sequence[str | Scheme] = "covid",
    *,
    params: Mapping[str, Any] | None = None,
    suppress_vessels: bool = False,
    vessel_options: Mapping[str, Any] | None = None,
    smooth_sigma_mm: float | None = None,
    lesions: bool = True,
    lesion_options: LesionParams | Mapping[str, Any] | None = None,
    lesion_map: LesionMap | None = None,
) -> ScanResult | ResultSet:
    """Score every region of ``regions`` on ``ct`` with ``scheme``.

    One pass over the volume: an exact HU histogram per label code from a
    single ``np.bincount``; aggregates (``right``, ``left``, ``total``) are
    sums of their parts' histograms, and all band counts, densitometry and
    severity scores come from the histograms.  Several schemes share that
    one pass (histograms do not depend on the scheme).

    Parameters
    ----------
    ct : CTVolume
    regions : RegionMap
        On the CT grid.
    scheme : str, Scheme, mapping, or a list of them
        Preset name (``covid``, ``lcta``, ``aeration``), scheme file path or
        object; a list or a comma-separated string gives one result per scheme.
    params : mapping, optional
        Run parameters recorded (and hashed) in the result's provenance.
    suppress_vessels : bool
        Exclude dense structures that are not part of an opacity (vessels, see
        :func:`~lungdamage.score.prefilter.find_vessels`) from every band;
        their volume is reported as ``vessel_ml``.  Off by default (an extra
        per-voxel pass; see ``docs/metrics.md`` for its measured effect).
    vessel_options : mapping, optional
        Keyword arguments of :func:`~lungdamage.score.prefilter.find_vessels`
        (``dense_hu``, ``rim_hu``, ``rim_voxels``).
    smooth_sigma_mm : float, optional
        Gaussian noise pre-filter inside the lung mask (sharp kernels, low
        dose); ``None`` or 0 = off.
    lesions : bool
        Compute the lesion measure (``lesion_pct`` ... columns; see
        :mod:`lungdamage.score.lesion`) beside the band measure.  On by
        default; False leaves those columns NaN.
    lesion_options : LesionParams or mapping, optional
        Overrides of the lesion parameters (recorded in the params hash).
    lesion_map : LesionMap, optional
        The lesion map of this CT and lung mask with these parameters, already
        computed (:func:`scan_lesions`; e.g. kept for the QC overlay): used
        instead of running the filter again.  Ignored (recomputed) when its
        parameters or shape differ.

    Returns
    -------
    ScanResult, or ResultSet when several schemes are given

    Raises
    ------
    GeometryError
        ``regions`` is not on the CT grid.
    SchemeError
        Unknown or invalid scheme.

    Examples
    --------
    >>> import numpy as np
    >>> from lungdamage import CTVolume, RegionMap
    >>> ct = CTVolume(np.array([[[-850, -500, 0, 40]]], np.int16), (1.0, 1.0, 1.0))
    >>> lungs = RegionMap(np.array([[[1, 1, 2, 0]]], np.uint8), {1: "right", 2: "left"})
    >>> score(ct, lungs).to_frame().set_index("region")["damage_pct"].tolist()
    [50.0, 100.0, 66.66666666666667]
    """
    many = is_scheme_list(scheme)
    schemes = get_schemes(scheme)
    regions.check_grid(ct.shape, where=f"{ct.meta.key}")
    labels = regions.labels
    max_code = int(max(regions.names, default=0))
    vessel_mask = None
    lesion_p = lesion_params(lesion_options) if lesions else None
    hu_read = ct.hu
    if lesion_p is not None:  # on the CT as read: the lesion measure has its own noise handling
        lesion_map = scan_lesions(ct, regions, lesion_p, reuse=lesion_map)
    if smooth_sigma_mm is not None and not (np.isfinite(smooth_sigma_mm) and smooth_sigma_mm >= 0):
        from ..errors import InputError

        raise InputError(
            f"smooth_sigma_mm must be a finite number >= 0 (mm), got {smooth_sigma_mm!r}. "
            "Potential fix: e.g. 1.0 for a sharp kernel, or leave it out."
        )
    if suppress_vessels or smooth_sigma_mm:
        lung = regions.lung_mask
        if suppress_vessels:
            vessel_mask = find_vessels(ct, lung, lesions=lesion_map, **dict(vessel_options or {}))
        if smooth_sigma_mm:
            ct = smooth_lungs(ct, lung if vessel_mask is None else lung & ~vessel_mask, sigma_mm=float(smooth_sigma_mm))
    if vessel_mask is not None:
        if 2 * max_code > 255:
            raise ValueError(f"vessel suppression needs region codes <= 127, got {max_code}")
        labels = labels.copy()
        labels[vessel_mask] += np.uint8(max_code)
    hist = region_histograms(ct.hu, labels)
    n_rows = max(hist.shape[0], (2 if vessel_mask is not None else 1) * max_code + 1)
    if hist.shape[0] < n_rows:
        hist = np.vstack([hist, np.zeros((n_rows - hist.shape[0], hist.shape[1]), hist.dtype)])
    groups = regions.groups()
    per_region = np.stack([hist[list(codes)].sum(axis=0) for codes in groups.values()])
    vessel_voxels = None
    if vessel_mask is not None:
        vessel_voxels = np.array([int(hist[[c + max_code for c in codes]].sum()) for codes in groups.values()])
    lesion_voxels = lesion_count = None
    if lesion_map is not None:
        n_codes = max_code + 1
        vox, present = lesion_counts(hu_read, regions.labels, lesion_map, n_codes, lesion_p)
        lesion_voxels = np.stack([vox[list(codes)].sum(axis=0) for codes in groups.values()])
        lesion_count = np.array([int(present[list(codes)].any(axis=0).sum()) for codes in groups.values()])
    occupied = np.flatnonzero(per_region.any(axis=0))
    lo, hi = (int(occupied[0]), int(occupied[-1]) + 1) if occupied.size else (HU_OFFSET, HU_OFFSET + 1)
    finest = {regions.names[c] for c in regions.names}
    parts = {
        name: tuple(regions.names[c] for c in codes)
        for name, codes in groups.items()
        if name not in finest or len(codes) > 1
    }
    histograms = np.ascontiguousarray(per_region[:, lo:hi])
    histograms.setflags(write=False)
    model = str(regions.info.get("model", "") or (params or {}).get("model") or "")
    # segmentation warnings (e.g. lobes-approx on a partial scan) go on every row
    info_warnings = regions.info.get("warnings")
    region_warnings = tuple(str(w) for w in info_warnings) if isinstance(info_warnings, (list, tuple)) else ()
    results = []
    for sch in schemes:
        run_params = {
            "scheme": sch.to_dict(),
            "method": regions.method,
            "region_set": regions.region_set,
            "suppress_vessels": bool(suppress_vessels),
            "vessel_options": dict(vessel_options or {}) if suppress_vessels else None,
            "smooth_sigma_mm": float(smooth_sigma_mm) if smooth_sigma_mm else None,
            "lesion": lesion_p.to_dict() if lesion_p is not None else None,
            **dict(params or {}),
        }
        results.append(
            ScanResult(
                meta=ct.meta,
                scheme=sch,
                regions=tuple(groups),
                region_set=regions.region_set,
                method=regions.method,
                histograms=histograms,
                hist_lo_hu=lo - HU_OFFSET,
                voxel_volume_ml=ct.voxel_volume_ml,
                params=run_params,
                warnings=(
                    *ct.meta.warnings,
                    *slice_spacing_warnings(ct.meta.slice_thickness_mm, float(ct.spacing_mm[0])),
                    *region_warnings,
                ),
                parts=parts,
                vessel_voxels=vessel_voxels,
                model=model,
                lesion_voxels=lesion_voxels,
                lesion_count=lesion_count,
            )
        )
    return ResultSet(results) if many else results[0]


def scan_lesions(
    ct: CTVolume,
    regions: RegionMap,
    lesion_options: LesionParams | Mapping[str, Any] | None = None,
    *,
    reuse: LesionMap | None = None,
) -> LesionMap:
    """The lesion map of a scan (:func:`~lungdamage.score.lesion.find_lesions` on the CT as read).

    Parameters
    ----------
    ct : CTVolume
    regions : RegionMap
        On the CT grid (every region together is the lung mask).
    lesion_options : LesionParams or mapping, optional
    reuse : LesionMap, optional
        A map already computed for this scan: returned as it is when it was
        made with the same parameters on the same grid, else recomputed.

    Returns
    -------
    LesionMap
    """
    p = lesion_params(lesion_options)
    if reuse is not None and reuse.params == p and reuse.lesion.shape == ct.shape:
        return reuse
    ap_axis = int(np.argmax(np.abs(np.asarray(ct.direction, dtype=float)[1, :])))  # array axis along P
    return find_lesions(ct.hu, regions.lung_mask, ct.spacing_mm, p, ap_axis=ap_axis)


class _CallableModule(types.ModuleType):
    """``lungdamage.score(...)`` calls :func:`score`."""

    def __call__(self, *args: Any, **kwargs: Any):
        return score(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
sys.modules[__name__].__signature__ = inspect.signature(score)  # type: ignore[attr-defined]
