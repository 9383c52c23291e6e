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

import logging
from collections.abc import Mapping

import numpy as np

from ..errors import SegmentationError
from ..regions import LOBE_CODES, ZONE_CODES, RegionMap
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


def _extent(mask: np.ndarray, ax: int, coord: np.ndarray, half: float) -> tuple[float, float] | None:
    other = tuple(k for k in range(3) if k != ax)
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


def lobe_coverage(ct: CTVolume, lungs: RegionMap, *, max_edge_fraction: float = MAX_EDGE_FRACTION) -> dict[str, list[str]]:
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
    zax, z = _axis_coords(ct, 2)
    other = tuple(k for k in range(3) if k != zax)
    top, bottom = int(np.argmax(z)), int(np.argmin(z))
    out: dict[str, list[str]] = {}
    for side, name in ((1, "right"), (2, "left")):
        area = (lungs.labels == side).sum(axis=other)
        peak = int(area.max()) if area.size else 0
        cut = []
        if peak:
            if area[top] >= max_edge_fraction * peak:
                cut.append("apex")
            if area[bottom] >= max_edge_fraction * peak:
                cut.append("base")
        out[name] = cut
    return out


def _weighted_threshold(values: np.ndarray, weights: np.ndarray, share: float) -> float:
    """Value below which ``share`` of the total weight lies (weighted quantile)."""
    order = np.argsort(values, kind="stable")
    v, cw = values[order], np.cumsum(weights[order], dtype=np.float64)
    i = int(np.searchsorted(cw, share * cw[-1], side="left"))
    return float(v[min(i, v.size - 1)])


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
    """
    lungs = lungs.to_lungs() if lungs.region_set != "lungs" else lungs
    lungs.check_grid(ct.shape)
    cut = lobe_coverage(ct, lungs)
    warnings_ = []
    if any(cut.values()):
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
        warnings_.append(
            f"lobes-approx on a partial scan ({where}): lobe boundaries are guesses fitted to the covered "
            "part only; per-lobe numbers are not comparable between scans"
        )
    zax, z = _axis_coords(ct, 2)
    yax, y = _axis_coords(ct, 1)  # LPS y: + posterior
    if yax == zax:  # degenerate direction matrix; pick the other in-plane axis
        yax = [k for k in range(3) if k != zax][0]
        y = np.arange(ct.shape[yax], dtype=np.float64) * ct.spacing_mm[yax]
    xax = 3 - zax - yax
    out = np.zeros(ct.shape, np.uint8)
    refined = []
    do_refine = refine and ct.shape[zax] >= MIN_REFINE_SLICES
    for side in (1, 2):
        m = lungs.labels == side
        ez = _extent(m, zax, z, ct.spacing_mm[zax] / 2.0)
        ey = _extent(m, yax, y, ct.spacing_mm[yax] / 2.0)
        if ez is None or ey is None:
            continue
        hz, hy = max(ez[1] - ez[0], 1e-6), max(ey[1] - ey[0], 1e-6)
        # oblique fissure plane z = slope * y + c (mm; y posterior): the level
        # z - slope * y is above c in the upper lobe (front of / above the fissure)
        slope = oblique_posterior_height / (1.0 - oblique_anterior_depth) * hz / hy
        if lobe_shares is None:
            c_obl = ez[0] + oblique_posterior_height * hz - slope * ey[1]
        else:
            # voxel counts per (z, y) pair: the plane's level depends on z and y only
            counts = m.sum(axis=xax)  # 2-D, axes in (zax, yax) order
            zz = z[:, None] if zax < yax else z[None, :]
            yy = y[None, :] if zax < yax else y[:, None]
            level = zz - slope * yy
            w = counts.ravel().astype(np.float64)
            keep = w > 0
            lower = _lobe_share(lobe_shares, ("RLL",) if side == 1 else ("LLL",), side)
            c_obl = _weighted_threshold(level.ravel()[keep], w[keep], lower)
        obl_dist = _along(zax, z) - slope * _along(yax, y) - c_obl  # mm, + superior of the plane
        obl_off: np.ndarray | float = 0.0  # cranio-caudal offset (mm) onto the visible fissure
        if do_refine:
            off = _refine_offset(ct, m, (zax, yax, xax), obl_dist, (1.0, -slope), band_mm)
            if off is not None:
                obl_off = off
                refined.append(f"{'right' if side == 1 else 'left'} oblique")
        upper_side = obl_dist > obl_off  # in front of / above the oblique fissure
        if side == 1:
            if lobe_shares is None:
                h_z = ez[0] + horizontal_height * hz
            else:
                mu = m & upper_side
                per_z = mu.sum(axis=tuple(k for k in range(3) if k != zax)).astype(np.float64)
                # RML share of the right lung, taken from the lowest part of the upper side
                rml = _lobe_share(lobe_shares, ("RML",), side) * m.sum() / max(per_z.sum(), 1.0)
                h_z = _weighted_threshold(z[per_z > 0], per_z[per_z > 0], min(rml, 0.9)) if per_z.any() else ez[0]
            hor_dist = _along(zax, z) - h_z
            hor_off: np.ndarray | float = 0.0
            if do_refine:
                off = _refine_offset(ct, m & upper_side, (zax, yax, xax), hor_dist, (1.0, 0.0), band_mm)
                if off is not None:
                    hor_off = off
                    refined.append("right horizontal")
            lobe = np.where(upper_side, np.where(hor_dist >= hor_off, np.uint8(1), np.uint8(2)), np.uint8(3))  # RUL RML RLL
        else:
            lobe = np.where(upper_side, np.uint8(4), np.uint8(5))  # LUL LLL
        out = np.where(m, lobe, out)
    info = dict(lungs.info)
    if lobe_shares is None:
        info["lobes"] = "approximate: fissure-plane model of each lung's shape (not true lobes)"
    else:
        info["lobes"] = ("approximate: fissure planes placed by adult lobar volume shares (Yamada et al. 2020), "
                         "not true lobes")
    if refined:
        info["lobes"] += "; refined onto the visible " + ", ".join(refined) + " fissure(s)"
    if warnings_:
        prior = info.get("warnings")
        info["warnings"] = [*(prior if isinstance(prior, (list, tuple)) else ()), *warnings_]
    return RegionMap(out, dict(LOBE_CODES), method=lungs.method, region_set="lobes-approx", info=info)


def _lobe_share(shares: Mapping[str, float], lobes: tuple[str, ...], side: int) -> float:
    """Share (0-1) of ``lobes`` in their lung, normalised over that lung's lobes."""
    own = ("RUL", "RML", "RLL") if side == 1 else ("LUL", "LLL")
    total = sum(float(shares[k]) for k in own)
    return sum(float(shares[k]) for k in lobes) / total


