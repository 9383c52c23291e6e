"""Plausibility checks on a lung mask: ``qc_flags`` for every result.

Computed after segmentation (any method) from the CT and the lung labels
alone.  Each check that fails adds a short flag name; an archive's suspicious
masks are then one filter away (``df[df.qc_flags != ""]``).  Flags:

``lung_volume``
    Total lung volume implausible for an adult over the covered length:
    below 1.0 L or above 10 L when apex and base are both covered; with
    partial coverage, a mean section above 600 cm² (more than the widest
    adult chest holds) or below 5 cm².
``right_left_ratio``
    Right / left volume outside [0.6, 1.8] (one lung missing, a lung taken
    for the other, outside air in one lung); checked when both apex and base
    are covered.
``mask_on_border``
    More than 5 % of the mask's in-plane outline lies on the image border or
    next to the outside-field padding: the field of view cuts the lungs.
``gas_in_mask``
    A connected piece of the mask (>= 1 mL) whose median HU is below -950:
    gas (bowel, stomach, outside air), or very severe emphysema.
``apex_not_covered`` / ``base_not_covered``
    The lungs reach the first / last slice with at least 10 % of their largest
    section: the scan stops inside the lung.
``trachea_air_hu``
    Mean HU of tracheal air outside -1000 ± 50: a calibration or
    reconstruction problem that shifts every HU band.  Checked when a
    trachea is found (an air tube above the lungs' hila, near the midline).
``noisy_image``
    Image noise above 55 HU (standard deviation in soft tissue, measured on
    the scan as given; the diagnostic scans in ``../shared/realdata``
    measure 17-36 HU): low-dose or sharp-kernel images, whose every HU band
    carries the noise (aerated lung is pushed into the GGO band).  Also set
    when the classical segmentation found its 2 mm working grid that noisy
    and segmented an in-plane mean: the mask holds (lung Dice >= 0.97 on
    phantoms with 60-120 HU of noise), but consolidation along the chest
    wall may be partly missed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..regions import RegionMap
from ..volume import CTVolume

__all__ = ["QC_FLAGS", "QCCheck", "qc_checks", "qc_flags"]

log = logging.getLogger(__name__)

#: Every flag name, in report order.
QC_FLAGS = (
    "lung_volume",
    "right_left_ratio",
    "mask_on_border",
    "gas_in_mask",
    "apex_not_covered",
    "base_not_covered",
    "trachea_air_hu",
    "noisy_image",
)

_CROSS2D = np.zeros((3, 3, 3), bool)
_CROSS2D[1] = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class QCCheck:
    """One failed check: its flag name and a sentence with the values seen."""

    flag: str
    message: str


def qc_flags(ct: CTVolume, regions: RegionMap) -> tuple[str, ...]:
    """Names of the failed plausibility checks (empty when the mask looks right)."""
    return tuple(c.flag for c in qc_checks(ct, regions))


def qc_checks(ct: CTVolume, regions: RegionMap) -> list[QCCheck]:
    """Run the plausibility checks on the lung mask of ``regions``.

    Parameters
    ----------
    ct : CTVolume
    regions : RegionMap
        Any region set on the CT grid; it is reduced to right/left lungs.

    Returns
    -------
    list of QCCheck
        The failed checks, in :data:`QC_FLAGS` order.
    """
    lungs = regions if regions.region_set == "lungs" else regions.to_lungs()
    codes = {name: code for code, name in lungs.names.items()}
    lung_codes = (codes.get("right", 1), codes.get("left", 2))
    tight = _mask_box(lungs.labels, lung_codes)
    if tight is None:
        return [QCCheck("lung_volume", "the lung mask is empty")]
    si = int(np.argmax(np.abs(ct.direction[2, :])))  # the cranio-caudal axis
    up = bool(ct.direction[2, si] > 0)  # index grows towards the head
    # everything below works inside the mask's box, one pixel wider in-plane
    box = tuple(s if k == si else slice(max(s.start - 1, 0), min(s.stop + 1, ct.shape[k]))
                for k, s in enumerate(tight))
    box_labels = lungs.labels[box]
    right, left = box_labels == lung_codes[0], box_labels == lung_codes[1]
    mask = right | left
    area = np.zeros(ct.shape[si], np.int64)  # voxels per cranio-caudal position
    area[box[si]] = np.count_nonzero(mask, axis=tuple(k for k in range(3) if k != si))
    vox_ml = ct.voxel_volume_ml
    out = _extent_checks(area, ct.spacing_mm[si], up, int(np.count_nonzero(right)), int(np.count_nonzero(left)),
                         vox_ml)
    # -- outline on the image border or the padding
    share = _border_share(ct.hu[box], mask, si, _on_image_border(box, ct.shape, si))
    if share > 0.05:
        out.append(QCCheck("mask_on_border", f"{100 * share:.0f} % of the mask's outline lies on the image "
                                             "border or the outside-field padding (the field of view cuts the lungs)"))
    # -- gas-like pieces
    gas = _gas_pieces(ct.hu[box], mask, vox_ml)
    if gas:
        out.append(QCCheck("gas_in_mask", "gas-like piece(s) in the mask (median HU, mL): "
                                          + ", ".join(f"{m:.0f} HU {v:.1f} mL" for m, v in gas)))
    del box_labels, right, left, mask
    no_apex, no_base = _not_covered(area, up)
    if no_apex:
        out.append(QCCheck("apex_not_covered", "the lungs reach the scan's top slice: the apex is not covered"))
    if no_base:
        out.append(QCCheck("base_not_covered", "the lungs reach the scan's bottom slice: the base is not covered"))
    # -- tracheal air
    trachea_hu = _trachea_mean_hu(ct, lungs.labels, lung_codes, tight, si, up)
    if trachea_hu is not None and abs(trachea_hu + 1000.0) > 50.0:
        out.append(QCCheck("trachea_air_hu", f"tracheal air reads {trachea_hu:.0f} HU (expected -1000 ± 50): "
                                             "a calibration or reconstruction problem shifts every HU band"))
    noisy = _noise_check(ct, lungs)
    if noisy is not None:
        out.append(noisy)
    for c in out:
        log.info("%s: qc %s: %s", ct.meta.key, c.flag, c.message)
    return out


def _noise_check(ct: CTVolume, lungs: RegionMap) -> QCCheck | None:
    """``noisy_image`` when the scan's soft-tissue noise exceeds 55 HU or the
    classical segmentation smoothed its working grid."""
    from .lungs import _NOISY_HU, _noise_sd

    noise_hu = _noise_sd(ct.hu)
    smooth_px = lungs.info.get("smoothing_px", 1)
    smoothed = isinstance(smooth_px, int) and smooth_px > 1
    if noise_hu <= _NOISY_HU and not smoothed:
        return None
    message = (f"image noise {noise_hu:.0f} HU in soft tissue (diagnostic scans: 17-36 HU): every HU band "
               "carries it (aerated lung is pushed into the GGO band)")
    if smoothed:
        message += (f"; the lungs were segmented on a {smooth_px}x{smooth_px}-pixel mean, and chest-wall "
                    "consolidation may be partly missed")
    return QCCheck("noisy_image", message)


def _mask_box(labels: np.ndarray, lung_codes: tuple[int, int]) -> tuple[slice, ...] | None:
    """Bounding box of the right and left labels; None when both are empty.

    When the map holds no other code than these two (the usual lungs map), the
    box of every labelled voxel is found from max-projections (a few fast
    reductions); otherwise from :func:`scipy.ndimage.find_objects`.
    """
    if labels.ndim == 3 and labels.size and min(lung_codes) >= 1 and int(labels.max()) <= max(lung_codes) \
            and set(lung_codes) == set(range(1, max(lung_codes) + 1)):
        return _nonzero_box(labels)
    boxes = ndimage.find_objects(labels, max_label=max(lung_codes))
    found = [boxes[code - 1] for code in lung_codes if code >= 1 and boxes[code - 1] is not None]
    if not found:
        return None
    return tuple(slice(min(b[ax].start for b in found), max(b[ax].stop for b in found)) for ax in range(3))


def _nonzero_box(labels: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box (slice, row, column) of the non-zero voxels of a 3-D array; None when there is none."""
    per_slice = np.flatnonzero(labels.reshape(labels.shape[0], -1).max(axis=1))
    if not per_slice.size:
        return None
    first, last = int(per_slice[0]), int(per_slice[-1])
    plane = labels[first:last + 1].max(axis=0)  # (row, column) projection of the occupied slices
    rows, cols = np.flatnonzero(plane.max(axis=1)), np.flatnonzero(plane.max(axis=0))
    return slice(first, last + 1), slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _on_image_border(box: tuple[slice, ...], shape: tuple[int, ...], si: int) -> tuple[bool, bool, bool, bool]:
    """Whether the box's first / last row and first / last column (in-plane, axial order) are the image's."""
    rows, cols = (box[k] for k in range(3) if k != si)
    n_rows, n_cols = (shape[k] for k in range(3) if k != si)
    return rows.start == 0, rows.stop == n_rows, cols.start == 0, cols.stop == n_cols


