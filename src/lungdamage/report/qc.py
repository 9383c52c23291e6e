"""QC montage: axial slices at fixed fractions of lung height plus one coronal slice.

The image is composed as an RGB array with NumPy (grey-scale lung window,
damage bands as translucent colour, region outlines) so that every displayed
pixel comes from one known voxel (nearest neighbour).  matplotlib (Agg, no
display) only adds the title, panel captions, numbers and legend in the
margins; :func:`render_qc` writes a JSON sidecar with the PNG box of every
panel and the voxel index behind every displayed row and column, so a voxel
``(slice, row, column)`` maps to a PNG pixel exactly (:func:`voxel_to_pixel`).

Display convention (radiological): axial panels have the patient's right on
the image left and anterior at the top; the coronal panel has the patient's
right on the left and superior at the top.  The orientation is taken from the
CT's direction cosines (nearest patient axis), so sagittal or feet-first
acquisitions display the same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..regions import RegionMap
from ..score import ScanResult, Scheme
from ..volume import CTVolume
from ._colors import band_colors, region_color

__all__ = [
    "LUNG_WINDOW_HU",
    "DEFAULT_FRACTIONS",
    "Panel",
    "plan_panels",
    "render_montage",
    "render_qc",
    "voxel_to_pixel",
]

log = logging.getLogger(__name__)

#: Lung window (level -600, width 1500) as (lowest, highest) HU shown.
LUNG_WINDOW_HU = (-1350, 150)
#: Axial slices at these fractions of the lungs' cranio-caudal extent (0 = apex, 1 = base).
DEFAULT_FRACTIONS = (0.2, 0.35, 0.5, 0.65, 0.8)
#: The coronal panel is drawn only when it is at least this many pixels high (not for thin slabs).
MIN_CORONAL_PX = 24

_BG = (18, 18, 18)
#: Band voxels the lesion measure did not count: tubular (vessels, airway walls) or hilar, and the rest
#: (partial-volume shells, fissures, opacities below the minimum size).  Cool colours: never damage.
EXCLUDED_TUBE_RGB = (0, 200, 255)
EXCLUDED_OTHER_RGB = (150, 90, 255)
_TEXT = "#f0f0f0"
_DPI = 100


@dataclass(frozen=True)
class Panel:
    """One displayed plane and how its pixels map to voxels.

    Attributes
    ----------
    kind : {"axial", "coronal"}
    label : str
        Caption, e.g. ``"axial 35 % (slice 41)"``.
    fixed_axis, index : int
        The array axis held fixed and its voxel index.
    row_axis, col_axis : int
        Array axes shown along the panel's rows (top to bottom) and columns.
    row_index, col_index : ndarray of int
        Voxel index (along ``row_axis`` / ``col_axis``) shown in each displayed
        row / column (nearest neighbour; may repeat or skip voxels).
    box : (top, left, height, width)
        Position of the panel's pixels in the PNG (set by the layout).
    orientation : (top, bottom, left, right)
        Patient-direction letters at the panel edges.
    """

    kind: str
    label: str
    fixed_axis: int
    index: int
    row_axis: int
    col_axis: int
    row_index: np.ndarray
    col_index: np.ndarray
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
    orientation: tuple[str, str, str, str] = ("A", "P", "R", "L")

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.row_index), len(self.col_index))

    def take(self, volume: np.ndarray) -> np.ndarray:
        """The displayed plane of a (slice, row, column) ``volume``, shape ``self.shape``."""
        idx: list[Any] = [None, None, None]
        idx[self.fixed_axis] = self.index
        idx[self.row_axis] = self.row_index[:, None]
        idx[self.col_axis] = self.col_index[None, :]
        return volume[tuple(idx)]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["row_index"] = [int(v) for v in self.row_index]
        d["col_index"] = [int(v) for v in self.col_index]
        d["box"] = [int(v) for v in self.box]
        d["orientation"] = list(self.orientation)
        return d


def voxel_to_pixel(panel: Panel | Mapping[str, Any], voxel: Sequence[int]) -> tuple[int, int] | None:
    """PNG pixel ``(y, x)`` showing ``voxel`` (slice, row, column) in ``panel``.

    ``panel`` is a :class:`Panel` or its sidecar dict.  Returns the middle
    pixel of the run of pixels showing that voxel, or ``None`` when the voxel
    is not on the panel's plane or outside its displayed field.
    """
    p = panel.to_dict() if isinstance(panel, Panel) else panel
    if int(voxel[p["fixed_axis"]]) != int(p["index"]):
        return None
    rows = np.flatnonzero(np.asarray(p["row_index"]) == int(voxel[p["row_axis"]]))
    cols = np.flatnonzero(np.asarray(p["col_index"]) == int(voxel[p["col_axis"]]))
    if rows.size == 0 or cols.size == 0:
        return None
    top, left = int(p["box"][0]), int(p["box"][1])
    return top + int(rows[rows.size // 2]), left + int(cols[cols.size // 2])


# ----------------------------------------------------------------------------- geometry


def _patient_axes(direction: np.ndarray) -> dict[int, tuple[int, int]]:
    """For each LPS axis (0 x=L, 1 y=P, 2 z=S): (array axis nearest to it, +1/-1)."""
    d = np.asarray(direction, dtype=np.float64)
    dominant = np.argmax(np.abs(d), axis=0)
    if sorted(dominant.tolist()) != [0, 1, 2]:
        # strongly oblique: fall back to the usual (slice, row, column) = (z, y, x)
        dominant = np.array([2, 1, 0])
    return {int(m): (a, 1 if d[m, a] > 0 else -1) for a, m in enumerate(dominant)}


def _display_index(n_px: int, lo: int, voxels_per_px: float, n_axis: int, sign: int) -> np.ndarray:
    """Voxel index along an array axis for each of ``n_px`` display pixels.

    Pixels walk the patient axis in its positive direction from canonical index
    ``lo``; ``sign`` < 0 means the array axis runs the other way.
    """
    c = lo + np.floor((np.arange(n_px) + 0.5) * voxels_per_px).astype(np.int64)
    c = np.clip(c, 0, n_axis - 1)
    return c if sign > 0 else n_axis - 1 - c


def plan_panels(
    ct: CTVolume,
    regions: RegionMap,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    coronal: bool = True,
    panel_px: int = 320,
    margin_mm: float = 15.0,
) -> list[Panel]:
    """Choose the planes of the montage and their voxel-to-pixel sampling.

    Parameters
    ----------
    ct, regions :
        The CT and its region map (same grid).
    fractions : sequence of float
        Axial planes at these fractions of the lungs' cranio-caudal extent,
        0 = most superior lung slice (apex), 1 = most inferior (base).  A
        slice reached by several fractions (few slices) is shown once.
    coronal : bool
        Add one coronal plane through the lungs' antero-posterior centre (not
        for a slab whose coronal plane would be under ``MIN_CORONAL_PX`` high).
    panel_px : int
        Each panel fits in a ``panel_px`` square, keeping the mm aspect ratio.
    margin_mm : float
        Field shown around the lungs' bounding box (whole field if no lung).

    Returns
    -------
    list of Panel
        ``box`` still unset (0); :func:`render_montage` lays them out.
    """
    lung = regions.labels > 0
    field = _Field.around(ct, lung, margin_mm)
    panels = _axial_panels(ct, field, fractions, panel_px)
    # a coronal plane of a thin slab is a strip a few pixels high: left out (the axial panels show it all)
    k_co = panel_px / max(field.extent_mm(0), field.extent_mm(2))
    if coronal and field.extent_mm(2) * k_co >= MIN_CORONAL_PX:
        panels.append(_coronal_panel(field, lung, k_co))
    return panels


@dataclass(frozen=True)
class _Field:
    """The field shown: per patient axis ``m`` (0 x, 1 y, 2 z), the array axis and sign (``axes``),
    the shown canonical index range ``lo_hi[m]`` and the lungs' own range ``lung_lo_hi[m]``
    (canonical: positive patient direction)."""

    axes: Mapping[int, tuple[int, int]]
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    lo_hi: dict[int, tuple[int, int]]
    lung_lo_hi: dict[int, tuple[int, int]]

    @classmethod
    def around(cls, ct: CTVolume, lung: np.ndarray, margin_mm: float) -> _Field:
        """The lungs' bounding box plus ``margin_mm`` (the whole field if no lung)."""
        axes = _patient_axes(ct.direction)
        lo_hi: dict[int, tuple[int, int]] = {}
        lung_lo_hi: dict[int, tuple[int, int]] = {}
        for m in range(3):
            a, sign = axes[m]
            n = ct.shape[a]
            other = tuple(i for i in range(3) if i != a)
            present = np.flatnonzero(lung.any(axis=other)) if lung.any() else np.arange(n)
            if sign < 0:
                present = np.sort(n - 1 - present)
            first, last = int(present[0]), int(present[-1])
            lung_lo_hi[m] = (first, last)
            pad = int(math.ceil(margin_mm / ct.spacing_mm[a]))
            lo_hi[m] = (max(first - pad, 0), min(last + pad + 1, n))
        return cls(axes, ct.shape, ct.spacing_mm, lo_hi, lung_lo_hi)

    def extent_mm(self, m: int) -> float:
        lo, hi = self.lo_hi[m]
        return (hi - lo) * self.spacing_mm[self.axes[m][0]]

    def axis_index(self, m: int, px_per_mm: float, *, reverse: bool = False) -> np.ndarray:
        """Voxel index along patient axis ``m`` of each display pixel at ``px_per_mm``."""
        a, sign = self.axes[m]
        lo, hi = self.lo_hi[m]
        n_px = max(int(round(self.extent_mm(m) * px_per_mm)), 1)
        voxels_per_px = (hi - lo) / n_px
        if reverse:  # walk the patient axis in its negative direction (e.g. superior at top)
            c = hi - 1 - np.floor((np.arange(n_px) + 0.5) * voxels_per_px).astype(np.int64)
            c = np.clip(c, 0, self.shape[a] - 1)
            return c if sign > 0 else self.shape[a] - 1 - c
        return _display_index(n_px, lo, voxels_per_px, self.shape[a], sign)


