"""Anatomy of the phantom: tissue values, lesions and every solid of the thorax."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ._solids import Shape, _capsule, _ellipsoid, _union, _vcyl

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
        a_mm, b_mm, c_mm = self.radii_mm
        return dataclasses.replace(
            self,
            radii_mm=(a_mm * factor, b_mm * factor, c_mm * factor),
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
        #: each lung's solid (clipped by the mediastinum) and its own implicit function (unclipped)
        self.lung: dict[str, Shape] = {}
        self.lung_own: dict[str, Callable[..., Any]] = {}
        for side in ("right", "left"):
            self.lung[side], self.lung_own[side] = self._lung_shape(side)
        rb, lb_ = self.lung["right"][1], self.lung["left"][1]
        self.lung_bbox = (rb[0], lb_[1], min(rb[2], lb_[2]), max(rb[3], lb_[3]),
                          min(rb[4], lb_[4]), max(rb[5], lb_[5]))
        self.lesions = tuple(lesions)
        self.ggo_shapes: list[tuple[Shape, float]] = []  # (solid, soft edge in mm)
        self.cons_shapes: list[Shape] = []
        self.cw_shapes: list[Shape] = []
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

    def _lung_shape(self, side) -> tuple[Shape, Callable[..., Any]]:
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

        xlo, xhi = (-ca, -1.0) if side == "right" else (1.0, ca)
        return (f, (xlo, xhi, by - cb, by + cb, -160.0, z0 + h)), f_own

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
        shapes: list[Shape] = []
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
        segs: list[Shape] = []
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
        for (a, b, c), p in zip(kf, pf, strict=True):
            acc = acc + np.sin(a * x + b * y + c * z + p)
        return acc * np.float32(16.0 / (2.0 * np.pi * 2.4))  # about mm near the zero crossing

    return f

