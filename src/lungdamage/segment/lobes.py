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
    A fissure-plane model fitted to each lung's own extent: the oblique
    fissure is a plane tilted from posterior-superior (at
    :data:`OBLIQUE_POSTERIOR_HEIGHT` of the lung height) to anterior-inferior
    (reaching the base at :data:`OBLIQUE_ANTERIOR_DEPTH` of the lung's
    anterior-posterior depth); on the right, the horizontal fissure at
    :data:`HORIZONTAL_HEIGHT` separates the middle from the upper lobe in front
    of the oblique fissure.  This is an anatomical prior, not a segmentation of
    visible fissures: it is labelled ``lobes-approx`` and never presented as
    true lobes.
"""

from __future__ import annotations

import numpy as np

from ..regions import LOBE_CODES, ZONE_CODES, RegionMap
from ..volume import CTVolume

__all__ = ["zones_from_lungs", "approx_lobes", "OBLIQUE_POSTERIOR_HEIGHT", "OBLIQUE_ANTERIOR_DEPTH",
           "HORIZONTAL_HEIGHT"]

#: Height (fraction of the lung's S/I extent, 0 = base) where the oblique fissure meets the posterior surface.
OBLIQUE_POSTERIOR_HEIGHT = 0.62
#: Anterior-posterior position (fraction, 0 = anterior) where the oblique fissure meets the base.
OBLIQUE_ANTERIOR_DEPTH = 0.15
#: Height (fraction, 0 = base) of the right horizontal fissure.
HORIZONTAL_HEIGHT = 0.55


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


def approx_lobes(
    ct: CTVolume,
    lungs: RegionMap,
    *,
    oblique_posterior_height: float = OBLIQUE_POSTERIOR_HEIGHT,
    oblique_anterior_depth: float = OBLIQUE_ANTERIOR_DEPTH,
    horizontal_height: float = HORIZONTAL_HEIGHT,
) -> RegionMap:
    """Approximate lobes from a fissure-plane model of each lung's shape.

    Parameters
    ----------
    ct : CTVolume
    lungs : RegionMap
        Right/left lungs (other sided maps are collapsed first).
    oblique_posterior_height, oblique_anterior_depth, horizontal_height : float
        Fissure model (fractions of each lung's own extent; see module doc).

    Returns
    -------
    RegionMap
        Codes :data:`~lungdamage.regions.LOBE_CODES`, ``region_set='lobes-approx'``.
    """
    lungs = lungs.to_lungs() if lungs.region_set != "lungs" else lungs
    lungs.check_grid(ct.shape)
    zax, z = _axis_coords(ct, 2)
    yax, y = _axis_coords(ct, 1)  # LPS y: + posterior
    if yax == zax:  # degenerate direction matrix; pick the other in-plane axis
        yax = [k for k in range(3) if k != zax][0]
        y = np.arange(ct.shape[yax], dtype=np.float64) * ct.spacing_mm[yax]
    out = np.zeros(ct.shape, np.uint8)
    for side in (1, 2):
        m = lungs.labels == side
        ez = _extent(m, zax, z, ct.spacing_mm[zax] / 2.0)
        ey = _extent(m, yax, y, ct.spacing_mm[yax] / 2.0)
        if ez is None or ey is None:
            continue
        zn = _along(zax, (z - ez[0]) / max(ez[1] - ez[0], 1e-6))  # 0 base .. 1 apex
        yn = _along(yax, (y - ey[0]) / max(ey[1] - ey[0], 1e-6))  # 0 anterior .. 1 posterior
        fissure = oblique_posterior_height * (yn - oblique_anterior_depth) / (1.0 - oblique_anterior_depth)
        upper_side = zn > fissure  # in front of / above the oblique fissure
        if side == 1:
            lobe = np.where(upper_side, np.where(zn >= horizontal_height, 1, 2), 3)  # RUL RML RLL
        else:
            lobe = np.where(upper_side, 4, 5)  # LUL LLL
        out = np.where(m, lobe.astype(np.uint8), out)
    info = dict(lungs.info)
    info["lobes"] = "approximate: fissure-plane model of each lung's shape (not true lobes)"
    return RegionMap(out, dict(LOBE_CODES), method=lungs.method, region_set="lobes-approx", info=info)