def _axial_panels(ct: CTVolume, field: _Field, fractions: Sequence[float], panel_px: int) -> list[Panel]:
    """Axial planes at ``fractions`` of the lungs' height, each slice once."""
    axes = field.axes
    za, zsign = axes[2]
    apex, base = field.lung_lo_hi[2][1], field.lung_lo_hi[2][0]  # canonical: larger = more superior
    k_ax = panel_px / max(field.extent_mm(0), field.extent_mm(1))
    rows_ax = field.axis_index(1, k_ax)  # anterior (low y) at top
    cols_ax = field.axis_index(0, k_ax)  # patient right (low x) at left
    panels: list[Panel] = []
    seen_slices: set[int] = set()
    for f in fractions:
        c = int(round(apex - float(f) * (apex - base)))
        index = c if zsign > 0 else field.shape[za] - 1 - c
        if index in seen_slices:  # few slices: show each once, never the same slice twice
            continue
        seen_slices.add(index)
        z_mm = float(ct.index_to_lps(np.array([index if a == za else 0 for a in range(3)]))[2])
        panels.append(
            Panel(
                "axial",
                f"axial {100 * float(f):.0f} % apex→base · slice {index} · z {z_mm:.1f} mm",
                za, int(index), axes[1][0], axes[0][0], rows_ax, cols_ax,
                orientation=("A", "P", "R", "L"),
            )
        )
    return panels


