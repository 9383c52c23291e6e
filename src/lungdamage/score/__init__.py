"""Scoring: HU band schemes, the vectorized kernel and :class:`ScanResult`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..regions import RegionMap
from ..volume import CTVolume
from .kernels import HU_OFFSET, region_histograms
from .result import ScanResult, dependency_versions, params_hash
from .schemes import PRESETS, Band, Scheme, get_scheme

__all__ = ["score", "Scheme", "Band", "ScanResult", "PRESETS", "get_scheme", "params_hash", "dependency_versions"]


def score(
    ct: CTVolume,
    regions: RegionMap,
    scheme: str | Scheme | Mapping[str, Any] = "covid",
    *,
    params: Mapping[str, Any] | None = None,
) -> ScanResult:
    """Score every region of ``regions`` on ``ct`` with ``scheme``.

    One pass over the volume: an exact HU histogram per label code from a
    single ``np.bincount``; aggregates (``right``, ``left``, ``total``) are
    sums of their parts' histograms, and all band counts and densitometry come
    from the histograms.

    Parameters
    ----------
    ct : CTVolume
    regions : RegionMap
        On the CT grid.
    scheme : str, Scheme or mapping
        Preset name (``covid``, ``lcta``, ``aeration``), scheme file path or object.
    params : mapping, optional
        Run parameters recorded (and hashed) in the result's provenance.

    Returns
    -------
    ScanResult

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
    scheme = get_scheme(scheme)
    regions.check_grid(ct.shape, where=f"{ct.meta.key}")
    hist = region_histograms(ct.hu, regions.labels)
    n_rows = max(hist.shape[0], max(regions.names, default=0) + 1)
    if hist.shape[0] < n_rows:
        hist = np.vstack([hist, np.zeros((n_rows - hist.shape[0], hist.shape[1]), hist.dtype)])
    groups = regions.groups()
    per_region = np.stack([hist[list(codes)].sum(axis=0) for codes in groups.values()])
    occupied = np.flatnonzero(per_region.any(axis=0))
    lo, hi = (int(occupied[0]), int(occupied[-1]) + 1) if occupied.size else (HU_OFFSET, HU_OFFSET + 1)
    run_params = {
        "scheme": scheme.to_dict(),
        "method": regions.method,
        "region_set": regions.region_set,
        **dict(params or {}),
    }
    return ScanResult(
        meta=ct.meta,
        scheme=scheme,
        regions=tuple(groups),
        region_set=regions.region_set,
        method=regions.method,
        histograms=np.ascontiguousarray(per_region[:, lo:hi]),
        hist_lo_hu=lo - HU_OFFSET,
        voxel_volume_ml=ct.voxel_volume_ml,
        params=run_params,
        warnings=tuple(ct.meta.warnings),
    )
