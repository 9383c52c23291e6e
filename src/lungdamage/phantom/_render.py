"""Rendering the anatomy onto the CT grid, slab by slab, and the exact truth fractions."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ._anatomy import TISSUE_HU, _Anatomy, _colon_shapes, _stomach_shapes, _stool_field
from ._solids import Shape, _max_into, _occ, _paint, _Slab


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
    lb = slab.block(anat.lung_bbox, _lung_margin_mm(slab.spacing))
    if lb is not None:
        _render_lungs(anat, slab, lb, hu, ves_u8, lung_partial_volume, out)

    # airways on top (they run through the mediastinum and into the hila)
    _paint(hu, slab.render(anat.airway_outer), TISSUE_HU["soft"])
    lum = slab.render(anat.airway_lumen)
    _paint(hu, lum, TISSUE_HU["air"])
    if lum is not None:
        out["airways"][lum[0]] = lum[1] >= 0.5
    return out


def _lung_margin_mm(spacing_mm) -> float:
    return math.sqrt(sum(s * s for s in spacing_mm)) * 2 + 1.0


def _carve_mediastinum(anat: _Anatomy, ls: _Slab, blk: tuple, f_lung: np.ndarray) -> None:
    """Clip the lung's implicit values ``f_lung`` (on ``blk``, modified) by the mediastinal solids
    the lung wraps around, each only on its own bounding box."""
    margin_mm = _lung_margin_mm(ls.spacing)
    for f_part, bbox in anat.mediastinum_parts:
        part_blk = ls.block(bbox, margin_mm)
        if part_blk is None:
            continue
        sub, glob = [], []
        for a, b in zip(blk, part_blk, strict=True):
            start, stop = max(a.start, b.start), min(a.stop, b.stop)
            sub.append(slice(start - a.start, stop - a.start))
            glob.append(slice(start, stop))
        if all(t.stop > t.start for t in sub):
            x_mm, y_mm, z_mm = ls.coords(tuple(glob))
            inner = f_lung[tuple(sub)]
            np.maximum(inner, -f_part(x_mm, y_mm, z_mm), out=inner)


def _lung_occupancy(anat: _Anatomy, ls: _Slab, lung_partial_volume: bool) -> dict[str, tuple]:
    """``{side: (block, occupancy)}`` of each lung present on the lungs' slab ``ls``."""
    occupancy = {}
    for side in ("right", "left"):
        f, bbox = anat.lung[side]
        f_own = anat.lung_own[side]
        blk = ls.block(bbox, _lung_margin_mm(ls.spacing))
        if blk is None:
            continue
        x_mm, y_mm, z_mm = ls.coords(blk)
        f_lung = np.broadcast_to(f_own(x_mm, y_mm, z_mm), (z_mm.shape[0], y_mm.shape[1], x_mm.shape[2])).copy()
        _carve_mediastinum(anat, ls, blk, f_lung)
        if lung_partial_volume:
            occ = _occ(f_lung, x_mm, y_mm, z_mm, f, ls.spacing, lip=1.3)
        else:
            occ = (f_lung < 0).astype(np.float32)
        occupancy[side] = (blk, occ)
    return occupancy


def _lesion_occupancy(anat: _Anatomy, ls: _Slab, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Occupancy of GGO (halos included), consolidation and the chest-wall consolidation."""
    o_ggo = np.zeros(shape, np.float32)
    o_cons = np.zeros(shape, np.float32)
    o_chest_wall = np.zeros(shape, np.float32)
    for sh, soft_mm in anat.ggo_shapes:
        _max_into(o_ggo, ls.render(sh, soft_mm=soft_mm))
    for sh in anat.cons_shapes:
        _max_into(o_cons, ls.render(sh))
    for sh in anat.cw_shapes:
        _max_into(o_chest_wall, ls.render(sh))
    return o_ggo, o_cons, o_chest_wall


def _lung_interior_hu(anat: _Anatomy, ls: _Slab, shape, o_ggo, o_cons, o_vessel) -> np.ndarray:
    """HU inside the lungs: gravity gradient, fissures, lesions, vessels (float32)."""
    gradient_hu = TISSUE_HU["lung"] + 15.0 * np.clip((ls.ys[None, :, None] - anat.BODY[1]) / 82.0, -1, 1)
    lung_hu = np.broadcast_to(gradient_hu.astype(np.float32), shape).copy()
    if anat.fissures:
        o_fissure = np.zeros(shape, np.float32)
        for sh in anat.fissure_shapes():
            _max_into(o_fissure, ls.render(sh, lip=1.2))
        lung_hu += o_fissure * (np.float32(TISSUE_HU["soft"]) - lung_hu)
    lung_hu += o_ggo * (np.float32(TISSUE_HU["ggo"]) - lung_hu)
    lung_hu += o_cons * (np.float32(TISSUE_HU["consolidation"]) - lung_hu)
    if o_vessel is not None:
        lung_hu += o_vessel * (np.float32(TISSUE_HU["vessel"]) - lung_hu)
    return lung_hu


def _label_lungs_and_lobes(anat: _Anatomy, ls: _Slab, o_lung: dict, lungs: np.ndarray, lobes: np.ndarray) -> None:
    """Lung and lobe codes (views on the lungs' block, modified) at 50 % occupancy;
    airway wall and lumen are not lung."""
    keep = np.ones(lungs.shape, np.float32)
    airway = ls.render(anat.airway_outer)
    if airway is not None:
        keep[airway[0]] -= airway[1]
    for code, side in ((1, "right"), (2, "left")):
        if side not in o_lung:
            continue
        blk, occ = o_lung[side]
        is_lung = occ * keep[blk] >= 0.5
        lungs[blk][is_lung] = code
        kk, ii, jj = np.nonzero(is_lung)
        lobes[blk][kk, ii, jj] = anat.lobe_of(
            side, ls.xs[blk[2]][jj], ls.ys[blk[1]][ii], ls.zs[blk[0]][kk]
        )


def _render_lungs(anat, slab, lb, hu, ves_u8, lung_partial_volume, out) -> None:
    """Lungs and their content on the lungs' bounding block ``lb`` of the slab."""
    ls = _Slab(slab.xs[lb[2]], slab.ys[lb[1]], slab.zs[lb[0]], slab.spacing)
    hu_lungs = hu[lb]
    shape = hu_lungs.shape
    o_lung = _lung_occupancy(anat, ls, lung_partial_volume)
    if not o_lung:
        return
    o_total = np.zeros(shape, np.float32)
    for blk, occ in o_lung.values():
        o_total[blk] += occ
    o_ggo, o_cons, o_chest_wall = _lesion_occupancy(anat, ls, shape)
    o_vessel = None if ves_u8 is None else ves_u8[lb].astype(np.float32) * np.float32(1.0 / 255.0)
    hu_lungs += o_total * (_lung_interior_hu(anat, ls, shape, o_ggo, o_cons, o_vessel) - hu_lungs)

    lungs = out["lungs"][lb]
    _label_lungs_and_lobes(anat, ls, o_lung, lungs, out["lobes"][lb])
    in_lung = lungs > 0
    out["cons"][lb] = in_lung & (o_cons >= 0.5)
    out["ggo"][lb] = in_lung & (o_ggo * (1.0 - o_cons) >= 0.5)
    out["cw"][lb] = in_lung & (o_chest_wall >= 0.5)
    if o_vessel is not None:
        out["vessels"][lb] = in_lung & (o_vessel >= 0.5)


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
            own = anat.lung_own[side](x, y, z) < 0
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
