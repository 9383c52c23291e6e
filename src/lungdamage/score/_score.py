"""The scoring verbs: :func:`score` (one scheme) and :func:`score_many` (several).

One pass over the volume, in named steps:

1. :func:`_prefilter` -- optional vessel suppression and noise smoothing
   inside the lungs;
2. :func:`_region_histograms` -- an exact HU histogram per reported region
   from one ``np.bincount`` (aggregates are sums of their parts);
3. :func:`_occupied_hu_window` -- the HU range any region occupies (the
   stored histograms keep only that window);
4. :func:`_scan_results` -- one :class:`ScanResult` per scheme: every band
   count, density and severity score derives from the shared histograms.

The lesion measure (:func:`scan_lesions`) runs on the CT as read, beside these
steps.  scipy-based steps (lesions, vessels, smoothing) import on first use,
so that ``import lungdamage`` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, SchemeError
from ..regions import RegionMap, labelled_box
from ..volume import CTVolume
from .kernels import HU_OFFSET, region_histograms
from .metrics import slice_spacing_warnings
from .result import ResultSet, ScanResult
from .schemes import Scheme, get_schemes, is_scheme_list

if TYPE_CHECKING:
    from .lesion import LesionMap, LesionParams

__all__ = ["score", "score_many", "scan_lesions"]

#: What ``scheme=`` accepts for one scheme: a preset name, a scheme file path, a Scheme or its dict form.
SchemeLike = str | Scheme | Mapping[str, Any]


def score(
    ct: CTVolume,
    regions: RegionMap,
    scheme: SchemeLike = "covid",
    *,
    params: Mapping[str, Any] | None = None,
    suppress_vessels: bool = False,
    vessel_options: Mapping[str, Any] | None = None,
    smooth_sigma_mm: float | None = None,
    lesions: bool = True,
    lesion_options: LesionParams | Mapping[str, Any] | None = None,
    lesion_map: LesionMap | None = None,
) -> ScanResult:
    """Score every region of ``regions`` on ``ct`` with one ``scheme``.

    One pass over the volume: an exact HU histogram per region (aggregates
    are sums of their parts); every band count, density and severity score
    derives from the histograms.  Several schemes: :func:`score_many`.

    Parameters
    ----------
    ct : CTVolume
    regions : RegionMap
        On the CT grid.
    scheme : str, Scheme or mapping
        Preset name (``covid``, ``lcta``, ``aeration``), scheme file path or
        object; one scheme (a list is refused: use :func:`score_many`).
    params : mapping, optional
        Run parameters recorded (and hashed) in the result's provenance.
    suppress_vessels : bool
        Exclude dense structures that are not part of an opacity (vessels, see
        :func:`~lungdamage.score.prefilter.find_vessels`) from every band;
        their volume is reported as ``vessel_ml``.  Off by default (an extra
        per-voxel pass; see ``docs/metrics.md`` for its measured effect).
    vessel_options : mapping, optional
        Keyword arguments of :func:`~lungdamage.score.prefilter.find_vessels`
        (``dense_hu``, ``rim_hu``, ``rim_voxels``).
    smooth_sigma_mm : float, optional
        Gaussian noise pre-filter inside the lung mask (sharp kernels, low
        dose); ``None`` or 0 = off.
    lesions : bool
        Compute the lesion measure (``lesion_pct`` ... columns; see
        :mod:`lungdamage.score.lesion`) beside the band measure.  On by
        default; False leaves those columns NaN.
    lesion_options : LesionParams or mapping, optional
        Overrides of the lesion parameters (recorded in the params hash).
    lesion_map : LesionMap, optional
        The lesion map of this CT and lung mask with these parameters, already
        computed (:func:`scan_lesions`; e.g. kept for the QC overlay): used
        instead of running the filter again.  Ignored (recomputed) when its
        parameters or shape differ.

    Returns
    -------
    ScanResult
        ``result.to_frame()`` is the tidy per-region table.

    Raises
    ------
    GeometryError
        ``regions`` is not on the CT grid.
    SchemeError
        Unknown or invalid scheme, or several schemes.

    Examples
    --------
    >>> import numpy as np
    >>> from lungdamage import CTVolume, RegionMap, score
    >>> ct = CTVolume(np.array([[[-850, -500, 0, 40]]], np.int16), (1.0, 1.0, 1.0))
    >>> lungs = RegionMap(np.array([[[1, 1, 2, 0]]], np.uint8), {1: "right", 2: "left"})
    >>> score(ct, lungs).to_frame().set_index("region")["damage_pct"].tolist()
    [50.0, 100.0, 66.66666666666667]
    """
    if is_scheme_list(scheme):
        raise SchemeError(
            f"score() takes one scheme, got {scheme!r}. "
            "Potential fix: score_many(ct, regions, schemes) scores several schemes in one pass."
        )
    options = _ScoreOptions.make(params, suppress_vessels, vessel_options, smooth_sigma_mm, lesions, lesion_options)
    return _score_schemes(ct, regions, get_schemes(scheme), options, lesion_map)[0]


def score_many(
    ct: CTVolume,
    regions: RegionMap,
    schemes: SchemeLike | Sequence[SchemeLike] = ("covid",),
    *,
    params: Mapping[str, Any] | None = None,
    suppress_vessels: bool = False,
    vessel_options: Mapping[str, Any] | None = None,
    smooth_sigma_mm: float | None = None,
    lesions: bool = True,
    lesion_options: LesionParams | Mapping[str, Any] | None = None,
    lesion_map: LesionMap | None = None,
) -> ResultSet:
    """Score ``regions`` on ``ct`` with several schemes from one pass.

    The histograms do not depend on the scheme, so every scheme shares one
    kernel pass (and one lesion map); the options are those of :func:`score`.

    Parameters
    ----------
    ct : CTVolume
    regions : RegionMap
    schemes : list of str, Scheme or mapping, or a comma-separated string
        One or more schemes (distinct names).

    Returns
    -------
    ResultSet
        One :class:`ScanResult` per scheme, in the order given (also
        indexable by scheme name); ``to_frame()`` concatenates their tables,
        told apart by the ``scheme`` column.

    Examples
    --------
    >>> import numpy as np
    >>> from lungdamage import CTVolume, RegionMap, score_many
    >>> ct = CTVolume(np.array([[[-850, -500, 0, 40]]], np.int16), (1.0, 1.0, 1.0))
    >>> lungs = RegionMap(np.array([[[1, 1, 2, 0]]], np.uint8), {1: "right", 2: "left"})
    >>> both = score_many(ct, lungs, ["covid", "aeration"])
    >>> both.schemes
    ('covid', 'aeration')
    >>> both["covid"].histograms is both["aeration"].histograms
    True
    """
    options = _ScoreOptions.make(params, suppress_vessels, vessel_options, smooth_sigma_mm, lesions, lesion_options)
    return ResultSet(_score_schemes(ct, regions, get_schemes(schemes), options, lesion_map))


@dataclass(frozen=True)
class _ScoreOptions:
    """The scoring options of :func:`score`, checked once."""

    params: Mapping[str, Any]
    suppress_vessels: bool
    vessel_options: Mapping[str, Any]
    smooth_sigma_mm: float | None
    lesion: LesionParams | None

    @classmethod
    def make(cls, params, suppress_vessels, vessel_options, smooth_sigma_mm, lesions, lesion_options) -> _ScoreOptions:
        if smooth_sigma_mm is not None and not (np.isfinite(smooth_sigma_mm) and smooth_sigma_mm >= 0):
            raise InputError(
                f"smooth_sigma_mm must be a finite number >= 0 (mm), got {smooth_sigma_mm!r}. "
                "Potential fix: e.g. 1.0 for a sharp kernel, or leave it out."
            )
        lesion = None
        if lesions:
            from .lesion import lesion_params

            lesion = lesion_params(lesion_options)
        return cls(
            params=dict(params or {}),
            suppress_vessels=bool(suppress_vessels),
            vessel_options=dict(vessel_options or {}),
            smooth_sigma_mm=float(smooth_sigma_mm) if smooth_sigma_mm else None,
            lesion=lesion,
        )

    def run_params(self, scheme: Scheme, regions: RegionMap) -> dict[str, Any]:
        """The parameters recorded (and hashed) in one scheme's result."""
        return {
            "scheme": scheme.to_dict(),
            "method": regions.method,
            "region_set": regions.region_set,
            "suppress_vessels": self.suppress_vessels,
            "vessel_options": dict(self.vessel_options) if self.suppress_vessels else None,
            "smooth_sigma_mm": self.smooth_sigma_mm,
            "lesion": self.lesion.to_dict() if self.lesion is not None else None,
            **dict(self.params),
        }