def _refine_offset(ct: CTVolume, mask: np.ndarray, axes: tuple[int, int, int], dist_mm, normal_zy, band_mm: float,
                   *, sigma_mm: float = 1.0, min_sheet: float = 15.0, min_support: float = 0.2,
                   cell_mm: float = 5.0):
    """Cranio-caudal offset (mm, broadcastable to ``ct.shape``) that moves a
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
    from scipy import ndimage

    zax, yax, xax = axes
    sp = np.asarray(ct.spacing_mm, float)
    dist = np.broadcast_to(dist_mm, ct.shape)
    near = mask & np.broadcast_to(np.abs(np.asarray(dist_mm)) <= band_mm, ct.shape)  # no full-size float copy
    if near.sum() < 1000:
        return None
    # the band's bounding box, block-averaged to voxels of about 1.3 mm or more
    f = [max(1, int(round(1.3 / s))) for s in sp]
    bb = []
    for a in range(3):
        i = np.flatnonzero(near.any(axis=tuple(k for k in range(3) if k != a)))
        n = (int(i[-1]) + 1 - int(i[0])) // f[a] * f[a]
        if n // f[a] < 5:
            return None
        bb.append(slice(int(i[0]), int(i[0]) + n))
    bb = tuple(bb)
    red = tuple(v for a in range(3) for v in ((bb[a].stop - bb[a].start) // f[a], f[a]))
    sub = ct.hu[bb].astype(np.float32).reshape(red).mean(axis=(1, 3, 5))
    nb = near[bb].reshape(red).mean(axis=(1, 3, 5)) >= 0.5
    spl = sp * np.asarray(f)
    n = int(nb.sum())
    if n < 50:
        return None
    H = np.empty((n, 3, 3), np.float32)
    for i in range(3):
        for j in range(i, 3):
            order = [0, 0, 0]
            order[i] += 1
            order[j] += 1
            v = ndimage.gaussian_filter(sub, np.maximum(sigma_mm / spl, 0.7), order=order)[nb] / (spl[i] * spl[j])
            H[:, i, j] = v
            H[:, j, i] = v
    lam, vec = np.linalg.eigh(H)  # ascending: lam[:, 0] the most negative
    del H
    sheet = -lam[:, 0] - np.abs(lam[:, 1])
    # the model normal in array-axis components
    d = ct.direction
    model_n = np.zeros(3)
    model_n[zax] = normal_zy[0] * np.sign(d[2, zax])
    model_n[yax] = normal_zy[1] * np.sign(d[1, yax])
    model_n /= np.linalg.norm(model_n)
    # well above the noise floor of the band (most band voxels hold no fissure)
    thr = max(min_sheet, 3.0 * float(np.percentile(sheet, 90)))
    ok = (sheet >= thr) & (np.abs(vec[:, :, 0] @ model_n) >= 0.8)
    if ok.sum() < 50:
        return None
    # candidate voxels: full-grid indices, offset = their distance from the model
    idx = [(c[ok] * f[a] + bb[a].start + f[a] // 2) for a, c in enumerate(np.nonzero(nb))]
    e = dist[tuple(idx)].astype(np.float64)
    w = sheet[ok].astype(np.float64)
    u, v = idx[yax] * sp[yax], idx[xax] * sp[xax]
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
    # a fissure is one smooth surface: enough candidates close to the fit, spread
    # over the lung's cross-section (scattered noise or vessel walls are not)
    inl = np.abs(e - A @ coef) <= max(3.0, 2.0 * float(sp.max()))
    cells = {(a, b) for a, b in zip((u[inl] // cell_mm).astype(int).tolist(), (v[inl] // cell_mm).astype(int).tolist())}
    area = mask.any(axis=zax).sum() * sp[yax] * sp[xax] / cell_mm**2
    if inl.sum() < 50 or inl.mean() < 0.5 or len(cells) < min_support * max(area, 1.0):
        log.debug("fissure not refined: %d of %d candidates on the fitted surface, %d of %.0f cells",
                  int(inl.sum()), inl.size, len(cells), area)
        return None
    gu = _along(yax, np.arange(ct.shape[yax]) * sp[yax])
    gv = _along(xax, np.arange(ct.shape[xax]) * sp[xax])
    off = sum(c * t for c, t in zip(coef, design(gu, gv)))
    log.debug("fissure refined: %d of %d candidates on the surface, %d of %.0f cells", int(inl.sum()), inl.size,
              len(cells), area)
    return np.clip(off, -band_mm, band_mm)