def _coronal_panel(field: _Field, lung: np.ndarray, k_co: float) -> Panel:
    """The coronal plane with the most lung voxels near the lungs' antero-posterior centre."""
    axes = field.axes
    ya = axes[1][0]
    others = tuple(i for i in range(3) if i != ya)
    if np.flatnonzero(lung.any(axis=others)).size:
        per_plane = lung.sum(axis=others)
        centre = int(round(np.average(np.arange(field.shape[ya]), weights=per_plane)))
    else:
        centre = field.shape[ya] // 2
    return Panel(
        "coronal",
        f"coronal · row {centre} (AP centre of the lungs)" if ya == 1 else f"coronal · index {centre}",
        ya, centre, axes[2][0], axes[0][0], field.axis_index(2, k_co, reverse=True), field.axis_index(0, k_co),
        orientation=("S", "I", "R", "L"),
    )


# ----------------------------------------------------------------------------- rendering


def _render_panel(
    ct: CTVolume,
    regions: RegionMap,
    scheme: Scheme,
    overlays: Sequence[tuple[int, tuple[int, int, int]]],
    region_lut: np.ndarray,
    panel: Panel,
    *,
    window_hu: tuple[float, float],
    alpha: float,
    outline_px: int = 2,
    lesion_classes: np.ndarray | None = None,
) -> np.ndarray:
    """RGB uint8 image (rows, cols, 3) of one panel; region outlines ``outline_px`` wide."""
    hu = panel.take(ct.hu)
    lab = panel.take(regions.labels)
    lo, hi = window_hu
    grey = np.clip((hu.astype(np.float32) - lo) * np.float32(255.0 / (hi - lo)), 0, 255)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    band = scheme.band_index(hu)
    inside = lab > 0
    cls = panel.take(lesion_classes) if lesion_classes is not None else None
    for k, color in overlays:
        m = inside & (band == k)
        if cls is not None:  # damage colours on lesion voxels only; the rest of the band shows why not
            m &= (cls == 1) | (cls == 0)
        rgb[m] = (1.0 - alpha) * rgb[m] + alpha * np.asarray(color, np.float32)
    if cls is not None:
        for m, color in ((inside & ((cls == 3) | (cls == 5)), EXCLUDED_TUBE_RGB),  # tubular or hilar
                         (inside & ((cls == 2) | (cls == 4)), EXCLUDED_OTHER_RGB)):
            rgb[m] = (1.0 - alpha) * rgb[m] + alpha * np.asarray(color, np.float32)
    # outlines on the display grid: 1 px on the inner side of every region border (a 2-px line in the
    # two regions' colours between regions) plus ``outline_px - 1`` px just outside the lungs' outer
    # contour, so the contour is ``outline_px`` wide yet no lung pixel is hidden that was visible before
    from scipy import ndimage

    cross = ndimage.generate_binary_structure(2, 1)  # 4-neighbours
    near_other = (ndimage.maximum_filter(lab, footprint=cross, mode="nearest") != lab) | (
        ndimage.minimum_filter(lab, footprint=cross, mode="nearest") != lab
    )
    edge = inside & near_other
    rgb[edge] = region_lut[lab[edge]]
    if outline_px > 1:
        ring_lab = ndimage.maximum_filter(lab, size=2 * (int(outline_px) - 1) + 1, mode="nearest")
        ring = ~inside & (ring_lab > 0)
        rgb[ring] = region_lut[ring_lab[ring]]
    return np.rint(rgb).astype(np.uint8)