def _not_covered(area: np.ndarray, up: bool) -> tuple[bool, bool]:
    """(apex, base) not covered: the lungs reach the first / last position with >= 10 % of their largest section."""
    ks = np.flatnonzero(area)
    n_pos = area.size
    top_k, bottom_k = (ks[-1], ks[0]) if up else (ks[0], ks[-1])
    end_top, end_bottom = (n_pos - 1, 0) if up else (0, n_pos - 1)
    big = area.max()
    return (bool(top_k == end_top and area[top_k] >= 0.1 * big),
            bool(bottom_k == end_bottom and area[bottom_k] >= 0.1 * big))


def _extent_checks(area: np.ndarray, slice_mm: float, up: bool, n_right: int, n_left: int,
                   vox_ml: float) -> list[QCCheck]:
    """Volume for the covered length and the right / left ratio (``area``: voxels per position)."""
    out: list[QCCheck] = []
    no_apex, no_base = _not_covered(area, up)
    total_ml = float((n_right + n_left) * vox_ml)
    right_ml, left_ml = float(n_right * vox_ml), float(n_left * vox_ml)
    length_cm = np.count_nonzero(area) * slice_mm / 10.0
    mean_section_cm2 = total_ml / max(length_cm, 1e-6)
    if not (no_apex or no_base):
        if not 1000.0 <= total_ml <= 10000.0:
            out.append(QCCheck("lung_volume", f"total lung volume {total_ml:.0f} mL with apex and base covered "
                                              "(plausible adult range 1000-10000 mL)"))
        ratio = right_ml / left_ml if left_ml > 0 else np.inf
        if not 0.6 <= ratio <= 1.8:
            out.append(QCCheck("right_left_ratio", f"right/left volume ratio {ratio:.2f} "
                                                   f"({right_ml:.0f} / {left_ml:.0f} mL; plausible 0.6-1.8)"))
    elif not 5.0 <= mean_section_cm2 <= 600.0:
        out.append(QCCheck("lung_volume", f"lung volume {total_ml:.0f} mL over {length_cm:.1f} cm covered "
                                          f"(mean section {mean_section_cm2:.0f} cm²; plausible 5-600 cm²)"))
    return out


