"""Classical lung segmentation: threshold, morphology, connected components.

Outline (all steps vectorized over the whole volume; no loop over slices):

1. Put the cranio-caudal axis first (from ``ct.direction``), and work on a
   block-averaged copy (about 2 mm pixels; sub-millimetre slices pooled to
   about 1.5 mm) for the morphology; steps 3-5 run inside the box of the air
   in the body (plus their reach).  The image noise is measured in soft
   tissue; above 55 HU (low-dose or sharp-kernel images; diagnostic scans
   measure 17-43 HU) the working copy is an in-plane mean (at most 8 mm
   wide) that brings it to about 35 HU, and the flag ``noisy_image`` says so.
2. Air-like voxels (< ``air_threshold_hu``) not connected, within their
   axial slice, to the image border are *inside the body*: this drops the air
   around the patient, the outside-field padding and gaps under the table.
   Padding (far below -1024 HU, or a constant air value) is its own class.
   An air section on the image border or the padding is still inside when
   it is not pure gas (outside air is mostly below -980 HU), touches at most
   two image edges, and lies between body tissue in front and behind, or
   continues in 3-D a section wholly inside the field: a lung cut by a
   one-sided crop or a small reconstruction circle.  When the body is cut at
   one side, the midline is LPS x = 0 (or beyond the cut border) and a
   lone lung is labelled by its side of it, with a warning.
3. The trachea and main bronchi are found as a vertical chain of small, dark
   (pure-air) 2-D components near the body midline, at most 150 mL and
   mostly one or two pieces per slice (a noise-threaded lung is neither),
   and removed with a margin.
   With fewer than 3 slices there is no chain: a separate air section of at
   most 4 cm² within 30 mm of the midline is taken as an airway.
4. The remaining 3-D components of lung size that are not pure gas (bowel,
   stomach, air in the table or clothing have nearly every voxel < -950 HU)
   are lung, except gas below the diaphragm: a component other than the
   main lungs lying wholly below (or above) their slices, or mostly under a
   main lung with 8 mm or more of tissue between, is bowel or stomach gas
   whatever its gas share (stool mixes gas and tissue).  Lungs that touch (anterior / posterior junction) are cut, per
   slice, along the line crossing the fewest lung voxels near the body
   midline.  Right = the smaller LPS x.
5. Poorly aerated lung next to each lung joins it: heterogeneous tissue
   (local mean in [-700, 0) HU, local standard deviation >= 40 HU) in blobs
   8-10 mm across or more that touch the lung in their own slice, hold air
   pockets (>= 5 % of the blob; bronchograms, aerated lobules) and do not
   surround pure gas (bowel, trachea, oesophagus): dependent consolidation
   with air bronchograms, even where it is not in a concavity of the aerated
   lung (found well when it holds 25 % air or more).  Fat, muscle, heart and
   effusion are homogeneous and stay out.
   Then dense lung (juxtapleural consolidation, atelectasis) is brought back by a
   large per-slice closing of each lung (a hull-like fill, on a ~4 mm grid),
   kept only near the chest wall (<= ``max_fill_depth_mm`` from the skin),
   lateral to the lung (aerated and partly aerated) in each image row (the heart,
   hilum and liver dome stay out) and below ``fill_max_hu`` (muscle stays
   out), never fat (local mean in [-190, -80) HU), never a piece of the
   diaphragm dome seen inside a thin basal arc (mostly right under the lung,
   no lung below it), never within 10 mm of the field's edge, and only in
   pieces with a core of 3x3 pixels (a thinner addition is the one-pixel
   partial-volume rind of the diaphragm or chest wall, not consolidation;
   a consolidation's rim blended with aerated lung is not taken for fat);
   then a short
   growth into consolidation-like density recovers the rim the hull's chord
   cuts off along a curved wall.  A 5 mm closing and
   per-slice hole filling add vessels and enclosed consolidation.
   Limitation: homogeneous consolidation (no air pockets) denser than
   ``fill_max_hu`` that is outside the hull, and a section consolidated
   throughout (no aerated lung in that slice to grow from), are lost; use
   ``method='lungmask'`` for such scans.
6. The mask is brought back to full resolution; along the aerated border
   (in-plane, and above and below when slices were pooled) the
   full-resolution threshold decides each voxel.
"""

from __future__ import annotations

import logging
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import SegmentationError
from ..regions import LUNG_CODES, RegionMap
from ..volume import CTVolume

__all__ = ["segment_threshold"]

log = logging.getLogger(__name__)

# 2-D (in-plane) structuring elements on (slice, row, column) arrays.
_CROSS2D = np.zeros((3, 3, 3), bool)
_CROSS2D[1] = ndimage.generate_binary_structure(2, 1)
_SQUARE2D = np.zeros((3, 3, 3), bool)
_SQUARE2D[1] = True
_CROSS3D = ndimage.generate_binary_structure(3, 1)
# Outside air is pure gas: most of it lies below this even with low-dose noise;
# emphysematous lung (CIP 10002K: 1-5 % of its sections) and blurred skin do not.
_OUTSIDE_AIR_HU = -980.0
# Fat (about -100 HU): no lung tissue, even consolidated, has this local mean.
_FAT_HU = (-190.0, -80.0)
# Image noise (HU, standard deviation on the working grid, measured in soft
# tissue by :func:`_noise_sd`) above which the working image is smoothed
# in-plane before any threshold: the thresholds sit 100-150 HU from the
# densities they separate (trachea lumen -1000 vs lung -850, lung vs -250).
# Diagnostic scans measure 17-43 HU here (realdata: CIP, LIDC, COVID-19-NY-SBU,
# TotalSegmentator); low-dose scans with sharp kernels 60-120 HU.
_NOISY_HU = 55.0
# ... and the noise the smoothing aims at.
_DENOISED_HU = 35.0
# Fewest pixels (low-res grid, in one slice) of a constant region taken for padding.
_PAD_MIN_PX = 30
# Largest lumen (mL) taken for trachea and main bronchi (adults: about 40-70 mL).
_AIRWAY_MAX_ML = 150.0


def _pipeline_axes(ct: CTVolume) -> tuple[tuple[int, int, int], int, float]:
    """Axis permutation putting the cranio-caudal axis first.

    Returns ``(perm, lr_axis, lr_sign)``: ``hu.transpose(perm)`` has the S/I
    axis first; ``lr_axis`` (1 or 2, in permuted order) is the in-plane axis
    closest to LPS x and ``lr_sign`` the sign of x along it.
    """
    d = ct.direction
    si = int(np.argmax(np.abs(d[2, :])))
    rest = [k for k in range(3) if k != si]
    perm = (si, rest[0], rest[1])
    xs = [abs(d[0, perm[1]]), abs(d[0, perm[2]])]
    lr_axis = 1 + int(np.argmax(xs))
    lr_sign = float(np.sign(d[0, perm[lr_axis]]) or 1.0)
    return perm, lr_axis, lr_sign