def outline_width_px(panel_px: int) -> int:
    """Width of the lungs' outer contour: 3 px on 320 px panels, growing with the panel (640 px: 5 px)."""
    return max(2, int(round(panel_px / 120)))


@dataclass(frozen=True)
class _Layout:
    width: int
    height: int
    title_h: int = 78
    header_h: int = 22
    gap: int = 12
    margin: int = 12
    side_w: int = 380
    ncols: int = 3


def render_montage(
    ct: CTVolume,
    regions: RegionMap,
    result: ScanResult,
    panels: Sequence[Panel],
    *,
    panel_px: int = 320,
    window_hu: tuple[float, float] = LUNG_WINDOW_HU,
    alpha: float = 0.45,
    lesion_classes: np.ndarray | None = None,
) -> tuple[np.ndarray, list[Panel], _Layout]:
    """Compose the montage canvas (RGB uint8, PNG-sized) and place the panels.

    ``lesion_classes`` (:attr:`lungdamage.score.lesion.LesionMap.classes`):
    damage colours only on lesion voxels; band voxels not counted as lesion
    in :data:`EXCLUDED_TUBE_RGB` (tubular or hilar) or :data:`EXCLUDED_OTHER_RGB`.
    Returns the canvas, the panels with ``box`` set, and the layout.
    """
    scheme = result.scheme
    colors = band_colors(scheme)
    names = list(scheme.band_names)
    overlays = [(names.index(d), colors[d]) for d in scheme.damage]
    region_lut = np.zeros((256, 3), np.float32)
    for code, name in regions.names.items():
        region_lut[code] = region_color(name)

    ncols = min(3, max(len(panels), 1))
    nrows = max(math.ceil(len(panels) / ncols), 1)
    lay = _Layout(0, 0, ncols=ncols)
    width = lay.margin + ncols * (panel_px + lay.gap) + lay.side_w
    height = lay.title_h + nrows * (lay.header_h + panel_px + lay.gap) + lay.margin
    height = max(height, 560)
    lay = dataclasses.replace(lay, width=width, height=height)
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = _BG
    placed = []
    for i, p in enumerate(panels):
        r, c = divmod(i, ncols)
        top = lay.title_h + r * (lay.header_h + panel_px + lay.gap) + lay.header_h
        left = lay.margin + c * (panel_px + lay.gap)
        canvas[top: top + panel_px, left: left + panel_px] = 0
        img = _render_panel(ct, regions, scheme, overlays, region_lut, p, window_hu=window_hu, alpha=alpha,
                            outline_px=outline_width_px(panel_px),
                            lesion_classes=lesion_classes)
        h, w = img.shape[:2]
        y0, x0 = top + (panel_px - h) // 2, left + (panel_px - w) // 2
        canvas[y0: y0 + h, x0: x0 + w] = img
        placed.append(dataclasses.replace(p, box=(y0, x0, h, w)))
    return canvas, placed, lay


