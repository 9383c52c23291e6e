"""Zones (upper/middle/lower thirds) and approximate lobes from a lung map.

Both work in the CT's own geometry: the cranio-caudal axis and the
anterior-posterior direction come from ``ct.direction``, never from the array
layout.  Heights are taken along the array axis closest to the patient's S/I
axis (slice position); a gantry tilt of a few degrees is ignored.

Zones
    Each lung is cut into three slabs of **equal height** (not equal volume)
    between its own most superior and most inferior slice (slice extents
    include half a slice thickness on each side, so a single slice lies in the
    middle third).

Approximate lobes (``region_set='lobes-approx'``)
    A fissure-plane model of each lung.  The oblique fissure is a plane
    rising from anterior-inferior to posterior-superior (its tilt from the
    lung's own extent: :data:`OBLIQUE_POSTERIOR_HEIGHT` of the height at the
    back, the base at :data:`OBLIQUE_ANTERIOR_DEPTH` of the depth); on the
    right a horizontal plane separates the middle lobe (below, in front of
    the oblique fissure) from the upper lobe.  The planes are placed by
    volume: each lobe gets its adult share of its own lung,
    :data:`LOBE_SHARES` (supine inspiratory CT of healthy adults, Yamada et
    al. 2020, Respiration 99(7):598, Table 3: RUL 17.9, RML 9.3, RLL 26.5,
    LUL 23.1, LLL 23.2 % of the total lung volume).  Where fissures are
    visible (volumes of at least :data:`MIN_REFINE_SLICES` slices), each
    plane is then refined: a Hessian sheet filter finds bright plate-like
    voxels near the plane whose normal agrees with it, and a smooth
    (quadratic) offset surface fitted to them by robust weighted least
    squares moves the plane onto the visible fissure; without enough support
    the plane stays.  Placing planes by volume needs the whole lung: a scan
    that cuts off a lung's apex or base (:func:`lobe_coverage`) is refused
    with :class:`LobeCoverageError` unless ``allow_partial=True``, which
    fits the model to the covered part and flags every result row.  Either
    way this is an approximation: it is labelled ``lobes-approx`` and never
    presented as true lobes (CT severity scores are not computed on it by
    default).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import SegmentationError
from ..regions import LOBE_CODES, ZONE_CODES, RegionMap, labelled_box, nonzero_indices
from ..volume import CTVolume

log = logging.getLogger(__name__)

__all__ = [
    "HORIZONTAL_HEIGHT",
    "LOBE_RANGES_PCT",
    "LOBE_SHARES",
    "MAX_EDGE_FRACTION",
    "MIN_REFINE_SLICES",
    "OBLIQUE_ANTERIOR_DEPTH",
    "OBLIQUE_POSTERIOR_HEIGHT",
    "LobeCoverageError",
    "approx_lobes",
    "lobe_coverage",
    "zones_from_lungs",
]

#: Height (fraction of the lung's S/I extent, 0 = base) where the oblique fissure meets the posterior surface.
OBLIQUE_POSTERIOR_HEIGHT = 0.62
#: Anterior-posterior position (fraction, 0 = anterior) where the oblique fissure meets the base.
OBLIQUE_ANTERIOR_DEPTH = 0.15
#: Height (fraction, 0 = base) of the right horizontal fissure.
HORIZONTAL_HEIGHT = 0.55
#: Fissure refinement needs a volume: at least this many slices.
MIN_REFINE_SLICES = 16
#: Lobar volumes, percent of the total lung volume: supine inspiratory CT of 32 healthy
#: adults, mean (Yamada et al. 2020, Respiration 99(7):598, PMC7490509, Table 3).  The
#: model places the fissures so each lobe gets this share of its own lung.
LOBE_SHARES: dict[str, float] = {"RUL": 17.9, "RML": 9.3, "RLL": 26.5, "LUL": 23.1, "LLL": 23.2}
#: Observed range (min, max) of the same percentages in that study.
LOBE_RANGES_PCT: dict[str, tuple[float, float]] = {
    "RUL": (11.8, 22.7), "RML": (6.6, 13.8), "RLL": (22.3, 34.0), "LUL": (18.1, 26.6), "LLL": (19.4, 28.7),
}
#: A lung is cut off at an end of the scan when the outermost slice holds at least this
#: fraction of its largest cross-section (a sliver of apex tip is tolerated).
MAX_EDGE_FRACTION = 0.10


class LobeCoverageError(SegmentationError):
    """``lobes-approx`` was asked for on a scan that cuts off a lung's apex or base."""


def _axis_coords(ct: CTVolume, lps_row: int) -> tuple[int, np.ndarray]:
    """Array axis closest to LPS axis ``lps_row`` (0 x, 1 y, 2 z) and the
    coordinate (mm, along that LPS axis) of each index on it."""
    d = ct.direction
    ax = int(np.argmax(np.abs(d[lps_row, :])))
    idx = np.arange(ct.shape[ax], dtype=np.float64)
    coord = ct.origin_lps[lps_row] + d[lps_row, ax] * ct.spacing_mm[ax] * idx
    return ax, coord


