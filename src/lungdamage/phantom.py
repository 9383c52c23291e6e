"""Synthetic thorax phantom with exact ground truth, and a DICOM series writer.

The phantom is built from analytic solids (implicit functions ``f(x, y, z)``
in patient LPS millimetres, negative inside) and rendered onto a CT grid with
partial volume: every voxel near a surface gets the occupancy of a voxel-sized
box filter across that surface, estimated from the signed distance and the
surface normal (``occupancy = clip(0.5 - d / W, 0, 1)`` with ``W`` the voxel's
extent along the normal).  Nothing is supersampled, so a 512×512×400 scan
renders in seconds, slab by slab.

Anatomy (head-first supine, slice 0 most inferior): body with subcutaneous
fat and muscle, a patient table below (posterior to) the body, ribs, spine,
heart with pericardial fat, aorta, superior vena cava, trachea and main
bronchi (air lumen with a soft-tissue wall, from the top of the scan down to
the carina and out to each hilum), and two lungs (parenchyma about -850 HU)
that fill the thoracic cavity above dome-shaped diaphragms, narrow to an apex
and come within 2 mm of each other anteriorly (the anterior junction line).
Inside the lungs: an optional vessel tree, ground-glass opacities (GGO, about
-550 HU, soft edges) and consolidations (-50 HU, each inside a GGO halo), one
of them a large juxtapleural consolidation touching the posterior chest wall.

HU values are chosen so that each band edge of the ``covid`` scheme lies
halfway between the two tissues it separates (-700 between aerated lung and
GGO, -300 between GGO and consolidation); partial-volume voxels at lesion
edges then fall on each side of a band edge in proportion to their share, and
band counts inside the true lung mask reproduce the true fractions.

Ground truth (:class:`PhantomTruth`) is on the CT grid (voxel masks at 50 %
occupancy) plus exact per-lung fractions computed from the continuous
geometry by quasi-Monte-Carlo integration, independent of the CT grid.

Examples
--------
>>> from lungdamage.phantom import make_phantom
>>> ph = make_phantom(matrix=64, slice_thickness_mm=10.0, noise_hu=0.0, vessels=False)
>>> ph.ct.shape
(32, 64, 64)
>>> 0 < ph.truth.fractions["right"]["damage_pct"] < 40
True
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .regions import LOBE_CODES, LUNG_CODES, RegionMap
from .volume import CTVolume, ScanMeta

__all__ = [
    "Lesion",
    "Phantom",
    "PhantomTruth",
    "TISSUE_HU",
    "DEFAULT_LESIONS",
    "FOV_MM",
    "COVERAGE_MM",
    "default_n_slices",
    "dependent_consolidation",
    "make_phantom",
    "write_dicom_series",
]

logger = logging.getLogger(__name__)

#: Field of view (rows and columns) in mm; pixel size is ``FOV_MM / matrix``.
FOV_MM = 350.0
#: Default cranio-caudal coverage in mm (lungs span about 280 mm).
COVERAGE_MM = 320.0

#: Noise-free HU of each tissue.
TISSUE_HU: dict[str, float] = {
    "air": -1000.0,
    "fat": -100.0,
    "soft": 40.0,
    "blood": 40.0,
    "bone": 450.0,
    "vertebra": 300.0,
    "disc": 80.0,
    "table_shell": 200.0,
    "table_core": -400.0,
    "lung": -850.0,  # ±15 HU anterior-posterior gravity gradient
    "ggo": -550.0,
    "consolidation": -50.0,
    "vessel": 40.0,
}

Shape = tuple[Callable[..., Any], tuple[float, float, float, float, float, float]]


# --------------------------------------------------------------------------
# Lesion specification
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Lesion:
    """One lesion of the phantom (an ellipsoid, clipped to the lungs).

    Parameters
    ----------
    kind : {'ggo', 'consolidation'}
    center_mm : (x, y, z) in patient LPS mm.
    radii_mm : semi-axes in mm along the (rotated) x, y and z axes.
    angle_deg : rotation about the z (cranio-caudal) axis.
    halo_mm : thickness of the GGO halo around a consolidation (0: none).
    soft_mm : width of the soft edge of GGO (lesion or halo), in mm.
    chest_wall : marks the juxtapleural consolidation reported in
        :attr:`PhantomTruth.chest_wall_consolidation`.
    """

    kind: str
    center_mm: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    angle_deg: float = 0.0
    halo_mm: float = 0.0
    soft_mm: float = 4.0
    chest_wall: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("ggo", "consolidation"):
            raise InputError(
                f"Lesion kind must be 'ggo' or 'consolidation'; got {self.kind!r}. "
                "Potential fix: use one of the two kinds."
            )
        if len(self.center_mm) != 3 or len(self.radii_mm) != 3 or min(self.radii_mm) <= 0:
            raise InputError(
                f"Lesion needs 3 centre coordinates and 3 positive radii; got {self.center_mm}, "
                f"{self.radii_mm}. Potential fix: pass (x, y, z) tuples in mm."
            )

    def scaled(self, factor: float) -> Lesion:
        """Copy with radii and halo multiplied by ``factor``."""
        return dataclasses.replace(
            self,
            radii_mm=tuple(r * factor for r in self.radii_mm),
            halo_mm=self.halo_mm * factor,
        )


#: The default lesion layout (right lung x < 0, left lung x > 0).
DEFAULT_LESIONS: tuple[Lesion, ...] = (
    # large juxtapleural consolidation, right lower lobe, posterior chest wall
    Lesion("consolidation", (-95.0, 38.0, -52.0), (32.0, 24.0, 34.0), angle_deg=-30.0,
           halo_mm=7.0, chest_wall=True),
    Lesion("ggo", (-68.0, -8.0, 82.0), (30.0, 32.0, 26.0), angle_deg=20.0),
    Lesion("consolidation", (-62.0, -58.0, -22.0), (17.0, 14.0, 17.0), halo_mm=8.0),
    Lesion("ggo", (-82.0, 38.0, 20.0), (22.0, 19.0, 27.0)),
    Lesion("consolidation", (82.0, 40.0, -52.0), (20.0, 17.0, 22.0), angle_deg=25.0, halo_mm=8.0),
    Lesion("ggo", (86.0, -38.0, 55.0), (26.0, 25.0, 30.0)),
    Lesion("ggo", (76.0, -62.0, -18.0), (18.0, 15.0, 20.0)),
)


# --------------------------------------------------------------------------
# Truth and phantom types
# --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PhantomTruth:
    """Ground truth of a phantom, on the CT grid unless stated.

    Attributes
    ----------
    lungs : ndarray of uint8, shape (slices, rows, columns)
        :data:`~lungdamage.regions.LUNG_CODES` (1 right, 2 left); a voxel is
        lung when at least half of it is lung (airways excluded).
    lobes : ndarray of uint8
        :data:`~lungdamage.regions.LOBE_CODES` (1 RUL, 2 RML, 3 RLL, 4 LUL,
        5 LLL), the lung mask split by the fissure surfaces.
    ggo, consolidation : ndarray of bool
        Lesion voxels (>= 50 % occupancy) inside the lung mask; disjoint.
    chest_wall_consolidation : ndarray of bool
        The juxtapleural consolidation (subset of ``consolidation``).
    airways : ndarray of bool
        Air lumen of the trachea and main bronchi (>= 50 % occupancy).
    vessels : ndarray of bool
        Vessel-tree voxels inside the lungs (all False with ``vessels=False``).
    fractions : dict
        ``{"right"|"left"|"total": {"volume_ml", "ggo_ml", "consolidation_ml",
        "ggo_pct", "consolidation_pct", "damage_pct"}}`` from the continuous
        geometry inside the scanned field; percentages of the lung volume.
    lesions : tuple of Lesion
        The lesions actually planted (after ``damage_scale``).
    gas_below_diaphragm : ndarray of bool or None
        Gas voxels (>= 50 %) of the stomach and colon (``stomach_gas`` /
        ``colon_gas``); None when neither was asked for.
    """

    lungs: np.ndarray
    lobes: np.ndarray
    ggo: np.ndarray
    consolidation: np.ndarray
    chest_wall_consolidation: np.ndarray
    airways: np.ndarray
    vessels: np.ndarray
    fractions: dict
    lesions: tuple[Lesion, ...] = ()
    gas_below_diaphragm: np.ndarray | None = None

    def lung_regions(self) -> RegionMap:
        """The true lungs as a :class:`RegionMap` (``lungs`` set)."""
        return RegionMap(self.lungs, dict(LUNG_CODES), method="phantom-truth", region_set="lungs")

    def lobe_regions(self) -> RegionMap:
        """The true lobes as a :class:`RegionMap` (``lobes`` set)."""
        return RegionMap(self.lobes, dict(LOBE_CODES), method="phantom-truth", region_set="lobes")


@dataclass(frozen=True, eq=False)
class Phantom:
    """A rendered phantom: the CT volume and its ground truth."""

    ct: CTVolume
    truth: PhantomTruth

    def __repr__(self) -> str:
        f = self.truth.fractions["total"]
        return (
            f"Phantom({self.ct!r}, damage={f['damage_pct']:.2f}% "
            f"(ggo {f['ggo_pct']:.2f}%, consolidation {f['consolidation_pct']:.2f}%))"
        )


# --------------------------------------------------------------------------
# Implicit solids.  Constants are Python floats so float32 grids stay float32.
# --------------------------------------------------------------------------
def _capsule(p0: Sequence[float], p1: Sequence[float], r: float) -> Shape:
    x0, y0, z0 = (float(v) for v in p0)
    ex, ey, ez = (float(b) - float(a) for a, b in zip(p0, p1))
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


# --------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------
class _Anatomy:
    """All solids of the phantom, in patient LPS mm (x left, y posterior, z superior)."""

    # body: elliptic cylinder
    BODY = (0.0, -15.0, 160.0, 110.0)  # cx, cy, semi-x, semi-y
    FAT_MM = 12.0
    RIB_RING = (136.0, 90.0)
    RIB_R = 5.5
    CAVITY = (128.0, 82.0)  # inner chest wall (lungs' lateral limit)
    APEX_Z0, APEX_H = 0.0, 140.0
    CARINA = (0.0, 2.0, 20.0)

    def __init__(self, lesions: Sequence[Lesion], *, vessels: bool, seed: int, fissures: bool = False,
                 adult_lobes: bool = False):
        self.side_sign = {"right": -1.0, "left": 1.0}
        self.fissures = fissures
        # fissure heights (mm at y = -15, x = lung centre): oblique right, oblique left, horizontal
        self.fissure_z0 = (32.0, 36.0, 41.0) if adult_lobes else (-30.0, -20.0, 5.0)
        # mediastinal solids the lungs wrap around (with a pleural margin)
        heart_c, heart_r, heart_a = (15.0, -30.0, -60.0), (60.0, 48.0, 52.0), 25.0
        self.heart = _ellipsoid(heart_c, heart_r, heart_a)
        self.pericardium = _ellipsoid(heart_c, tuple(r + 3.0 for r in heart_r), heart_a)
        self.aorta = _union([
            _capsule((8.0, -28.0, -20.0), (8.0, -28.0, 55.0), 15.0),
            _capsule((8.0, -28.0, 55.0), (18.0, 30.0, 62.0), 13.0),
            _capsule((18.0, 30.0, 62.0), (18.0, 30.0, -150.0), 12.0),
        ])
        # SVC beside the trachea and ascending aorta, inside the mediastinum (not an island in the lung)
        self.svc = _vcyl(-18.0, -14.0, 10.0, -10.0, 130.0)
        self.spine_body = _vcyl(0.0, 48.0, 18.0, -1e4, 1e4)
        self.esophagus = _vcyl(-4.0, 20.0, 8.0, -1e4, 1e4)
        cx, cy, cz = self.CARINA
        top = 1e4
        self.hila = {
            "right": _capsule(self.CARINA, (-50.0, 5.0, -12.0), 7.5),
            "left": _capsule(self.CARINA, (55.0, 8.0, -25.0), 6.5),
        }
        self.airway_lumen = _union([
            _capsule(self.CARINA, (cx, cy, top), 9.0), self.hila["right"], self.hila["left"]
        ])
        self.airway_outer = _union([
            _capsule(self.CARINA, (cx, cy, top), 11.0),
            _capsule(self.CARINA, (-50.0, 5.0, -12.0), 9.5),
            _capsule(self.CARINA, (55.0, 8.0, -25.0), 8.5),
        ])
        self.mediastinum_parts = [
            _ellipsoid(heart_c, tuple(r + 5.0 for r in heart_r), heart_a),
            _capsule((8.0, -28.0, -20.0), (8.0, -28.0, 55.0), 17.0),
            _capsule((8.0, -28.0, 55.0), (18.0, 30.0, 62.0), 15.0),
            _capsule((18.0, 30.0, 62.0), (18.0, 30.0, -150.0), 14.0),
            _vcyl(-18.0, -14.0, 12.0, -10.0, 1e4),
            _vcyl(0.0, 48.0, 24.0, -1e4, 1e4),
            _vcyl(-4.0, 20.0, 11.0, -1e4, 1e4),
            _capsule((cx, cy, cz - 8.0), (cx, cy, top), 16.0),
            # hilar soft tissue around the proximal main bronchi
            _capsule(self.CARINA, (-25.0, 3.5, 4.0), 15.0),
            _capsule(self.CARINA, (28.0, 5.0, -2.5), 15.0),
        ]
        self.mediastinum = _union(self.mediastinum_parts)
        self.lung = {s: self._lung_shape(s) for s in ("right", "left")}
        rb, lb_ = self.lung["right"][1], self.lung["left"][1]
        self.lung_bbox = (rb[0], lb_[1], min(rb[2], lb_[2]), max(rb[3], lb_[3]),
                          min(rb[4], lb_[4]), max(rb[5], lb_[5]))
        self.lesions = tuple(lesions)
        self.ggo_shapes = []
        self.cons_shapes = []
        self.cw_shapes = []
        for les in self.lesions:
            core = _ellipsoid(les.center_mm, les.radii_mm, les.angle_deg)
            if les.kind == "ggo":
                self.ggo_shapes.append((core, les.soft_mm))
            else:
                self.cons_shapes.append(core)
                if les.chest_wall:
                    self.cw_shapes.append(core)
                if les.halo_mm > 0:
                    halo = _ellipsoid(les.center_mm, tuple(r + les.halo_mm for r in les.radii_mm),
                                      les.angle_deg)
                    self.ggo_shapes.append((halo, les.soft_mm))
        self.vessel_segments = self._vessel_tree(seed) if vessels else []

    # -- lungs ---------------------------------------------------------------
    def dome(self, side):
        if side == "right":
            zb, depth, cx = -115.0, 65.0, -64.0
        else:
            zb, depth, cx = -125.0, 60.0, 64.0

        def zd(x, y):
            return zb + depth * (1.0 - ((x - cx) * (1.0 / 85.0)) ** 2 - ((y + 20.0) * (1.0 / 100.0)) ** 2)

        return zd

    def _lung_shape(self, side) -> Shape:
        s = self.side_sign[side]
        ca, cb = self.CAVITY
        by = self.BODY[1]
        z0, h = self.APEX_Z0, self.APEX_H
        zd = self.dome(side)
        medi = self.mediastinum[0]
        apex_x = s * 60.0

        def f_own(x, y, z):
            u = x * (1.0 / ca)
            v = (y - by) * (1.0 / cb)
            f = (np.sqrt(u * u + v * v) - 1.0) * cb
            f = np.maximum(f, 1.0 - s * x)  # 2 mm anterior junction gap
            t = np.maximum(z - z0, 0.0) * (1.0 / h)
            cap = (np.sqrt(((x - apex_x) * (1.0 / 80.0)) ** 2 + ((y - by) * (1.0 / 96.0)) ** 2 + t * t) - 1.0) * 80.0
            f = np.maximum(f, cap)
            return np.maximum(f, (zd(x, y) - z) * (1.0 / 1.8))

        def f(x, y, z):
            return np.maximum(f_own(x, y, z), -medi(x, y, z))

        f.own = f_own  # type: ignore[attr-defined]
        xlo, xhi = (-ca, -1.0) if side == "right" else (1.0, ca)
        return f, (xlo, xhi, by - cb, by + cb, -160.0, z0 + h)

    @staticmethod
    def _fissure_surfaces(side, z0s=(-30.0, -20.0, 5.0)):
        """``(g, grad)`` of the fissure height fields z = g(x, y) of one lung: the
        oblique fissure, then (right lung) the horizontal one."""
        cx = -64.0 if side == "right" else 64.0
        z0 = z0s[0] if side == "right" else z0s[1]
        h0 = z0s[2]

        def obl(x, y):
            return z0 + 1.1 * (y + 15.0) - 0.002 * (x - cx) ** 2

        def obl_grad(x, y):
            return -0.004 * (x - cx), 1.1

        out = [(obl, obl_grad)]
        if side == "right":
            def hor(x, y):
                return h0 - 0.15 * (y + 15.0) + 0.001 * (x - cx) ** 2

            def hor_grad(x, y):
                return 0.002 * (x - cx), -0.15

            out.append((hor, hor_grad))
        return out

    def fissure_shapes(self, thickness_mm: float = 1.0) -> list[Shape]:
        """Visible fissures: sheets of ``thickness_mm`` on the lobe boundaries of :meth:`lobe_of`."""
        shapes = []
        half = 0.5 * thickness_mm
        for side in ("right", "left"):
            bbox = self.lung[side][1]
            surfs = self._fissure_surfaces(side, self.fissure_z0)
            (og, ograd) = surfs[0]

            def d_obl(x, y, z, og=og, ograd=ograd):
                gx, gy = ograd(x, y)
                return (z - og(x, y)) / np.sqrt(1.0 + gx * gx + gy * gy)

            shapes.append((lambda x, y, z, d=d_obl: np.abs(d(x, y, z)) - half, bbox))
            for hg, hgrad in surfs[1:]:
                def f_hor(x, y, z, hg=hg, hgrad=hgrad, d=d_obl):
                    gx, gy = hgrad(x, y)
                    dh = (z - hg(x, y)) / np.sqrt(1.0 + gx * gx + gy * gy)
                    return np.maximum(np.abs(dh) - half, -d(x, y, z))  # only above the oblique fissure

                shapes.append((f_hor, bbox))
        return shapes

    def lobe_of(self, side, x, y, z):
        """Lobe code at points (broadcastable arrays) of one lung."""
        surfs = self._fissure_surfaces(side, self.fissure_z0)
        upper = z > surfs[0][0](x, y)
        if side == "right":
            return np.where(upper, np.where(z > surfs[1][0](x, y), np.uint8(1), np.uint8(2)), np.uint8(3))
        return np.where(upper, np.uint8(4), np.uint8(5))

    # -- vessel tree ------------------------------------------------------------
    def _vessel_tree(self, seed):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7331]))
        roots = {"right": (-44.0, -2.0, -8.0), "left": (47.0, 2.0, -18.0)}
        segs = []
        for side in ("right", "left"):
            f, bb = self.lung[side]
            pts = np.empty((0, 3))
            while len(pts) < 80:
                cand = rng.uniform([bb[0], bb[2], bb[4]], [bb[1], bb[3], bb[5]], size=(400, 3))
                inside = f(cand[:, 0], cand[:, 1], cand[:, 2]) < -6.0
                pts = np.vstack([pts, cand[inside]])
            pts = pts[:80]
            self._branch(np.asarray(roots[side]), pts, 5.0, len(pts), segs)
        return segs

    def _branch(self, p, targets, r, n_total, segs):
        r_here = max(5.0 * (len(targets) / n_total) ** (1 / 2.7), 0.9)
        if len(targets) == 1:
            segs.append(_capsule(p, targets[0], r_here))
            return
        c = targets.mean(axis=0)
        b = p + 0.45 * (c - p)
        segs.append(_capsule(p, b, r_here))
        d = targets - c
        axis = np.linalg.svd(d, full_matrices=False)[2][0]
        order = np.argsort(d @ axis)
        half = len(targets) // 2
        self._branch(b, targets[order[:half]], r_here, n_total, segs)
        self._branch(b, targets[order[half:]], r_here, n_total, segs)


# --------------------------------------------------------------------------
# Grid and rendering
# --------------------------------------------------------------------------
def default_n_slices(slice_thickness_mm: float) -> int:
    """Slices covering :data:`COVERAGE_MM` (thorax plus margin) at this thickness."""
    return max(1, int(math.ceil(COVERAGE_MM / float(slice_thickness_mm))))


def _smooth_binomial(n: np.ndarray, axis: int) -> np.ndarray:
    """[1, 2, 1] / 4 filter along ``axis`` (a Gaussian of sigma 0.71 px), edges replicated."""
    out = n * np.float32(0.5)
    a = [slice(None)] * n.ndim
    b = [slice(None)] * n.ndim
    a[axis], b[axis] = slice(1, None), slice(None, -1)
    out[tuple(a)] += n[tuple(b)] * np.float32(0.25)
    out[tuple(b)] += n[tuple(a)] * np.float32(0.25)
    first = [slice(None)] * n.ndim
    last = [slice(None)] * n.ndim
    first[axis], last[axis] = slice(0, 1), slice(-1, None)
    out[tuple(first)] += n[tuple(first)] * np.float32(0.25)
    out[tuple(last)] += n[tuple(last)] * np.float32(0.25)
    return out


#: Std of unit white noise after one [1, 2, 1]/4 pass along rows and columns.
_NOISE_STD_AFTER_SMOOTHING = 0.375


def _resolve_lesions(lesions, damage_scale) -> tuple[Lesion, ...]:
    if lesions is None or (isinstance(lesions, str) and lesions == "none"):
        base: tuple[Lesion, ...] = ()
    elif isinstance(lesions, str):
        if lesions != "default":
            raise InputError(
                f"make_phantom: lesions={lesions!r} is not known. "
                "Potential fix: use 'default', 'none' or a sequence of Lesion."
            )
        base = DEFAULT_LESIONS
    else:
        base = tuple(lesions)
        bad = [les for les in base if not isinstance(les, Lesion)]
        if bad:
            raise InputError(
                f"make_phantom: lesions must be Lesion objects; got {type(bad[0]).__name__}. "
                "Potential fix: build them with lungdamage.phantom.Lesion(...)."
            )
    if not (damage_scale >= 0 and math.isfinite(damage_scale)):
        raise InputError(
            f"make_phantom: damage_scale must be a finite number >= 0; got {damage_scale}. "
            "Potential fix: 1.0 is the default lesion size, 0 plants no lesions."
        )
    if damage_scale == 0:
        return ()
    factor = float(damage_scale) ** (1.0 / 3.0)
    return tuple(les.scaled(factor) for les in base)


def make_phantom(
    *,
    matrix: int = 128,
    slice_thickness_mm: float = 2.5,
    n_slices: int | None = None,
    pixel_mm: float | None = None,
    noise_hu: float = 15.0,
    vessels: bool = True,
    lesions: str | Iterable[Lesion] | None = "default",
    damage_scale: float = 1.0,
    seed: int = 0,
    patient_id: str = "PHANTOM",
    study_date: str = "20200101",
    kernel: str = "STANDARD",
    lung_partial_volume: bool = False,
    truth_samples: int = 2**19,
    fissures: bool = False,
    adult_lobes: bool = False,
    stomach_gas: bool = False,
    colon_gas: bool = False,
) -> Phantom:
    """Render the synthetic thorax and its ground truth.

    Parameters
    ----------
    matrix : int
        Rows = columns.  Pixel size is ``FOV_MM / matrix`` (350 mm field of
        view; 512 → 0.68 mm) unless ``pixel_mm`` is given.
    slice_thickness_mm : float
        Slice thickness = spacing between slices (contiguous slices), mm.
    n_slices : int, optional
        Number of slices, centred on the thorax; default
        :func:`default_n_slices` (320 mm coverage, e.g. 256 at 1.25 mm).
    pixel_mm : float, optional
        In-plane pixel size in mm (overrides the 350 mm field of view).
    noise_hu : float
        Standard deviation (HU) of the correlated noise: white Gaussian noise
        smoothed in-plane with a [1, 2, 1]/4 binomial kernel along rows and
        columns (a Gaussian of 0.71 pixel) and rescaled to ``noise_hu``.
        Slices are independent.  0 gives a noise-free volume.
    vessels : bool
        Render the pulmonary vessel tree (+40 HU) inside the lungs.
    lesions : 'default', 'none', None or sequence of :class:`Lesion`
        Lesion layout; positions in patient LPS mm.
    damage_scale : float
        Multiplies every lesion's volume (radii by its cube root); 0 plants
        no lesions.  Lesions are clipped to the lungs, so the damage is only
        approximately proportional.
    seed : int
        Seeds the noise and the vessel tree (the rest is fixed geometry).
    patient_id, study_date, kernel : str
        Stored in :attr:`CTVolume.meta`.
    lung_partial_volume : bool
        Blend the lung surface (pleura, diaphragm, mediastinal surface) with
        the neighbouring tissue by partial volume.  Off by default: a
        partial-volume voxel between lung (-850) and soft tissue (+40) lies in
        the GGO band for lung shares of 50-83 %, which adds about 3-6
        percentage points of spurious GGO at 1.25-5 mm slices (the known
        thick-slice confounder) and would hide the lesion truth.  Lesions,
        vessels, airways, bones and all other interfaces always have partial
        volume.
    truth_samples : int
        Sample points per lung (one jittered point per cell of a regular
        grid) for the true volumes and fractions.
    fissures : bool
        Draw the fissures (the lobe boundaries of ``truth.lobes``) as 1 mm
        soft-tissue sheets inside the lungs, as they show on thin-slice CT.
        Off by default: by partial volume the fissure voxels fall in the GGO
        HU band, so phantoms used to check damage percentages leave it off
        (``truth.fractions`` does not count them).
    adult_lobes : bool
        Place the fissures (``truth.lobes`` and the drawn sheets) so the lobes
        have adult volume shares: each lobe's share of the total lung volume
        within 1 point of the supine means of Yamada et al. 2020 (RUL 17.9,
        RML 9.3, RLL 26.5, LUL 23.1, LLL 23.2 %).  Off by default, which keeps
        the original fissures (small lower lobes: RLL about 10 %, LLL 12 %).
    stomach_gas : bool
        Put a stomach under the left hemidiaphragm: fluid (+20 HU) with a gas
        cap (-1000 HU) above an air-fluid level, at least 10 mm of soft tissue
        below the lung base.  Off by default.
    colon_gas : bool
        Put gas-filled colon loops next to the lung bases, under both
        hemidiaphragms (hepatic and splenic flexures, 40-44 mm across): gas
        mottled with stool (+30 HU), about half of the lumen each, at the
        level of the posterior costophrenic recesses.  Off by default.  The
        lung truth does not change: neither is lung
        (``truth.gas_below_diaphragm`` marks the gas).

    Returns
    -------
    Phantom
        ``ct`` (int16 HU, shape (n_slices, matrix, matrix), head-first supine,
        default LPS direction: slices toward superior, rows toward posterior,
        columns toward patient left; slice 0 most inferior) and ``truth``.

    Raises
    ------
    InputError
        Non-positive sizes, negative noise or damage, unknown lesion layout.
    """
    if int(matrix) < 16 or float(slice_thickness_mm) <= 0:
        raise InputError(
            f"make_phantom: matrix must be >= 16 and slice_thickness_mm > 0; got matrix={matrix}, "
            f"slice_thickness_mm={slice_thickness_mm}. Potential fix: e.g. matrix=128, slice_thickness_mm=2.5."
        )
    if noise_hu < 0 or (n_slices is not None and int(n_slices) < 1) or (pixel_mm is not None and pixel_mm <= 0):
        raise InputError(
            f"make_phantom: noise_hu must be >= 0, n_slices >= 1 and pixel_mm > 0; got noise_hu={noise_hu}, "
            f"n_slices={n_slices}, pixel_mm={pixel_mm}. Potential fix: use the defaults."
        )
    matrix = int(matrix)
    sz = float(slice_thickness_mm)
    nz = int(n_slices) if n_slices is not None else default_n_slices(sz)
    px = float(pixel_mm) if pixel_mm is not None else FOV_MM / matrix
    spacing = (sz, px, px)
    x0 = -(matrix - 1) / 2.0 * px
    z0 = -(nz - 1) / 2.0 * sz
    xs = (x0 + px * np.arange(matrix)).astype(np.float32)
    ys = xs.copy()
    zs_all = (z0 + sz * np.arange(nz)).astype(np.float32)
    planted = _resolve_lesions(lesions, damage_scale)
    anat = _Anatomy(planted, vessels=vessels, seed=seed, fissures=fissures, adult_lobes=adult_lobes)

    shape3 = (nz, matrix, matrix)
    hu16 = np.empty(shape3, np.int16)
    lungs = np.zeros(shape3, np.uint8)
    lobes = np.zeros(shape3, np.uint8)
    ggo_m = np.zeros(shape3, bool)
    cons_m = np.zeros(shape3, bool)
    cw_m = np.zeros(shape3, bool)
    aw_m = np.zeros(shape3, bool)
    ves_m = np.zeros(shape3, bool)
    bowel_m = np.zeros(shape3, bool) if (stomach_gas or colon_gas) else None

    full = _Slab(xs, ys, zs_all, spacing)
    base2d = _render_base2d(anat, _Slab(xs, ys, np.zeros(1, np.float32), spacing))
    ves_u8 = _render_vessels(anat, full) if vessels else None

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 4242]))
    slab_n = max(1, int(4_000_000 // (matrix * matrix)))
    for k0 in range(0, nz, slab_n):
        k1 = min(nz, k0 + slab_n)
        slab = _Slab(xs, ys, zs_all[k0:k1], spacing)
        hu = np.empty((k1 - k0, matrix, matrix), np.float32)
        hu[...] = base2d
        out = _render_slab(anat, slab, hu, None if ves_u8 is None else ves_u8[k0:k1], lung_partial_volume)
        if stomach_gas or colon_gas:
            out["bowel"] = _render_bowel(slab, hu, stomach=stomach_gas, colon=colon_gas, seed=seed)
        if noise_hu > 0:
            n = rng.standard_normal(hu.shape, dtype=np.float32)
            n = _smooth_binomial(_smooth_binomial(n, 1), 2)
            hu += n * np.float32(noise_hu / _NOISE_STD_AFTER_SMOOTHING)
        np.clip(np.rint(hu), -1024, 3071, out=hu)
        hu16[k0:k1] = hu
        sl = slice(k0, k1)
        lungs[sl], lobes[sl], ggo_m[sl], cons_m[sl] = out["lungs"], out["lobes"], out["ggo"], out["cons"]
        cw_m[sl], aw_m[sl], ves_m[sl] = out["cw"], out["airways"], out["vessels"]
        if "bowel" in out:
            bowel_m[sl] = out["bowel"]

    bounds = (
        float(xs[0] - px / 2), float(xs[-1] + px / 2),
        float(ys[0] - px / 2), float(ys[-1] + px / 2),
        float(zs_all[0] - sz / 2), float(zs_all[-1] + sz / 2),
    )
    fractions = _true_fractions(anat, bounds, truth_samples)
    meta = ScanMeta(
        source="phantom",
        patient_id=patient_id,
        study_date=study_date,
        modality="CT",
        series_description=f"lungdamage phantom seed={seed} scale={damage_scale:g}",
        kernel=kernel,
        slice_thickness_mm=sz,
        manufacturer="lungdamage-phantom",
        contrast=False,
        extra={"phantom": {"seed": seed, "damage_scale": damage_scale, "noise_hu": noise_hu,
                           "vessels": vessels, "fissures": fissures,
                           **({"stomach_gas": True} if stomach_gas else {}),
                           **({"colon_gas": True} if colon_gas else {})}},
    )
    ct = CTVolume(hu16, spacing, (float(xs[0]), float(ys[0]), float(zs_all[0])), meta=meta)
    truth = PhantomTruth(
        lungs=lungs, lobes=lobes, ggo=ggo_m, consolidation=cons_m, chest_wall_consolidation=cw_m,
        airways=aw_m, vessels=ves_m, fractions=fractions, lesions=planted, gas_below_diaphragm=bowel_m,
    )
    for a in (lungs, lobes, ggo_m, cons_m, cw_m, aw_m, ves_m, bowel_m):
        if a is not None:
            a.setflags(write=False)
    logger.debug("phantom rendered: %r", ct)
    return Phantom(ct=ct, truth=truth)


def dependent_consolidation(
    ph: Phantom,
    *,
    air_fraction: float = 0.25,
    posterior_fraction: float = 0.4,
    height_fraction: float = 0.4,
    seed: int = 0,
) -> tuple[CTVolume, np.ndarray]:
    """The phantom's CT with ARDS-like dependent consolidation painted into both lungs.

    In the lowest ``height_fraction`` of the lungs' slices, the posterior
    ``posterior_fraction`` of the lungs (by each slice's anterior-posterior
    extent) becomes soft tissue (+35 HU, 15 HU noise) holding air pockets
    (bronchograms, aerated lobules: -900 HU) that make up about
    ``air_fraction`` of it.  The lung truth does not change: the consolidated
    voxels are still lung (``ph.truth.fractions`` and the lesion masks are
    those of the phantom before painting and do not count this
    consolidation).  Real consolidations with air bronchograms (e.g.
    COVID-19-NY-SBU A046441) hold 13-46 % air-density pixels.

    Returns
    -------
    ct : CTVolume
        A new volume (same grid and metadata).
    region : ndarray of bool
        The consolidated voxels.
    """
    from scipy import ndimage

    if not 0.0 < air_fraction < 1.0 or not 0.0 < posterior_fraction <= 1.0 or not 0.0 < height_fraction <= 1.0:
        raise ValueError(
            f"dependent_consolidation: air_fraction must be in (0, 1) and the fractions in (0, 1]; got "
            f"air_fraction={air_fraction}, posterior_fraction={posterior_fraction}, height_fraction={height_fraction}"
        )
    ct, lungs = ph.ct, ph.truth.lungs > 0
    rng = np.random.default_rng(seed)
    hu = ct.hu.astype(np.float32)
    # phantom axes: (z superior, y posterior, x left)
    has = lungs.any(axis=2)
    first = has.argmax(axis=1)
    last = hu.shape[1] - 1 - has[:, ::-1].argmax(axis=1)
    rows = np.arange(hu.shape[1])[None, :, None]
    region = lungs & (rows >= (last - posterior_fraction * (last - first))[:, None, None])
    zs = np.flatnonzero(region.any(axis=(1, 2)))
    if zs.size:
        region[zs[0] + int(round(height_fraction * len(zs))):] = False
    # seeds grown by a 6-neighbour cross cover about 7x their density
    seeds = rng.random(hu.shape, dtype=np.float32) < 1.0 - (1.0 - air_fraction) ** (1.0 / 7.0)
    pockets = ndimage.binary_dilation(seeds) & region
    del seeds
    hu[region] = 35.0 + rng.normal(0.0, 15.0, int(region.sum())).astype(np.float32)
    hu[pockets] = -900.0 + rng.normal(0.0, 15.0, int(pockets.sum())).astype(np.float32)
    out = CTVolume(np.round(hu).astype(np.int16), ct.spacing_mm, ct.origin_lps, ct.direction, ct.meta)
    return out, region


def _render_base2d(anat: _Anatomy, s2: _Slab) -> np.ndarray:
    """z-invariant part: air, table, fat, muscle, spine posterior elements (rows, cols)."""
    ny, nx = len(s2.ys), len(s2.xs)
    hu = np.full((1, ny, nx), TISSUE_HU["air"], np.float32)
    bx, by, ba, bb = anat.BODY

    def ell(cx, cy, a, b):
        m = min(a, b)

        def f(x, y, z):
            return (np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2) - 1.0) * m + 0.0 * z

        return f, (cx - a, cx + a, cy - b, cy + b, -1.0, 1.0)

    # table: slightly concave top, outside (posterior to) the body
    def table(thick0, thick1):
        def f(x, y, z):
            top = 101.0 - 0.0008 * x * x
            return np.maximum(np.maximum(top + thick0 - y, y - (top + thick1)), np.abs(x) - 170.0) + 0.0 * z

        return f, (-170.0, 170.0, 60.0, 125.0, -1.0, 1.0)

    _paint(hu, s2.render(table(0.0, 16.0), lip=1.4), TISSUE_HU["table_shell"])
    _paint(hu, s2.render(table(2.5, 13.5), lip=1.4), TISSUE_HU["table_core"])
    _paint(hu, s2.render(ell(bx, by, ba, bb), lip=1.5), TISSUE_HU["fat"])
    _paint(hu, s2.render(ell(bx, by, ba - anat.FAT_MM, bb - anat.FAT_MM), lip=1.5), TISSUE_HU["soft"])
    # spinal canal and posterior elements (bone ring, spinous process)
    _paint(hu, s2.render(ell(0.0, 76.0, 15.0, 13.0)), TISSUE_HU["bone"])
    _paint(hu, s2.render(ell(0.0, 76.0, 8.5, 7.5)), TISSUE_HU["soft"])
    _paint(hu, s2.render(ell(0.0, 84.0, 4.0, 7.0)), TISSUE_HU["bone"])
    return hu[0]


def _render_vessels(anat: _Anatomy, full: _Slab) -> np.ndarray:
    """Vessel-tree occupancy over the whole grid, uint8 (0..255)."""
    out = np.zeros((len(full.zs), len(full.ys), len(full.xs)), np.uint8)
    for seg in anat.vessel_segments:
        r = full.render(seg)
        if r is None:
            continue
        blk, occ = r
        np.maximum(out[blk], np.rint(occ * 255).astype(np.uint8), out=out[blk])
    return out


def _ribs_shape(anat: _Anatomy) -> Shape:
    ra, rb = anat.RIB_RING
    by = anat.BODY[1]
    m = min(ra, rb)
    period, r = 26.0, anat.RIB_R

    def f(x, y, z):
        dr = (np.sqrt((x * (1.0 / ra)) ** 2 + ((y - by) * (1.0 / rb)) ** 2) - 1.0) * m
        zc = 0.35 * (y - by)  # ribs descend anteriorly
        t = np.mod(z - zc + 0.5 * period, period) - 0.5 * period
        fr = np.sqrt(dr * dr + t * t) - r
        fr = np.maximum(fr, np.maximum(-140.0 - (z - zc), (z - zc) - 150.0))
        ant = np.maximum(np.abs(x) - 38.0, y - (by - 45.0))  # costal cartilage gap
        post = np.maximum(np.abs(x) - 20.0, (by + 50.0) - y)  # spine
        return np.maximum(fr, -np.minimum(ant, post))

    return f, (-ra - r, ra + r, by - rb - r, by + rb + r, -190.0, 180.0)


def _render_slab(anat: _Anatomy, slab: _Slab, hu: np.ndarray, ves_u8, lung_partial_volume: bool) -> dict:
    """Paint one slab of slices into ``hu`` (float32, modified) and return its truth masks."""
    sp = slab.spacing
    shape = hu.shape
    # spine: vertebral bodies with discs every 28 mm
    r = slab.render(anat.spine_body)
    if r is not None:
        blk, occ = r
        zc = slab.zs[blk[0]][:, None, None]
        disc = np.clip(1.0 - np.abs(np.mod(zc + 14.0, 28.0) - 14.0) / 3.0, 0.0, 1.0)
        value = TISSUE_HU["vertebra"] + disc * (TISSUE_HU["disc"] - TISSUE_HU["vertebra"])
        sub = hu[blk]
        sub += occ * (value.astype(np.float32) - sub)
    _paint(hu, slab.render(_ribs_shape(anat), lip=1.2), TISSUE_HU["bone"])
    _paint(hu, slab.render(anat.pericardium), TISSUE_HU["fat"])
    _paint(hu, slab.render(anat.heart), TISSUE_HU["blood"])
    _paint(hu, slab.render(anat.aorta), TISSUE_HU["blood"])
    _paint(hu, slab.render(anat.svc), TISSUE_HU["blood"])

    out = {
        "lungs": np.zeros(shape, np.uint8),
        "lobes": np.zeros(shape, np.uint8),
        "ggo": np.zeros(shape, bool),
        "cons": np.zeros(shape, bool),
        "cw": np.zeros(shape, bool),
        "airways": np.zeros(shape, bool),
        "vessels": np.zeros(shape, bool),
    }
    margin = math.sqrt(sum(s * s for s in sp)) * 2 + 1.0
    lb = slab.block(anat.lung_bbox, margin)
    if lb is not None:
        _render_lungs(anat, slab, lb, hu, ves_u8, lung_partial_volume, out)

    # airways on top (they run through the mediastinum and into the hila)
    _paint(hu, slab.render(anat.airway_outer), TISSUE_HU["soft"])
    lum = slab.render(anat.airway_lumen)
    _paint(hu, lum, TISSUE_HU["air"])
    if lum is not None:
        out["airways"][lum[0]] = lum[1] >= 0.5
    return out


def _render_lungs(anat, slab, lb, hu, ves_u8, lung_partial_volume, out) -> None:
    """Lungs and their content on the lungs' bounding block ``lb`` of the slab."""
    sp = slab.spacing
    ls = _Slab(slab.xs[lb[2]], slab.ys[lb[1]], slab.zs[lb[0]], sp)
    hl = hu[lb]
    shape = hl.shape
    margin = math.sqrt(sum(s * s for s in sp)) * 2 + 1.0
    o_lung = {}
    for side in ("right", "left"):
        f, bbox = anat.lung[side]
        blk = ls.block(bbox, margin)
        if blk is None:
            continue
        X, Y, Z = ls.coords(blk)
        F = np.broadcast_to(f.own(X, Y, Z), (Z.shape[0], Y.shape[1], X.shape[2])).copy()
        # the mediastinal solids the lung wraps around, each only on its own bounding box
        for mf, mbb in anat.mediastinum_parts:
            mblk = ls.block(mbb, margin)
            if mblk is None:
                continue
            sub, glob = [], []
            for a, b in zip(blk, mblk):
                lo, hi = max(a.start, b.start), min(a.stop, b.stop)
                sub.append(slice(lo - a.start, hi - a.start))
                glob.append(slice(lo, hi))
            if all(t.stop > t.start for t in sub):
                Xm, Ym, Zm = ls.coords(tuple(glob))
                inner = F[tuple(sub)]
                np.maximum(inner, -mf(Xm, Ym, Zm), out=inner)
        if lung_partial_volume:
            occ = _occ(F, X, Y, Z, f, sp, lip=1.3)
        else:
            occ = (F < 0).astype(np.float32)
        o_lung[side] = (blk, occ)
    if not o_lung:
        return
    o_tot = np.zeros(shape, np.float32)
    for blk, occ in o_lung.values():
        o_tot[blk] += occ

    o_g = np.zeros(shape, np.float32)
    o_c = np.zeros(shape, np.float32)
    o_cw = np.zeros(shape, np.float32)
    for sh, soft in anat.ggo_shapes:
        _max_into(o_g, ls.render(sh, soft_mm=soft))
    for sh in anat.cons_shapes:
        _max_into(o_c, ls.render(sh))
    for sh in anat.cw_shapes:
        _max_into(o_cw, ls.render(sh))

    # lung interior HU: gravity gradient, lesions, vessels
    L = TISSUE_HU["lung"] + 15.0 * np.clip((ls.ys[None, :, None] - anat.BODY[1]) / 82.0, -1, 1)
    L = np.broadcast_to(L.astype(np.float32), shape).copy()
    if anat.fissures:
        o_f = np.zeros(shape, np.float32)
        for sh in anat.fissure_shapes():
            _max_into(o_f, ls.render(sh, lip=1.2))
        L += o_f * (np.float32(TISSUE_HU["soft"]) - L)
    L += o_g * (np.float32(TISSUE_HU["ggo"]) - L)
    L += o_c * (np.float32(TISSUE_HU["consolidation"]) - L)
    o_v = None
    if ves_u8 is not None:
        o_v = ves_u8[lb].astype(np.float32) * np.float32(1.0 / 255.0)
        L += o_v * (np.float32(TISSUE_HU["vessel"]) - L)
    hl += o_tot * (L - hl)

    # truth at 50 % occupancy; airway wall and lumen are not lung
    keep = np.ones(shape, np.float32)
    aw = ls.render(anat.airway_outer)
    if aw is not None:
        keep[aw[0]] -= aw[1]
    lungs = out["lungs"][lb]
    lobes = out["lobes"][lb]
    for code, side in ((1, "right"), (2, "left")):
        if side not in o_lung:
            continue
        blk, occ = o_lung[side]
        m = occ * keep[blk] >= 0.5
        lungs[blk][m] = code
        kk, ii, jj = np.nonzero(m)
        lobes[blk][kk, ii, jj] = anat.lobe_of(
            side, ls.xs[blk[2]][jj], ls.ys[blk[1]][ii], ls.zs[blk[0]][kk]
        )
    in_lung = lungs > 0
    out["cons"][lb] = in_lung & (o_c >= 0.5)
    out["ggo"][lb] = in_lung & (o_g * (1.0 - o_c) >= 0.5)
    out["cw"][lb] = in_lung & (o_cw >= 0.5)
    if o_v is not None:
        out["vessels"][lb] = in_lung & (o_v >= 0.5)