def _seen_color(band, color, window_hu, alpha) -> np.ndarray:
    """The overlay colour as it appears over the grey of the band's middle HU (RGB 0-1)."""
    lo = band.lo_hu if math.isfinite(band.lo_hu) else band.hi_hu - 100
    hi = band.hi_hu if math.isfinite(band.hi_hu) else band.lo_hu + 100
    grey = np.clip(((lo + hi) / 2 - window_hu[0]) * 255.0 / (window_hu[1] - window_hu[0]), 0, 255)
    return ((1 - alpha) * grey + alpha * np.asarray(color, float)) / 255.0


def _fmt(v: float) -> str:
    return "   -" if v is None or not np.isfinite(v) else f"{v:5.1f}"


def _numbers_text(result: ScanResult) -> str:
    df = result.to_frame()
    damage = list(result.scheme.damage)
    head = f"{'region':<7}{'vol mL':>8}{'damage':>8}" + "".join(f"{d[:8]:>9}" for d in damage) + f"{'lesion':>8}"
    lines = [head]
    for _, row in df.iterrows():
        vals = f"{row['volume_ml']:8.0f}{_fmt(row['damage_pct']):>8}" + "".join(
            f"{_fmt(row[f'{d}_pct']):>9}" for d in damage
        ) + f"{_fmt(row.get('lesion_pct', np.nan)):>8}"
        lines.append(f"{row['region']:<7}{vals}")
    return "\n".join(lines)


def _title_lines(ct: CTVolume, regions: RegionMap, result: ScanResult) -> list[str]:
    m = ct.meta
    date = m.study_date or "-"
    if len(date) == 8 and date.isdigit():  # DICOM YYYYMMDD as ISO, as in every report
        date = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    from ..io._dicom_headers import shorten

    who = f"patient {shorten(m.patient_id or '-', 64)}  ·  study date {date}"
    if m.series_description:
        who += f"  ·  {shorten(m.series_description, 120)}"
    series = f"series {m.series_uid or m.source or '<in-memory volume>'}"
    method = (
        f"method {result.method}  ·  regions: {result.region_set} ({', '.join(regions.names.values())})"
        f"  ·  scheme {result.scheme.name}: damage = {' + '.join(result.scheme.damage) or '-'}"
    )
    return [who, series, method]


def _text(fig, x: float, y: float, text: str, **kw):
    """``fig.text`` of literal text: ``$`` in a patient ID or series description is not TeX math."""
    return fig.text(x, y, text, parse_math=False, usetex=False, **kw)