def _extent(mask: np.ndarray, ax: int, coord: np.ndarray, half: float, ndim: int = 3) -> tuple[float, float] | None:
    other = tuple(k for k in range(ndim) if k != ax)
    present = mask.any(axis=other)
    if not present.any():
        return None
    c = coord[present]
    return float(c.min()) - half, float(c.max()) + half


def _along(ax: int, values: np.ndarray) -> np.ndarray:
    shape = [1, 1, 1]
    shape[ax] = -1
    return values.reshape(shape)


def zones_from_lungs(ct: CTVolume, lungs: RegionMap) -> RegionMap:
    """Upper / middle / lower thirds (by height) of each lung.

    Parameters
    ----------
    ct : CTVolume
        Supplies the geometry (which axis and direction is superior).
    lungs : RegionMap
        Any map with sides (lungs, lobes); collapsed to right/left first.

    Returns
    -------
    RegionMap
        Codes :data:`~lungdamage.regions.ZONE_CODES`, ``region_set='zones'``,
        same ``method`` as ``lungs``.
    """
    lungs = lungs.to_lungs() if lungs.region_set != "lungs" else lungs
    lungs.check_grid(ct.shape)
    ax, z = _axis_coords(ct, 2)  # LPS z: + superior
    half = ct.spacing_mm[ax] / 2.0
    out = np.zeros(ct.shape, np.uint8)
    for side, first in ((1, 1), (2, 4)):  # right -> RUZ.., left -> LUZ..
        m = lungs.labels == side
        ext = _extent(m, ax, z, half)
        if ext is None:
            continue
        lo, hi = ext
        h = (hi - lo) / 3.0
        # 0 upper, 1 middle, 2 lower; equal heights
        third = np.where(z >= hi - h, 0, np.where(z >= lo + h, 1, 2)).astype(np.uint8)
        code = _along(ax, (first + third).astype(np.uint8))
        out = np.where(m, code, out)
    info = dict(lungs.info)
    info["zones"] = "equal thirds of each lung's cranio-caudal height"
    return RegionMap(out, dict(ZONE_CODES), method=lungs.method, region_set="zones", info=info)


def lobe_coverage(
    ct: CTVolume, lungs: RegionMap, *, max_edge_fraction: float = MAX_EDGE_FRACTION
) -> dict[str, list[str]]:
    """Which ends (``apex``, ``base``) of each lung the scan cuts off.

    A lung is cut at an end when the scan's outermost slice at that end holds
    at least ``max_edge_fraction`` of the lung's largest cross-section (a
    lung that ends inside the scan has none there; a sliver of apex tip is
    tolerated).

    Returns
    -------
    dict
        ``{"right": [...], "left": [...]}``: the ends cut off (empty when the
        lung is covered from apex to base, or absent).
    """
    lungs = lungs.to_lungs() if lungs.region_set != "lungs" else lungs
    return _coverage(ct, lungs.labels, _lung_box(lungs.labels), max_edge_fraction)


def _coverage(ct: CTVolume, labels: np.ndarray, box: tuple[slice, ...] | None,
              max_edge_fraction: float, sides: Mapping[int, np.ndarray] | None = None) -> dict[str, list[str]]:
    """:func:`lobe_coverage` on the lungs' bounding box ``box`` (None: no lung); ``sides``: each lung's
    mask on the box (code 1, 2), when already made."""
    zax, z = _axis_coords(ct, 2)
    other = tuple(k for k in range(3) if k != zax)
    top, bottom = int(np.argmax(z)), int(np.argmin(z))
    out: dict[str, list[str]] = {}
    for side, name in ((1, "right"), (2, "left")):
        area = np.zeros(ct.shape[zax], np.int64)
        if box is not None:
            m = sides[side] if sides else labels[box] == side
            area[box[zax]] = m.sum(axis=other)
        peak = int(area.max()) if area.size else 0
        cut = []
        if peak:
            if area[top] >= max_edge_fraction * peak:
                cut.append("apex")
            if area[bottom] >= max_edge_fraction * peak:
                cut.append("base")
        out[name] = cut
    return out