@dataclass(frozen=True)
class _RegionCounts:
    """Per reported region (rows in ``RegionMap.groups()`` order): HU histogram and side counts."""

    histograms: np.ndarray  # (region, HU + HU_OFFSET) voxel counts
    vessel_voxels: np.ndarray | None
    lesion_voxels: np.ndarray | None
    lesion_count: np.ndarray | None


def _score_schemes(
    ct: CTVolume,
    regions: RegionMap,
    schemes: Sequence[Scheme],
    options: _ScoreOptions,
    lesion_map: LesionMap | None,
) -> list[ScanResult]:
    """Both verbs: prefilter, histograms, HU window, one result per scheme."""
    regions.check_grid(ct.shape, where=f"{ct.meta.key}")
    if options.lesion is not None:  # on the CT as read: the lesion measure has its own noise handling
        lesion_map = scan_lesions(ct, regions, options.lesion, reuse=lesion_map)
    filtered_ct, vessel_mask = _prefilter(ct, regions, options, lesion_map)
    counts = _region_histograms(filtered_ct, regions, vessel_mask)
    if lesion_map is not None:
        counts = _with_lesion_counts(counts, ct, regions, lesion_map, options.lesion)
    window_lo, window_hi = _occupied_hu_window(counts.histograms)
    histograms = np.ascontiguousarray(counts.histograms[:, window_lo:window_hi])
    histograms.setflags(write=False)
    return _scan_results(ct, regions, schemes, options, counts, histograms, window_lo - HU_OFFSET)


