"""Lung, lobe and zone segmentation.

One entry point, :func:`segment_lungs`, dispatches to

- ``method='threshold'`` (default): classical, CPU-fast, no weights
  (:mod:`lungdamage.segment.lungs`);
- ``method='lungmask'``: the optional deep-learning backend
  (:mod:`lungdamage.segment.lungmask`, needs the ``lungmask`` extra);
- ``regions_from=<file>``: labels written by another tool
  (:mod:`lungdamage.segment.imported`).

Region sets: ``lungs`` (right/left), ``zones`` (upper/middle/lower thirds by
height of each lung) and ``lobes`` (true lobes from a lobe model or an
imported lobe map, otherwise the approximate ``lobes-approx`` partition of
:func:`lungdamage.segment.lobes.approx_lobes`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..regions import RegionMap
from ..volume import CTVolume
from .lobes import approx_lobes, zones_from_lungs
from .lungs import segment_threshold

__all__ = ["segment_lungs", "segment_threshold", "zones_from_lungs", "approx_lobes", "labels_from_file",
           "METHODS", "REGIONS"]

log = logging.getLogger(__name__)

METHODS = ("threshold", "lungmask")
REGIONS = ("lungs", "zones", "lobes")
#: lungmask model used for ``regions='lobes'`` when no model is named.
DEFAULT_LOBE_MODEL = "LTRCLobes_R231"


def labels_from_file(ct, path, *, label_codes):  # re-exported lazily (imports SimpleITK)
    from .imported import labels_from_file as _impl

    return _impl(ct, path, label_codes=label_codes)


labels_from_file.__doc__ = "See :func:`lungdamage.segment.imported.labels_from_file`."


def segment_lungs(
    ct: CTVolume,
    *,
    method: str = "threshold",
    regions: str = "lungs",
    weights: str | Path | None = None,
    model: str | None = None,
    regions_from: str | Path | None = None,
    label_codes: str | Mapping[int, str] | Path | None = None,
    partial_lobes: bool = False,
) -> RegionMap:
    """Segment the lungs of ``ct`` into a region set.

    Parameters
    ----------
    ct : CTVolume
        Any number of slices (>= 1), any orientation and slice thickness.
    method : {'threshold', 'lungmask'}
        Ignored when ``regions_from`` is given.
    regions : {'lungs', 'zones', 'lobes'}
        ``lobes`` gives true lobes with a lungmask lobe model or an imported
        lobe map, otherwise ``region_set='lobes-approx'``.
    weights : path, optional
        lungmask weights file (never downloaded).
    model : str, optional
        lungmask model name (default ``R231``; ``LTRCLobes_R231`` for lobes).
    regions_from : path, optional
        Label map on the CT grid made by another tool.
    label_codes : str, mapping or path
        Code convention of ``regions_from``: ``'lungmask'``, ``'lungmask-lungs'``,
        ``'totalsegmentator'``, ``'cip'`` or a JSON file.
    partial_lobes : bool
        Accept ``lobes-approx`` on a scan that cuts off a lung's apex or base
        (refused by default; see :func:`~lungdamage.segment.lobes.approx_lobes`).

    Returns
    -------
    RegionMap
        ``labels`` uint8 on the CT grid.

    Raises
    ------
    SegmentationError
        No lung found (e.g. an abdominal scan).
    LobeCoverageError
        ``lobes-approx`` on a scan not covering apex and base of each lung
        (without ``partial_lobes``).
    GeometryError
        ``regions_from`` is not on the CT grid.
    InputError
        Unknown method, region set or label-code convention.
    """
    if regions not in REGIONS:
        raise InputError(f"Unknown region set {regions!r} for {ct.meta.key}. Allowed: {', '.join(REGIONS)}.")
    if regions_from is not None:
        # label maps need label_codes; a DICOM SEG names its segments (checked in labels_from_file)
        rm = labels_from_file(ct, regions_from, label_codes=label_codes)
    elif label_codes is not None:
        raise InputError("label_codes is only used with regions_from=<label file>. Potential fix: pass both.")
    elif method == "threshold":
        rm = segment_threshold(ct)
    elif method == "lungmask":
        from .lungmask import segment_lungmask

        kwargs: dict[str, Any] = {}
        if model is not None or regions == "lobes":
            kwargs["model"] = model or DEFAULT_LOBE_MODEL
        rm = segment_lungmask(ct, weights=weights, **kwargs)
    else:
        raise InputError(f"Unknown segmentation method {method!r}. Allowed: {', '.join(METHODS)}.")

    if regions == "lungs":
        return rm if rm.region_set == "lungs" else rm.to_lungs()
    if regions == "zones":
        return zones_from_lungs(ct, rm)
    if rm.region_set in ("lobes", "lobes-approx"):
        return rm
    log.info("%s: no lobe model or lobe labels; using approximate lobes (fissure-plane model)", ct.meta.key)
    return approx_lobes(ct, rm, allow_partial=partial_lobes)
