"""The lesion measure: opacity-band voxels that belong to an opacity, not to a normal structure.

The band measure (``damage_pct``) counts every lung voxel whose HU lies in
the GGO or consolidation band.  In a normal lung that is 10-30 % of the
voxels: vessel walls and their partial-volume rims, airway walls, fissures
and the lung surface.  The lesion measure keeps a band voxel only when it is
part of an *opacity*: a region in which band voxels fill most of the lung
around them, that is not a tube, and that is not too small.

Algorithm (pure functions, vectorized; see ``docs/metrics.md``)
-----------------------------------------------------------------
All work is on the lung bounding box, block-reduced to cells of about
``grid_mm`` (block sums: no voxel is dropped, the full-resolution decision
is per voxel at the end).

1. **Band voxels**: lung voxels with ``opacity_hu[0] <= HU < opacity_hu[1]``
   (default the ``covid`` GGO + consolidation bands, -700 to +100 HU).
2. **Opacity context** (normalized convolution inside the lung):
   ``F = G(band) / G(lung)`` with a Gaussian of ``context_sigma_mm``.  A
   vessel of radius ``r`` and its rim fill less than half of a Gaussian
   neighbourhood of sigma ``s`` as long as ``r < 1.18 s``; a fissure, an
   airway wall or the partial-volume shell along the pleura fills far less.
   An opacity fills it (``F`` near 1) -- also against the chest wall, because
   the neighbourhood counts lung only: subpleural opacities are kept and the
   lung surface is never simply eroded.  Cells with ``F >= min_fraction``
   are opacity candidates if, in addition, the context's mean HU exceeds the
   aerated reference at the same anterior-posterior depth by
   ``ref_margin_hu`` (dependent density -- the smooth gravity gradient of a
   normal lung, up to -500 HU posteriorly on a poorly inspired scan -- is
   not an opacity; the reference is capped at ``ref_cap_hu`` so that a lung
   full of disease does not become its own reference).
3. **Tubes** (multi-scale Hessian, Frangi et al. 1998 vesselness for bright
   structures, fixed constants so the response is not scan-dependent): on the
   cell-mean HU (outside the lung filled with the lung's median HU, so the
   chest wall makes no edge), at every scale of ``tube_sigmas_mm``.  Candidate
   cells whose best vesselness reaches ``tube_threshold`` are large vessels
   (or bronchovascular bundles) that passed step 2.  Blobs
   (nodules, round consolidations) and sheets (plateaus, their edges) have
   ``|lambda_1|`` comparable to ``|lambda_2|`` or ``lambda_2`` near 0 and are
   spared; inside a consolidation a vessel has no contrast and no response.
   Only centreline cells (small gradient against the cross-section
   curvature: the rim of a blob or plateau also has a tube-like Hessian, but
   a large gradient) seed a tube, which then takes the dense cells (mean HU
   in the consolidation band or above) within its scale -- the vessel, not
   what it runs through.  The context is then recomputed with the tubes as
   not-opacity: the partial-volume sleeve of a vessel drops below
   ``min_fraction``, ground glass that a vessel runs through does not.
   Single slices use the 2-D (in-plane) Hessian: a line is a tube.
4. **Whole lesions**: the surviving cells grow by ``grow_mm`` through cells
   that are mostly band voxels (the rim of a lesion, the outer half of a small
   one), then by ``grow_cells`` cells; intersected with the band voxels they
   give the lesion voxels -- the lesion's own partial-volume edge is part of
   it (a vessel touching a lesion contributes at most that margin).
5. **Minimum size**: connected opacities (cells, 26-connected; 8-connected
   in-plane for single slices) smaller than a sphere of ``min_diameter_mm``
   (a disc of that diameter on single slices) are dropped.
6. **Hilum** (``hilar``): an opacity that touches the mediastinal lung surface
   and nowhere the costal one is a hilar or juxta-mediastinal structure (the
   vessels and bronchi converging on the hilum, hilar soft tissue inside a
   threshold lung mask, partial volume along the mediastinum) and is dropped.
   A non-lung cell is mediastinal when it lies in the gap between the right
   and the left lung along its row (left-right axis), costal when no lung lies
   beyond it on one side; gaps inside one lung (diaphragm dome, an airway
   lumen outside the mask) are neither.  COVID-19 opacities are typically
   subpleural: they touch the chest wall and are kept.  Guard (only hilar
   structures go): an opacity whose solid core (parts thicker than about
   twice ``hilar_core_mm``) reaches more than ``hilar_reach`` of its
   hemithorax's width into the lung (a large perihilar consolidation), or
   whose mediastinal contact lies mostly outside the hilar slab (the middle
   third of the lung height, ``hilar_slab``: apex, paracardiac bases; 3-D
   series showing the whole lung height only) is parenchymal and kept.

Every parameter is in :meth:`LesionParams.to_dict`, which goes into the
result's params hash.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..regions import nonzero_indices

logger = logging.getLogger(__name__)

__all__ = [
    "LesionParams",
    "LesionMap",
    "lesion_params",
    "find_lesions",
    "lesion_counts",
    "lesion_classes",
    "CLASS_NONE",
    "CLASS_LESION",
    "CLASS_CONTEXT",
    "CLASS_TUBE",
    "CLASS_SMALL",
    "CLASS_HILAR",
]

#: Classes of :attr:`LesionMap.classes`.
CLASS_NONE, CLASS_LESION, CLASS_CONTEXT, CLASS_TUBE, CLASS_SMALL, CLASS_HILAR = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class LesionParams:
    """Parameters of the lesion measure (all recorded in the params hash).

    Attributes
    ----------
    ggo_hu, consolidation_hu : (float, float)
        Half-open HU bands ``[lo, hi)`` of ground glass and consolidation
        (default: the ``covid`` scheme's).  Band voxels = their union.
    context_sigma_mm : float
        Gaussian sigma (mm) of the opacity context (step 2).
    context_sigma_planar_mm : float
        The same on single slices (2-D path).  In a plane the context sees
        one dimension across an in-plane vessel instead of two, so a vessel
        of radius ``r`` fills less than half of it only while
        ``r < 0.674 sigma``; 7 mm rejects the same vessels (r < 4.7 mm) as
        4 mm does in 3-D (``r < 1.18 sigma``).
    min_fraction : float
        Minimum share of band voxels among the lung voxels of the context.
    grid_mm : float
        Target cell size (mm) of the block-reduced grid (per axis, a whole
        number of voxels, at least one).
    tube_sigmas_mm : tuple of float
        Hessian scales (mm) of the tube test.
    tube_threshold : float
        Frangi vesselness (0-1) at or above which a candidate cell is a tube.
    tube_alpha, tube_beta, tube_c_hu : float
        Frangi constants: plate-vs-line (``R_A``), blob (``R_B``) and
        structure strength (scale-normalized Hessian norm, HU).
    tube_context_sigma_mm, tube_context_max : float
        A tube is removed only where band voxels fill less than
        ``tube_context_max`` of the lung in a Gaussian neighbourhood of
        ``tube_context_sigma_mm``: vessels run in aerated lung, while an
        elongated consolidation (or a vessel inside an opacity) is surrounded
        by opacity (Fleischner: vessels are removed in aerated or GGO lung,
        never inside consolidation).
    ref_percentile, ref_bin_mm, ref_margin_hu, ref_cap_hu : float
        Dependent density: the aerated reference of every slab of
        ``ref_bin_mm`` along the anterior-posterior axis is the
        ``ref_percentile`` percentile of the cell-mean HU of its lung cells,
        capped at ``ref_cap_hu`` (a denser reference is disease, not
        dependent lung).  A candidate's context mean HU must exceed its
        slab's reference by ``ref_margin_hu`` (the distance from normal lung,
        -850 HU, to the GGO band edge, -700 HU).
    ref_monotone : bool
        Make the reference rise monotonically toward the dependent side (the
        side whose slabs are denser on average): a slab's reference is the
        lowest of its own and every deeper slab's.
    tube_centre : float
        A tube seed is a centreline cell: scale-normalized gradient at most
        ``tube_centre`` times ``|lambda_2|`` (about ``tube_centre`` sigma
        from the axis of a Gaussian-profile tube).
    grow_mm : float
        Surviving opacity cells grow this far (mm) through cells that are
        themselves mostly band voxels, not tubes and with at least half of
        ``min_fraction`` band voxels in their context: the part of a lesion
        whose context is below ``min_fraction`` (its rim, a small lesion's
        outer half) is taken back.
    grow_cells : int
        Then by this many cells without condition, to take in the lesion's
        own partial-volume edge (step 4).
    min_diameter_mm : float
        Smallest opacity counted: volume of a sphere (area of a disc on
        single slices) of this diameter.
    hilar : bool
        Drop opacities that touch the mediastinal lung surface and nowhere the
        costal one (chest wall, or diaphragm lateral to the lungs): the
        vessels and bronchi entering the hilum, hilar soft tissue inside the
        lung mask and partial volume along the mediastinum.  The mediastinal
        surface is where the lung borders non-lung in the gap between the
        right and the left lung on the same image row (left-right axis); the
        costal surface is where no lung lies beyond the border on its row
        (gaps inside one lung count as neither).  Peripheral opacities (typical of COVID-19) touch the
        chest wall and are kept; opacities touching no surface are kept.
        Guarded by ``hilar_reach`` and ``hilar_slab``: only opacities near the
        mediastinum at the level of the hilum are dropped.
    hilar_reach : float
        The hilum lies in the central zone, the inner third of the lung: an
        opacity that reaches farther than this fraction of its hemithorax's
        left-right width (midline to chest wall, the lung's widest extent)
        from the mediastinal surface is parenchymal (perihilar consolidation).
    hilar_core_mm : float
        The reach is that of the opacity's solid core: its mostly-band cells
        deeper than this (mm) inside them, i.e. parts thicker than about twice
        this.  Vessels and bronchi leaving the hilum (segmental, 5-10 mm) have
        no core; consolidation has.
    hilar_slab : (float, float)
        The hilum's craniocaudal extent (carina to the inferior pulmonary
        veins) as fractions of the lungs' height, measured from either end
        (symmetric: the slice order need not be known).  An opacity whose
        mediastinal contact lies mostly outside it (apical, paracardiac at the
        bases) is parenchymal.  Used on 3-D series whose lung extent ends
        inside the image (apex and base imaged); on single slices and partial
        scans only ``hilar_reach`` guards.
    subsample : bool
        Estimate the cell statistics from every other row and column (when a
        cell spans an even number of both): about half the time on sub-mm
        scans, but results move by sampling (A048383 19010410: 12.0 -> 16.8 %),
        so off by default.
    """

    ggo_hu: tuple[float, float] = (-700.0, -300.0)
    consolidation_hu: tuple[float, float] = (-300.0, 100.0)
    context_sigma_mm: float = 4.0
    context_sigma_planar_mm: float = 7.0
    min_fraction: float = 0.5
    grid_mm: float = 2.5
    tube_sigmas_mm: tuple[float, ...] = (2.5, 4.0, 6.0, 8.0)
    tube_threshold: float = 0.3
    tube_alpha: float = 0.5
    tube_beta: float = 0.5
    tube_c_hu: float = 60.0
    tube_context_sigma_mm: float = 10.0
    tube_context_max: float = 0.7
    tube_centre: float = 0.5
    ref_percentile: float = 20.0
    ref_bin_mm: float = 10.0
    ref_margin_hu: float = 150.0
    ref_cap_hu: float = -600.0
    ref_monotone: bool = True
    grow_mm: float = 2.0
    grow_cells: int = 1
    min_diameter_mm: float = 6.0
    hilar: bool = True
    hilar_reach: float = 1.0 / 3.0
    hilar_core_mm: float = 5.0
    hilar_slab: tuple[float, float] = (1.0 / 3.0, 2.0 / 3.0)
    subsample: bool = False

    def __post_init__(self) -> None:
        bad = []
        for name in ("ggo_hu", "consolidation_hu"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                bad.append(f"{name}={getattr(self, name)}")
        if self.ggo_hu[1] != self.consolidation_hu[0]:
            bad.append(f"ggo_hu upper edge {self.ggo_hu[1]} != consolidation_hu lower edge {self.consolidation_hu[0]}")
        for name in ("context_sigma_mm", "context_sigma_planar_mm", "grid_mm", "tube_alpha", "tube_beta", "tube_c_hu"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                bad.append(f"{name}={v}")
        if not 0.0 < self.min_fraction <= 1.0:
            bad.append(f"min_fraction={self.min_fraction}")
        if not 0.0 < self.tube_threshold <= 1.0:
            bad.append(f"tube_threshold={self.tube_threshold}")
        if not self.tube_sigmas_mm or any(not (math.isfinite(s) and s > 0) for s in self.tube_sigmas_mm):
            bad.append(f"tube_sigmas_mm={self.tube_sigmas_mm}")
        if int(self.grow_cells) != self.grow_cells or self.grow_cells < 0:
            bad.append(f"grow_cells={self.grow_cells}")
        if not (math.isfinite(self.min_diameter_mm) and self.min_diameter_mm >= 0):
            bad.append(f"min_diameter_mm={self.min_diameter_mm}")
        if not self.hilar_reach > 0:
            bad.append(f"hilar_reach={self.hilar_reach}")
        if not self.hilar_core_mm >= 0:
            bad.append(f"hilar_core_mm={self.hilar_core_mm}")
        if not 0.0 <= self.hilar_slab[0] <= self.hilar_slab[1] <= 1.0:
            bad.append(f"hilar_slab={self.hilar_slab}")
        if bad:
            raise InputError(
                f"Invalid lesion parameters: {', '.join(bad)}. Potential fix: leave them at their defaults "
                "(docs/metrics.md, 'Lesion measure') or give finite positive values."
            )

    @property
    def opacity_hu(self) -> tuple[float, float]:
        return (self.ggo_hu[0], self.consolidation_hu[1])

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def lesion_params(options: LesionParams | Mapping[str, Any] | None = None) -> LesionParams:
    """:class:`LesionParams` from ``None`` (defaults), a mapping of overrides, or itself."""
    if options is None:
        return LesionParams()
    if isinstance(options, LesionParams):
        return options
    known = {f.name for f in dataclasses.fields(LesionParams)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(
            f"Unknown lesion parameter(s) {unknown}. Potential fix: use some of {sorted(known)}."
        )
    kw: dict[str, Any] = {k: (tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else v)
                          for k, v in options.items()}
    return LesionParams(**kw)


@dataclass(frozen=True, eq=False)
class LesionMap:
    """Result of :func:`find_lesions`.

    Attributes
    ----------
    lesion : ndarray of bool, shape of the CT
        Lesion voxels.
    component : ndarray of int32, shape (number of lesion voxels,)
        Opacity (connected component, 1..n) of every lesion voxel, in the C
        order of ``np.flatnonzero(lesion)``.
    n_lesions : int
    classes : ndarray of uint8, shape of the CT, or None
        Only with ``classes=True``: :data:`CLASS_LESION`, or why a band voxel
        was not counted -- :data:`CLASS_CONTEXT` (thin structure, shell, not
        inside an opacity), :data:`CLASS_TUBE` (tubular: vessel or airway
        wall), :data:`CLASS_SMALL` (opacity below the minimum size),
        :data:`CLASS_HILAR` (hilar or juxta-mediastinal structure, step 6); 0
        for voxels outside the lungs or the bands.
    planar : bool
        The 2-D (per-slice) path was used.
    params : LesionParams or None
        The parameters it was made with.
    cells : object or None
        The cell-grid decisions (private; :func:`lesion_classes` derives the
        per-voxel classes from them later, without running the filter again).
    """

    lesion: np.ndarray
    component: np.ndarray
    n_lesions: int
    classes: np.ndarray | None
    planar: bool
    params: LesionParams | None = None
    cells: Any = None


@dataclass(frozen=True, eq=False)
class _Cells:
    """Cell-grid state of one :func:`find_lesions` run (for :func:`lesion_classes`)."""

    box: tuple[slice, slice, slice]
    f: tuple[int, int, int]
    tube: np.ndarray
    small: np.ndarray
    hilar: np.ndarray | None = None


# ------------------------------------------------------------------------------ helpers
def _factors(spacing_mm, grid_mm: float, planar: bool) -> tuple[int, int, int]:
    f = [max(1, round(grid_mm / s)) for s in spacing_mm]
    if planar:
        f[0] = 1
    return (f[0], f[1], f[2])


def _block_sum(a: np.ndarray, f: tuple[int, int, int], dtype) -> np.ndarray:
    """Sum over blocks of ``f`` voxels; every dimension of ``a`` is a multiple of its factor.

    Strided adds axis by axis, the outermost first (contiguous slabs, the data shrink early), in a
    small integer type (counts: uint8/uint16; HU: int32), converted to ``dtype`` at the end."""
    n_cell = f[0] * f[1] * f[2]
    acc_t: type[np.integer]
    if a.dtype == bool:
        acc_t = np.uint8 if n_cell <= 255 else (np.uint16 if n_cell <= 65535 else np.int64)
    else:
        acc_t = np.int32 if n_cell * 32768 < 2**31 else np.int64
    out: np.ndarray = a
    for a_i in (0, 1, 2):
        k = f[a_i]
        if k == 1:
            continue
        sl = [slice(None)] * 3
        sl[a_i] = slice(0, None, k)
        acc: np.ndarray = out[tuple(sl)].astype(acc_t)
        for r in range(1, k):
            sl[a_i] = slice(r, None, k)
            np.add(acc, out[tuple(sl)], out=acc)
        out = acc
    return out.astype(dtype)


def _cell_stats(hs: np.ndarray, ms: np.ndarray, fs: tuple[int, int, int], p: LesionParams, outside: int,
                band_out: np.ndarray | None, chunk_vox: int = 1 << 22):
    """Per-cell lung count, band count, HU sum, soft (below the consolidation band) count and clipped HU sum.

    One pass over the box in slabs of whole cells along the slice axis (about ``chunk_vox`` voxels each),
    each slab cropped to the whole cells around its lung voxels (cells without lung have every statistic
    0: the box's margin and the corners beside the apex and the bases cost nothing), with preallocated
    slab buffers: the full-resolution temporaries stay small (in cache, no page faults on fresh 100-MB
    arrays) and every lung voxel is read once.  ``band_out`` (optional, box shape, all False on entry)
    receives the per-voxel band mask.

    Returns
    -------
    n_l, n_b, n_s : float32 arrays; hsum, h_clip : float64 arrays (cell grid; sums over lung voxels only)
    """
    n_cells = tuple(n // k for n, k in zip(hs.shape, fs, strict=True))
    n_l = np.zeros(n_cells, np.float32)
    n_b = np.zeros(n_cells, np.float32)
    n_s = np.zeros(n_cells, np.float32)
    hsum = np.zeros(n_cells, np.float64)
    h_clip = np.zeros(n_cells, np.float64)
    plane = hs.shape[1] * hs.shape[2]
    step = max(1, chunk_vox // max(1, fs[0] * plane))  # cells per slab
    buffers = _SlabBuffers(p, outside, (min(step, n_cells[0]) * fs[0],) + hs.shape[1:])
    for c0 in range(0, n_cells[0], step):  # slabs of whole cells (a few dozen), vectorized inside
        c1 = min(c0 + step, n_cells[0])
        v0, v1 = c0 * fs[0], c1 * fs[0]
        found = _lung_cells_2d(ms[v0:v1], fs)
        if found is None:
            continue  # no lung in the slab: every statistic stays 0
        rows, cols = found
        vr, vc = slice(rows.start * fs[1], rows.stop * fs[1]), slice(cols.start * fs[2], cols.stop * fs[2])
        cells = (slice(c0, c1), rows, cols)
        out = buffers.stats(hs[v0:v1, vr, vc], ms[v0:v1, vr, vc], fs,
                            None if band_out is None else band_out[v0:v1, vr, vc])
        n_l[cells], n_b[cells], hsum[cells], n_s[cells], h_clip[cells] = out
    return n_l, n_b, hsum, n_s, h_clip


def _lung_cells_2d(m: np.ndarray, fs: tuple[int, int, int]) -> tuple[slice, slice] | None:
    """The whole cells (rows, columns) of a slab ``m`` that hold its lung voxels; None without lung."""
    plane = np.asarray(m.any(axis=0))
    rows, cols = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    if not rows.size:
        return None
    return (slice(int(rows[0]) // fs[1], int(rows[-1]) // fs[1] + 1),
            slice(int(cols[0]) // fs[2], int(cols[-1]) // fs[2] + 1))


class _SlabBuffers:
    """Preallocated full-resolution work buffers of :func:`_cell_stats` (one slab) and its band limits."""

    def __init__(self, p: LesionParams, outside: int, shape: tuple[int, ...]) -> None:
        self.outside = outside
        self.lo_i = int(min(max(math.ceil(p.opacity_hu[0]), -32768), 32767))
        self.hi_i = int(min(max(math.ceil(p.opacity_hu[1]), -32768), 32767))
        c_lo = p.consolidation_hu[0]
        self.c_lt = int(min(max(math.ceil(c_lo), -32768), 32767))  # HU < c_lo <=> HU < ceil(c_lo) (integer HU)
        self.c_min = np.int16(c_lo)
        self.size = int(np.prod(shape))
        self.hm = np.empty(self.size, np.int16)
        self.hmin = np.empty_like(self.hm)
        self.b1 = np.empty(self.size, bool)
        self.b2 = np.empty(self.size, bool)

    def stats(self, h: np.ndarray, m: np.ndarray, fs: tuple[int, int, int], band_out: np.ndarray | None):
        """The five cell statistics of one slab crop ``h`` / ``m`` (whole cells); the band mask into ``band_out``."""
        n = h.size
        hm, hmin, b1, b2 = (a[:n].reshape(h.shape) for a in (self.hm, self.hmin, self.b1, self.b2))
        outside = self.outside
        cell_vox = fs[0] * fs[1] * fs[2]
        # lung HU with everything else at a value below every band
        np.copyto(hm, h)
        np.logical_not(m, out=b1)
        np.copyto(hm, np.int16(outside), where=b1)
        nl = _block_sum(m, fs, np.float32)
        np.greater_equal(hm, self.lo_i, out=b1)
        np.less(hm, self.hi_i, out=b2)
        b1 &= b2
        nb = _block_sum(b1, fs, np.float32)
        if band_out is not None:
            band_out[...] = b1
        n_out = cell_vox - nl.astype(np.float64)
        hsum = _block_sum(hm, fs, np.float64) - float(outside) * n_out
        np.less(hm, self.c_lt, out=b2)
        ns = _block_sum(b2, fs, np.float32) - (cell_vox - nl)  # outside voxels are below too
        np.minimum(hm, self.c_min, out=hmin)
        h_clip = _block_sum(hmin, fs, np.float64) - float(outside) * n_out
        return nl, nb, hsum, ns, h_clip


def _around(mask: np.ndarray, sigma_cells) -> tuple[slice, ...]:
    """Bounding box of ``mask`` widened by the radius of a Gaussian of ``sigma_cells`` (truncate 3):
    a Gaussian filter (constant mode) of the crop equals the whole array's filter at the mask's cells."""
    if not mask.any():
        return tuple(slice(0, 0) for _ in mask.shape)
    out = []
    for a, s in enumerate(sigma_cells):
        proj = np.flatnonzero(mask.any(axis=tuple(b for b in range(mask.ndim) if b != a)))
        r = int(3.0 * float(s) + 0.5)
        out.append(slice(max(int(proj[0]) - r, 0), min(int(proj[-1]) + r + 1, mask.shape[a])))
    return tuple(out)


def _upsample(c: np.ndarray, f: tuple[int, int, int], shape) -> np.ndarray:
    """Nearest-cell upsampling of a coarse array to ``shape`` (a whole number of cells)."""
    n0, n1, n2 = c.shape
    view = np.broadcast_to(c[:, None, :, None, :, None], (n0, f[0], n1, f[1], n2, f[2]))
    out = view.reshape(n0 * f[0], n1 * f[1], n2 * f[2])[: shape[0], : shape[1], : shape[2]]
    return out if out.flags.writeable else out.copy()


def _cell_box(lo: int, hi: int, n: int, k: int) -> tuple[int, int, int]:
    """``(start, stop, pad)`` along one axis: [lo, hi) widened to a whole number of ``k``-voxel cells
    inside [0, n); ``pad`` voxels are still missing when ``n`` itself is too short."""
    need = -(-(hi - lo) // k) * k
    stop = min(lo + need, n)
    start = max(stop - need, 0)
    return start, stop, need - (stop - start)


def _hessian_at(img: np.ndarray, pts: tuple[np.ndarray, ...], h: tuple[float, float, float],
                planar: bool) -> np.ndarray:
    """Hessian (central differences, spacing ``h`` in mm) of ``img`` at points; (N, d, d)."""
    p = np.pad(img, 1, mode="edge")
    k, j, i = (q + 1 for q in pts)
    axes = (1, 2) if planar else (0, 1, 2)

    def at(dk=0, dj=0, di=0):
        return p[k + dk, j + dj, i + di]

    def unit(ax, s):
        d = [0, 0, 0]
        d[ax] = s
        return d

    c = at()
    d = len(axes)
    out = np.empty((c.size, d, d), np.float32)
    for a_i, a in enumerate(axes):
        out[:, a_i, a_i] = (at(*unit(a, 1)) - 2 * c + at(*unit(a, -1))) / (h[a] * h[a])
        for b_i in range(a_i + 1, d):
            b = axes[b_i]

            def both(sa, sb, a=a, b=b):
                dd = [0, 0, 0]
                dd[a] += sa
                dd[b] += sb
                return at(*dd)

            v = (both(1, 1) - both(1, -1) - both(-1, 1) + both(-1, -1)) / (4 * h[a] * h[b])
            out[:, a_i, b_i] = v
            out[:, b_i, a_i] = v
    return out


def _depth_reference(hsum, n_l, f, cell_mm, ap_axis: int, p: LesionParams) -> np.ndarray:
    """Aerated reference HU of every cell: a low percentile of the cell-mean HU of whole lung cells
    in its slab along ``ap_axis`` (slabs with fewer than 20 such cells take the whole lung's)."""
    full = n_l >= f[0] * f[1] * f[2]
    if not full.any():
        full = n_l > 0
    mean = hsum / np.maximum(n_l, 1)
    overall = float(np.percentile(mean[full], p.ref_percentile))
    n_ap = n_l.shape[ap_axis]
    step = max(1, round(p.ref_bin_mm / cell_mm[ap_axis]))
    per_cell = np.full(n_ap, np.nan, np.float32)
    moved_full = np.moveaxis(full, ap_axis, 0)
    moved_mean = np.moveaxis(mean, ap_axis, 0)
    for start in range(0, n_ap, step):  # one percentile per slab (tens of slabs), not per voxel
        vals = moved_mean[start:start + step][moved_full[start:start + step]]
        if vals.size >= 20:
            per_cell[start:start + step] = np.percentile(vals, p.ref_percentile)
    if p.ref_monotone and n_ap > 1:
        # physiology: density rises monotonically toward the dependent side, so no slab's reference may
        # exceed that of a slab deeper than it (diffuse non-dependent GGO does not become its own reference)
        # (slabs without enough lung cells take no part: NaN, filled with the whole lung's afterwards)
        have = np.flatnonzero(np.isfinite(per_cell))
        if have.size >= 2:
            vals = per_cell[have]
            half = vals.size // 2
            if vals[half:].mean() >= vals[:half].mean():  # dependent side at high indices (supine rows)
                vals = np.minimum.accumulate(vals[::-1])[::-1]
            else:
                vals = np.minimum.accumulate(vals)
            per_cell[have] = vals
    per_cell[~np.isfinite(per_cell)] = overall
    shape = [1, 1, 1]
    shape[ap_axis] = n_ap
    return per_cell.reshape(shape)


def _gradient_at(img: np.ndarray, pts: tuple[np.ndarray, ...], h: tuple[float, float, float],
                 planar: bool) -> np.ndarray:
    """Gradient magnitude (central differences, spacing ``h`` in mm) of ``img`` at points."""
    p = np.pad(img, 1, mode="edge")
    k, j, i = (q + 1 for q in pts)
    g2 = np.zeros(k.size, np.float32)
    for a in ((1, 2) if planar else (0, 1, 2)):
        d = [0, 0, 0]
        d[a] = 1
        diff = (p[k + d[0], j + d[1], i + d[2]] - p[k - d[0], j - d[1], i - d[2]]) / (2 * h[a])
        g2 += diff * diff
    return np.sqrt(g2)


def vesselness(eig: np.ndarray, *, alpha: float, beta: float, c: float) -> np.ndarray:
    """Frangi vesselness of bright tubes from scale-normalized eigenvalues ``(N, d)`` (any order).

    3-D: ``(1 - exp(-R_A^2/2a^2)) exp(-R_B^2/2b^2) (1 - exp(-S^2/2c^2))`` with
    ``|l1| <= |l2| <= |l3|``, ``R_A = |l2|/|l3|``, ``R_B = |l1|/sqrt(|l2 l3|)``,
    0 unless ``l2, l3 < 0``.  2-D: ``exp(-R_B^2/2b^2) (1 - exp(-S^2/2c^2))``,
    ``R_B = |l1|/|l2|``, 0 unless ``l2 < 0``.

    Examples
    --------
    >>> float(vesselness(np.array([[0.0, -100.0, -100.0]]), alpha=0.5, beta=0.5, c=50.0)[0]) > 0.8
    True
    >>> float(vesselness(np.array([[-100.0, -100.0, -100.0]]), alpha=0.5, beta=0.5, c=50.0)[0]) < 0.2
    True
    """
    order = np.argsort(np.abs(eig), axis=1)
    e = np.take_along_axis(eig, order, axis=1)
    s2 = (e * e).sum(axis=1)
    strength = 1.0 - np.exp(-s2 / (2.0 * c * c))
    if e.shape[1] == 2:
        l1, l2 = e[:, 0], e[:, 1]
        rb = np.abs(l1) / np.maximum(np.abs(l2), 1e-12)
        v = np.exp(-(rb * rb) / (2 * beta * beta)) * strength
        return np.where(l2 < 0, v, 0.0)
    l1, l2, l3 = e[:, 0], e[:, 1], e[:, 2]
    ra = np.abs(l2) / np.maximum(np.abs(l3), 1e-12)
    rb = np.abs(l1) / np.sqrt(np.maximum(np.abs(l2 * l3), 1e-24))
    v = (1.0 - np.exp(-(ra * ra) / (2 * alpha * alpha))) * np.exp(-(rb * rb) / (2 * beta * beta)) * strength
    return np.where((l2 < 0) & (l3 < 0), v, 0.0)


def _empty(shape, planar: bool, classes: bool, p: LesionParams | None = None) -> LesionMap:
    return LesionMap(np.zeros(shape, bool), np.zeros(0, np.int32), 0, np.zeros(shape, np.uint8) if classes else None,
                     planar, p)


# ------------------------------------------------------------------------------ steps
@dataclass(eq=False)
class _Grid:
    """The lung's bounding box, its cell grid and the cell statistics of one :func:`find_lesions` run.

    ``n_l``, ``n_b`` (lung and band voxels per cell) and ``hsum`` (sum of lung HU per cell) are voxel
    counts and sums (sampled ones scaled back); ``g_l`` is the lung count smoothed with the context
    Gaussian and ``frac`` the opacity context (step 2)."""

    p: LesionParams
    planar: bool
    spacing: tuple[float, float, float]
    f: tuple[int, int, int]
    cell_mm: tuple[float, float, float]
    box: tuple[slice, slice, slice]
    hb: np.ndarray
    mb: np.ndarray
    band_b: np.ndarray | None = None
    n_l: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    n_b: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    hsum: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    g_l: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    frac: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))

    def sigmas(self, mm: float) -> list[float]:
        """Per-axis sigma in cells of a Gaussian of ``mm`` (none across slices on the 2-D path)."""
        return [0.0 if (self.planar and a == 0) else mm / self.cell_mm[a] for a in range(3)]

    @property
    def sig_ctx(self) -> list[float]:
        return self.sigmas(self.p.context_sigma_planar_mm if self.planar else self.p.context_sigma_mm)

    @property
    def in_plane_mm(self) -> float:
        """The smallest cell size (mm) of the axes the filter works along."""
        return min(self.cell_mm[a] for a in range(3) if not (self.planar and a == 0))

    def structure(self, connectivity: int) -> np.ndarray:
        """3-D structuring element; on the 2-D path, nothing across slices."""
        st = ndimage.generate_binary_structure(3, connectivity)
        if self.planar:
            st[0] = st[2] = False
        return st