def _min_in_bbox(shapes: Sequence[Shape], x, y, z) -> np.ndarray:
    """min over ``shapes`` of f at points (1-D arrays); +inf outside every bounding box."""
    out = np.full(x.shape, np.inf)
    for f, (x0, x1, y0, y1, z0, z1) in shapes:
        sel = np.nonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & (z >= z0) & (z <= z1))[0]
        if sel.size:
            out[sel] = np.minimum(out[sel], f(x[sel], y[sel], z[sel]))
    return out


def _true_fractions(anat: _Anatomy, bounds, n_samples: int) -> dict:
    """Per-lung volumes and lesion volumes by stratified (jittered-grid) sampling.

    One uniformly jittered point per cell of a regular grid over each lung's
    bounding box clipped to the scanned field: the estimate is unbiased and
    its error comes only from cells cut by a surface (well below 0.05 % of
    the lung volume for the default 2**19 points).
    """
    out = {}
    totals = np.zeros(3)
    for i, side in enumerate(("right", "left")):
        f, bb = anat.lung[side]
        lo = np.array([max(bb[0], bounds[0]), max(bb[2], bounds[2]), max(bb[4], bounds[4])])
        hi = np.array([min(bb[1], bounds[1]), min(bb[3], bounds[3]), min(bb[5], bounds[5])])
        vols = np.zeros(3)  # lung, ggo, consolidation (mm^3)
        if np.all(hi > lo):
            ext = hi - lo
            cell = (float(np.prod(ext)) / max(int(n_samples), 1000)) ** (1.0 / 3.0)
            n = np.maximum(np.ceil(ext / cell).astype(int), 1)
            step = ext / n
            rng = np.random.default_rng(np.random.SeedSequence([20240, i]))
            gi = np.indices(tuple(n)).reshape(3, -1).T
            pts = lo + (gi + rng.random(gi.shape)) * step
            x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
            own = f.own(x, y, z) < 0
            x, y, z = x[own], y[own], z[own]
            inside = (_min_in_bbox(anat.mediastinum_parts, x, y, z) >= 0) & (
                _min_in_bbox([anat.airway_outer], x, y, z) >= 0
            )
            x, y, z = x[inside], y[inside], z[inside]
            cons = _min_in_bbox(anat.cons_shapes, x, y, z) < 0
            ggo = (_min_in_bbox([sh for sh, _ in anat.ggo_shapes], x, y, z) < 0) & ~cons
            cell_vol = float(np.prod(step))
            vols = np.array([x.size, ggo.sum(), cons.sum()], float) * cell_vol
        totals += vols
        out[side] = _fraction_row(vols)
    out["total"] = _fraction_row(totals)
    return out