def _prefilter(
    ct: CTVolume, regions: RegionMap, options: _ScoreOptions, lesion_map: LesionMap | None
) -> tuple[CTVolume, np.ndarray | None]:
    """Step 1: the vessel mask (``suppress_vessels``) and the smoothed CT (``smooth_sigma_mm``).

    Returns the CT to count (``ct`` itself when no smoothing) and the boolean
    vessel mask (None when vessels are not suppressed).
    """
    if not (options.suppress_vessels or options.smooth_sigma_mm):
        return ct, None
    from .prefilter import find_vessels, smooth_lungs

    lung = regions.lung_mask
    vessel_mask = None
    if options.suppress_vessels:
        vessel_mask = find_vessels(ct, lung, lesions=lesion_map, **dict(options.vessel_options))
    if options.smooth_sigma_mm:
        inside = lung if vessel_mask is None else lung & ~vessel_mask
        ct = smooth_lungs(ct, inside, sigma_mm=options.smooth_sigma_mm)
    return ct, vessel_mask


def _region_histograms(ct: CTVolume, regions: RegionMap, vessel_mask: np.ndarray | None) -> _RegionCounts:
    """Step 2: the exact HU histogram of every reported region (and its vessel voxels).

    Vessel voxels are counted under a shifted label code (``code + max_code``),
    so one ``np.bincount`` counts both and the bands exclude them.
    """
    max_code = int(max(regions.names, default=0))
    labels = regions.labels
    if vessel_mask is not None:
        if 2 * max_code > 255:
            raise ValueError(f"vessel suppression needs region codes <= 127, got {max_code}")
        labels = labels.copy()
        labels[vessel_mask] += np.uint8(max_code)
    box = labelled_box(labels)  # the kernel's passes skip the voxels outside the regions' bounding box
    code_hist = region_histograms(ct.hu[box], labels[box])
    n_codes = max(code_hist.shape[0], (2 if vessel_mask is not None else 1) * max_code + 1)
    if code_hist.shape[0] < n_codes:
        padding = np.zeros((n_codes - code_hist.shape[0], code_hist.shape[1]), code_hist.dtype)
        code_hist = np.vstack([code_hist, padding])
    groups = regions.groups().values()
    per_region = np.stack([code_hist[list(codes)].sum(axis=0) for codes in groups])
    vessel_voxels = None
    if vessel_mask is not None:
        vessel_voxels = np.array([int(code_hist[[c + max_code for c in codes]].sum()) for codes in groups])
    return _RegionCounts(per_region, vessel_voxels, None, None)