def _block_sum_axis(values: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Sums of ``factor`` consecutive entries along ``axis`` (1 or 2) as int32; a
    last, partial block is completed with copies of the edge entry."""
    n = values.shape[axis]
    n_full = n // factor
    shape = list(values.shape)
    shape[axis] = -(-n // factor)
    out = np.zeros(shape, np.int32)

    def along(sl: slice) -> tuple[slice, ...]:
        return (slice(None), sl, slice(None)) if axis == 1 else (slice(None), slice(None), sl)

    full = out[along(slice(0, n_full))]
    for offset in range(factor):  # factor strided views, not a loop over voxels
        np.add(full, values[along(slice(offset, n_full * factor, factor))], out=full, dtype=np.int32)
    rest = n - n_full * factor
    if rest:
        last = out[along(slice(n_full, n_full + 1))]
        for offset in range(rest):
            np.add(last, values[along(slice(n_full * factor + offset, n_full * factor + offset + 1))], out=last,
                   dtype=np.int32)
        edge = values[along(slice(n - 1, n))].astype(np.int32) * (factor - rest)
        last += edge
    return out


def _block_mean(hu: np.ndarray, factor: int, zfactor: int = 1) -> np.ndarray:
    """Block mean as float32 over ``factor``×``factor`` pixels in-plane and
    ``zfactor`` slices (a last, partial block is edge-padded, as
    ``np.pad(mode="edge")`` would).

    Exact integer block sums (columns, then rows, then slices), then one
    scaling.
    """
    if factor == 1 and zfactor == 1:
        return hu
    n_slices, n_rows, n_cols = hu.shape
    mean = np.empty((-(-n_slices // zfactor), -(-n_rows // factor), -(-n_cols // factor)), np.float32)
    # slabs of slices keep the int32 temporaries small (a few MB) and in cache
    slab = max(1, (4 << 20) // max(1, n_rows * n_cols)) * zfactor
    for start in range(0, n_slices, slab):  # slabs of slices, not a loop over voxels
        part = hu[start: start + slab]
        sums = _block_sum_axis(_block_sum_axis(part, factor, 2), factor, 1) if factor > 1 else part.astype(np.int32)
        if zfactor > 1:
            rest = (-sums.shape[0]) % zfactor
            if rest:
                sums = np.concatenate([sums, np.repeat(sums[-1:], rest, axis=0)])
            sums = sums.reshape(-1, zfactor, sums.shape[1], sums.shape[2]).sum(axis=1, dtype=np.int32)
        mean[start // zfactor: start // zfactor + sums.shape[0]] = sums
    mean *= np.float32(1.0 / (factor * factor * zfactor))
    return mean


def _dist_from2d(mask: np.ndarray, sampling_rc: tuple[float, float]) -> np.ndarray:
    """In-plane Euclidean distance (mm) from each voxel to the nearest True voxel
    of its own slice (0 on True voxels; huge in a slice without True voxels).

    SimpleITK's multi-threaded Maurer transform on the 3-D stack with a huge
    slice spacing, so that no distance ever crosses slices.
    """
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(mask.view(np.uint8))
    img.SetSpacing((float(sampling_rc[1]), float(sampling_rc[0]), 1e5))
    dist = sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=False,
                                        useImageSpacing=True, backgroundValue=0)
    dist_mm = sitk.GetArrayFromImage(dist)
    np.maximum(dist_mm, 0, out=dist_mm)
    return dist_mm


def _sq_dist_stacked(where: np.ndarray, sampling_rc: tuple[float, float]) -> np.ndarray:
    """Squared in-plane distance (mm²) to the nearest True voxel, with the
    slices stacked into one 2-D image (rows after rows), so that SimpleITK's
    Maurer transform skips the pass along the slices.

    Exact per slice when every slice is framed by a ring of True voxels (a
    path to another slice crosses it), or when only distances below the
    margin of False voxels around each slice matter.
    """
    import SimpleITK as sitk

    n_slices, n_rows, n_cols = where.shape
    img = sitk.GetImageFromArray(where.reshape(n_slices * n_rows, n_cols).view(np.uint8))
    img.SetSpacing((float(sampling_rc[1]), float(sampling_rc[0])))
    dist = sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=True,
                                        useImageSpacing=True, backgroundValue=0)
    return sitk.GetArrayFromImage(dist).reshape(n_slices, n_rows, n_cols)


def _closing2d(mask: np.ndarray, radius_mm: float, sampling_rc: tuple[float, float]) -> np.ndarray:
    """Per-slice binary closing with a disk of ``radius_mm`` (distance-transform based).

    Each slice gets a margin wider than the disk: the dilation's distances
    that matter (at most ``radius_mm``) stay inside it, and the dilation's
    complement frames every slice, so both transforms run on stacked slices.
    """
    pad = int(math.ceil(radius_mm / min(sampling_rc))) + 1
    padded = np.pad(mask, ((0, 0), (pad, pad), (pad, pad)))
    radius_sq = radius_mm * radius_mm
    dilated = _sq_dist_stacked(padded, sampling_rc) <= radius_sq
    closed = _sq_dist_stacked(~dilated, sampling_rc) > radius_sq
    return closed[:, pad:-pad, pad:-pad]


def _octagon_closing2d(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """Per-slice closing with an octagon of ``radius_px`` (alternating square / cross steps)."""
    if radius_px < 1:
        return mask
    m = np.pad(mask, ((0, 0), (radius_px, radius_px), (radius_px, radius_px)))
    for i in range(radius_px):  # radius_px small steps, each a whole-volume operation
        m = ndimage.binary_dilation(m, structure=_SQUARE2D if i % 2 == 0 else _CROSS2D)
    for i in range(radius_px):
        m = ndimage.binary_erosion(m, structure=_SQUARE2D if i % 2 == 0 else _CROSS2D, border_value=1)
    return m[:, radius_px:-radius_px, radius_px:-radius_px]


def _coarse_closing2d(mask: np.ndarray, radius_mm: float, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Large per-slice closing computed on a grid of about 4 mm pixels, then upsampled."""
    factor = max(1, math.ceil(4.0 / min(pixel_mm) - 1e-6))
    if factor == 1:
        return _closing2d(mask, radius_mm, pixel_mm)
    n_slices, n_rows, n_cols = mask.shape
    padded = np.pad(mask, ((0, 0), (0, (-n_rows) % factor), (0, (-n_cols) % factor)))
    # majority vote per block: neither inflates nor erodes the mask on average
    blocks = padded.reshape(n_slices, padded.shape[1] // factor, factor, padded.shape[2] // factor, factor)
    coarse = blocks.sum(axis=(2, 4), dtype=np.int16) * 2 >= factor * factor
    closed = _closing2d(coarse, radius_mm, (pixel_mm[0] * factor, pixel_mm[1] * factor))
    return _upsample(closed, factor, mask.shape)


def _depth_mm(body: np.ndarray, pixel_mm: tuple[float, float], box: tuple[slice, ...]) -> np.ndarray:
    """In-plane distance (mm) of each body voxel to the body surface, computed
    on a ×2 coarser grid (a smooth quantity; saves time on large volumes),
    returned for the voxels in ``box`` only."""
    coarse = body[:, ::2, ::2]
    # the outside ring of non-body pixels frames every slice: stacked slices are exact
    outside = ~np.pad(coarse, ((0, 0), (1, 1), (1, 1)))
    depth_sq = _sq_dist_stacked(outside, (pixel_mm[0] * 2, pixel_mm[1] * 2))[:, 1:-1, 1:-1]
    # coarse pixels covering the box, upsampled, then cut to the box
    row0, col0 = box[1].start, box[2].start
    cover = (box[0], slice(row0 // 2, (box[1].stop + 1) // 2), slice(col0 // 2, (box[2].stop + 1) // 2))
    depth_cover = depth_sq[cover]
    np.maximum(depth_cover, 0, out=depth_cover)
    np.sqrt(depth_cover, out=depth_cover)
    up_shape = (depth_cover.shape[0], depth_cover.shape[1] * 2, depth_cover.shape[2] * 2)
    up = _upsample(depth_cover, 2, up_shape)
    return up[:, row0 % 2: row0 % 2 + box[1].stop - row0, col0 % 2: col0 % 2 + box[2].stop - col0]


def _work_box(air_in_body: np.ndarray, reach_mm: tuple[float, ...], grid: _Grid) -> tuple[slice, ...]:
    """Box of the air in the body, widened in-plane by the sum of the steps'
    reaches ``reach_mm`` (each rounded up to pixels) and 4 pixels; the whole
    grid when there is no such air."""
    if not air_in_body.any():
        return tuple(slice(0, n) for n in air_in_body.shape)
    margin_px = sum(int(math.ceil(mm / min(grid.pixel_mm))) for mm in reach_mm) + 4
    return _bbox(air_in_body, (0, margin_px, margin_px))


def _embed(values: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...]) -> np.ndarray:
    """``values`` (cropped to ``box``) back on a zero array of ``shape``."""
    out = np.zeros(shape, values.dtype)
    out[box] = values
    return out


def _count_where(labels: np.ndarray, where: np.ndarray, n_labels: int) -> np.ndarray:
    """Number of ``where`` voxels of each label 0..``n_labels`` (counts only the selected voxels)."""
    return np.bincount(labels[where], minlength=n_labels + 1)


def _bbox(mask: np.ndarray, margin: tuple[int, int, int]) -> tuple[slice, ...]:
    out = []
    for ax in range(3):
        other = tuple(k for k in range(3) if k != ax)
        nz = np.flatnonzero(mask.any(axis=other))
        start = max(int(nz[0]) - margin[ax], 0)
        stop = min(int(nz[-1]) + 1 + margin[ax], mask.shape[ax])
        out.append(slice(start, stop))
    return tuple(out)


def segment_threshold(
    ct: CTVolume,
    *,
    air_threshold_hu: float = -250.0,
    gas_threshold_hu: float = -940.0,
    airway_hu: float = -900.0,
    fill_radius_mm: float = 80.0,
    dense_max_hu: float = 250.0,
    min_lung_area_mm2: float = 1500.0,
    max_fill_depth_mm: float = 70.0,
    edge_hu: float | None = None,
    fill_max_hu: float = 10.0,
    grow_min_hu: float = -80.0,
    grow_max_hu: float = -15.0,
    grow_mm: float = 10.0,
    poor_sd_hu: float | None = 40.0,
    poor_max_hu: float = 0.0,
) -> RegionMap:
    """Segment the right and left lungs with thresholds and morphology.

    Parameters
    ----------
    ct : CTVolume
        Any number of slices (>= 1), any orientation, 0.5–5 mm slices.
    air_threshold_hu : float
        Voxels below this are air-like (aerated lung, airways, outside air).
    gas_threshold_hu : float
        A component with more than 45 % of voxels below this is gas (bowel,
        stomach, table), not lung (severe emphysema: use ``method='lungmask'``).
    airway_hu : float
        Airway lumen: small 2-D sections below this, chained from the trachea.
    fill_radius_mm : float
        Radius of the per-slice rolling-ball closing (a hull along the chest
        wall) that brings dense juxtapleural lung back; additions are soft
        tissue near the chest wall, never medial to the lung's aerated part.
    dense_max_hu : float
        The small (5 mm) closing adds only voxels below this (not bone).
    fill_max_hu : float
        The large closing adds only voxels below this: juxtapleural tissue
        denser than this cannot be told from chest-wall muscle (+40 HU).
    grow_min_hu, grow_max_hu, grow_mm : float
        Dense voxels the closing added grow up to ``grow_mm`` (in-plane) into
        voxels in [``grow_min_hu``, ``grow_max_hu``) near the chest wall (the
        rim of a consolidation that the hull's chord cuts off).
    poor_sd_hu : float or None
    poor_max_hu : float
        Poorly aerated lung: local (about 6 mm) mean in [-700, ``poor_max_hu``)
        HU and local standard deviation >= ``poor_sd_hu`` HU, in blobs touching
        the aerated lung (module docstring, step 5; phantom: 93 / 62 / 19 % of
        consolidation with 45 / 25 / 15 % air pockets found).  Needs in-plane
        pixels of 2.5 mm or finer; None switches it off.
    min_lung_area_mm2 : float
        A lung must have at least this area in its largest axial section.
    max_fill_depth_mm : float
        The closing adds only voxels this close (in-plane) to the body surface.
    edge_hu : float or None
        Threshold deciding the aerated border at full resolution; None: midway
        between the lung's median HU and soft tissue (+40 HU), in [-500, -250].

    Returns
    -------
    RegionMap
        ``labels`` uint8 on the CT grid, codes :data:`~lungdamage.regions.LUNG_CODES`
        (1 right, 2 left), ``method='threshold'``, ``region_set='lungs'``; ``info``
        holds the working grid (``downsample``, ``slices_pooled``), ``edge_hu``,
        the noise measured (``noise_hu``) and the in-plane mean used (``smoothing_px``).

    Raises
    ------
    SegmentationError
        No air-filled region of lung size inside the body.
    """
    grid = _Grid.of(ct)
    work = _WorkingImage.of(ct, ct.hu.transpose(grid.perm), grid, poor_sd_hu)
    lowres_hu = work.lowres_hu
    # -- 1.-4. aerated lungs, right / left, on the low-res grid, inside the work box
    found = _aerated_lungs(ct, lowres_hu, grid, air_threshold_hu=air_threshold_hu, gas_threshold_hu=gas_threshold_hu,
                           airway_hu=airway_hu, min_lung_area_mm2=min_lung_area_mm2, reach_mm=(40.0, grow_mm),
                           smooth_px=work.smooth_px, pad=work.pad)
    box, side, airway, box_lowres = found.box, found.side, found.airway, lowres_hu[found.box]
    air_lung = side > 0
    # -- 5a. poorly aerated lung grown from the aerated lung (its texture needs fine pixels)
    if work.poor_sd_hu is not None and max(grid.spacing_mm[1:]) <= 2.5:
        side = _add_poorly_aerated(box_lowres, side, found.body, found.depth_mm, airway, grid.pixel_mm,
                                   sd_min=work.poor_sd_hu, hu_max=poor_max_hu, air_hu=air_threshold_hu,
                                   gas_hu=gas_threshold_hu)
    # -- 5. dense lung back in: rolling-ball closing + hole filling, per lung
    fill = _FillParams(radius_mm=fill_radius_mm, dense_max_hu=dense_max_hu, max_depth_mm=max_fill_depth_mm,
                       max_hu=fill_max_hu, grow_min_hu=grow_min_hu, grow_max_hu=grow_max_hu, grow_mm=grow_mm,
                       air_hu=air_threshold_hu)
    out, near_airway = _fill_dense_lung(box_lowres, side, air_lung, found.body, found.depth_mm, airway,
                                        found.away_from_edge, grid, fill)
    # -- 6. back to full resolution, aerated border refined at full resolution
    edge_hu = _edge_threshold(box_lowres, air_lung) if edge_hu is None else edge_hu
    labels = _to_full(_embed(out, box, lowres_hu.shape), _embed(air_lung, box, lowres_hu.shape), work.hu,
                      (grid.zfactor, grid.factor), edge_hu, _embed(near_airway, box, lowres_hu.shape))
    return _region_map(ct, labels.transpose(np.argsort(grid.perm)), found,
                       {"downsample": grid.factor, "slices_pooled": grid.zfactor, "edge_hu": edge_hu,
                        "fill_radius_mm": fill_radius_mm, "noise_hu": round(work.noise_hu, 1),
                        "smoothing_px": work.smooth_px})


def _noise_sd(lowres_hu: np.ndarray, max_slices: int = 24) -> float:
    """Noise standard deviation (HU) of the working image, measured in soft tissue.

    Differences of pixels 3 columns apart (beyond the reconstruction
    kernel's correlation length) where both lie in [-300, 300] HU, on at most
    ``max_slices`` evenly spaced slices: 1.4826 × their median absolute
    deviation / √2.  Tissue texture adds a little (a noise-free phantom
    measures about 10 HU).  0 when there is too little soft tissue.
    """
    n_slices = lowres_hu.shape[0]
    picked = np.unique(np.linspace(0, n_slices - 1, min(n_slices, max_slices)).round().astype(np.intp))
    sub = lowres_hu[picked].astype(np.float32)
    left, right = sub[:, :, :-3], sub[:, :, 3:]
    ok = (left > -300) & (left < 300) & (right > -300) & (right < 300)
    if np.count_nonzero(ok) < 1000:
        return 0.0
    diff = (left - right)[ok]
    return float(1.4826 * np.median(np.abs(diff - np.median(diff))) / math.sqrt(2.0))


def _smoothing_px(lowres_hu: np.ndarray, noise_hu: float, pixel_mm: float) -> int:
    """Width (pixels, odd) of the in-plane mean that brings noise of
    ``noise_hu`` to :data:`_DENOISED_HU`; 1 (none) below :data:`_NOISY_HU`.
    Measured on the image itself (correlated noise averages out more slowly
    than white noise).  At most 8 mm wide, so that the trachea (15-25 mm)
    keeps a lumen of pure air."""
    if noise_hu <= _NOISY_HU:
        return 1
    widest = max(3, int((8.0 / pixel_mm - 1) // 2) * 2 + 1)
    sample = lowres_hu[:: max(1, lowres_hu.shape[0] // 24)].astype(np.float32)
    for width in range(3, widest, 2):
        if _noise_sd(ndimage.uniform_filter(sample, size=(1, width, width))) <= _DENOISED_HU:
            return width
    return widest


def _region_map(ct: CTVolume, labels: np.ndarray, found: _Aerated, info: dict) -> RegionMap:
    """The lung labels (CT axis order) as a RegionMap, with a warning when one lung only is found."""
    labels = np.ascontiguousarray(labels)
    info = {**info, "airway_voxels_lowres": int(np.count_nonzero(found.airway)), "field_cut": found.cut_body}
    one = _one_lung_warning(labels, found.cut_body)
    if one:
        log.warning("%s: %s", ct.meta.key, one)
        info["warnings"] = (one,)
    return RegionMap(labels, dict(LUNG_CODES), method="threshold", region_set="lungs", info=info)


@dataclass(frozen=True)
class _WorkingImage:
    """The images the steps read: the low-res grid and the full-resolution HU
    (both an in-plane mean on noisy images), the noise measured, the mean's
    width in low-res pixels (1: none), the padding when found before
    smoothing, and the texture threshold of step 5 with the noise added."""

    lowres_hu: np.ndarray
    hu: np.ndarray
    noise_hu: float
    smooth_px: int
    pad: np.ndarray | None
    poor_sd_hu: float | None

    @classmethod
    def of(cls, ct: CTVolume, hu: np.ndarray, grid: _Grid, poor_sd_hu: float | None) -> _WorkingImage:
        lowres_hu = _block_mean(hu, grid.factor, grid.zfactor)
        # noisy (low-dose, sharp-kernel) images: every threshold reads an
        # in-plane mean that brings the noise down to about 35 HU
        noise_hu = _noise_sd(lowres_hu)
        smooth_px = _smoothing_px(lowres_hu, noise_hu, min(grid.pixel_mm))
        if smooth_px == 1:
            return cls(lowres_hu, hu, noise_hu, 1, None, poor_sd_hu)
        smoothed = ndimage.uniform_filter(lowres_hu.astype(np.float32), size=(1, smooth_px, smooth_px))
        pad = _outside_field(smoothed, lowres_hu)
        width = grid.factor * smooth_px
        hu = ndimage.uniform_filter(hu.astype(np.float32), size=(1, width, width))
        log.info("%s: image noise %.0f HU (soft tissue): segmenting a %dx%d-pixel in-plane mean", ct.meta.key,
                 noise_hu, smooth_px, smooth_px)
        if poor_sd_hu is not None:  # texture, not noise: the measured SD adds both in quadrature
            poor_sd_hu = math.hypot(poor_sd_hu, _noise_sd(smoothed))
        return cls(smoothed, hu, noise_hu, smooth_px, pad, poor_sd_hu)


@dataclass(frozen=True)
class _Aerated:
    """Steps 1-4 on the low-res grid: arrays cropped to ``box`` (the air in
    the body plus the later steps' reach)."""

    box: tuple[slice, ...]
    side: np.ndarray  # uint8 labels 1 right, 2 left: aerated lung
    airway: np.ndarray  # trachea and main bronchi (never lung)
    body: np.ndarray  # tissue, air inside the body and padding
    depth_mm: np.ndarray  # in-plane distance to the body surface
    away_from_edge: np.ndarray  # more than 10 mm from the field's edge
    cut_body: bool  # the body is cut by the field of view


def _aerated_lungs(ct: CTVolume, lowres_hu: np.ndarray, grid: _Grid, *, air_threshold_hu: float,
                   gas_threshold_hu: float, airway_hu: float, min_lung_area_mm2: float,
                   reach_mm: tuple[float, ...], smooth_px: int = 1, pad: np.ndarray | None = None) -> _Aerated:
    """Steps 1-4: air inside the body, airways, lung components, right / left.

    ``pad``: the outside-field padding, when found before the image was smoothed.
    """
    n_slices = lowres_hu.shape[0]
    # -- 1. air inside the body (per slice: pure gas connected to the image border
    # or to the outside-field padding is outside air; a lung cut by the field keeps
    # its parenchyma statistics and stays inside)
    if pad is None:
        pad = _outside_field(lowres_hu)
    body, inner_lut, air_labels = _inside_air(lowres_hu, pad, air_threshold_hu, _OUTSIDE_AIR_HU, grid.ap_axis,
                                              min_lung_area_mm2 / grid.pixel_mm2)
    midline, cut_body = _body_midline(ct, grid.perm, grid.lr_axis, grid.factor, body & ~pad, pad)
    candidate = inner_lut[air_labels]
    del air_labels, inner_lut
    # steps 2-5 work inside the box of the air in the body (lungs, airways,
    # bowel gas, padding) plus the widest reach of any later step
    box = _work_box(candidate | (pad & body), reach_mm, grid)
    box_lowres, box_body = lowres_hu[box], body[box]
    box_midline = midline[box[0]] - box[grid.lr_axis].start
    # -- 2. trachea and main bronchi
    # (an in-plane mean of smooth_px pixels narrows the lumen by half its width)
    airway = (_find_trachea(box_lowres, box_body, box_midline, grid, airway_hu, grow_px=(smooth_px - 1) // 2)
              if n_slices >= 3 else np.zeros_like(box_body))
    # -- 3. lung components
    lung = _lung_components(ct, box_lowres, candidate[box] & ~airway, grid,
                            gas_threshold_hu=gas_threshold_hu, min_lung_area_mm2=min_lung_area_mm2)
    del candidate
    if n_slices < 3:
        lung, airway = _single_slice_airways(lung, airway, box_lowres, box_midline, grid, airway_hu)
    # -- 4. right / left
    side = _split_sides(lung, box_lowres.shape, grid.pixel_mm, box_midline, grid.lr_axis, grid.lr_sign,
                        slice_mm=grid.slice_mm)
    # nothing dense is added within 10 mm of the field's edge (padding or an
    # image border the lungs reach): what lies beyond is unknown, and the strip
    # of chest wall and blurred air a small field cuts off is not lung
    away = _away_from_field_edge(_embed(side > 0, box, pad.shape), pad, grid.pixel_mm, 10.0)[box]
    return _Aerated(box, side, airway, box_body, _depth_mm(body, grid.pixel_mm, box), away, bool(cut_body))


@dataclass(frozen=True)
class _Grid:
    """The working grid: cranio-caudal axis first, in-plane blocks of ``factor``
    pixels, and sub-millimetre slices pooled by ``zfactor``.

    ``perm`` puts the S/I axis first; ``lr_axis`` (1 or 2, in permuted order)
    is the in-plane axis closest to LPS x and ``lr_sign`` the sign of x along
    it; ``spacing_mm`` is the full-resolution (slice, row, column) spacing,
    ``pixel_mm`` the low-resolution in-plane pixel size and ``slice_mm`` the
    low-resolution slice spacing; ``sup_sign`` is +1 when the slice index
    grows towards the head.
    """

    perm: tuple[int, int, int]
    lr_axis: int
    lr_sign: float
    sup_sign: float
    spacing_mm: tuple[float, float, float]
    factor: int
    zfactor: int = 1

    @classmethod
    def of(cls, ct: CTVolume) -> _Grid:
        perm, lr_axis, lr_sign = _pipeline_axes(ct)
        if min(ct.shape[perm[1]], ct.shape[perm[2]]) < 3:
            # a single coronal/sagittal slice: every axial section would be a line of voxels
            raise SegmentationError(
                f"Series {ct.meta.key} ({ct.shape[0]} slice(s), orientation {ct.orientation}) is a non-axial "
                "image too thin to hold axial sections: the classical segmentation works on axial slices or on "
                "volumes. Potential fix: score the axial series, or a volume covering the chest."
            )
        spacing_mm = tuple(float(ct.spacing_mm[k]) for k in perm)
        # morphology on ~1.6-2.4 mm pixels; the border is refined at full resolution
        factor = max(1, int(round(2.0 / min(spacing_mm[1], spacing_mm[2]))))
        # sub-millimetre slices are pooled to about 1.5 mm (the border, the
        # domes included, is refined at full resolution)
        zfactor = min(4, max(1, int(round(1.5 / spacing_mm[0])))) if spacing_mm[0] < 1.0 else 1
        if ct.shape[perm[0]] < 12 * zfactor:
            zfactor = 1
        sup_sign = 1.0 if ct.direction[2, perm[0]] >= 0 else -1.0
        return cls(perm, lr_axis, lr_sign, sup_sign, spacing_mm, factor, zfactor)  # type: ignore[arg-type]

    @property
    def pixel_mm(self) -> tuple[float, float]:
        return (self.spacing_mm[1] * self.factor, self.spacing_mm[2] * self.factor)

    @property
    def pixel_mm2(self) -> float:
        return self.pixel_mm[0] * self.pixel_mm[1]

    @property
    def slice_mm(self) -> float:
        return self.spacing_mm[0] * self.zfactor

    @property
    def voxel_ml(self) -> float:
        return self.slice_mm * self.pixel_mm2 / 1000.0

    @property
    def ap_axis(self) -> int:
        return 3 - self.lr_axis


@dataclass(frozen=True)
class _FillParams:
    """Options of the dense-lung fill (step 5); see :func:`segment_threshold`."""

    radius_mm: float
    dense_max_hu: float
    max_depth_mm: float
    max_hu: float
    grow_min_hu: float
    grow_max_hu: float
    grow_mm: float
    air_hu: float


def _find_trachea(lowres_hu: np.ndarray, body: np.ndarray, midline: np.ndarray, grid: _Grid,
                  airway_hu: float, grow_px: int = 0) -> np.ndarray:
    """Trachea and main bronchi (low-res mask, dilated by about 2 mm plus ``grow_px``).

    A vertical chain of small (<= 8 cm²) 2-D components of pure air (lumen
    below ``airway_hu``: the partial-volume wall separates it from lung): the
    largest 3-D chain of 1 mL to :data:`_AIRWAY_MAX_ML`, with at most 3
    pieces per slice on average, that spans 30 mm or more within 30 mm of
    the body midline.
    """
    airway = np.zeros(lowres_hu.shape, bool)
    lumen = (lowres_hu < airway_hu) & body
    lumen_labels, n_lumen = ndimage.label(lumen, structure=_CROSS2D)
    area_mm2 = _count_where(lumen_labels, lumen, n_lumen) * grid.pixel_mm2
    tube_lut = area_mm2 <= 800.0
    tube_lut[0] = False
    tube = tube_lut[lumen_labels]
    tube_labels, n_tubes = ndimage.label(tube, structure=_CROSS3D)
    if n_tubes == 0:
        return airway
    tube_voxels = _count_where(tube_labels, tube, n_tubes)
    tube_voxels[0] = 0
    # a trachea holds >= 1 mL of air: only a handful of components qualify;
    # trachea and main bronchi together hold about 40-70 mL in adults: a chain
    # of several hundred mL is lung threaded by noise (low-dose images)
    tube_ml = tube_voxels * grid.voxel_ml
    candidates = np.flatnonzero((tube_ml >= 1.0) & (tube_ml <= _AIRWAY_MAX_ML))
    boxes = ndimage.find_objects(tube_labels)
    best, best_voxels = 0, 0.0
    for k in candidates:  # loop over a few large tube components
        box = boxes[k - 1]
        centre = [(x.start + x.stop - 1) / 2.0 for x in box]  # bounding-box centre
        extent_mm = (box[0].stop - box[0].start) * grid.slice_mm
        offset_mm = abs(centre[grid.lr_axis] - midline[int(round(centre[0]))]) * grid.pixel_mm[grid.lr_axis - 1]
        if extent_mm >= 30.0 and offset_mm <= 30.0 and tube_voxels[k] > best_voxels:
            # one lumen per slice (two below the carina, a few more at lobar
            # bronchi); lung threaded by noise has many small pieces per slice
            n_pieces = np.unique(lumen_labels[box][tube_labels[box] == k]).size
            if n_pieces <= 3 * (box[0].stop - box[0].start):
                best, best_voxels = int(k), float(tube_voxels[k])  # the trachea
    if best:
        airway = _dilate2d_local(tube_labels == best, max(1, int(round(2.0 / min(grid.pixel_mm)))) + grow_px)
        log.debug("airway: %d voxels (low-res)", int(airway.sum()))
    return airway


def _lung_components(ct: CTVolume, lowres_hu: np.ndarray, candidate: np.ndarray, grid: _Grid, *,
                     gas_threshold_hu: float, min_lung_area_mm2: float) -> np.ndarray:
    """The 3-D air components inside the body that are lung (low-res mask).

    Kept: not gas (at most 45 % of voxels below ``gas_threshold_hu``), a
    largest axial section of at least a tenth of ``min_lung_area_mm2``, at
    least 2 % of the largest lung component's volume, not below the
    diaphragm.  Raises :class:`SegmentationError` when no component has
    ``min_lung_area_mm2`` in one section.
    """
    comp_labels, n_comps = ndimage.label(candidate, structure=_CROSS3D)
    if n_comps == 0:
        raise _no_lung(ct, "no air-filled region inside the body")
    comp_flat = comp_labels.ravel()
    comp_voxels = _count_where(comp_labels, candidate, n_comps)
    comp_gas = _count_where(comp_labels, lowres_hu < gas_threshold_hu, n_comps)
    # largest 2-D section of each 3-D component (each 2-D piece lies in exactly one)
    section_labels, n_sections = ndimage.label(candidate, structure=_CROSS2D)
    section_px = _count_where(section_labels, candidate, n_sections)
    inside = np.flatnonzero(candidate)
    owner = np.zeros(n_sections + 1, np.int64)
    owner[section_labels.ravel()[inside]] = comp_flat[inside]
    del inside, section_labels
    max_section_mm2 = np.zeros(n_comps + 1)
    np.maximum.at(max_section_mm2, owner[1:], section_px[1:] * grid.pixel_mm2)
    gas_frac = comp_gas / np.maximum(comp_voxels, 1)
    keep = (gas_frac <= 0.45) & (max_section_mm2 >= min_lung_area_mm2 / 10.0)
    keep[0] = False
    big = keep & (max_section_mm2 >= min_lung_area_mm2)
    if not big.any():
        non_gas = gas_frac[1:] <= 0.45
        seen_mm2 = float(max_section_mm2[1:][non_gas].max()) if non_gas.any() else 0.0
        gas = (f"; gas (bowel/stomach-like) regions up to {max_section_mm2[1:][~non_gas].max() / 100:.1f} cm² "
               "ignored" if (~non_gas).any() else "")
        raise _no_lung(
            ct,
            f"no air-filled region of lung size inside the body (largest non-gas air region "
            f"{seen_mm2 / 100:.1f} cm² in one slice; a lung needs >= {min_lung_area_mm2 / 100:.0f} cm²{gas})",
        )
    # keep fragments of at least 2 % of the largest lung component
    keep &= comp_voxels >= 0.02 * comp_voxels[big].max()
    # gas below the diaphragm (bowel, stomach) is never lung
    keep &= ~_below_diaphragm(comp_labels, keep, comp_voxels, grid.slice_mm, grid.sup_sign)
    return keep[comp_labels]


def _single_slice_airways(lung: np.ndarray, airway: np.ndarray, lowres_hu: np.ndarray, midline: np.ndarray,
                          grid: _Grid, airway_hu: float) -> tuple[np.ndarray, np.ndarray]:
    """With fewer than 3 slices there is no vertical chain to follow: a small
    section near the midline, apart from the lungs and holding pure air
    (lumen, not parenchyma), is the trachea or a main bronchus."""
    section_labels, n_sections = ndimage.label(lung, structure=_CROSS2D)
    if n_sections <= 1:
        return lung, airway
    index = np.arange(1, n_sections + 1)
    section_px = ndimage.sum_labels(lung, section_labels, index)
    lumen_px = ndimage.sum_labels(lowres_hu < airway_hu, section_labels, index)
    centre = np.asarray(ndimage.center_of_mass(lung, section_labels, index))
    offset_mm = (np.abs(centre[:, grid.lr_axis] - midline[np.round(centre[:, 0]).astype(int)])
                 * grid.pixel_mm[grid.lr_axis - 1])
    tube = np.zeros(n_sections + 1, bool)
    # lumen share: 0.10-0.26 for real main bronchi on 5 mm slices, <= 0.03 for lung pieces
    tube[1:] = (section_px * grid.pixel_mm2 <= 400.0) & (offset_mm <= 30.0) & (lumen_px >= 0.08 * section_px)
    if tube.any():
        airway = airway | ndimage.binary_dilation(tube[section_labels], structure=_SQUARE2D)
        lung = lung & ~tube[section_labels]
    return lung, airway


def _fill_dense_lung(lowres_hu: np.ndarray, side: np.ndarray, air_lung: np.ndarray, body: np.ndarray,
                     depth_mm: np.ndarray, airway: np.ndarray, away_from_edge: np.ndarray, grid: _Grid,
                     fill: _FillParams) -> tuple[np.ndarray, np.ndarray]:
    """Dense lung back in, per lung: hull-like closing near the chest wall,
    small closing, hole filling, rim growth.  Returns the new labels and the
    airway with a one-pixel margin (never lung)."""
    near_airway = _dilate2d_local(airway, 1)
    dense_ok = (lowres_hu < fill.dense_max_hu) & ~near_airway & away_from_edge
    out = side.copy()
    # a closing stays inside each slice's bounding box; only the rim growth leaves it
    margin_px = int(math.ceil(fill.grow_mm / min(grid.pixel_mm))) + 2

    def one(code: int) -> tuple[tuple[slice, ...], np.ndarray] | None:
        one_lung = side == code
        if not one_lung.any():
            return None
        box = _bbox(one_lung, (0, margin_px, margin_px))
        return box, _fill_one_lung(code, one_lung[box], lowres_hu[box], air_lung[box], body[box] & dense_ok[box],
                                   depth_mm[box] <= fill.max_depth_mm, near_airway[box], grid, fill)

    # the two lungs in two threads (scipy.ndimage and SimpleITK release the GIL);
    # the right lung's additions are written first, as in a sequential run
    from .._procs import thread_budget

    with ThreadPoolExecutor(max_workers=min(2, thread_budget())) as pool:
        results = list(pool.map(one, (1, 2)))
    for code, result in zip((1, 2), results, strict=True):
        if result is not None:
            box, add = result
            out_box = out[box]
            out_box[add & (out_box == 0)] = code
    return out, near_airway


def _fill_one_lung(code: int, one_lung: np.ndarray, lowres_hu: np.ndarray, air_lung: np.ndarray,
                   dense_ok: np.ndarray, near_wall: np.ndarray, near_airway: np.ndarray, grid: _Grid,
                   fill: _FillParams) -> np.ndarray:
    """Voxels to add to one lung (arrays cropped to its box).

    Juxtapleural consolidation lies near the chest wall (``near_wall``); the
    hilum, whose concavity a closing would also fill, lies deep in the
    thorax.  Nothing is added medial to the lung's own aerated part in the
    same row (mediastinum, heart, liver dome stay out).
    """
    lr_axis = grid.lr_axis
    shape = [1, 1, 1]
    shape[lr_axis] = -1
    pos_lr = np.arange(one_lung.shape[lr_axis]).reshape(shape) * grid.lr_sign
    if code == 1:  # right lung: smaller LPS x; medial = larger x
        medial_edge = np.where(one_lung, pos_lr, -np.inf).max(axis=lr_axis, keepdims=True)
        lateral_ok = pos_lr <= medial_edge
    else:
        medial_edge = np.where(one_lung, pos_lr, np.inf).min(axis=lr_axis, keepdims=True)
        lateral_ok = pos_lr >= medial_edge
    big_close = (_coarse_closing2d(one_lung, fill.radius_mm, grid.pixel_mm) & near_wall & lateral_ok
                 & (lowres_hu < fill.max_hu))
    # the hull of the bases' thin arcs holds the diaphragm dome (pieces lying
    # mostly right under the lung, with no lung below them) and fat, which is
    # never lung (extrapleural, subdiaphragmatic; local mean over about 6 mm)
    if big_close.any():
        aerated = one_lung & air_lung
        big_close &= ~_dome_pieces(big_close & ~one_lung, _under_lung(aerated, grid.slice_mm, grid.sup_sign),
                                   aerated.sum(axis=(1, 2)))
        local_hu = ndimage.uniform_filter(lowres_hu, size=(1, 3, 3))
        fat = (local_hu >= _FAT_HU[0]) & (local_hu < _FAT_HU[1])
        # a pixel between aerated lung and consolidation-dense tissue (nothing
        # denser than the fill's limit near it) with a fat-like mean is their
        # partial-volume blend (a consolidation's rim), not fat
        fat &= ((ndimage.minimum_filter(lowres_hu, size=(1, 3, 3)) >= fill.air_hu)
                | (ndimage.maximum_filter(lowres_hu, size=(1, 3, 3)) >= fill.max_hu))
        big_close &= ~fat
        del local_hu, fat
        added = big_close & ~one_lung
        core = ndimage.binary_erosion(added, structure=_SQUARE2D)
        big_close = (big_close & one_lung) | ndimage.binary_propagation(core, structure=_CROSS3D, mask=added)
    small_close = _octagon_closing2d(one_lung, max(1, int(round(5.0 / min(grid.pixel_mm)))))
    closed = (big_close | small_close) & dense_ok
    # holes enclosed by the lung (vessels, even with contrast) are lung
    closed = ndimage.binary_fill_holes(closed | one_lung, structure=_CROSS2D) & ~near_airway
    # the hull's chord cuts off the rim of consolidation along a curved chest
    # wall: grow a few mm into consolidation-like (not muscle) density, seeded
    # by the dense voxels the closing or the partly-aerated step added, never
    # by the aerated border
    grow_ok = near_wall & lateral_ok & (lowres_hu < fill.grow_max_hu) & (lowres_hu >= fill.grow_min_hu)
    seed = closed & ~(one_lung & air_lung) & (lowres_hu >= fill.air_hu)
    if seed.any():
        closed |= ndimage.binary_dilation(seed, structure=_CROSS2D,
                                          iterations=max(1, int(round(fill.grow_mm / min(grid.pixel_mm)))),
                                          mask=grow_ok)
    return closed & ~one_lung


def _edge_threshold(lowres_hu: np.ndarray, air_lung: np.ndarray) -> float:
    """Partial-volume midpoint between the lungs' median HU and soft tissue (+40 HU), in [-500, -250]."""
    median_hu = float(np.median(lowres_hu[air_lung][:: max(1, int(air_lung.sum()) // 200_000)]))
    return float(np.clip((median_hu + 40.0) / 2.0, -500.0, -250.0))


def _away_from_field_edge(lung: np.ndarray, pad: np.ndarray, pixel_mm: tuple[float, float], mm: float) -> np.ndarray:
    """False within ``mm`` (in-plane) of the padding or of an image border
    that the lungs touch; all True when neither occurs (the usual scan)."""
    edge = pad.copy()
    frame = np.zeros(lung.shape[1:], bool)
    frame[0, :] = frame[-1, :] = frame[:, 0] = frame[:, -1] = True
    touched = lung[:, frame].any(axis=1)  # slices where a lung reaches the border
    if touched.any():
        edge |= frame[None] & touched.any()
    if not edge.any():
        return np.ones(lung.shape, bool)
    return _dist_from2d(edge, pixel_mm) > mm


def _one_lung_warning(labels: np.ndarray, cut: bool) -> str:
    """A warning when the mask holds one lung only (less than 2 % of it on the other side)."""
    # codes are 0, 1, 2: the sum counts left voxels twice (one pass each, no temporary)
    n_lung = int(np.count_nonzero(labels))
    n_left = int(labels.sum(dtype=np.int64)) - n_lung
    n_right = n_lung - n_left
    if min(n_right, n_left) >= 0.02 * max(n_right, n_left, 1):
        return ""
    side = "right" if n_right > n_left else "left"
    why = ("the body is cut by the field of view: side from patient coordinates (LPS x and the visible "
           "body midline)" if cut else "side from the body midline")
    return (f"one lung only: the {side} lung is in the mask and the other is absent ({why}); "
            "whole-lung and right/left totals describe that lung alone")


def _dome_pieces(add: np.ndarray, under: np.ndarray, aerated_px: np.ndarray) -> np.ndarray:
    """The 2-D pieces of ``add`` that are the diaphragm dome seen inside a
    basal lung arc: at least half of the piece lies right under the lung
    (``under``) and the piece holds at least a tenth as many pixels as the
    aerated lung of its slice (a thin arc around a wide dome; TotalSegmentator
    example: 0.1-0.6).  The upper slices of a consolidation resting on the
    diaphragm lie beside far more aerated lung (phantom: under 0.07).
    """
    lab, n = ndimage.label(add, structure=_CROSS2D)
    if n == 0:
        return np.zeros_like(add)
    flat = lab.ravel()
    tot = np.bincount(flat, minlength=n + 1)
    hit = _count_where(lab, under, n)
    k_of = np.zeros(n + 1, np.int64)
    k_of[flat] = np.repeat(np.arange(add.shape[0]), add.shape[1] * add.shape[2])
    lut = (hit >= 0.5 * np.maximum(tot, 1)) & (tot >= 0.1 * aerated_px[k_of])
    lut[0] = False
    return lut[lab]


def _under_lung(aer: np.ndarray, slice_mm: float, sup_sign: float, within_mm: float = 10.0) -> np.ndarray:
    """Voxels right under the aerated lung ``aer`` (within ``within_mm`` below it
    in the same column) with no aerated lung anywhere below them: the top of
    the diaphragm dome and what lies on it, seen inside a basal lung arc."""
    a = aer if sup_sign > 0 else aer[::-1]  # index grows towards the head
    n = max(1, int(math.ceil(within_mm / slice_mm)))
    above = np.zeros_like(a)
    for d in range(1, min(n, a.shape[0] - 1) + 1):  # a few whole-volume shifts
        above[:-d] |= a[d:]
    below = np.zeros_like(a)
    below[1:] = np.maximum.accumulate(a, axis=0)[:-1]
    out = above & ~below & ~a
    return out if sup_sign > 0 else out[::-1]


def _below_diaphragm(lab3: np.ndarray, ok: np.ndarray, vol3: np.ndarray, slice_mm: float, sup_sign: float,
                     gap_mm: float = 8.0) -> np.ndarray:
    """Look-up table of the air components ``ok`` that lie below the diaphragm.

    The main lungs are the components of at least a quarter of the largest
    one's volume.  Any other component is bowel or stomach gas (whatever its
    gas share: stool mixes gas and soft tissue) when it lies wholly below the
    main lungs' lowest slice or above their top, or when most of its voxels
    lie under a main lung, in the same column, with at least ``gap_mm`` of
    tissue between (the diaphragm and the organ wall).  A lung piece cut off
    by partial volume at the base lies directly against the lung above it.
    """
    out = np.zeros_like(ok)
    main = ok & (vol3 >= 0.25 * vol3[ok].max())
    frag = ok & ~main
    if not frag.any():
        return out
    n_sl = lab3.shape[0]
    m = main[lab3]
    ks = np.flatnonzero(m.any(axis=(1, 2)))
    # "up" = towards the head; lowest main-lung slice in each (row, column)
    k_up = np.arange(n_sl) if sup_sign > 0 else np.arange(n_sl)[::-1]
    has = m.any(axis=0)
    m_up = m[k_up]
    low_rank = np.argmax(m_up, axis=0)  # rank (from the feet) of the lowest main voxel per column
    rank_of = np.empty(n_sl, np.int64)
    rank_of[k_up] = np.arange(n_sl)
    lo_rank, hi_rank = rank_of[ks].min(), rank_of[ks].max()
    fr = frag[lab3]
    kk, rr, cc = np.nonzero(fr)
    labs = lab3[kk, rr, cc]
    rk = rank_of[kk]
    under = has[rr, cc] & ((low_rank[rr, cc] - rk - 1) * slice_mm >= gap_mm)
    n = np.bincount(labs, minlength=ok.size)
    n_under = np.bincount(labs, weights=under, minlength=ok.size)
    r_min = np.full(ok.size, np.iinfo(np.int64).max)
    r_max = np.full(ok.size, -1)
    np.minimum.at(r_min, labs, rk)
    np.maximum.at(r_max, labs, rk)
    outside_range = (r_max < lo_rank) | (r_min > hi_rank)
    out = frag & ((n_under >= 0.5 * np.maximum(n, 1)) | outside_range)
    if out.any():
        log.debug("%d air component(s) below the diaphragm (bowel, stomach) left out", int(out.sum()))
    return out


def _outside_field(lowres_hu: np.ndarray, unsmoothed_hu: np.ndarray | None = None) -> np.ndarray:
    """Pixels outside the reconstructed field of view (low-res grid).

    Padding is far below air (-2048, -3024; linear interpolation of such
    padding undershoots -1024) or, when the scanner pads with an air value
    (-1024, -1000), exactly constant over a 3×3 neighbourhood, which noisy
    air and lung never are.  On a smoothed image the constant test reads
    ``unsmoothed_hu`` (averaging with the body breaks the constancy; noisy
    air reaches below -1100 only before smoothing).
    """
    pad = lowres_hu < -1100.0
    if unsmoothed_hu is not None:
        lowres_hu = unsmoothed_hu
    low = lowres_hu <= -1000.0
    # a constant 3x3 patch (edges repeated) needs three equal pixels in its
    # row: a cheap test that noisy air fails; the whole patch is then
    # compared only at those candidates
    run3 = low.copy()
    run3[:, :, 1:] &= lowres_hu[:, :, 1:] == lowres_hu[:, :, :-1]
    run3[:, :, :-1] &= lowres_hu[:, :, :-1] == lowres_hu[:, :, 1:]
    slices, rows, cols = np.nonzero(run3)
    if slices.size:
        centre = lowres_hu[slices, rows, cols]
        same = np.ones(slices.size, bool)
        for d_row in (-1, 1):  # the rows above and below (the centre row passed already)
            near_rows = np.clip(rows + d_row, 0, lowres_hu.shape[1] - 1)
            for d_col in (-1, 0, 1):
                same &= lowres_hu[slices, near_rows, np.clip(cols + d_col, 0, lowres_hu.shape[2] - 1)] == centre
        const = np.zeros_like(low)
        const[slices[same], rows[same], cols[same]] = True
        # noisy air clipped at the stored minimum (-1024) holds scattered constant
        # patches; padding is one wide constant region per slice
        if same.any():
            const_labels, n_const = ndimage.label(const, structure=_SQUARE2D)
            wide = _count_where(const_labels, const, n_const) >= _PAD_MIN_PX
            wide[0] = False
            const = wide[const_labels]
        # the padding's rim (not constant over 3x3) holds the same air value
        if const.any():
            pad |= ndimage.binary_dilation(const, structure=_SQUARE2D, iterations=2, mask=low)
    return pad


def _inside_air(lowres_hu: np.ndarray, pad: np.ndarray, air_hu: float, gas_hu: float, ap_axis: int,
                min_section_px: float):
    """Split air-like pixels into outside air and air inside the body, per slice.

    A 2-D air component touching the image border or the outside-field
    padding is outside air when it is gas (more than 45 % of it below
    ``gas_hu``), touches three or four image edges and holds at least 10 %
    below -940 HU (air around the body, with mattress and blankets, which are
    not pure gas) or does not lie
    inside the body along the anterior-posterior axis (mattress, table
    foam) unless it continues in 3-D a lung section that is wholly inside
    the field in another slice; otherwise it is lung cut by the field of
    view and stays inside.  Returns ``(body, inner_lut, lab2)``: ``body`` (tissue, inside
    air and padding), the look-up table of inside air components and the
    2-D labels.
    """
    air = (lowres_hu < air_hu) & ~pad
    lab2, n2 = ndimage.label(air, structure=_CROSS2D)
    sides = np.zeros(n2 + 1, np.int8)  # number of image edges each component touches
    for e in (lab2[:, 0, :], lab2[:, -1, :], lab2[:, :, 0], lab2[:, :, -1]):
        t = np.zeros(n2 + 1, bool)
        t[e] = True
        sides += t
    edge = sides > 0
    if pad.any():
        edge[lab2[ndimage.binary_dilation(pad, structure=_SQUARE2D)]] = True
    npx = _count_where(lab2, air, n2)  # label 0 (not air) counts 0
    gas = _count_where(lab2, lowres_hu < gas_hu, n2)
    # outside air is mostly gas, or surrounds the body (touches three or four
    # image edges, with the mattress and blankets, and still holds some pure
    # gas); a lung cut by the field is parenchyma and meets the field's edge
    # on one or two sides (both lungs joined in a tight crop: three, no gas)
    some_gas = _count_where(lab2, lowres_hu < -940.0, n2) >= 0.10 * npx
    outside = edge & ((gas > 0.45 * npx) | ((sides >= 3) & some_gas))
    outside[0] = False
    maybe = edge & ~outside
    maybe[0] = False
    open_ = maybe.copy()
    if maybe.any():
        open_ &= ~_enclosed_by_body(lab2, maybe, lowres_hu >= air_hu, pad, ap_axis)
    if open_.any():
        # not enclosed in its own slice (a small reconstruction circle cuts the
        # lung laterally): lung when it continues, in 3-D, a lung section that
        # lies wholly inside the field (apex or base), or an enclosed one, in
        # other slices
        sure = (~edge & (gas <= 0.45 * npx) & (npx >= min_section_px)) | (maybe & ~open_)
        sure[0] = False
        lab3, n3 = ndimage.label((sure | open_)[lab2], structure=_CROSS3D)
        good3 = np.zeros(n3 + 1, bool)
        good3[lab3[sure[lab2]]] = True
        good3[0] = False
        joined = np.zeros(n2 + 1, bool)
        joined[lab2[good3[lab3]]] = True
        outside |= open_ & ~joined
    outside[0] = False  # label 0 = tissue: inside the body unless proven otherwise
    kept = edge & ~outside
    kept[0] = False
    if kept.any():
        log.debug("%d air section(s) on the field's edge kept as lung (not pure gas)", int(kept.sum()))
    inner_lut = ~outside
    inner_lut[0] = False
    return ~outside[lab2], inner_lut, lab2


def _enclosed_by_body(lab2: np.ndarray, which: np.ndarray, tissue: np.ndarray, pad: np.ndarray,
                      ap_axis: int) -> np.ndarray:
    """For the 2-D components ``which`` (a look-up table over ``lab2``): does
    the body lie both in front of and behind most (>= 60 %) of each one?

    The body is the largest tissue section of each slice (chest wall and
    everything joined to it).  A lung cut by the field of view has the
    chest wall in front of and behind it; the mattress and the table's
    foam core lie behind the body, with only the table beyond them.
    """
    tissue = tissue & ~pad
    labt, nt = ndimage.label(tissue, structure=_CROSS2D)
    if nt == 0:
        return np.zeros_like(which)
    size = np.bincount(labt.ravel(), minlength=nt + 1)
    objs = ndimage.find_objects(labt)
    sl = np.array([o[0].start for o in objs])  # slice of each tissue section (labels 1..nt)
    biggest = np.zeros(int(sl.max()) + 1)
    np.maximum.at(biggest, sl, size[1:])
    main = np.zeros(nt + 1, bool)
    main[1:] = size[1:] >= biggest[sl]
    body = main[labt]
    before = np.maximum.accumulate(body, axis=ap_axis)
    after = np.flip(np.maximum.accumulate(np.flip(body, axis=ap_axis), axis=ap_axis), axis=ap_axis)
    flat = lab2.ravel()
    n = np.bincount(flat, minlength=which.size)
    n_in = _count_where(lab2, before & after, which.size - 1)
    return which & (n_in >= 0.6 * np.maximum(n, 1))


def _body_midline(ct: CTVolume, perm, lr_axis: int, factor: int, vis: np.ndarray,
                  pad: np.ndarray) -> tuple[np.ndarray, bool]:
    """Body midline (index along the left-right axis, low-res grid) per slice.

    The centre of the visible body, unless the body is cut by the image
    border or the field of view at one side only (in most of its rows, on
    average over the slices: a one-sided reconstruction): the patient's
    midline then lies towards the cut side.
    It is taken at LPS x = 0 (the scanner's isocentre, on which patients are
    centred) when that line lies inside the image at least 30 mm from the
    body's free side, else just beyond the cut border (the image shows one
    side of the chest).  Cut at both sides (a small field), the midline is
    LPS x = 0 when that lies within 30 mm of the image, else the centre of
    the visible body.  Returns ``(mid, cut)``.
    """
    prof = vis.sum(axis=3 - lr_axis)  # (slices, len(lr axis))
    n_lr = prof.shape[1]
    pos = np.arange(n_lr, dtype=np.float64)
    mid = (prof * pos).sum(axis=1) / np.maximum(prof.sum(axis=1), 1)
    has = prof.sum(axis=1) > 0
    if not has.any():
        return mid, False
    # the body is cut at an end of the lr axis when, in most of its rows, it
    # reaches the array's end or the padding there (a grazing contact, such
    # as the table's edge or a shoulder, is not a cut)
    first = np.argmax(vis, axis=lr_axis)  # (slices, rows)
    last = n_lr - 1 - np.argmax(np.flip(vis, axis=lr_axis), axis=lr_axis)
    rows = vis.any(axis=lr_axis)
    pad_t = np.moveaxis(pad, lr_axis, 2)  # (slices, rows, lr)
    at_lo = (first == 0) | np.take_along_axis(pad_t, np.maximum(first - 1, 0)[..., None], axis=2)[..., 0]
    at_hi = (last == n_lr - 1) | np.take_along_axis(pad_t, np.minimum(last + 1, n_lr - 1)[..., None], axis=2)[..., 0]
    n_rows = np.maximum(rows.sum(axis=1), 1)
    cut_lo = float(((at_lo & rows).sum(axis=1) / n_rows)[has].mean()) >= 0.5
    cut_hi = float(((at_hi & rows).sum(axis=1) / n_rows)[has].mean()) >= 0.5
    if not (cut_lo or cut_hi):
        return mid, False  # complete outline: its centre is the midline
    first = np.where(rows, first, n_lr).min(axis=1)
    last = np.where(rows, last, -1).max(axis=1)
    # LPS x along the lr axis (at the centre of the other axes); low-res pixel j
    # covers full-res indices j*factor .. j*factor+factor-1
    centre = np.array([(n - 1) / 2.0 for n in ct.shape])
    idx1 = centre.copy()
    ax = perm[lr_axis]
    centre[ax], idx1[ax] = 0.0, float(factor)
    x0, x1 = ct.index_to_lps(centre)[0], ct.index_to_lps(idx1)[0]
    j0 = -x0 / (x1 - x0) - (factor - 1) / (2.0 * factor) if abs(x1 - x0) > 1e-6 else np.nan
    px_mm = abs(x1 - x0) / factor
    if cut_lo and cut_hi:
        # cut at both sides (a small field): x = 0 when it lies in (or within
        # 30 mm of) the image, else the centre of what is visible
        if not (np.isfinite(j0) and -0.5 - 30.0 / px_mm <= j0 <= n_lr - 0.5 + 30.0 / px_mm):
            return mid, False
        log.debug("body cut at both sides of the field: midline at LPS x = 0 (low-res index %.1f)", j0)
        return np.full(prof.shape[0], float(j0)), True
    free = first[has].min() if cut_hi else last[has].max()  # the body's skin side
    cut_end = n_lr - 0.5 if cut_hi else -0.5
    inside = np.isfinite(j0) and -0.5 <= j0 <= n_lr - 0.5 and abs(j0 - free) * px_mm >= 30.0
    line = float(j0) if inside else cut_end
    log.debug("body cut at one side of the field: midline at low-res index %.1f (%s)", line,
              "LPS x = 0" if inside else "beyond the cut border")
    return np.full(prof.shape[0], line), True


def _dilate2d_local(mask: np.ndarray, iterations: int) -> np.ndarray:
    """In-plane square dilation computed only around the mask's bounding box."""
    out = np.zeros_like(mask)
    if mask.any():
        bb = _bbox(mask, (0, iterations, iterations))
        out[bb] = ndimage.binary_dilation(mask[bb], structure=_SQUARE2D, iterations=iterations)
    return out


def _add_poorly_aerated(lowres_hu, side, body, depth_mm, airway, pixel_mm, *, sd_min: float, hu_max: float,
                        hu_min: float = -700.0, bone_hu: float = 180.0, air_hu: float = -250.0,
                        gas_hu: float = -940.0,
                        min_air_frac: float = 0.05, open_mm: float = 4.0) -> np.ndarray:
    """Grow each lung into heterogeneous, partly aerated tissue next to it (per slice).

    Works inside the lungs' bounding box (plus 40 mm); returns a new label
    array.  Added voxels go to the nearer lung in their slice.
    """
    lung = side > 0
    if not lung.any():
        return side
    margin_px = int(math.ceil(40.0 / min(pixel_mm)))
    box = _bbox(lung, (0, margin_px, margin_px))
    box_hu = lowres_hu[box].astype(np.float32, copy=False)
    lung_box, side_box = lung[box], side[box]
    mean_hu = ndimage.uniform_filter(box_hu, size=(1, 3, 3))  # 3x3 low-res pixels: about 5-7 mm
    sd_hu = ndimage.uniform_filter(box_hu * box_hu, size=(1, 3, 3))
    sd_hu -= mean_hu * mean_hu
    np.maximum(sd_hu, 0, out=sd_hu)
    np.sqrt(sd_hu, out=sd_hu)
    # stay off bone edges and the skin (both are heterogeneous too)
    near_bone = _dilate2d_local(mean_hu > bone_hu, 2)
    inner = depth_mm[box] > 8.0
    # air outside the lungs: small pockets (bronchograms, aerated lobules) or
    # larger pure gas (trachea, bronchi, oesophagus), whose wall must stay out
    air = (box_hu < air_hu) & ~lung_box & body[box]
    air_labels, n_air = ndimage.label(air, structure=_CROSS2D)
    air_px = _count_where(air_labels, air, n_air)  # label 0 (not air) counts 0: never gas
    pure_px = _count_where(air_labels, box_hu < gas_hu, n_air)
    gas_lut = (air_px * (pixel_mm[0] * pixel_mm[1]) >= 150.0) & (pure_px >= 0.2 * air_px)
    gas_lut[0] = False
    gas = gas_lut[air_labels]
    pocket = air & ~gas
    del air_labels
    near_gas = _dilate2d_local(gas, max(1, int(round(5.0 / min(pixel_mm)))))
    candidate = (inner & ~near_bone & ~airway[box] & ~lung_box & (sd_hu >= sd_min) & (mean_hu < hu_max)
                 & (mean_hu >= hu_min))
    del mean_hu, sd_hu, near_bone, inner
    add = _poorly_aerated_blobs(candidate, pocket, near_gas, side_box, pixel_mm, min_air_frac=min_air_frac,
                                open_mm=open_mm)
    if add is None:
        return side
    slices = np.flatnonzero(add.any(axis=(1, 2)))
    slab = slice(int(slices[0]), int(slices[-1]) + 1)
    dist_right = _dist_from2d(side_box[slab] == 1, pixel_mm)
    dist_left = _dist_from2d(side_box[slab] == 2, pixel_mm)
    code = np.where(dist_right <= dist_left, 1, 2).astype(np.uint8)
    out = side.copy()
    out_slab = out[box][slab]
    add_slab = add[slab]
    out_slab[add_slab] = code[add_slab]
    log.debug("poorly aerated lung: %d voxels added (low-res)", int(add.sum()))
    return out


def _poorly_aerated_blobs(candidate: np.ndarray, pocket: np.ndarray, near_gas: np.ndarray, side_box: np.ndarray,
                          pixel_mm: tuple[float, float], *, min_air_frac: float, open_mm: float) -> np.ndarray | None:
    """The candidate blobs that are partly aerated lung (None when there are none).

    Blobs only (an opening removes the one-pixel rims along every edge),
    holding air pockets (>= ``min_air_frac``: bronchograms, aerated
    lobules; a partial-volume band along an edge holds none), not around
    pure gas (bowel, trachea, oesophagus walls), touching a lung in their
    own slice (in 3-D, bowel under the diaphragm would join through the
    lung bases).
    """
    if not candidate.any():
        return None
    # (inside the candidates' box: an opening never leaves its input)
    cand_box = _bbox(candidate, (0, 1, 1))
    opened = np.zeros_like(candidate)
    opened[cand_box] = ndimage.binary_opening(candidate[cand_box], structure=_CROSS2D,
                                              iterations=max(1, int(round(open_mm / min(pixel_mm)))))
    if not opened.any():
        return None
    blob_labels, n_blobs = ndimage.label(opened, structure=_CROSS2D)
    blob_px = _count_where(blob_labels, opened, n_blobs)
    pocket_px = _count_where(blob_labels, pocket, n_blobs)
    keep = pocket_px >= min_air_frac * blob_px
    keep[blob_labels[near_gas]] = False
    # (the lung dilated by one pixel is needed only on the blobs: around their box)
    wide = _bbox(opened, (0, 2, 2))
    near_lung = np.zeros_like(opened)
    near_lung[wide] = ndimage.binary_dilation(side_box[wide] > 0, structure=_SQUARE2D)
    touching = np.zeros(n_blobs + 1, bool)
    touching[blob_labels[near_lung & opened]] = True
    keep &= touching
    keep[0] = False
    add = keep[blob_labels]
    return add if add.any() else None


def _to_full(labels_lowres: np.ndarray, air_lung: np.ndarray, hu: np.ndarray, factors: tuple[int, int],
             edge_hu: float, near_airway: np.ndarray) -> np.ndarray:
    """Labels on the full grid of ``hu``; along the aerated border each voxel is decided by ``hu < edge_hu``.

    Every low-res voxel is painted onto its block of ``factors`` (slices,
    in-plane pixels); only the blocks on the aerated lung's border (inside
    it, or just outside and not airway) read the full-resolution HU.  With
    pooled slices the border includes the blocks above and below the
    aerated lung (apex, domes).
    """
    zfactor, factor = factors
    shape = hu.shape
    lung = labels_lowres > 0
    labels = np.zeros(shape, np.uint8)
    if not lung.any():
        return labels
    # work inside the lungs' bounding box (plus one low-res voxel)
    box = _bbox(lung, (1 if zfactor > 1 else 0, 1, 1))
    full_box = tuple(slice(b.start * f, min(b.stop * f, n))
                     for b, f, n in zip(box, (zfactor, factor, factor), shape, strict=True))
    labels_box, aerated, lung_box = labels_lowres[box], air_lung[box], lung[box]
    near_struct = _SQUARE2D if zfactor == 1 else np.ones((3, 3, 3), bool)
    outer = ndimage.binary_dilation(aerated, structure=near_struct) & ~lung_box & ~near_airway[box]
    inner_edge = aerated & ~ndimage.binary_erosion(lung_box, structure=near_struct, border_value=1)
    labels_full_box = labels[full_box]
    _paint_blocks(labels_full_box, labels_box, factor, zfactor)
    near = ndimage.grey_dilation(labels_box, footprint=near_struct[1:2] if zfactor == 1 else near_struct)
    if factor == 1 and zfactor == 1:
        air = hu[full_box] < edge_hu
        labels_full_box[inner_edge & ~air] = 0
        labels_full_box[outer & air] = near[outer & air]
        return labels
    # border blocks: inner edge keeps its lung where air, outer band takes the neighbouring lung where air
    block_k, block_r, block_c = np.nonzero(inner_edge | outer)
    if block_k.size == 0:
        return labels
    value = np.where(inner_edge, labels_box, near)[block_k, block_r, block_c]
    offset_k, offset_r, offset_c = np.unravel_index(np.arange(zfactor * factor * factor), (zfactor, factor, factor))
    n_slices, n_rows, n_cols = labels_full_box.shape
    hu_box = hu[full_box]
    chunk = max(1, (1 << 21) // (zfactor * factor * factor))  # blocks per step: index arrays of a few MB
    for start in range(0, block_k.size, chunk):  # chunks of border blocks, not a loop over voxels
        part = slice(start, start + chunk)
        # partial blocks at the image's end: clipped indices repeat a voxel of the same block
        slices = np.minimum(block_k[part, None] * zfactor + offset_k, n_slices - 1)
        rows = np.minimum(block_r[part, None] * factor + offset_r, n_rows - 1)
        cols = np.minimum(block_c[part, None] * factor + offset_c, n_cols - 1)
        air = hu_box[slices, rows, cols] < edge_hu
        labels_full_box[slices, rows, cols] = np.where(air, value[part, None], np.uint8(0))
    return labels


def _paint_blocks(out: np.ndarray, values: np.ndarray, factor: int, zfactor: int = 1) -> None:
    """Write each voxel of ``values`` onto its block of ``zfactor`` slices and
    ``factor``×``factor`` pixels of ``out`` (a partial last block takes what fits)."""
    for offset_k in range(zfactor):  # zfactor·factor² strided views, not a loop over voxels
        for offset_r in range(factor):
            for offset_c in range(factor):
                view = out[offset_k::zfactor, offset_r::factor, offset_c::factor]
                view[...] = values[: view.shape[0], : view.shape[1], : view.shape[2]]


def _upsample(values: np.ndarray, factor: int, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour in-plane upsampling by ``factor``, cut to ``shape``."""
    if factor == 1:
        return values
    out = np.empty(shape, values.dtype)
    _paint_blocks(out, values, factor)
    return out


def _split_sides(lung, shape, pixel_mm, mid, lr_axis, lr_sign, slice_mm: float = 0.0) -> np.ndarray:
    """Label lung voxels 1 (right) / 2 (left); split components spanning both sides."""
    lab, n = ndimage.label(lung, structure=_CROSS3D)
    out = np.zeros(shape, np.uint8)
    if n == 0:
        return out
    # fraction of each component on each side of the per-slice body midline
    leftish = _left_of(mid, shape[lr_axis], lr_axis, lr_sign)
    vol = _count_where(lab, lung, n)
    nleft = _count_where(lab, np.broadcast_to(leftish, shape), n)
    frac_left = nleft / np.maximum(vol, 1)
    two_sided = (np.minimum(frac_left, 1 - frac_left) >= 0.15) & (vol >= 0.2 * vol[1:].max())
    two_sided[0] = False
    lut = np.zeros(n + 1, np.uint8)
    lut[1:] = np.where(frac_left[1:] > 0.5, 2, 1)
    out = lut[lab]
    if two_sided.any():
        comp = two_sided[lab]
        box = _bbox(comp, (0, 0, 0))
        mid_box = mid[box[0]] - box[lr_axis].start
        n_lr = box[lr_axis].stop - box[lr_axis].start
        out[box] = _split_touching(comp[box], out[box], pixel_mm, mid_box, lr_axis, lr_sign,
                                   _left_of(mid_box, n_lr, lr_axis, lr_sign), slice_mm)
    return out


def _left_of(mid: np.ndarray, n_lr: int, lr_axis: int, lr_sign: float) -> np.ndarray:
    """True where LPS x is larger than the per-slice midline ``mid`` (patient
    left); shape (slices, n_lr, 1) or (slices, 1, n_lr) by ``lr_axis``."""
    pos = np.arange(n_lr, dtype=np.float32)
    pshape = [1, 1, 1]
    pshape[lr_axis] = -1
    rel = pos.reshape(pshape) - mid.reshape(-1, 1, 1).astype(np.float32)
    return (rel * lr_sign) > 0


def _split_touching(comp, out, pixel_mm, mid, lr_axis, lr_sign, leftish, slice_mm: float = 0.0) -> np.ndarray:
    """Per-slice minimum cut of lungs that touch (anterior / posterior junction).

    In every slice, 2-D pieces of ``comp`` lying on one side of the midline
    take that side; a piece straddling it is cut along the array line (parallel
    to the anterior-posterior axis) that crosses the fewest lung voxels within
    30 mm of the body midline.
    """
    shape = comp.shape
    lab2, n2 = ndimage.label(comp, structure=_CROSS2D)
    lb = np.broadcast_to(leftish, shape)
    cnt = _count_where(lab2, comp, n2)
    nl = _count_where(lab2, lb, n2)
    frac = nl / np.maximum(cnt, 1)
    straddle = np.minimum(frac, 1 - frac) >= 0.05
    straddle[0] = False
    side = np.where(frac > 0.5, 2, 1).astype(np.uint8)
    side[0] = 0
    res = np.where(comp, side[lab2], out).astype(np.uint8)
    st = straddle[lab2]
    if st.any():
        row_axis = 3 - lr_axis
        prof = st.sum(axis=row_axis).astype(np.float64)  # (slices, lr positions)
        pos = np.arange(prof.shape[1], dtype=np.float64)[None, :]
        offset_mm = np.abs(pos - mid[:, None]) * pixel_mm[lr_axis - 1]
        cost = np.where(offset_mm <= 30.0, prof + offset_mm * 1e-3, np.inf)
        cut = _subpixel_cut(prof, np.argmin(cost, axis=1))  # per slice
        cut = _continuous_cut(cut, st.any(axis=(1, 2)), slice_mm, pixel_mm[lr_axis - 1])
        p_shape = [1, 1, 1]
        p_shape[lr_axis] = -1
        rel = (np.arange(shape[lr_axis], dtype=np.float64).reshape(p_shape) - cut.reshape(-1, 1, 1)) * lr_sign
        # a column the cut runs through goes to the side of the body midline it lies on
        left_of_cut = np.broadcast_to((rel > 0) | ((rel == 0) & leftish), shape)
        res[st] = np.where(left_of_cut[st], 2, 1)
    return res


def _continuous_cut(cut: np.ndarray, have: np.ndarray, slice_mm: float, col_mm: float) -> np.ndarray:
    """A slice's cut that jumps away from its neighbours' takes their median.

    The junction line is a continuous sheet along the body axis: within
    ±7.5 mm of a slice it moves by a few millimetres, not by a lung's tip.
    A slice whose cut lies more than 5 mm from the median cut of the
    straddling slices within ±7.5 mm (itself included, at least 5 of them)
    takes that median.
    ``have`` marks the slices with a straddling section; ``slice_mm = 0``
    (unknown) leaves the cuts alone.
    """
    if slice_mm <= 0 or have.sum() < 3:
        return cut
    half = max(1, int(round(7.5 / slice_mm)))
    padded = np.pad(np.where(have, cut, np.nan), half, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(windows, axis=1)
    # a median of fewer than 5 slices is no majority against a 2-slice jump
    support = np.count_nonzero(~np.isnan(windows), axis=1)
    jump = have & (support >= 5) & (np.abs(cut - median) * col_mm > 5.0)
    return np.where(jump, median, cut)


def _subpixel_cut(prof: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Sub-pixel position of each slice's fewest-lung-voxel cut.

    Where two lungs touch with nothing between them, the lung voxels a line
    crosses fall to a minimum at the contact (the gaps in front of and behind
    it are deepest there) and the contact lies between two columns, not on
    one.  The parabola through the best column and its two neighbours places
    the minimum within half a column of the best one, on the side of the
    neighbour crossing fewer voxels; equal counts on both sides keep it on
    the best column.

    Parameters
    ----------
    prof : ndarray, (slices, lr positions)
        Lung voxels crossed by each column.
    best : ndarray of int, (slices,)
        The chosen cut column per slice.

    Returns
    -------
    ndarray of float, (slices,)
        The cut position per slice (column index, in ``[best - 0.5, best + 0.5]``).
    """
    n_lr = prof.shape[1]
    inner = (best > 0) & (best < n_lr - 1)
    idx = np.clip(best, 1, n_lr - 2)[:, None]
    before, centre, after = (np.take_along_axis(prof, idx + d, axis=1)[:, 0] for d in (-1, 0, 1))
    curvature = before - 2.0 * centre + after
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(curvature > 0, (before - after) / (2.0 * curvature), 0.0)
    return best + np.where(inner, np.clip(offset, -0.5, 0.5), 0.0)


def _no_lung(ct: CTVolume, what: str) -> SegmentationError:
    return SegmentationError(
        f"Lung segmentation failed for {ct.meta.key}: {what}. The scan ({ct.shape[0]} slice(s), "
        f"HU {int(ct.hu.min())}..{int(ct.hu.max())}) may not cover the chest, or be a non-CT / "
        "mislabelled series. Potential fix: check that the series is a chest CT in Hounsfield units "
        "covering the lungs, or pass regions_from=<label file>."
    )