def _fraction_row(vols) -> dict:
    lung, ggo, cons = (float(v) for v in vols)
    pct = (lambda v: 100.0 * v / lung) if lung > 0 else (lambda v: 0.0)
    return {
        "volume_ml": lung / 1000.0,
        "ggo_ml": ggo / 1000.0,
        "consolidation_ml": cons / 1000.0,
        "ggo_pct": pct(ggo),
        "consolidation_pct": pct(cons),
        "damage_pct": pct(ggo + cons),
    }


# --------------------------------------------------------------------------
# DICOM writer
# --------------------------------------------------------------------------
def write_dicom_series(
    ct: CTVolume,
    folder: str | Path,
    *,
    patient_id: str | None = None,
    patient_name: str | None = None,
    study_date: str | None = None,
    study_time: str = "090000",
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_description: str | None = None,
    series_number: int = 1,
    kernel: str | None = None,
    manufacturer: str = "lungdamage-phantom",
    window_center: float = -600.0,
    window_width: float = 1500.0,
    accession_number: str = "",
    filename_pattern: str = "IM{:04d}.dcm",
    patient_birth_date: str = "",
    patient_sex: str = "O",
) -> list[Path]:
    """Write a CT volume as a single-frame CT Image Storage series.

    One file per slice (``IM0001.dcm`` ...), Explicit VR Little Endian,
    uncompressed; stored value = HU + 1024 (RescaleIntercept -1024, slope 1),
    unsigned 12-bit when HU fit [-1024, 3071], else signed 16-bit.  UIDs not
    given are derived deterministically (``pydicom.uid.generate_uid`` with
    entropy from the patient, study date, series number/description and the
    volume's content hash), so writing the same volume twice gives identical
    files.

    Parameters
    ----------
    ct : CTVolume
        Volume to write; its direction must be orthonormal (any orientation).
    folder : path
        Created if needed.  Existing files with the same names are replaced.
    patient_id, study_date, series_description, kernel : str, optional
        Default to ``ct.meta`` fields (or ``'PHANTOM'``, ``'20200101'``, ...).
        ``study_date`` accepts ``YYYYMMDD`` or ``YYYY-MM-DD``.
    patient_name, accession_number, patient_birth_date, patient_sex : str, optional
        Identifying header values (e.g. to test de-identification); by
        default the name is the patient id, birth date and accession number
        are empty and the sex is ``O``.

    Returns
    -------
    list of Path
        Written files in slice order (slice 0 first).
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = ct.meta
    pid = patient_id or meta.patient_id or "PHANTOM"
    date = (study_date or meta.study_date or "20200101").replace("-", "")
    if len(date) != 8 or not date.isdigit():
        raise InputError(
            f"write_dicom_series: study_date {study_date!r} is not YYYYMMDD or YYYY-MM-DD. "
            "Potential fix: pass e.g. '2020-04-01'."
        )
    desc = series_description or meta.series_description or "lungdamage phantom"
    kern = kernel or meta.kernel or "STANDARD"
    d = np.asarray(ct.direction, float)
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        raise InputError(
            f"write_dicom_series: direction of {meta.key} is not orthonormal: {d.tolist()}. "
            "Potential fix: resample the volume onto an orthogonal grid first."
        )
    study_uid = study_uid or meta.study_uid or generate_uid(entropy_srcs=["study", pid, date])
    series_uid = series_uid or meta.series_uid or generate_uid(
        entropy_srcs=["series", pid, date, str(series_number), desc, ct.content_hash()]
    )
    for_uid = frame_of_reference_uid or meta.frame_of_reference_uid or generate_uid(
        entropy_srcs=["frame", study_uid, series_uid]
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    stored = ct.hu.astype(np.int32) + 1024
    lo, hi = int(stored.min()), int(stored.max())
    if lo >= 0 and hi <= 4095:
        pixels, pr, bits = stored.astype(np.uint16), 0, 12
    elif -32768 <= lo and hi <= 32767:
        pixels, pr, bits = stored.astype(np.int16), 1, 16
    else:
        raise InputError(
            f"write_dicom_series: HU range [{lo - 1024}, {hi - 1024}] of {meta.key} does not fit 16 bits "
            "with intercept -1024. Potential fix: clip the volume to [-1024, 31743]."
        )
    sz, py, px = ct.spacing_mm
    row_dir = d[:, 2]  # direction along a row = increasing column index
    col_dir = d[:, 1]
    slice_dir = d[:, 0]
    origin = np.asarray(ct.origin_lps, float)
    thickness = meta.slice_thickness_mm or sz
    rows, cols = ct.shape[1], ct.shape[2]

    def fmt(v: float) -> str:
        s = f"{v:.6f}".rstrip("0").rstrip(".")
        return "0" if s in ("-0", "") else s

    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = CTImageStorage
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = fm
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2"  # set per slice below
    ds.StudyDate = date
    ds.SeriesDate = date
    ds.ContentDate = date
    ds.StudyTime = study_time
    ds.SeriesTime = study_time
    ds.ContentTime = study_time
    ds.AccessionNumber = accession_number
    ds.Modality = "CT"
    ds.Manufacturer = manufacturer
    ds.InstitutionName = "synthetic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CHEST CT (synthetic)"
    ds.SeriesDescription = desc
    ds.ManufacturerModelName = "lungdamage.phantom"
    ds.PatientName = patient_name or pid
    ds.PatientID = pid
    ds.PatientBirthDate = patient_birth_date.replace("-", "")
    ds.PatientSex = patient_sex
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = fmt(thickness)
    ds.SpacingBetweenSlices = fmt(sz)
    ds.KVP = "120"
    ds.ConvolutionKernel = kern
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = int(series_number)
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [fmt(v) for v in (*row_dir, *col_dir)]
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = [fmt(py), fmt(px)]
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = pr
    ds.WindowCenter = fmt(window_center)
    ds.WindowWidth = fmt(window_width)
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.PixelData = b""

    paths = []
    for k in range(ct.shape[0]):
        # one template, only the per-slice elements change
        sop_uid = generate_uid(entropy_srcs=["sop", series_uid, str(k)])
        fm.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        pos = origin + slice_dir * (k * sz)
        ds.ImagePositionPatient = [fmt(v) for v in pos]
        ds.SliceLocation = fmt(float(pos @ slice_dir))
        ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
        path = folder / filename_pattern.format(k + 1)
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    logger.debug("wrote %d slices of series %s to %s", len(paths), series_uid, folder)
    return paths


# --------------------------------------------------------------------------
# Gas below the diaphragm (opt-in: stomach_gas, colon_gas)
# --------------------------------------------------------------------------
def _stomach_shapes() -> tuple[Shape, Shape]:
    """Stomach under the left dome: the whole organ (fluid) and its gas cap."""
    c, r = (52.0, -28.0, -103.0), (38.0, 32.0, 24.0)
    organ = _ellipsoid(c, r)
    f_org, bb = organ
    level = c[2] - 6.0  # air-fluid level

    def gas(x, y, z):
        return np.maximum(f_org(x, y, z), level - z)

    return organ, (gas, bb)


def _colon_shapes() -> list[Shape]:
    """Hepatic and splenic flexures: tubes under the domes, beside the posterior recesses."""
    return [
        _capsule((-92.0, -45.0, -118.0), (-72.0, -80.0, -128.0), 20.0),
        _capsule((98.0, -40.0, -114.0), (80.0, -78.0, -126.0), 22.0),
    ]


def _stool_field(seed: int):
    """Implicit 'stool' solid: negative where a smooth pseudo-random field is
    above its median (about half the volume), in mm-like units."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 9090]))
    k = rng.normal(size=(6, 3))
    k *= (2.0 * np.pi / 16.0) / np.linalg.norm(k, axis=1, keepdims=True)  # 16 mm wavelength
    ph = rng.uniform(0.0, 2.0 * np.pi, 6)
    kf = [tuple(float(v) for v in row) for row in k]
    pf = [float(v) for v in ph]

    def f(x, y, z):
        acc = 0.0
        for (a, b, c), p in zip(kf, pf):
            acc = acc + np.sin(a * x + b * y + c * z + p)
        return acc * np.float32(16.0 / (2.0 * np.pi * 2.4))  # about mm near the zero crossing

    return f


def _render_bowel(slab: _Slab, hu: np.ndarray, *, stomach: bool, colon: bool, seed: int) -> np.ndarray:
    """Paint stomach and colon gas into one slab; returns its gas mask (>= 50 % gas)."""
    gas_occ = np.zeros(hu.shape, np.float32)
    if stomach:
        organ, cap = _stomach_shapes()
        _paint(hu, slab.render(organ), 20.0)
        r = slab.render(cap)
        _paint(hu, r, TISSUE_HU["air"])
        _max_into(gas_occ, r)
    if colon:
        stool = _stool_field(seed)
        for tube in _colon_shapes():
            f_t, bb = tube
            _paint(hu, slab.render(tube), 30.0)  # stool and wall

            def gas(x, y, z, f_t=f_t):
                return np.maximum(f_t(x, y, z), -stool(x, y, z))

            r = slab.render((gas, bb))
            _paint(hu, r, TISSUE_HU["air"])
            _max_into(gas_occ, r)
    return gas_occ >= 0.5