def _grid(hu: np.ndarray, lung: np.ndarray, spacing: tuple[float, float, float], p: LesionParams,
          extent: list[np.ndarray]) -> _Grid:
    """The lung's bounding box (widened by the context kernel's radius, to whole cells) and its cells.

    ``extent``: the lung's indices along each axis (:func:`lungdamage.regions.nonzero_indices`)."""
    planar = extent[0].size < 3
    f = _factors(spacing, p.grid_mm, planar)
    cell_mm = (spacing[0] * f[0], spacing[1] * f[1], spacing[2] * f[2])
    ctx_mm = p.context_sigma_planar_mm if planar else p.context_sigma_mm
    sig_ctx = [0.0 if (planar and a == 0) else ctx_mm / cell_mm[a] for a in range(3)]
    margin = [int(math.ceil(3 * s)) * k + k for s, k in zip(sig_ctx, f, strict=True)]
    box_l, pads = [], []
    for a in range(3):  # bounding box from projections (cheaper than labelling)
        proj = extent[a]
        lo_i, hi_i, n, k = int(proj[0]), int(proj[-1]) + 1, hu.shape[a], f[a]
        start, stop, pad = _cell_box(max(lo_i - margin[a], 0), min(hi_i + margin[a], n), n, k)
        box_l.append(slice(start, stop))
        pads.append(pad)
    box = (box_l[0], box_l[1], box_l[2])
    hb, mb = hu[box], lung[box]
    if any(pads):  # an image shorter than one cell along an axis: pad once (tiny inputs only)
        hb = np.pad(hb, [(0, q) for q in pads], constant_values=-1024)
        mb = np.pad(mb, [(0, q) for q in pads])
    return _Grid(p, planar, spacing, f, cell_mm, box, hb, mb)