def render_qc(
    ct: CTVolume,
    regions: RegionMap,
    result: ScanResult,
    path: str | Path,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    coronal: bool = True,
    panel_px: int = 320,
    window_hu: tuple[float, float] = LUNG_WINDOW_HU,
    alpha: float = 0.45,
    thumbnail: str | Path | None = None,
    thumbnail_px: int = 160,
    lesions: bool = True,
    lesion_map: Any = None,
) -> dict[str, Path]:
    """Write the QC montage PNG, its JSON sidecar and optionally a thumbnail.

    Parameters
    ----------
    ct, regions, result :
        The scan, its region map and its scores (``result.scheme`` gives the
        damage bands drawn as colour).
    path : path
        PNG to write; the sidecar is ``path`` with suffix ``.json``.
    fractions, coronal, panel_px :
        See :func:`plan_panels`.
    window_hu : (low, high)
        Grey-scale window (default lung window, level -600 / width 1500).
    alpha : float
        Opacity of the damage colours over the grey image (0-1).
    thumbnail : path, optional
        Also write the middle axial panel, at most ``thumbnail_px`` wide, here.
    lesions : bool
        When the result carries the lesion measure (``result.params["lesion"]``),
        draw the damage colours on lesion voxels only and show the band voxels
        that were not counted as lesion in two cool colours (tubular; shell,
        thin or small), recomputed with the result's own lesion parameters.
    lesion_map : LesionMap, optional
        The lesion map the result was scored from
        (:attr:`lungdamage.pipeline.Analysis.lesions`): its classes are drawn
        without running the lesion filter again.  Ignored (recomputed) when
        its parameters are not the result's.

    Returns
    -------
    dict
        ``{"qc_png": ..., "qc_json": ..., ["thumbnail": ...]}``.
    """
    regions.check_grid(ct.shape, where=ct.meta.key)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    panels = plan_panels(ct, regions, fractions=fractions, coronal=coronal, panel_px=panel_px)
    if len(panels) == 1:  # a single slice (or a thin slab): one large panel instead of copies of it
        panel_px *= 2
        panels = plan_panels(ct, regions, fractions=fractions, coronal=coronal, panel_px=panel_px)
    lesion_classes = _lesion_classes(ct, regions, result, lesion_map) if lesions else None
    canvas, panels, lay = render_montage(
        ct, regions, result, panels, panel_px=panel_px, window_hu=window_hu, alpha=alpha,
        lesion_classes=lesion_classes,
    )
    fig = _figure(canvas, lay)
    at = _FigurePosition(lay.width, lay.height)
    _draw_titles(fig, at, ct, regions, result, panels, lay, panel_px)
    side_x, y = _draw_side_text(fig, at, ct, result, lay, panel_px, window_hu)
    _draw_legend(fig, at, side_x, y, result, regions, lesion_classes, window_hu, alpha)
    fig.savefig(path, dpi=_DPI, facecolor=fig.get_facecolor())
    json_path = _write_sidecar(path, lay, panels, result, regions, window_hu, alpha, lesion_classes)
    out = {"qc_png": path, "qc_json": json_path}
    if thumbnail is not None:
        out["thumbnail"] = _write_thumbnail(canvas, panels, Path(thumbnail), thumbnail_px)
    log.debug("wrote QC montage %s", path)
    return out


def _lesion_classes(ct: CTVolume, regions: RegionMap, result: ScanResult, lesion_map: Any) -> np.ndarray | None:
    """Lesion classes of the band voxels when the result carries the lesion measure, else None."""
    lesion_opts = result.params.get("lesion")
    if lesion_opts is None:
        return None
    from ..score import scan_lesions
    from ..score.lesion import lesion_classes as _classes

    lung = regions.lung_mask
    lesion_map = scan_lesions(ct, regions, lesion_opts, reuse=lesion_map)
    return _classes(ct.hu, lung, lesion_map)


