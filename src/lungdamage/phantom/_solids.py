"""Implicit solids and their partial-volume rendering onto a CT grid.

A solid is a :data:`Shape`: an implicit function ``f(x, y, z)`` in patient
LPS millimetres (negative inside, about a signed distance) and its bounding
box ``(x0, x1, y0, y1, z0, z1)``.  Constants are Python floats so float32
grids stay float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Shape = tuple[Callable[..., Any], tuple[float, float, float, float, float, float]]


def _capsule(p0: Sequence[float], p1: Sequence[float], r: float) -> Shape:
    x0, y0, z0 = (float(v) for v in p0)
    ex, ey, ez = (float(b) - float(a) for a, b in zip(p0, p1, strict=True))
    l2 = max(ex * ex + ey * ey + ez * ez, 1e-12)
    r = float(r)

    def f(x, y, z):
        dx = x - x0
        dy = y - y0
        dz = z - z0
        t = np.clip((dx * ex + dy * ey + dz * ez) * (1.0 / l2), 0.0, 1.0)
        qx = dx - t * ex
        qy = dy - t * ey
        qz = dz - t * ez
        return np.sqrt(qx * qx + qy * qy + qz * qz) - r

    lo = np.minimum(p0, p1) - r
    hi = np.maximum(p0, p1) + r
    return f, (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])


def _vcyl(cx: float, cy: float, r: float, zlo: float, zhi: float) -> Shape:
    """Vertical cylinder (cheap: the in-plane part broadcasts over z)."""
    cx, cy, r, zlo, zhi = map(float, (cx, cy, r, zlo, zhi))

    def f(x, y, z):
        d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r
        return np.maximum(d, np.maximum(zlo - z, z - zhi))

    return f, (cx - r, cx + r, cy - r, cy + r, zlo, zhi)


def _ellipsoid(c: Sequence[float], radii: Sequence[float], angle_deg: float = 0.0) -> Shape:
    cx, cy, cz = (float(v) for v in c)
    a, b, cc = (float(v) for v in radii)
    ca = math.cos(math.radians(angle_deg))
    sa = math.sin(math.radians(angle_deg))
    m = min(a, b, cc)

    def f(x, y, z):
        dx = x - cx
        dy = y - cy
        u = (ca * dx + sa * dy) * (1.0 / a)
        v = (ca * dy - sa * dx) * (1.0 / b)
        w = (z - cz) * (1.0 / cc)
        return (np.sqrt(u * u + v * v + w * w) - 1.0) * m

    rr = max(a, b)
    return f, (cx - rr, cx + rr, cy - rr, cy + rr, cz - cc, cz + cc)


def _union(shapes: Sequence[Shape]) -> Shape:
    fs = [s[0] for s in shapes]

    def f(x, y, z):
        out = fs[0](x, y, z)
        for g in fs[1:]:
            out = np.minimum(out, g(x, y, z))
        return out

    bb = np.array([s[1] for s in shapes], dtype=float)
    return f, (bb[:, 0].min(), bb[:, 1].max(), bb[:, 2].min(), bb[:, 3].max(), bb[:, 4].min(), bb[:, 5].max())


# --------------------------------------------------------------------------
# Partial volume from signed distances
# --------------------------------------------------------------------------
def _pv_points(fpt, x, y, z, F, spacing, soft_mm):
    """Occupancy of voxels centred at points (float64 1-D arrays) near a surface."""
    h = 0.1
    gx = (fpt(x + h, y, z) - fpt(x - h, y, z)) * (0.5 / h)
    gy = (fpt(x, y + h, z) - fpt(x, y - h, z)) * (0.5 / h)
    gz = (fpt(x, y, z + h) - fpt(x, y, z - h)) * (0.5 / h)
    g = np.sqrt(gx * gx + gy * gy + gz * gz) + 1e-9
    sz, py, px = spacing
    w = np.sqrt((gx * px) ** 2 + (gy * py) ** 2 + (gz * sz) ** 2) / g
    w = np.sqrt(w * w + soft_mm * soft_mm)
    return np.clip(0.5 - (F / g) / w, 0.0, 1.0)


def _occ(F, X, Y, Z, fpt, spacing, *, soft_mm=0.0, lip=1.0):
    """Occupancy (float32, F.shape) of the solid ``F < 0`` sampled at X, Y, Z.

    ``F`` must not overestimate the distance by more than the factor ``lip``
    (|grad f| <= lip); voxels farther than half a (softened) voxel from the
    surface are 0 or 1, the others get the box-filter estimate.
    """
    occ = (F < 0).astype(np.float32)
    sz, py, px = spacing
    hw = 0.5 * math.sqrt(sz * sz + py * py + px * px + soft_mm * soft_mm) * lip + 1e-3
    cand = np.abs(F) < hw
    if cand.any():
        shp = F.shape
        x = np.broadcast_to(X, shp)[cand].astype(np.float64)
        y = np.broadcast_to(Y, shp)[cand].astype(np.float64)
        z = np.broadcast_to(Z, shp)[cand].astype(np.float64)
        f0 = fpt(x, y, z)
        occ[cand] = _pv_points(fpt, x, y, z, f0, spacing, soft_mm)
    return occ


@dataclass
class _Slab:
    xs: np.ndarray  # float32 column coordinates (mm)
    ys: np.ndarray  # float32 row coordinates
    zs: np.ndarray  # float32 slice coordinates of this slab
    spacing: tuple[float, float, float]

    def block(self, bbox, margin):
        """Index slices of the sub-block overlapping ``bbox`` (+margin), or None."""
        x0, x1, y0, y1, z0, z1 = bbox
        out = []
        for c, lo, hi in ((self.zs, z0, z1), (self.ys, y0, y1), (self.xs, x0, x1)):
            a = int(np.searchsorted(c, lo - margin, "left"))
            b = int(np.searchsorted(c, hi + margin, "right"))
            if b <= a:
                return None
            out.append(slice(a, b))
        return tuple(out)

    def coords(self, blk):
        return (
            self.xs[blk[2]][None, None, :],
            self.ys[blk[1]][None, :, None],
            self.zs[blk[0]][:, None, None],
        )

    def render(self, shape: Shape, *, soft_mm=0.0, lip=1.0):
        """``(block, occupancy)`` of ``shape`` on this slab, or ``None``."""
        f, bbox = shape
        margin = math.sqrt(sum(s * s for s in self.spacing) + soft_mm**2) * lip + 1.0
        blk = self.block(bbox, margin)
        if blk is None:
            return None
        X, Y, Z = self.coords(blk)
        F = f(X, Y, Z)
        F = np.broadcast_to(F, (Z.shape[0], Y.shape[1], X.shape[2]))
        return blk, _occ(F, X, Y, Z, f, self.spacing, soft_mm=soft_mm, lip=lip)


def _paint(hu, rendered, value):
    if rendered is None:
        return
    blk, occ = rendered
    sub = hu[blk]
    sub += occ * (np.float32(value) - sub)


def _max_into(arr, rendered):
    if rendered is not None:
        blk, occ = rendered
        np.maximum(arr[blk], occ, out=arr[blk])