def _axial(a: np.ndarray, si: int) -> np.ndarray:
    return np.moveaxis(a, si, 0)


def _border_share(hu: np.ndarray, mask: np.ndarray, si: int, on_border: tuple[bool, bool, bool, bool]) -> float:
    """Share of the in-plane outline of ``mask`` on the image border or next to padding.

    ``hu`` and ``mask`` are cropped to the mask's box, one pixel wider than
    the mask wherever that box is not at the image border (``on_border``:
    first / last row, first / last column), so the erosion sees the same
    neighbours as on the whole image.
    """
    m = _axial(mask, si)
    h = _axial(hu, si)
    outline = m & ~_erode_cross2d(m)
    n = int(np.count_nonzero(outline))
    if n == 0:
        return 0.0
    frame = np.zeros(m.shape[1:], bool)
    first_row, last_row, first_col, last_col = on_border
    frame[0, :] |= first_row
    frame[-1, :] |= last_row
    frame[:, 0] |= first_col
    frame[:, -1] |= last_col
    edge = np.broadcast_to(frame, m.shape) & outline
    pad = h < -1100  # outside-field padding (and interpolation undershoot)
    if pad.any():
        edge = edge | (outline & _dilate_cross2d(pad))
    return float(np.count_nonzero(edge)) / n