@dataclass(frozen=True)
class _FigurePosition:
    """PNG pixel (x, y) -> figure fraction of a ``width_px`` × ``height_px`` figure."""

    width_px: int
    height_px: int

    def __call__(self, x_px: float, y_px: float) -> tuple[float, float]:
        return x_px / self.width_px, 1.0 - y_px / self.height_px


def _figure(canvas: np.ndarray, lay: _Layout) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend switch, no display)
    showing the composed RGB ``canvas`` pixel for pixel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    background = (_BG[0] / 255, _BG[1] / 255, _BG[2] / 255)
    fig = Figure(figsize=(lay.width / _DPI, lay.height / _DPI), dpi=_DPI, facecolor=background)
    FigureCanvasAgg(fig)
    fig.figimage(canvas, xo=0, yo=0, origin="upper", resize=False)
    return fig


def _draw_titles(fig, at: _FigurePosition, ct: CTVolume, regions: RegionMap, result: ScanResult,
                 panels: Sequence[Panel], lay: _Layout, panel_px: int) -> None:
    """The title lines, each panel's caption and its orientation letters."""
    from matplotlib import patheffects

    outline = [patheffects.withStroke(linewidth=2, foreground="black")]
    title = _title_lines(ct, regions, result)
    _text(fig, *at(lay.margin, 8), title[0], color=_TEXT, fontsize=12, fontweight="bold", va="top", ha="left")
    _text(fig, *at(lay.margin, 32), title[1], color=_TEXT, fontsize=9.5, va="top", ha="left", family="monospace")
    _text(fig, *at(lay.margin, 52), title[2], color=_TEXT, fontsize=9.5, va="top", ha="left")
    for i, p in enumerate(panels):
        r, c = divmod(i, lay.ncols)
        top = lay.title_h + r * (lay.header_h + panel_px + lay.gap)
        left = lay.margin + c * (panel_px + lay.gap)
        _text(fig, *at(left + 2, top + 4), p.label, color=_TEXT, fontsize=8.5, va="top", ha="left")
        y0, x0, h, w = p.box
        t, b, lft, rgt = p.orientation
        kw: dict[str, Any] = dict(color="white", fontsize=9, fontweight="bold", path_effects=outline)
        _text(fig, *at(x0 + w / 2, y0 + 2), t, va="top", ha="center", **kw)
        _text(fig, *at(x0 + w / 2, y0 + h - 2), b, va="bottom", ha="center", **kw)
        _text(fig, *at(x0 + 3, y0 + h / 2), lft, va="center", ha="left", **kw)
        _text(fig, *at(x0 + w - 3, y0 + h / 2), rgt, va="center", ha="right", **kw)


def _draw_side_text(fig, at: _FigurePosition, ct: CTVolume, result: ScanResult, lay: _Layout, panel_px: int,
                    window_hu: tuple[float, float]) -> tuple[int, int]:
    """The numbers table and the scan facts right of the panels; returns (x, y) px of the legend."""
    side_x = lay.margin + lay.ncols * (panel_px + lay.gap) + 4
    y = lay.title_h
    _text(fig, *at(side_x, y), "% of region volume", color=_TEXT, fontsize=9.5, fontweight="bold", va="top")
    numbers = _numbers_text(result)
    _text(fig, *at(side_x, y + 20), numbers, color=_TEXT, fontsize=8.5, family="monospace", va="top", linespacing=1.25)
    n_lines = numbers.count("\n") + 1
    y += 20 + int(n_lines * 8.5 * 1.25 * _DPI / 72) + 14
    m = ct.meta
    facts = [
        f"slice thickness {m.slice_thickness_mm:g} mm" if m.slice_thickness_mm else "slice thickness -",
        f"kernel {m.kernel or '-'}",
        f"voxel {' x '.join(f'{s:.2f}' for s in ct.spacing_mm)} mm",
        f"window [{window_hu[0]:g}, {window_hu[1]:g}] HU",
    ]
    if result.warnings:
        facts.append(f"WARNINGS: {len(result.warnings)} (see report)")
    qc_flags = getattr(result, "qc_flags", ())
    facts.append("QC FLAGS: " + ", ".join(qc_flags) if qc_flags else "QC flags: none")
    _text(fig, *at(side_x, y), "\n".join(facts), color=_TEXT, fontsize=8.5, va="top", linespacing=1.3)
    y += int(len(facts) * 8.5 * 1.3 * _DPI / 72) + 14
    return side_x, y