def _fill_stats(g: _Grid) -> tuple[np.ndarray, np.ndarray, int]:
    """Cell statistics in one pass over the box (lung HU, everything else below every band).

    Sets ``g.n_l``, ``g.n_b``, ``g.hsum`` (still sampled counts when ``p.subsample``) and ``g.band_b``
    (the per-voxel band mask, full sampling only).  Returns the soft-voxel count and clipped HU sum of
    every cell (dependent-density test) and the sampling step (1, or 2 when every other row and column
    was read: sub-mm pixels, a quarter of the work, the same means and fractions up to sampling)."""
    f = g.f
    sub = 2 if (g.p.subsample and f[1] % 2 == 0 and f[2] % 2 == 0) else 1
    hs, ms = (g.hb[:, ::sub, ::sub], g.mb[:, ::sub, ::sub]) if sub > 1 else (g.hb, g.mb)
    fs = (f[0], f[1] // sub, f[2] // sub)
    g.band_b = np.zeros(g.hb.shape, bool) if sub == 1 else None
    g.n_l, g.n_b, g.hsum, n_s, h_clip = _cell_stats(hs, ms, fs, g.p, -2048, g.band_b)
    return n_s, h_clip, sub


def _context(g: _Grid, n_s: np.ndarray, h_clip: np.ndarray, ap_axis: int, sub: int) -> np.ndarray:
    """Step 2: opacity candidates -- the context ``G(band) / G(lung)`` reaches ``min_fraction`` and the
    context's parenchyma is denser than the aerated lung at the same depth (or mostly consolidation-dense).

    Sets ``g.g_l`` and ``g.frac``; scales sampled counts back to voxel counts at the end."""
    p, sig_ctx = g.p, g.sig_ctx
    n_l, n_b = g.n_l, g.n_b
    g_l = ndimage.gaussian_filter(n_l, sig_ctx, mode="constant", truncate=3.0)
    g_b = ndimage.gaussian_filter(n_b, sig_ctx, mode="constant", truncate=3.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        g.frac = np.where(g_l > 1e-3, g_b / np.maximum(g_l, 1e-6), 0.0)
    cand = (n_b > 0) & (g.frac >= p.min_fraction)
    if cand.any():
        # dependent density: the context's parenchyma (voxels below the consolidation band: vessels
        # would pull a plain mean up) must be denser than the aerated lung at the same depth
        c_lo = p.consolidation_hu[0]
        # sum of min(HU, c_lo) over lung voxels = sum over soft voxels + c_lo * dense voxels
        h_s = (h_clip - c_lo * (n_l - n_s)).astype(np.float32)
        ref = _depth_reference(g.hsum, n_l, (g.f[0], g.f[1] // sub, g.f[2] // sub), g.cell_mm, ap_axis, p)
        # (the context is needed at candidates only: smoothed on their bounding box + the kernel radius)
        cb = _around(cand, sig_ctx)
        g_s = ndimage.gaussian_filter(n_s[cb], sig_ctx, mode="constant", truncate=3.0)
        g_hs = ndimage.gaussian_filter(h_s[cb], sig_ctx, mode="constant", truncate=3.0)
        ctx_hu = np.where(g_s > 1e-3, g_hs / np.maximum(g_s, 1e-6), 0.0)
        dense_ctx = (g_l[cb] - g_s) / np.maximum(g_l[cb], 1e-6) >= p.min_fraction
        ref_c = ref[tuple(c if n > 1 else slice(None) for c, n in zip(cb, ref.shape, strict=True))]
        cand[cb] &= (ctx_hu >= np.minimum(ref_c, p.ref_cap_hu) + p.ref_margin_hu) | dense_ctx
    if sub > 1:  # sample counts and sums -> voxel counts and sums
        scale = float(sub * sub)
        n_l *= scale
        n_b *= scale
        g.hsum *= scale
        g_l *= scale
    g.g_l = g_l
    return cand


def _mean_hu(g: _Grid) -> np.ndarray:
    """Cell-mean HU of the lung (float32); cells without lung take the lung's median (no chest-wall edge)."""
    inside = g.n_l > 0
    mean_hu = np.empty(g.n_l.shape, np.float32)
    mean_hu[inside] = (g.hsum[inside] / g.n_l[inside]).astype(np.float32)
    mean_hu[~inside] = float(np.median(mean_hu[inside]))
    return mean_hu


def _open_lung(g: _Grid, cand: np.ndarray) -> np.ndarray:
    """Candidates in open lung (band voxels fill < ``tube_context_max`` of the ``tube_context_sigma_mm``
    neighbourhood): only there can a tube be removed (never inside consolidation)."""
    sig_w = g.sigmas(g.p.tube_context_sigma_mm)
    cw = _around(cand, sig_w)
    w_l = ndimage.gaussian_filter(g.n_l[cw], sig_w, mode="constant", truncate=3.0)
    w_b = ndimage.gaussian_filter(g.n_b[cw], sig_w, mode="constant", truncate=3.0)
    open_lung = np.zeros_like(cand)
    open_lung[cw] = cand[cw] & (w_b < g.p.tube_context_max * w_l)
    return open_lung


def _tube_cores(g: _Grid, mean_hu: np.ndarray, pts: tuple[np.ndarray, ...], s_mm: float) -> np.ndarray:
    """Which of the points ``pts`` (in ``mean_hu``) are tube centrelines at the Hessian scale ``s_mm``.

    Frangi vesselness at least ``tube_threshold`` and a small scale-normalized gradient against the
    cross-section curvature (at the rim of a blob or plateau the Hessian also looks tubular, but the
    gradient there is large)."""
    p = g.p
    sm = ndimage.gaussian_filter(mean_hu, g.sigmas(s_mm), mode="nearest", truncate=3.0)
    hess = _hessian_at(sm, pts, g.cell_mm, g.planar) * np.float32(s_mm * s_mm)
    eig = np.linalg.eigvalsh(hess)
    v = vesselness(eig, alpha=p.tube_alpha, beta=p.tube_beta, c=p.tube_c_hu)
    grad = _gradient_at(sm, pts, g.cell_mm, g.planar) * np.float32(s_mm)
    cross = np.sort(np.abs(eig), axis=1)[:, 1]  # |lambda_2|: the larger in 2-D, the middle in 3-D
    return (v >= p.tube_threshold) & (grad <= p.tube_centre * cross)


def _tubes(g: _Grid, cand: np.ndarray) -> np.ndarray:
    """Step 3: tube cells among the candidates (multi-scale Hessian on the cell-mean HU, open lung only).

    A tube is its dense cells around a centreline (the vessel, not what it runs through).  ``cand`` loses
    the cells whose context, recomputed with the tubes as not-opacity, falls below ``min_fraction`` (the
    vessel's partial-volume sleeve; ground glass that a vessel runs through keeps its context)."""
    p = g.p
    tube = np.zeros_like(cand)
    open_lung = _open_lung(g, cand)
    pts = np.nonzero(open_lung)
    if not pts[0].size:
        return tube
    mean_hu = _mean_hu(g)
    dense_cell = mean_hu >= p.consolidation_hu[0]
    # the smoothing is needed only around the points: a crop that gives the same values there
    # (smoothing radius, and at least the farthest a tube grows from its seeds)
    grow_c = max(1, round(max(p.tube_sigmas_mm) / g.in_plane_mm)) + 1
    reach_c = [max(int(3.0 * max(p.tube_sigmas_mm) / g.cell_mm[a] + 0.5) + 2, grow_c) for a in range(3)]
    crop = tuple(slice(max(int(q.min()) - r, 0), int(q.max()) + r + 1) for q, r in zip(pts, reach_c, strict=True))
    pts_c = tuple(q - c.start for q, c in zip(pts, crop, strict=True))
    st_t = g.structure(1)
    # (a tube grows at most ``reach`` <= the crop's margin cells from its seeds: the crop holds every path)
    tube_c, dense_c, cand_c = tube[crop], dense_cell[crop], cand[crop]
    for s_mm in p.tube_sigmas_mm:
        core = np.zeros_like(cand_c)
        core[pts_c] = _tube_cores(g, mean_hu[crop], pts_c, s_mm)
        if core.any():
            reach = max(1, round(s_mm / g.in_plane_mm))
            tube_c |= ndimage.binary_dilation(core, st_t, iterations=reach, mask=dense_c | core) & cand_c
    if tube.any():
        co = _around(open_lung, g.sig_ctx)
        n_bt = np.where(tube[co], 0.0, g.n_b[co]).astype(np.float32)
        g_bt = ndimage.gaussian_filter(n_bt, g.sig_ctx, mode="constant", truncate=3.0)
        cand[co] &= (g_bt >= p.min_fraction * g.g_l[co]) | ~open_lung[co]
    return tube


def _grow(g: _Grid, keep: np.ndarray, tube: np.ndarray) -> np.ndarray:
    """Step 4: whole lesions -- grow ``grow_mm`` through mostly-band cells, then ``grow_cells`` cells."""
    p = g.p
    region = keep
    if keep.any():
        st = g.structure(3)
        n_grow = int(math.ceil(p.grow_mm / g.in_plane_mm))
        dense_cells = (2 * g.n_b >= g.n_l) & (g.n_l > 0) & ~tube & (2 * g.frac >= p.min_fraction)
        if n_grow > 0:
            region = ndimage.binary_dilation(region, st, iterations=n_grow, mask=dense_cells | region)
        if p.grow_cells:
            region = ndimage.binary_dilation(region, st, iterations=int(p.grow_cells))
    return region & (g.n_l > 0)  # (band voxels are decided per voxel later)


def _size_filter(g: _Grid, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step 5: connected opacities (cells) and their size in band voxels; those below a sphere (a disc on
    single slices: components do not cross slices there) of ``min_diameter_mm`` are dropped.

    Returns the component label of every cell and whether each component (0..n) is kept."""
    comp, n_comp = ndimage.label(region, g.structure(3))
    sizes = np.bincount(comp.ravel(), weights=g.n_b.ravel(), minlength=n_comp + 1)
    d, sp = g.p.min_diameter_mm, g.spacing
    if g.planar:
        min_vox = (math.pi / 4.0) * d * d / (sp[1] * sp[2])
    else:
        min_vox = (math.pi / 6.0) * d ** 3 / (sp[0] * sp[1] * sp[2])
    ok = sizes >= min_vox - 1e-9
    ok[0] = False
    return comp, ok


def _midline(lung_cells: np.ndarray, lr_axis: int) -> int | None:
    """The midline column (along ``lr_axis``): fewest lung cells in the middle half of the lungs'
    left-right extent (mediastinum and spine).  None when it holds more than half as many lung cells as
    the fullest column (no gap: one lung) or one side of it less than a tenth of the lung cells."""
    other = tuple(a for a in range(lung_cells.ndim) if a != lr_axis)
    proj = lung_cells.sum(axis=other)
    cols = np.flatnonzero(proj)
    if cols.size < 4:
        return None
    q = (int(cols[-1]) - int(cols[0])) // 4
    mid = int(cols[0]) + q + int(np.argmin(proj[cols[0] + q: cols[-1] - q + 1]))
    total = float(proj.sum())
    if proj[mid] > 0.5 * proj.max() or min(float(proj[:mid].sum()), float(proj[mid + 1:].sum())) < 0.1 * total:
        return None  # no gap between two lungs (one lung), or one side nearly empty
    return mid


def _mediastinal(lung_cells: np.ndarray, lr_axis: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Non-lung cells in the gap between the two lungs along the left-right axis (the same image row),
    and all non-lung cells with lung on both sides along it.

    A cell is mediastinal when the nearest lung on one side of it along its row lies before the midline
    (:func:`_midline`) and on the other side after it.  A gap inside one lung (the diaphragm dome seen in
    cross-section, an airway lumen outside the mask) is not, but is inner (second array).  None with one
    lung."""
    mid = _midline(lung_cells, lr_axis)
    if mid is None:
        return None
    n = lung_cells.shape[lr_axis]
    idx = np.arange(n, dtype=np.int32).reshape([-1 if a == lr_axis else 1 for a in range(lung_cells.ndim)])
    before = np.maximum.accumulate(np.where(lung_cells, idx, np.int32(-1)), axis=lr_axis)
    after = np.flip(np.minimum.accumulate(np.flip(np.where(lung_cells, idx, np.int32(n)), axis=lr_axis),
                                          axis=lr_axis), axis=lr_axis)
    inner = ~lung_cells & (before >= 0) & (after < n)  # lung on both sides along the row
    return inner & (before < mid) & (after > mid), inner


def _reach(g: _Grid, comp: np.ndarray, ids: np.ndarray, mediastinal: np.ndarray, lr_axis: int) -> np.ndarray:
    """How far each opacity ``ids`` reaches into the lung from the mediastinal surface with its solid core,
    as a fraction of its hemithorax's left-right width (the lung's widest extent on that side of the
    midline).

    Distance (mm, Euclidean on the cell grid) from the nearest mediastinal cell to the opacity's farthest
    core cell: a cell of the opacity's mostly-band cells lying deeper than ``hilar_core_mm`` inside them
    (structures thicker than about twice that; the vessels and bronchi leaving the hilum are thinner, a
    consolidation is not).  Only distances up to ``hilar_reach`` widths matter, so the transforms run on
    the opacities' bounding box widened by that much."""
    lung_cells = g.n_l > 0
    mid = _midline(lung_cells, lr_axis)
    if mid is None:  # (not reached: _hilar found a mediastinum)
        return np.zeros(ids.size)
    other = tuple(a for a in range(lung_cells.ndim) if a != lr_axis)
    cols = np.flatnonzero(lung_cells.any(axis=other))
    width_mm = np.array([mid - cols[0] + 1, cols[-1] - mid + 1], np.float64) * g.cell_mm[lr_axis]
    sel = np.isin(comp, ids)
    limit_mm = g.p.hilar_reach * float(width_mm.max())
    sub = ndimage.find_objects(sel.view(np.uint8))[0]
    box = tuple(slice(max(s.start - int(math.ceil(limit_mm / c)) - 1, 0), s.stop + int(math.ceil(limit_mm / c)) + 1)
                for s, c in zip(sub, g.cell_mm, strict=True))
    dist_mm = ndimage.distance_transform_edt(~mediastinal[box], sampling=g.cell_mm)
    # (the core needs only the opacities' own box and a one-cell rim)
    own = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sub)
    solid = sel[own] & (2 * g.n_b[own] >= g.n_l[own]) & (g.n_l[own] > 0)
    core = np.zeros(dist_mm.shape, bool)
    core[tuple(slice(o.start - b.start, o.stop - b.start) for o, b in zip(own, box, strict=True))] = (
        ndimage.distance_transform_edt(solid, sampling=g.cell_mm) > g.p.hilar_core_mm)
    cb = np.where(sel[box], comp[box], 0)
    far_mm = np.array(ndimage.maximum(np.where(core, dist_mm, 0.0), cb, ids), np.float64).reshape(-1)
    centre = ndimage.center_of_mass(sel[box], cb, ids)
    side = np.array([int(c[lr_axis] + box[lr_axis].start > mid) for c in centre], np.intp)
    return far_mm / width_mm[side]


def _in_slab(g: _Grid, comp: np.ndarray, ids: np.ndarray, mediastinal: np.ndarray, cc_axis: int) -> np.ndarray:
    """Share of each opacity's mediastinal contact (its cells next to a mediastinal cell) that lies in the
    hilar slab: the ``hilar_slab`` part (fractions of the lungs' craniocaudal extent, either end) between
    the carina and the inferior pulmonary veins."""
    lung_cells = g.n_l > 0
    other = tuple(a for a in range(lung_cells.ndim) if a != cc_axis)
    levels = np.flatnonzero(lung_cells.any(axis=other))
    lo, hi = int(levels[0]), int(levels[-1])
    pos = (np.arange(lung_cells.shape[cc_axis]) - lo) / max(hi - lo, 1)
    pos = pos.reshape([-1 if a == cc_axis else 1 for a in range(lung_cells.ndim)])
    a, b = g.p.hilar_slab
    slab = np.broadcast_to(((pos >= a) & (pos <= b)) | ((1.0 - pos >= a) & (1.0 - pos <= b)), lung_cells.shape)
    contact = np.where(ndimage.binary_dilation(mediastinal, g.structure(1)) & np.isin(comp, ids), comp, 0)
    n_all = ndimage.sum_labels(contact > 0, contact, ids)
    n_in = ndimage.sum_labels(slab, contact, ids)
    return np.asarray(n_in, np.float64) / np.maximum(np.asarray(n_all, np.float64), 1.0)


def _whole_height_axis(extent: list[np.ndarray], shape: tuple[int, ...], ap_axis: int, lr_axis: int) -> int | None:
    """The craniocaudal array axis when the lungs' whole height is imaged (apex and base inside the
    image: neither end of the lung extent, ``extent`` of :func:`~lungdamage.regions.nonzero_indices`, on
    the image's edge), else None (the hilar slab is unknown)."""
    rest = [a for a in range(3) if a not in (ap_axis, lr_axis)]
    if len(rest) != 1:
        return None
    cc = rest[0]
    levels = extent[cc]
    return cc if levels[0] > 0 and levels[-1] < shape[cc] - 1 else None


def _hilar(g: _Grid, comp: np.ndarray, kept: np.ndarray, lr_axis: int, cc_axis: int | None) -> np.ndarray:
    """Step 6: component ids (of ``comp``) of hilar structures.

    An opacity is hilar when it touches the mediastinal lung surface and not the costal one, stays near
    the mediastinum (reaches at most ``hilar_reach`` of its hemithorax's width into the lung,
    :func:`_reach`) and, when the whole lung height is imaged (``cc_axis`` given), touches the
    mediastinum mostly within the hilar slab (:func:`_in_slab`; not at the apex or beside the heart
    at the bases).  Surfaces on the cell grid: a kept cell next to a cell without lung.  That non-lung
    cell is mediastinal when it lies in the gap between the right and the left lung along its row
    (mediastinum, hilum, the spine between the paravertebral lungs; :func:`_mediastinal`), costal when no
    lung lies beyond it on one side of its row (chest wall, the diaphragm below the lungs' edge); gaps
    inside one lung (the diaphragm dome in cross-section, airway lumina left out of the mask) are
    neither.  No ids when only one lung is in the image."""
    lung_cells = g.n_l > 0
    found = _mediastinal(lung_cells, lr_axis)
    if found is None:
        return np.zeros(0, np.intp)
    mediastinal, inner = found
    costal = ~lung_cells & ~inner
    st = g.structure(1)
    sub = ndimage.find_objects(kept.view(np.uint8))[0]
    grow = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sub)
    comp_k = np.where(kept[grow], comp[grow], 0)
    touch_m = np.unique(comp_k[ndimage.binary_dilation(mediastinal[grow], st)])
    touch_c = np.unique(comp_k[ndimage.binary_dilation(costal[grow], st)])
    ids = np.setdiff1d(touch_m[touch_m > 0], touch_c)
    if not ids.size:
        return ids
    reach = _reach(g, comp, ids, mediastinal, lr_axis)
    in_slab = _in_slab(g, comp, ids, mediastinal, cc_axis) if cc_axis is not None else np.ones(ids.size)
    for i, r, s in zip(ids, reach, in_slab, strict=True):
        logger.debug("step 6: opacity %d reach %.3f of the hemithorax, %.2f of its contact in the hilar slab",
                     i, r, s)
    return ids[(reach <= g.p.hilar_reach) & (in_slab >= 0.5)]


def _voxel_lesions(g: _Grid, shape: tuple[int, ...], comp: np.ndarray, new_id: np.ndarray,
                   kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lesion voxels (band voxels of kept cells) and their opacity, in C order; per voxel only inside the
    kept cells' bounding box, one layer of cells (along the slice axis) at a time: no box-sized
    temporaries, the lesion voxels written straight into the output."""
    f, box = g.f, g.box
    lesion = np.zeros(shape, bool)
    kb = ndimage.find_objects(kept.view(np.uint8))
    if not kb or kb[0] is None:
        return lesion, np.zeros(0, np.int32)
    cb = kb[0]
    vb = tuple(slice(c.start * k, c.stop * k) for c, k in zip(cb, f, strict=True))
    # the kept cells' voxels inside the image (the box may end inside its last cells: tiny images only)
    dst = tuple(slice(bx.start + v.start, min(bx.start + v.stop, bx.stop)) for bx, v in zip(box, vb, strict=True))
    n_vox = tuple(d.stop - d.start for d in dst)
    out = lesion[dst]
    ids = new_id[comp[cb]]  # opacity of every cell of the kept cells' box (0: not kept)
    parts = []
    for c in range(ids.shape[0]):
        v0 = c * f[0]
        v1 = min(v0 + f[0], n_vox[0])
        if v0 >= v1:
            break
        layer = np.repeat(np.repeat(ids[c], f[1], axis=0)[: n_vox[1]], f[2], axis=1)[:, : n_vox[2]]
        if not layer.any():
            continue
        sl = (slice(vb[0].start + v0, vb[0].start + v1),
              slice(vb[1].start, vb[1].start + n_vox[1]), slice(vb[2].start, vb[2].start + n_vox[2]))
        les = out[v0:v1]
        np.not_equal(layer, 0, out=les[0])
        les[1:] = les[0]
        les &= _band_voxels(g, sl)
        parts.append(np.broadcast_to(layer, les.shape)[les])
    component = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    return lesion, component.astype(np.int32, copy=False)


def _band_voxels(g: _Grid, sl: tuple[slice, slice, slice]) -> np.ndarray:
    """Band voxels of the lung in the part ``sl`` of the box (bool)."""
    if g.band_b is not None:
        return g.band_b[sl]
    lo, hi = g.p.opacity_hu
    h = g.hb[sl]
    return g.mb[sl] & (h >= lo) & (h < hi)


# ------------------------------------------------------------------------------ main
def find_lesions(
    hu: np.ndarray,
    lung: np.ndarray,
    spacing_mm: tuple[float, float, float],
    params: LesionParams | Mapping[str, Any] | None = None,
    *,
    classes: bool = False,
    ap_axis: int = 1,
    lr_axis: int | None = None,
) -> LesionMap:
    """Lesion voxels of a CT: band voxels that belong to an opacity (module docstring).

    Parameters
    ----------
    hu : ndarray of int16, shape (slices, rows, columns)
    lung : ndarray of bool, same shape
        The lung mask (every region together).
    spacing_mm : (float, float, float)
        Voxel spacing (slice, row, column) in mm.
    params : LesionParams or mapping, optional
    classes : bool
        Also return why each band voxel was or was not counted (QC overlays).
    ap_axis : int
        Array axis along the patient's anterior-posterior direction (rows of
        an axial series), for the dependent-density reference.
    lr_axis : int, optional
        Array axis along the patient's left-right direction (step 6, hilar
        rule); default the columns (axis 2: axial and coronal images), or the
        slices when ``ap_axis`` is 2 (sagittal images: a single sagittal
        slice shows one lung, and the rule does nothing).

    Returns
    -------
    LesionMap

    Examples
    --------
    >>> hu = np.full((30, 60, 60), -850, np.int16)
    >>> hu[:, 30, 30] = 40                                   # a thin vessel through the volume
    >>> hu[10:20, 10:25, 10:25] = -500                       # a 10 x 15 x 15 mm ground-glass patch
    >>> lm = find_lesions(hu, np.ones(hu.shape, bool), (1.0, 1.0, 1.0))
    >>> int(lm.lesion[:, 30, 30].sum()), int(lm.lesion[10:20, 10:25, 10:25].sum()), lm.n_lesions
    (0, 2250, 1)
    """
    p = lesion_params(params)
    hu = np.asarray(hu)
    lung = np.asarray(lung, dtype=bool)
    if hu.shape != lung.shape or hu.ndim != 3:
        raise ValueError(f"find_lesions: hu {hu.shape} and lung {lung.shape} must be one 3-D shape")
    extent = nonzero_indices(lung)
    if extent[0].size == 0:
        return _empty(hu.shape, True, classes, p)
    spacing = (float(spacing_mm[0]), float(spacing_mm[1]), float(spacing_mm[2]))
    g = _grid(hu, lung, spacing, p, extent)
    n_s, h_clip, sub = _fill_stats(g)
    if not g.n_b.any():
        return _empty(hu.shape, g.planar, classes, p)
    cand = _context(g, n_s, h_clip, ap_axis, sub)  # step 2
    del n_s, h_clip
    tube = _tubes(g, cand) if cand.any() else np.zeros_like(cand)  # step 3
    region = _grow(g, cand & ~tube, tube)  # step 4
    comp, ok = _size_filter(g, region)  # step 5
    hilar = np.zeros_like(region)
    if p.hilar and ok.any():  # step 6
        lr = (0 if ap_axis == 2 else 2) if lr_axis is None else lr_axis
        cc_axis = _whole_height_axis(extent, hu.shape, ap_axis, lr) if not g.planar else None
        hilar_ids = _hilar(g, comp, ok[comp], lr, cc_axis)
        ok[hilar_ids] = False
        hilar = np.isin(comp, hilar_ids) & region
    new_id = np.zeros(ok.size, np.int32)
    new_id[ok] = np.arange(1, int(ok.sum()) + 1, dtype=np.int32)
    kept = ok[comp]
    lesion, component = _voxel_lesions(g, hu.shape, comp, new_id, kept)
    cells = _Cells(box=g.box, f=g.f, tube=tube, small=region & ~kept & ~hilar, hilar=hilar)
    out = LesionMap(lesion, component, int(new_id.max(initial=0)), None, g.planar, p, cells)
    if classes:
        out = dataclasses.replace(out, classes=lesion_classes(hu, lung, out))
    return out


def lesion_classes(hu: np.ndarray, lung: np.ndarray, lesions: LesionMap) -> np.ndarray:
    """Why each band voxel was or was not counted (:attr:`LesionMap.classes`), from a finished run.

    Parameters
    ----------
    hu, lung :
        The CT and lung mask ``lesions`` was computed from.
    lesions : LesionMap
        A :func:`find_lesions` result (its cell-grid decisions are reused: the
        filter is not run again).

    Returns
    -------
    ndarray of uint8, shape of the CT
        :data:`CLASS_LESION`, :data:`CLASS_CONTEXT`, :data:`CLASS_TUBE`,
        :data:`CLASS_SMALL`; 0 outside the lungs and the bands.
    """
    if lesions.classes is not None:
        return lesions.classes
    hu = np.asarray(hu)
    if lesions.cells is None or lesions.params is None:  # an empty map (no band voxels): no classes but 0
        out = np.zeros(hu.shape, np.uint8)
        if lesions.params is not None:
            lo, hi = lesions.params.opacity_hu
            out[(hu >= lo) & (hu < hi) & np.asarray(lung, bool)] = CLASS_CONTEXT
        return out
    c = lesions.cells
    box, f = c.box, c.f
    hb, mb = hu[box], np.asarray(lung, dtype=bool)[box]
    lo, hi = lesions.params.opacity_hu
    band = (hb >= lo) & (hb < hi) & mb
    cls = np.zeros(hb.shape, np.uint8)
    cls[band] = CLASS_CONTEXT
    # (the box may be shorter than its whole cells at the volume's edge: upsample to the cells, then crop)
    full = tuple(n * k for n, k in zip(c.tube.shape, f, strict=True))
    crop = tuple(slice(0, n) for n in hb.shape)
    cls[band & _upsample(c.tube, f, full)[crop]] = CLASS_TUBE
    cls[band & _upsample(c.small, f, full)[crop]] = CLASS_SMALL
    if c.hilar is not None:
        cls[band & _upsample(c.hilar, f, full)[crop]] = CLASS_HILAR
    cls[lesions.lesion[box]] = CLASS_LESION
    out = np.zeros(hu.shape, np.uint8)
    out[box] = cls
    return out


def lesion_counts(
    hu: np.ndarray, codes: np.ndarray, lesions: LesionMap, n_codes: int, params: LesionParams | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per label code: lesion voxels per band and which opacities touch it.

    Parameters
    ----------
    hu : ndarray of int16
    codes : ndarray of uint8
        Region label codes on the CT grid (0 = not lung).
    lesions : LesionMap
    n_codes : int
        Rows of the output (``max code + 1``).

    Returns
    -------
    voxels : ndarray of int64, shape (n_codes, 2)
        Lesion voxels in the GGO band (column 0) and the consolidation band (1).
    present : ndarray of bool, shape (n_codes, n_lesions + 1)
        ``present[c, k]``: opacity ``k`` has voxels in code ``c`` (column 0 unused).
    """
    p = params or LesionParams()
    # every lesion voxel lies in the lung's box: select there (boolean selection keeps the C order of the
    # whole volume, that of ``lesions.component``)
    box = lesions.cells.box if isinstance(lesions.cells, _Cells) else (slice(None),) * 3
    sel = lesions.lesion[box]
    c = np.asarray(codes)[box][sel].astype(np.int64)
    cons = np.asarray(hu)[box][sel] >= p.consolidation_hu[0]
    voxels = np.bincount(c * 2 + cons, minlength=2 * n_codes)[: 2 * n_codes].reshape(n_codes, 2)
    k = lesions.component.astype(np.int64)
    n_l = lesions.n_lesions + 1
    present = np.bincount(c * n_l + k, minlength=n_codes * n_l)[: n_codes * n_l].reshape(n_codes, n_l) > 0
    present[:, 0] = False
    return voxels.astype(np.int64), present