def _erode_cross2d(m: np.ndarray) -> np.ndarray:
    """In-plane erosion of a (slice, row, column) boolean array by the 4-neighbour cross, outside = False.

    Equal to ``ndimage.binary_erosion(m, structure=_CROSS2D, border_value=0)``,
    from four shifted ANDs instead of a neighbourhood scan.
    """
    out = m.copy()
    out[:, 1:, :] &= m[:, :-1, :]
    out[:, :-1, :] &= m[:, 1:, :]
    out[:, :, 1:] &= m[:, :, :-1]
    out[:, :, :-1] &= m[:, :, 1:]
    out[:, 0, :] = out[:, -1, :] = False
    out[:, :, 0] = out[:, :, -1] = False
    return out


def _dilate_cross2d(m: np.ndarray) -> np.ndarray:
    """In-plane dilation of a (slice, row, column) boolean array by the 4-neighbour cross.

    Equal to ``ndimage.binary_dilation(m, structure=_CROSS2D)``, from four
    shifted ORs.
    """
    out = m.copy()
    out[:, 1:, :] |= m[:, :-1, :]
    out[:, :-1, :] |= m[:, 1:, :]
    out[:, :, 1:] |= m[:, :, :-1]
    out[:, :, :-1] |= m[:, :, 1:]
    return out


def _gas_pieces(hu: np.ndarray, mask: np.ndarray, vox_ml: float) -> list[tuple[float, float]]:
    """(median HU, volume mL) of the mask's connected pieces (>= 1 mL) with median below -950 HU."""
    # such a piece holds >= 0.5 mL below -950 HU: without that much in the whole mask (a clean
    # lung), there is nothing to label
    if np.count_nonzero(hu[mask] < -950) * vox_ml < 0.5:
        return []
    found = ndimage.find_objects(mask.view(np.uint8) if mask.dtype == bool else (mask > 0).view(np.uint8))
    if not found or found[0] is None:
        return []
    crop = found[0]  # work inside the mask's bounding box only
    mask, hu = mask[crop], hu[crop]
    lab, n = ndimage.label(mask)
    if n == 0:
        return []
    inside = lab[mask]
    size = np.bincount(inside, minlength=n + 1)
    # a median below -950 HU needs at least half the piece below -950 HU: the exact median (a sort)
    # is computed only for pieces that pass this count, never for the lungs themselves
    below = np.bincount(inside[hu[mask] < -950], minlength=n + 1)
    boxes = ndimage.find_objects(lab)
    out = []
    for k in np.flatnonzero((size * vox_ml >= 1.0) & (2 * below >= size)):  # a handful of pieces
        if k == 0:
            continue
        box = boxes[k - 1]  # the median over the piece's bounding box only, not a pass over the volume
        med = float(np.median(hu[box][lab[box] == k]))
        if med < -950.0:
            out.append((med, float(size[k] * vox_ml)))
    return out