def _draw_legend(fig, at: _FigurePosition, side_x: int, y: int, result: ScanResult, regions: RegionMap,
                 lesion_classes: np.ndarray | None, window_hu: tuple[float, float], alpha: float) -> None:
    """Legend of the damage (lesion) colours, the excluded-band colours and the region outlines."""
    from matplotlib import lines, patches

    # matplotlib draws RGB arrays as colours; its type stubs admit only tuples and strings
    Patch: Any = patches.Patch
    Line2D: Any = lines.Line2D
    colors = band_colors(result.scheme)
    bands = {b.name: b for b in result.scheme.bands}
    prefix = "lesion, " if lesion_classes is not None else ""
    handles = [
        Patch(facecolor=_seen_color(bands[d], colors[d], window_hu, alpha), edgecolor="none",
              label=f"{prefix}{bands[d]} HU")
        for d in result.scheme.damage
    ]
    if lesion_classes is not None:
        handles += [
            Patch(facecolor=np.asarray(EXCLUDED_TUBE_RGB) / 255, edgecolor="none",
                  label="band, not lesion: tubular or hilar (vessel, airway wall)"),
            Patch(facecolor=np.asarray(EXCLUDED_OTHER_RGB) / 255, edgecolor="none",
                  label="band, not lesion: shell, thin or small"),
        ]
    handles += [
        Line2D([0], [0], color=np.asarray(region_color(n)) / 255, lw=3, label=f"{n} outline")
        for _, n in sorted(regions.names.items())
    ]
    leg = fig.legend(
        handles=handles, loc="upper left", bbox_to_anchor=at(side_x - 6, y), frameon=False,
        fontsize=8.5, title=f"overlay (damage bands) · regions: {result.region_set}", title_fontsize=9,
        labelcolor=_TEXT, handlelength=1.6,
    )
    leg.get_title().set_color(_TEXT)


def _write_sidecar(path: Path, lay: _Layout, panels: Sequence[Panel], result: ScanResult, regions: RegionMap,
                   window_hu: tuple[float, float], alpha: float, lesion_classes: np.ndarray | None) -> Path:
    """The JSON sidecar of the PNG ``path``: size, convention, colours and every panel's voxel mapping."""
    colors = band_colors(result.scheme)
    sidecar = {
        "png": path.name,
        "size": [lay.height, lay.width],
        "window_hu": list(window_hu),
        "alpha": alpha,
        "convention": "radiological: axial = patient right on image left, anterior at top; "
        "coronal = patient right on image left, superior at top",
        "voxel_to_pixel": "pixel (y, x) = (box[0] + r, box[1] + c) where row_index[r] and col_index[c] are the "
        "voxel's indices along row_axis and col_axis and the voxel's index along fixed_axis equals index",
        "damage_colors": {d: list(colors[d]) for d in result.scheme.damage},
        "lesion_overlay": lesion_classes is not None,
        "excluded_colors": {"tubular": list(EXCLUDED_TUBE_RGB), "other": list(EXCLUDED_OTHER_RGB)}
        if lesion_classes is not None else {},
        "region_colors": {n: list(region_color(n)) for n in regions.names.values()},
        "region_set": result.region_set,
        "panels": [p.to_dict() for p in panels],
    }
    json_path = path.with_suffix(".json")
    json_path.write_text(json.dumps(sidecar, indent=1), encoding="utf-8")
    return json_path


def _write_thumbnail(canvas: np.ndarray, panels: Sequence[Panel], path: Path, size_px: int) -> Path:
    from PIL import Image

    axial = [p for p in panels if p.kind == "axial"] or list(panels)
    p = axial[len(axial) // 2]
    y0, x0, h, w = p.box
    img = Image.fromarray(canvas[y0: y0 + h, x0: x0 + w])
    scale = size_px / max(h, w)
    if scale < 1:
        img = img.resize((max(int(w * scale), 1), max(int(h * scale), 1)), Image.Resampling.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