def _lung_box(labels: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box (one slice per array axis) of the non-zero voxels; None when there are none."""
    box = labelled_box(labels)
    return None if box[0].start == box[0].stop else box


def _weighted_threshold(values: np.ndarray, weights: np.ndarray, share: float) -> float:
    """Value below which ``share`` of the total weight lies (weighted quantile)."""
    order = np.argsort(values, kind="stable")
    v, cw = values[order], np.cumsum(weights[order], dtype=np.float64)
    i = int(np.searchsorted(cw, share * cw[-1], side="left"))
    return float(v[min(i, v.size - 1)])


@dataclass(frozen=True)
class _Box:
    """The lungs' bounding box and its geometry: everything the lobe model works on.

    ``z`` / ``y``: coordinate (mm; LPS z + superior, y + posterior) of each
    index along ``zax`` / ``yax`` inside the box; ``start``: the box's first
    index on each array axis (full-grid positions are ``start + index``).
    """

    zax: int
    yax: int
    xax: int
    z: np.ndarray
    y: np.ndarray
    start: tuple[int, int, int]
    spacing_mm: np.ndarray
    direction: np.ndarray
    #: Block size (voxels per axis) of the fissure search grid: blocks of about 1.3 mm or more.
    f: tuple[int, int, int]
    #: Mean HU (float32) of each whole block of the box, blocks counted from the box's start.
    hu_blocks: np.ndarray


@dataclass(frozen=True)
class _Model:
    """Options of the fissure-plane model (see :func:`approx_lobes`)."""

    oblique_posterior_height: float
    oblique_anterior_depth: float
    horizontal_height: float
    lobe_shares: Mapping[str, float] | None
    refine: bool
    band_mm: float


def approx_lobes(
    ct: CTVolume,
    lungs: RegionMap,
    *,
    oblique_posterior_height: float = OBLIQUE_POSTERIOR_HEIGHT,
    oblique_anterior_depth: float = OBLIQUE_ANTERIOR_DEPTH,
    horizontal_height: float = HORIZONTAL_HEIGHT,
    lobe_shares: Mapping[str, float] | None = LOBE_SHARES,
    refine: bool = True,
    band_mm: float = 45.0,
    allow_partial: bool = False,
) -> RegionMap:
    """Approximate lobes: fissure planes placed by published lobar volume
    shares, refined onto visible fissures.

    Parameters
    ----------
    ct : CTVolume
    lungs : RegionMap
        Right/left lungs (other sided maps are collapsed first).
    oblique_posterior_height, oblique_anterior_depth : float
        Tilt of the oblique fissure plane (fractions of each lung's own
        extent; see module doc): it rises from anterior-inferior to
        posterior-superior.
    horizontal_height : float
        Height (fraction of the lung height) of the right horizontal fissure;
        used only with ``lobe_shares=None``.
    lobe_shares : mapping or None
        Relative volume of each lobe (normalised within each lung); the
        fissure planes are placed so the lobes have these shares of their
        lung (default :data:`LOBE_SHARES`, the supine means of Yamada et al.
        2020).  ``None`` places them at fixed fractions of the lung's extent
        instead (the model before issue 16: lower lobes far too small).
    refine : bool
        Move each model surface onto the visible fissure (volumes of at least
        :data:`MIN_REFINE_SLICES` slices; see module doc).
    band_mm : float
        How far (along the cranio-caudal axis) from the model surface a
        visible fissure is looked for.
    allow_partial : bool
        Accept a scan that cuts off the apex or base of a lung
        (:func:`lobe_coverage`): the model is then fitted to the covered part
        only, and ``info["warnings"]`` says so (copied onto every result row).

    Returns
    -------
    RegionMap
        Codes :data:`~lungdamage.regions.LOBE_CODES`, ``region_set='lobes-approx'``.

    Raises
    ------
    LobeCoverageError
        A lung's apex or base is not in the scan and ``allow_partial`` is False.

    Notes
    -----
    All work is done inside the lungs' bounding box (uint8 / bool arrays,
    no full-size float temporaries); the fissure search runs on a grid of
    about 1.3 mm (see :func:`_refine_offset`).
    """
    lungs = lungs.to_lungs() if lungs.region_set != "lungs" else lungs
    lungs.check_grid(ct.shape)
    box = _lung_box(lungs.labels)
    # each lung's mask on the box, made once: the coverage test and the lobe model share it
    sides = {} if box is None else {side: lungs.labels[box] == side for side in (1, 2)}
    warnings_ = _coverage_warnings(ct, _coverage(ct, lungs.labels, box, MAX_EDGE_FRACTION, sides), allow_partial)
    out = np.zeros(ct.shape, np.uint8)
    refined: list[str] = []
    if box is not None:
        geo = _box_geometry(ct, box)
        model = _Model(oblique_posterior_height, oblique_anterior_depth, horizontal_height, lobe_shares,
                       refine and ct.shape[geo.zax] >= MIN_REFINE_SLICES, band_mm)
        view = out[box]
        for side, m in sides.items():
            side_box = _side_box(m, geo.f)
            if side_box is not None:  # each lung on its own box: about half the voxels of both lungs' box
                refined += _lobes_of_side(_sub_geometry(geo, side_box), m[side_box], side, model, view[side_box])
    info = _lobe_info(dict(lungs.info), lobe_shares is None, refined, warnings_)
    return RegionMap(out, dict(LOBE_CODES), method=lungs.method, region_set="lobes-approx", info=info)


def _lobe_info(info: dict, fixed_fractions: bool, refined: list[str], warnings_: list[str]) -> dict:
    """``info`` with the ``lobes`` description (model, refined fissures) and the coverage warnings added."""
    if fixed_fractions:
        text = "approximate: fissure-plane model of each lung's shape (not true lobes)"
    else:
        text = "approximate: fissure planes placed by adult lobar volume shares (Yamada et al. 2020), not true lobes"
    if refined:
        text += "; refined onto the visible " + ", ".join(refined) + " fissure(s)"
    info["lobes"] = text
    if warnings_:
        prior = info.get("warnings")
        info["warnings"] = [*(prior if isinstance(prior, (list, tuple)) else ()), *warnings_]
    return info


def _coverage_warnings(ct: CTVolume, cut: dict[str, list[str]], allow_partial: bool) -> list[str]:
    """Refuse (or, with ``allow_partial``, flag) a scan that cuts off a lung's apex or base."""
    if not any(cut.values()):
        return []
    where = "; ".join(f"{side} lung: {' and '.join(ends)} not in the scan" for side, ends in cut.items() if ends)
    if not allow_partial:
        raise LobeCoverageError(
            f"Approximate lobes (lobes-approx) need each lung from apex to base, but in {ct.meta.key} "
            f"({ct.shape[0]} slices) the {where} (lung cross-section on the outermost slice >= "
            f"{MAX_EDGE_FRACTION:.0%} of its largest). Lobe boundaries cannot be placed from anatomy there. "
            "Potential fix: use true lobes (--method lungmask --model LTRCLobes_R231 after "
            "`lungdamage models download LTRCLobes_R231`, or --regions-from a lobe label file / DICOM SEG), "
            "report --regions zones or lungs, or pass --partial-lobes (partial_lobes=True) to accept "
            "guessed lobes flagged on every row."
        )
    return [
        f"lobes-approx on a partial scan ({where}): lobe boundaries are guesses fitted to the covered "
        "part only; per-lobe numbers are not comparable between scans"
    ]