def _trachea_mean_hu(ct: CTVolume, labels: np.ndarray, lung_codes: tuple[int, int], box: tuple[slice, ...],
                     si: int, up: bool) -> float | None:
    """Mean HU of the trachea's lumen core, or None when no trachea is seen.

    Above the lungs' upper third, the trachea is a round air section of
    1-6 cm² near the middle between the lungs (centroid within 30 mm across
    and 60 mm front-back), outside the lung mask, in at least 3 consecutive
    positions.  Sections are looked for within 40 mm more than that around
    the middle (a section reaching further is not round); one touching that
    window or the image border is not the trachea.  The core (1.5 mm away
    from the wall) is averaged.
    """
    hu = _axial(ct.hu, si)
    lab = _axial(labels, si)
    slices, rows, cols = box[si], *(box[k] for k in range(3) if k != si)
    n_pos = hu.shape[0]
    first_k, last_k = (slices.start, slices.stop - 1) if up else (n_pos - slices.stop, n_pos - 1 - slices.start)
    k0 = first_k + int(0.6 * (last_k - first_k))  # upper 40 % of the lungs and above
    if n_pos - k0 < 3:
        return None
    spacing_mm = [ct.spacing_mm[k] for k in (si, *(k for k in range(3) if k != si))]
    centre_r, centre_c = 0.5 * (rows.start + rows.stop - 1), 0.5 * (cols.start + cols.stop - 1)
    window = (slice(k0, n_pos) if up else slice(0, n_pos - k0),
              _around(centre_r, (60.0 + 40.0) / spacing_mm[1], hu.shape[1]),
              _around(centre_c, (30.0 + 40.0) / spacing_mm[2], hu.shape[2]))
    sub_hu = hu[window] if up else hu[window][::-1]
    sub_lab = lab[window] if up else lab[window][::-1]
    cand = (sub_hu < -700) & (sub_lab != lung_codes[0]) & (sub_lab != lung_codes[1])
    sections, n = ndimage.label(cand, structure=_CROSS2D)
    if n == 0:
        return None
    area_cm2 = np.bincount(sections[cand], minlength=n + 1) * spacing_mm[1] * spacing_mm[2] / 100.0
    edge = np.zeros(n + 1, bool)
    for e in (sections[:, 0, :], sections[:, -1, :], sections[:, :, 0], sections[:, :, -1]):
        edge[e] = True
    ok = (area_cm2 >= 1.0) & (area_cm2 <= 6.0) & ~edge
    ok[0] = False
    if not ok.any():
        return None
    # centroids of the candidate sections only (a few), from their own pixels: no pass per coordinate
    sel = ok[sections]
    pos = np.nonzero(sel)
    lab_sel = sections[sel]
    count = np.maximum(np.bincount(lab_sel, minlength=n + 1), 1)
    cen = np.zeros((n + 1, 3))
    for axis, start in ((1, window[1].start), (2, window[2].start)):
        cen[:, axis] = np.bincount(lab_sel, weights=pos[axis], minlength=n + 1) / count + start
    near = ((np.abs(cen[:, 2] - centre_c) * spacing_mm[2] <= 30.0)
            & (np.abs(cen[:, 1] - centre_r) * spacing_mm[1] <= 60.0))
    ok &= near
    # the kept sections' pixels, scattered from the candidates' positions (no second pass over the window)
    chosen = ok[lab_sel]
    keep = np.zeros(sections.shape, bool)
    keep[tuple(p[chosen] for p in pos)] = True
    if np.unique(pos[0][chosen]).size < 3:
        return None
    r = max(1, int(round(1.5 / min(spacing_mm[1], spacing_mm[2]))))
    core = ndimage.binary_erosion(keep, structure=_CROSS2D, iterations=r)
    if core.sum() < 10:
        return None
    return float(sub_hu[core].mean())


def _around(centre: float, half_px: float, n: int) -> slice:
    return slice(max(int(math.floor(centre - half_px)), 0), min(int(math.ceil(centre + half_px)) + 1, n))