def _with_lesion_counts(
    counts: _RegionCounts, ct: CTVolume, regions: RegionMap, lesion_map: LesionMap, lesion: LesionParams | None
) -> _RegionCounts:
    """The lesion voxels (per class) and lesion count of every reported region (on the CT as read)."""
    from .lesion import lesion_counts

    n_codes = int(max(regions.names, default=0)) + 1
    voxels, present = lesion_counts(ct.hu, regions.labels, lesion_map, n_codes, lesion)
    groups = regions.groups().values()
    lesion_voxels = np.stack([voxels[list(codes)].sum(axis=0) for codes in groups])
    lesion_count = np.array([int(present[list(codes)].any(axis=0).sum()) for codes in groups])
    return _RegionCounts(counts.histograms, counts.vessel_voxels, lesion_voxels, lesion_count)


def _occupied_hu_window(histograms: np.ndarray) -> tuple[int, int]:
    """Step 3: the half-open bin range ``[lo, hi)`` any region occupies (one empty bin when none does)."""
    occupied_bins = np.flatnonzero(histograms.any(axis=0))
    if not occupied_bins.size:
        return HU_OFFSET, HU_OFFSET + 1
    return int(occupied_bins[0]), int(occupied_bins[-1]) + 1


def _scan_results(
    ct: CTVolume,
    regions: RegionMap,
    schemes: Sequence[Scheme],
    options: _ScoreOptions,
    counts: _RegionCounts,
    histograms: np.ndarray,
    hist_lo_hu: int,
) -> list[ScanResult]:
    """Step 4: one :class:`ScanResult` per scheme, all sharing ``histograms``."""
    groups = regions.groups()
    finest = set(regions.names.values())
    parts = {
        name: tuple(regions.names[c] for c in codes)
        for name, codes in groups.items()
        if name not in finest or len(codes) > 1
    }
    model = str(regions.info.get("model", "") or options.params.get("model") or "")
    # segmentation warnings (e.g. lobes-approx on a partial scan) go on every row
    info_warnings = regions.info.get("warnings")
    region_warnings = tuple(str(w) for w in info_warnings) if isinstance(info_warnings, (list, tuple)) else ()
    warnings = (
        *ct.meta.warnings,
        *slice_spacing_warnings(ct.meta.slice_thickness_mm, float(ct.spacing_mm[0])),
        *region_warnings,
    )
    return [
        ScanResult(
            meta=ct.meta,
            scheme=scheme,
            regions=tuple(groups),
            region_set=regions.region_set,
            method=regions.method,
            histograms=histograms,
            hist_lo_hu=hist_lo_hu,
            voxel_volume_ml=ct.voxel_volume_ml,
            params=options.run_params(scheme, regions),
            warnings=warnings,
            parts=parts,
            vessel_voxels=counts.vessel_voxels,
            model=model,
            lesion_voxels=counts.lesion_voxels,
            lesion_count=counts.lesion_count,
        )
        for scheme in schemes
    ]


def scan_lesions(
    ct: CTVolume,
    regions: RegionMap,
    lesion_options: LesionParams | Mapping[str, Any] | None = None,
    *,
    reuse: LesionMap | None = None,
) -> LesionMap:
    """The lesion map of a scan (:func:`~lungdamage.score.lesion.find_lesions` on the CT as read).

    Parameters
    ----------
    ct : CTVolume
    regions : RegionMap
        On the CT grid (every region together is the lung mask).
    lesion_options : LesionParams or mapping, optional
    reuse : LesionMap, optional
        A map already computed for this scan: returned as it is when it was
        made with the same parameters on the same grid, else recomputed.

    Returns
    -------
    LesionMap
    """
    from .lesion import find_lesions, lesion_params

    lesion = lesion_params(lesion_options)
    if reuse is not None and reuse.params == lesion and reuse.lesion.shape == ct.shape:
        return reuse
    ap_axis = int(np.argmax(np.abs(np.asarray(ct.direction, dtype=float)[1, :])))  # array axis along P
    return find_lesions(ct.hu, regions.lung_mask, ct.spacing_mm, lesion, ap_axis=ap_axis)