def _box_geometry(ct: CTVolume, box: tuple[slice, ...]) -> _Box:
    """Axes (cranio-caudal, anterior-posterior, left-right) and coordinates of the lungs' box."""
    zax, z = _axis_coords(ct, 2)
    yax, y = _axis_coords(ct, 1)  # LPS y: + posterior
    if yax == zax:  # degenerate direction matrix; pick the other in-plane axis
        yax = [k for k in range(3) if k != zax][0]
        y = np.arange(ct.shape[yax], dtype=np.float64) * ct.spacing_mm[yax]
    start = (int(box[0].start), int(box[1].start), int(box[2].start))
    sp = np.asarray(ct.spacing_mm, float)
    f = (max(1, int(round(1.3 / sp[0]))), max(1, int(round(1.3 / sp[1]))), max(1, int(round(1.3 / sp[2]))))
    hu = ct.hu[box]
    hu = hu[_whole_blocks(hu.shape, f)]
    # exact (integer sums << 2**24); slabs of a few block rows keep the float temporaries small
    hu_blocks = np.empty(tuple(n // k for n, k in zip(hu.shape, f, strict=True)), np.float32)
    step = max(1, (1 << 22) // max(1, f[0] * hu.shape[1] * hu.shape[2]))
    for b0 in range(0, hu_blocks.shape[0], step):
        hu_blocks[b0:b0 + step] = _block_sum(hu[b0 * f[0]:(b0 + step) * f[0]], f, np.float32)
    hu_blocks /= np.float32(f[0] * f[1] * f[2])
    return _Box(zax, yax, 3 - zax - yax, z[box[zax]], y[box[yax]], start, sp, np.asarray(ct.direction, float),
                f, hu_blocks)


def _side_box(m: np.ndarray, f: tuple[int, int, int]) -> tuple[slice, ...] | None:
    """Bounding box of ``m`` (one lung, on the lungs' box) widened to whole blocks of ``f`` counted from the
    box's start (or to the box's end): the block grid of the box is the block grid of the sub-box."""
    ranges = nonzero_indices(m)
    if not ranges[0].size:
        return None
    return tuple(slice(int(i[0]) // k * k, min(-(-(int(i[-1]) + 1) // k) * k, n))
                 for i, k, n in zip(ranges, f, m.shape, strict=True))


def _sub_geometry(geo: _Box, sub: tuple[slice, ...]) -> _Box:
    """``geo`` of the block-aligned sub-box ``sub`` (:func:`_side_box`) of its box."""
    return dataclasses.replace(
        geo,
        z=geo.z[sub[geo.zax]],
        y=geo.y[sub[geo.yax]],
        start=(geo.start[0] + sub[0].start, geo.start[1] + sub[1].start, geo.start[2] + sub[2].start),
        hu_blocks=geo.hu_blocks[tuple(slice(s.start // k, None) for s, k in zip(sub, geo.f, strict=True))],
    )


def _whole_blocks(shape: tuple[int, ...], f: tuple[int, int, int]) -> tuple[slice, ...]:
    """The part of an array of ``shape`` made of whole blocks of ``f`` voxels, counted from index 0."""
    return tuple(slice(0, n // k * k) for n, k in zip(shape, f, strict=True))


def _lobes_of_side(geo: _Box, m: np.ndarray, side: int, model: _Model, out: np.ndarray) -> list[str]:
    """Write the lobe codes of one lung (``m``, bool on the box) into ``out``; return the refined fissures."""
    zax, yax, sp = geo.zax, geo.yax, geo.spacing_mm
    counts = m.sum(axis=geo.xax, dtype=np.int32)  # voxels per (z, y) pair, axes in (zax, yax) order
    zy = counts if zax < yax else counts.T
    if not zy.any():
        return []
    ez = _extent(zy, 0, geo.z, sp[zax] / 2.0, ndim=2)
    ey = _extent(zy, 1, geo.y, sp[yax] / 2.0, ndim=2)
    assert ez is not None and ey is not None
    hz, hy = max(ez[1] - ez[0], 1e-6), max(ey[1] - ey[0], 1e-6)
    # oblique fissure plane z = slope * y + c (mm; y posterior): the level
    # z - slope * y is above c in the upper lobe (front of / above the fissure)
    slope = model.oblique_posterior_height / (1.0 - model.oblique_anterior_depth) * hz / hy
    if model.lobe_shares is None:
        c_obl = ez[0] + model.oblique_posterior_height * hz - slope * ey[1]
    else:
        lower = _lobe_share(model.lobe_shares, ("RLL",) if side == 1 else ("LLL",), side)
        c_obl = _oblique_level(geo, zy, slope, lower)
    obl_dist = _along(zax, geo.z) - slope * _along(yax, geo.y) - c_obl  # mm, + superior of the plane
    refined = []
    obl_off: np.ndarray | float = 0.0  # cranio-caudal offset (mm) onto the visible fissure
    if model.refine:
        off = _refine_offset(geo, m, obl_dist, (1.0, -slope), model.band_mm)
        if off is not None:
            obl_off = off
            refined.append(f"{'right' if side == 1 else 'left'} oblique")
    upper = m & (obl_dist > obl_off)  # in front of / above the oblique fissure
    if side == 2:
        np.copyto(out, 5, where=m)  # LLL
        np.copyto(out, 4, where=upper)  # LUL
        return refined
    if model.lobe_shares is None:
        h_z = ez[0] + model.horizontal_height * hz
    else:
        h_z = _horizontal_level(geo, m, upper, _lobe_share(model.lobe_shares, ("RML",), side), ez[0])
    hor_dist = _along(zax, geo.z) - h_z
    hor_off: np.ndarray | float = 0.0
    if model.refine:
        off = _refine_offset(geo, upper, hor_dist, (1.0, 0.0), model.band_mm)
        if off is not None:
            hor_off = off
            refined.append("right horizontal")
    np.copyto(out, 3, where=m)  # RLL
    np.copyto(out, 2, where=upper)  # RML
    upper &= hor_dist >= hor_off
    np.copyto(out, 1, where=upper)  # RUL
    return refined


def _oblique_level(geo: _Box, zy: np.ndarray, slope: float, lower_share: float) -> float:
    """Level ``c`` of the oblique plane ``z - slope * y = c`` below which ``lower_share`` of the lung lies.

    ``zy``: the lung's voxel counts per (z, y) pair (the plane's level depends on z and y only).
    """
    level = geo.z[:, None] - slope * geo.y[None, :]
    w = zy.ravel().astype(np.float64)
    keep = w > 0
    return _weighted_threshold(level.ravel()[keep], w[keep], lower_share)


def _horizontal_level(geo: _Box, m: np.ndarray, upper: np.ndarray, rml_share: float, base_z: float) -> float:
    """Height (mm) of the right horizontal plane: the RML share of the lung from the bottom of ``upper``."""
    per_z = upper.sum(axis=tuple(k for k in range(3) if k != geo.zax)).astype(np.float64)
    # RML share of the right lung, taken from the lowest part of the upper side
    rml = rml_share * np.count_nonzero(m) / max(per_z.sum(), 1.0)
    if not per_z.any():
        return base_z
    return _weighted_threshold(geo.z[per_z > 0], per_z[per_z > 0], min(rml, 0.9))


def _lobe_share(shares: Mapping[str, float], lobes: tuple[str, ...], side: int) -> float:
    """Share (0-1) of ``lobes`` in their lung, normalised over that lung's lobes."""
    own = ("RUL", "RML", "RLL") if side == 1 else ("LUL", "LLL")
    total = sum(float(shares[k]) for k in own)
    return sum(float(shares[k]) for k in lobes) / total


def _refine_offset(geo: _Box, mask: np.ndarray, dist_mm: np.ndarray, normal_zy: tuple[float, float],
                   band_mm: float, *, sigma_mm: float = 1.0, min_sheet: float = 15.0, min_support: float = 0.2,
                   cell_mm: float = 5.0) -> np.ndarray | None:
    """Cranio-caudal offset (mm, broadcastable to the box) that moves a
    model fissure surface onto the visible fissure, or None.

    ``dist_mm``: signed cranio-caudal distance (mm, + superior) of each voxel
    from the model surface; ``normal_zy``: the surface normal's
    (superior, posterior) components.  Bright sheets (Hessian eigenvalues
    l0 <= l1 <= l2 with ``-l0 - |l1| >= min_sheet`` HU/mm^2, at scale
    ``sigma_mm``) within ``band_mm`` of the model, inside ``mask``, whose
    normal is within about 37 degrees of the model's, are the fissure.  When
    they cover at least ``min_support`` of the lung's cross-section (in
    ``cell_mm`` cells), a quadratic offset surface is fitted to them by
    iteratively reweighted (Tukey) least squares.
    """
    grid = _band_grid(geo, mask, dist_mm, band_mm)
    if grid is None:
        return None
    sub, nb, bb, f = grid
    spl = geo.spacing_mm * np.asarray(f)
    model_n = np.zeros(3)
    model_n[geo.zax] = normal_zy[0] * np.sign(geo.direction[2, geo.zax])
    model_n[geo.yax] = normal_zy[1] * np.sign(geo.direction[1, geo.yax])
    model_n /= np.linalg.norm(model_n)
    found = _sheet_points(sub, nb, spl, sigma_mm, model_n, min_sheet)
    if found is None:
        return None
    ok_sub, w = found
    # candidate voxels: box indices, offset = their distance from the model
    idx = [(c * f[a] + bb[a].start + f[a] // 2) for a, c in enumerate(ok_sub)]
    e = np.broadcast_to(dist_mm, mask.shape)[tuple(idx)].astype(np.float64)
    sp, yax, xax = geo.spacing_mm, geo.yax, geo.xax
    u, v = (idx[yax] + geo.start[yax]) * sp[yax], (idx[xax] + geo.start[xax]) * sp[xax]
    fit = _fit_surface(e, w, u, v)
    if fit is None:
        return None
    coef, design, resid = fit
    # a fissure is one smooth surface: enough candidates close to the fit, spread
    # over the lung's cross-section (scattered noise or vessel walls are not)
    inl = np.abs(resid) <= max(3.0, 2.0 * float(sp.max()))
    cells = set(zip((u[inl] // cell_mm).astype(int).tolist(), (v[inl] // cell_mm).astype(int).tolist(), strict=True))
    area = np.count_nonzero(mask.any(axis=geo.zax)) * sp[yax] * sp[xax] / cell_mm**2
    if inl.sum() < 50 or inl.mean() < 0.5 or len(cells) < min_support * max(area, 1.0):
        log.debug("fissure not refined: %d of %d candidates on the fitted surface, %d of %.0f cells",
                  int(inl.sum()), inl.size, len(cells), area)
        return None
    gu = _along(yax, (np.arange(mask.shape[yax]) + geo.start[yax]) * sp[yax])
    gv = _along(xax, (np.arange(mask.shape[xax]) + geo.start[xax]) * sp[xax])
    off = sum((c * t for c, t in zip(coef, design(gu, gv), strict=True)), np.zeros(()))
    log.debug("fissure refined: %d of %d candidates on the surface, %d of %.0f cells", int(inl.sum()), inl.size,
              len(cells), area)
    return np.clip(off, -band_mm, band_mm)


def _band_grid(geo: _Box, mask: np.ndarray, dist_mm: np.ndarray, band_mm: float):
    """The search band (``mask`` within ``band_mm`` of the model) on the block grid of ``geo``.

    Returns ``(sub, nb, bb, f)``: the block means (float32 HU) over the
    bounding box of the band's blocks, the blocks at least half inside the
    band (``nb``, bool), that bounding box in voxels of the box (``bb``) and
    the block size ``f``; None when the band is too small.
    """
    counts = _band_counts(geo, mask, np.abs(dist_mm) <= band_mm)
    if counts is None:
        return None
    f = geo.f
    n_block = f[0] * f[1] * f[2]
    nb_all = 2 * counts.astype(np.int32) >= n_block  # at least half of the block in the band
    ranges = nonzero_indices(nb_all)  # on the block grid: a small array
    if not ranges[0].size:
        return None
    bbk = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in ranges)
    if any(s.stop - s.start < 5 for s in bbk):
        return None
    nb = nb_all[bbk]
    if np.count_nonzero(nb) < 50:
        return None
    bb = [slice(s.start * k, s.stop * k) for s, k in zip(bbk, f, strict=True)]
    return geo.hu_blocks[bbk], nb, bb, list(f)


def _band_counts(geo: _Box, mask: np.ndarray, band: np.ndarray) -> np.ndarray | None:
    """Voxels of ``mask & band`` in each whole block of the box; None when fewer than 1000 in all.

    The band (``|distance| <= band_mm``) does not vary along the left-right axis, so ``mask`` is
    first summed over blocks along that axis and the band applied on the smaller array: no
    full-size ``mask & band`` array.
    """
    f = geo.f
    n_block = f[0] * f[1] * f[2]
    count_type = np.uint8 if n_block <= 255 else np.int32
    whole = _whole_blocks(mask.shape, f)
    band_whole = band[tuple(w if n > 1 else slice(None) for w, n in zip(whole, band.shape, strict=True))]
    if band.shape[geo.xax] != 1:  # not the model's surfaces; count at full resolution
        counts = _block_sum((mask & band)[whole], f, count_type)
        return counts if counts.sum(dtype=np.int64) >= 1000 else None
    along_x = [1, 1, 1]
    along_x[geo.xax] = f[geo.xax]
    per_x = _block_sum(mask[whole], along_x, count_type)
    np.multiply(per_x, band_whole, out=per_x)
    if per_x.sum(dtype=np.int64) < 1000:
        return None
    rest = list(f)
    rest[geo.xax] = 1
    return _block_sum(per_x, rest, count_type)


def _block_sum(a: np.ndarray, f: list[int] | tuple[int, ...], dtype: type) -> np.ndarray:
    """Sums over blocks of ``f`` voxels (per axis; each length a multiple of it), in ``dtype``.

    One strided add per block offset and axis: several times faster than a
    reduction over a 6-D reshaped view, and only block-grid sized arrays
    after the first axis.
    """
    out = a
    for axis, k in enumerate(f):
        if k == 1:
            continue

        def part(j: int, k: int = k, axis: int = axis) -> tuple[slice, ...]:
            return tuple(slice(j, None, k) if ax == axis else slice(None) for ax in range(3))

        acc: np.ndarray = np.add(out[part(0)], out[part(1)], dtype=dtype)
        for j in range(2, k):
            acc += out[part(j)]
        out = acc
    return out if out is not a else a.astype(dtype)


def _sheet_points(sub: np.ndarray, nb: np.ndarray, spl: np.ndarray, sigma_mm: float, model_n: np.ndarray,
                  min_sheet: float) -> tuple[tuple[np.ndarray, ...], np.ndarray] | None:
    """Grid positions (``nb``'s indices) of bright sheets parallel to the model, and their sheet strength.

    Hessian at scale ``sigma_mm`` on the block grid (spacing ``spl`` mm); its
    eigenvalues in closed form for every band voxel, eigenvectors only where
    the sheet strength passes the threshold.
    """
    comp = _hessian_in_slabs(sub, np.maximum(sigma_mm / spl, 0.7), nb, spl)
    lam = _sym3_eigvals(comp)
    sheet = -lam[0] - np.abs(lam[1])
    del lam
    # well above the noise floor of the band (most band voxels hold no fissure)
    thr = max(min_sheet, 3.0 * float(np.percentile(sheet, 90)))
    cand = np.flatnonzero(sheet >= thr)
    if cand.size < 50:
        return None
    H = np.empty((cand.size, 3, 3))
    for (i, j), v in comp.items():
        H[:, i, j] = H[:, j, i] = v[cand]
    _, vec = np.linalg.eigh(H)
    ok = cand[np.abs(vec[:, :, 0] @ model_n) >= 0.8]
    if ok.size < 50:
        return None
    pos = tuple(c[ok] for c in np.nonzero(nb))
    return pos, sheet[ok].astype(np.float64)


def _hessian_in_slabs(sub: np.ndarray, sigma: np.ndarray, nb: np.ndarray, spl: np.ndarray,
                      slab: int = 24) -> dict[tuple[int, int], np.ndarray]:
    """:func:`_hessian` computed slab by slab along the first axis, each slab cropped to its band voxels
    (``nb``) plus the filters' radius: the same values (every filtered value depends only on the input
    within the radius; the array's own edges stay edges), in the same (C) order, on the band's voxels
    instead of its whole bounding box (an oblique band fills a fraction of it)."""
    radius = [int(4.0 * float(s_) + 0.5) for s_ in sigma]  # gaussian_filter1d's (truncate 4)
    parts: dict[tuple[int, int], list[np.ndarray]] = {}
    for a0 in range(0, nb.shape[0], slab):
        a1 = min(a0 + slab, nb.shape[0])
        ranges = nonzero_indices(nb[a0:a1])
        if not ranges[0].size:
            continue
        lo = (a0, int(ranges[1][0]), int(ranges[2][0]))
        hi = (a1, int(ranges[1][-1]) + 1, int(ranges[2][-1]) + 1)
        crop = tuple(slice(max(lo[a] - radius[a], 0), min(hi[a] + radius[a], nb.shape[a])) for a in range(3))
        target = np.zeros(tuple(c.stop - c.start for c in crop), bool)
        target[tuple(slice(lo[a] - crop[a].start, hi[a] - crop[a].start) for a in range(3))] = (
            nb[tuple(slice(lo[a], hi[a]) for a in range(3))])
        for key, values in _hessian(sub[crop], sigma, target, spl).items():
            parts.setdefault(key, []).append(values)
    return {key: np.concatenate(v) for key, v in parts.items()}


def _hessian(sub: np.ndarray, sigma: np.ndarray, nb: np.ndarray, spl: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """Hessian components ``(i, j)``, i <= j (HU/mm^2, float32) at the voxels ``nb``: Gaussian derivatives.

    The same separable passes as ``scipy.ndimage.gaussian_filter(sub, sigma, order=...)`` (axis 0, 1, 2 in
    turn), sharing the partial results: 15 one-dimensional passes instead of 18.
    """
    from scipy.ndimage import gaussian_filter1d

    out: dict[tuple[int, int], np.ndarray] = {}
    for o0 in (0, 1, 2):
        a0 = gaussian_filter1d(sub, sigma[0], axis=0, order=o0)
        for o1 in range(3 - o0):
            a01 = gaussian_filter1d(a0, sigma[1], axis=1, order=o1)
            o2 = 2 - o0 - o1
            orders = (o0, o1, o2)
            i, j = [a for a in range(3) for _ in range(orders[a])]
            v = gaussian_filter1d(a01, sigma[2], axis=2, order=o2)[nb]
            v /= np.float32(spl[i] * spl[j])
            out[(i, j)] = v
    return out


def _sym3_eigvals(comp: dict[tuple[int, int], np.ndarray]) -> np.ndarray:
    """Eigenvalues (ascending, shape (3, n), float64) of symmetric 3x3 matrices given by their components.

    Closed form (trigonometric solution of the characteristic cubic), vectorized; in place on float64
    copies of the components (the same operations in the same order as the textbook formula, a third
    of its temporaries).
    """
    a, b, c = (comp[(k, k)].astype(np.float64) for k in range(3))
    d, e, g = (comp[k].astype(np.float64) for k in ((0, 1), (1, 2), (0, 2)))
    q = a + b
    q += c
    q /= 3.0  # q = (a + b + c) / 3
    a -= q
    b -= q
    c -= q  # a, b, c: the diagonal minus q
    p = a * a
    p += b * b
    p += c * c
    off = d * d
    off += e * e
    off += g * g
    off *= 2.0
    p += off
    p /= 6.0
    np.sqrt(p, out=p)  # p = sqrt(((a-q)^2 + (b-q)^2 + (c-q)^2 + 2 (d^2 + e^2 + g^2)) / 6)
    safe = np.where(p > 0, p, 1.0)
    for x in (a, b, c, d, e, g):
        x /= safe  # the matrix (A - q I) / p
    t = b * c
    t -= e * e
    t *= a
    u = d * c
    u -= e * g
    u *= d
    t -= u
    np.multiply(d, e, out=u)
    u -= b * g
    u *= g
    t += u  # det = a (b c - e^2) - d (d c - e g) + g (d e - b g)
    t /= 2.0
    np.clip(t, -1.0, 1.0, out=t)
    np.arccos(t, out=t)
    t /= 3.0  # phi
    p *= 2.0
    hi = np.cos(t)
    hi *= p
    hi += q
    t += 2.0 * np.pi / 3.0
    lo = np.cos(t, out=t)
    lo *= p
    lo += q
    q *= 3.0
    q -= hi
    q -= lo  # mid = 3 q - hi - lo
    return np.stack([lo, q, hi])


def _fit_surface(e: np.ndarray, w: np.ndarray, u: np.ndarray, v: np.ndarray):
    """Quadratic surface ``e ~ f(u, v)`` by iteratively reweighted (Tukey biweight) least squares.

    Returns ``(coef, design, residuals)`` (``design(u, v)`` lists the six basis
    terms), or None when every weight vanishes.
    """
    uc, vc, su, sv = u.mean(), v.mean(), max(u.std(), 1.0), max(v.std(), 1.0)

    def design(uu, vv):
        uu, vv = (uu - uc) / su, (vv - vc) / sv
        return [np.ones_like(uu * vv), uu, vv, uu * uu, vv * vv, uu * vv]

    A = np.stack(np.broadcast_arrays(*design(u, v)), axis=1)
    ww = w.copy()
    coef = np.zeros(6)
    for _ in range(10):  # IRLS, Tukey biweight
        Aw = A * ww[:, None]
        coef = np.linalg.solve(Aw.T @ A + 1e-6 * np.eye(6), Aw.T @ e)
        r = e - A @ coef
        t = r / (4.685 * (1.4826 * np.median(np.abs(r)) + 0.5))
        ww = w * np.where(np.abs(t) < 1.0, (1.0 - t * t) ** 2, 0.0)
        if ww.sum() <= 0:
            return None
    return coef, design, e - A @ coef
