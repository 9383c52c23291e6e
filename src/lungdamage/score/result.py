"""ScanResult: per-region HU histograms of one scan and everything derived from them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, SupportsIndex, overload

import numpy as np

from ..volume import CTVolume, ScanMeta
from .metrics import HIGH_OPACITY_HU, LAA_THRESHOLD_HU, OPACITY_HU, comparability_warnings, css_chung, css_pan
from .schemes import Scheme

if TYPE_CHECKING:
    from ..privacy import Pseudonymizer
    from ..regions import RegionMap
    from .lesion import LesionMap

__all__ = ["ScanResult", "ResultSet", "Analysis", "params_hash", "dependency_versions", "LESION_COLUMNS"]

#: Columns of the lesion measure (:meth:`ScanResult.lesion_columns`), on every wide row.
LESION_COLUMNS = ("lesion_pct", "lesion_ggo_pct", "lesion_consolidation_pct", "lesion_ml", "lesion_count")


def params_hash(params: Mapping[str, Any]) -> str:
    """SHA-256 (first 16 hex characters) of the JSON form of ``params`` (sorted keys)."""
    text = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def dependency_versions() -> dict[str, str]:
    """Versions of lungdamage and the libraries that shape its numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("lungdamage", "numpy", "scipy", "pydicom", "SimpleITK"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


@dataclass(frozen=True, eq=False)
class ScanResult:
    """Scores of one scan: per reported region, an exact HU histogram.

    Every number in :meth:`to_frame` derives from ``histograms``, so band
    counts, percentages, mean density and percentiles are mutually consistent
    and aggregates (``right``, ``left``, ``total``) are exact sums of their
    parts.

    Attributes
    ----------
    meta : ScanMeta
        Scan identity and header facts.
    scheme : Scheme
    regions : tuple of str
        Reported region names, finest first, then aggregates.
    region_set : str
        ``lungs``, ``lobes``, ``lobes-approx`` or ``zones``.
    method : str
        Segmentation method (``threshold``, ``lungmask:R231``, ``labels:<file>``).
    histograms : ndarray of int64, shape (n_regions, n_bins)
        ``histograms[r, i]`` = voxels of region ``r`` with HU ``hist_lo_hu + i``.
    hist_lo_hu : int
    voxel_volume_ml : float
    params : mapping
        Parameters of the run (scheme, method, options) -- hashed for provenance.
    warnings : tuple of str
        Reader and pipeline warnings that affect comparability.
    versions : mapping
        lungdamage and key dependency versions.
    timings_s : mapping
        Seconds spent per stage (read, segment, score).
    parts : mapping str -> tuple of str
        Aggregate region -> the finest regions it sums (``total`` -> all).
    vessel_voxels : ndarray of int64, shape (n_regions,), optional
        Voxels excluded as vessels per region (None when suppression is off).
    model : str
        Segmentation model (lungmask model name), empty for classical methods.
    lesion_voxels : ndarray of int64, shape (n_regions, 2), optional
        Lesion voxels per region in the lesion GGO band (column 0) and
        consolidation band (column 1) (:mod:`lungdamage.score.lesion`); None
        when the lesion measure was not computed.
    lesion_count : ndarray of int64, shape (n_regions,), optional
        Opacities (connected lesions) with voxels in each region; one that
        spans two regions counts in both, once in their aggregate.
    qc_flags : tuple of str
        Failed plausibility checks of the lung mask
        (:data:`lungdamage.segment.plausibility.QC_FLAGS`); empty when clean.
    """

    meta: ScanMeta
    scheme: Scheme
    regions: tuple[str, ...]
    region_set: str
    method: str
    histograms: np.ndarray
    hist_lo_hu: int
    voxel_volume_ml: float
    params: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    versions: Mapping[str, str] = field(default_factory=dependency_versions)
    timings_s: Mapping[str, float] = field(default_factory=dict)
    parts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    vessel_voxels: np.ndarray | None = None
    model: str = ""
    lesion_voxels: np.ndarray | None = None
    lesion_count: np.ndarray | None = None
    qc_flags: tuple[str, ...] = ()

    # -- core numbers ----------------------------------------------------------
    @property
    def hu_values(self) -> np.ndarray:
        """HU value of every histogram column."""
        return np.arange(self.histograms.shape[1], dtype=np.int64) + self.hist_lo_hu

    @property
    def voxels(self) -> np.ndarray:
        """Voxels per region, shape (n_regions,)."""
        return self.histograms.sum(axis=1)

    @property
    def params_hash(self) -> str:
        return params_hash(self.params)

    def band_voxels(self) -> np.ndarray:
        """Voxels per region and band, shape (n_regions, n_bands) (bands as in ``scheme.band_names``)."""
        hu = self.hu_values
        out = np.zeros((len(self.regions), len(self.scheme.band_names)), dtype=np.int64)
        # cumulative histogram -> count in [lo, hi) = C(hi) - C(lo); one vectorized pass per band edge set
        cum = np.concatenate([np.zeros((len(self.regions), 1), np.int64), np.cumsum(self.histograms, axis=1)], axis=1)

        def count_below(edge: float) -> np.ndarray:
            idx = int(np.searchsorted(hu, edge, side="left")) if math.isfinite(edge) else (0 if edge < 0 else hu.size)
            return cum[:, idx]

        for k, band in enumerate(self.scheme.bands):
            out[:, k] = count_below(band.hi_hu) - count_below(band.lo_hu)
        if self.scheme.has_gaps:
            out[:, -1] = self.voxels - out[:, : len(self.scheme.bands)].sum(axis=1)
        return out

    def percentile_hu(self, q: float) -> np.ndarray:
        """HU at percentile ``q`` (0–100) of every region (inverted-CDF definition:
        the smallest HU whose cumulative fraction reaches q %).  NaN for empty regions."""
        cum = np.cumsum(self.histograms, axis=1)
        n = cum[:, -1]
        out = np.full(len(self.regions), np.nan)
        ok = n > 0
        target = np.ceil(q / 100.0 * n[ok] - 1e-9).clip(min=1)
        idx = np.array(
            [np.searchsorted(c, t, side="left") for c, t in zip(cum[ok], target, strict=True)], dtype=np.int64
        )
        out[ok] = idx + self.hist_lo_hu
        return out

    def mean_hu(self) -> np.ndarray:
        """Mean lung density (HU) per region; NaN for empty regions.

        The HU sum is exact (int64) before the one division."""
        n = self.voxels
        total = (self.histograms * self.hu_values[None, :]).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, total / np.where(n > 0, n, 1), np.nan)

    # -- derived per-region numbers ---------------------------------------------
    def _pct(self, counts: np.ndarray) -> np.ndarray:
        """``100 * counts / voxels`` per region (multiply first so exact edges stay exact); NaN if empty."""
        n = self.voxels.astype(np.float64)
        counts = np.asarray(counts, dtype=np.float64)
        if counts.ndim == 2:
            n = n[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, 100.0 * counts / np.where(n > 0, n, 1.0), np.nan)

    def _count_where(self, keep: np.ndarray) -> np.ndarray:
        return self.histograms[:, keep].sum(axis=1)

    def damage_pct(self) -> np.ndarray:
        """Percent of each region in the scheme's damage bands (NaN when empty or no damage bands)."""
        bands = self.scheme.band_names
        idx = [bands.index(d) for d in self.scheme.damage]
        if not idx:
            return np.full(len(self.regions), np.nan)
        return self._pct(self.band_voxels()[:, idx].sum(axis=1))

    def opacity_pct(self) -> np.ndarray:
        """Percent opacity: voxels with ``OPACITY_HU[0] <= HU < OPACITY_HU[1]`` (scheme-independent)."""
        hu = self.hu_values
        return self._pct(self._count_where((hu >= OPACITY_HU[0]) & (hu < OPACITY_HU[1])))

    def high_opacity_pct(self) -> np.ndarray:
        """Percent high opacity: ``HIGH_OPACITY_HU[0] < HU < HIGH_OPACITY_HU[1]`` (integer HU -199..99)."""
        hu = self.hu_values
        return self._pct(self._count_where((hu > HIGH_OPACITY_HU[0]) & (hu < HIGH_OPACITY_HU[1])))

    def laa950_pct(self) -> np.ndarray:
        """Percent low-attenuation area, ``HU < -950``."""
        return self._pct(self._count_where(self.hu_values < LAA_THRESHOLD_HU))

    def severity_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-region CT severity scores ``(css_pan, css_chung)`` from ``damage_pct``.

        Finest regions (lobes, lobes-approx or zones) are scored from their own
        damage %; aggregates (``right``, ``left``, ``total``) are the sum of
        their parts' scores (NaN if any part is NaN).  With the ``lungs``
        region set no lobe-level score exists: all NaN.  Approximate lobes
        (``lobes-approx``) are not lobes: all NaN unless the run asked for
        them (``params["css_approx_lobes"]``, ``--css-approx-lobes``).
        """
        nan = np.full(len(self.regions), np.nan)
        if self.css_region_set().startswith("none"):
            return nan, nan.copy()
        dmg = self.damage_pct()
        pan, chung = css_pan(dmg), css_chung(dmg)
        index = {name: i for i, name in enumerate(self.regions)}
        for agg, parts in self.parts.items():
            rows = [index[p] for p in parts if p in index]
            pan[index[agg]] = pan[rows].sum() if rows else np.nan
            chung[index[agg]] = chung[rows].sum() if rows else np.nan
        return pan, chung

    def css_region_set(self) -> str:
        """Regions the CT severity scores were computed on, or ``none...`` saying why there are none."""
        if self.region_set == "lungs":
            return "none"
        if self.region_set == "lobes-approx" and not self.params.get("css_approx_lobes"):
            return "none: lobes-approx are not true lobes (opt in with --css-approx-lobes)"
        return self.region_set

    def vessel_ml(self) -> np.ndarray:
        """Volume (mL) excluded as vessels per region (0 when vessel suppression is off)."""
        if self.vessel_voxels is None:
            return np.zeros(len(self.regions))
        return np.asarray(self.vessel_voxels, dtype=np.float64) * self.voxel_volume_ml

    def lesion_columns(self) -> dict[str, np.ndarray]:
        """The lesion measure per region: ``lesion_pct, lesion_ggo_pct, lesion_consolidation_pct,
        lesion_ml, lesion_count`` (NaN when it was not computed).  Percentages are of the region's
        scored voxels, like ``damage_pct``."""
        n_r = len(self.regions)
        if self.lesion_voxels is None:
            nan = np.full(n_r, np.nan)
            return {k: nan.copy() for k in LESION_COLUMNS}
        lv = np.asarray(self.lesion_voxels, dtype=np.int64).reshape(n_r, 2)
        pct = self._pct(lv)
        count = (
            np.asarray(self.lesion_count, dtype=np.float64) if self.lesion_count is not None else np.full(n_r, np.nan)
        )
        return {
            "lesion_pct": self._pct(lv.sum(axis=1)),
            "lesion_ggo_pct": pct[:, 0],
            "lesion_consolidation_pct": pct[:, 1],
            "lesion_ml": lv.sum(axis=1) * self.voxel_volume_ml,
            "lesion_count": count,
        }

    def comparability_warnings(self) -> list[str]:
        """Reader warnings plus the acquisition rules of :func:`~lungdamage.score.metrics.comparability_warnings`."""
        rules = comparability_warnings(
            slice_thickness_mm=self.meta.slice_thickness_mm, kernel=self.meta.kernel, contrast=self.meta.contrast
        )
        return list(dict.fromkeys([*self.warnings, *rules]))

    # -- provenance ---------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        """Columns identifying the input, the parameters and the software (same on every row)."""
        p = self.params
        return {
            "method": self.method,
            "model": self.model,
            "scheme_edges": ", ".join(str(b) for b in self.scheme.bands),
            "damage_bands": "+".join(self.scheme.damage),
            "vessel_suppression": bool(p.get("suppress_vessels", False)),
            "smooth_sigma_mm": float(p["smooth_sigma_mm"]) if p.get("smooth_sigma_mm") else 0.0,
            "params_hash": self.params_hash,
            "input_hash": self.meta.input_hash,
            "version": self.versions.get("lungdamage", ""),
            "dependency_versions": ";".join(f"{k}={v}" for k, v in self.versions.items() if k != "lungdamage"),
            "slice_thickness_mm": self.meta.slice_thickness_mm,
            "kernel": self.meta.kernel,
            "contrast": self.meta.contrast,
            "warnings": "; ".join(self.comparability_warnings()),
        }

    def _identity(self) -> dict[str, Any]:
        return {
            "series_uid": self.meta.series_uid,
            "study_uid": self.meta.study_uid,
            "patient_id": self.meta.patient_id,
            "study_date": self.meta.study_date,
            "source": self.meta.source,
            "scheme": self.scheme.name,
        }

    # -- tables -----------------------------------------------------------------
    def to_frame(self, form: str = "wide"):
        """Tidy table of this scan.

        Parameters
        ----------
        form : {"wide", "long"}
            ``wide`` (default): one row per region, one column per measure.
            ``long``: one row per region × band with ``band, lo_hu, hi_hu,
            is_damage, voxels, ml, pct``.

        Wide columns: identity (``series_uid, study_uid, patient_id,
        study_date, source, scheme``), ``region, region_set, voxels,
        volume_ml``, ``<band>_ml`` and ``<band>_pct`` for every band of the
        scheme, ``damage_pct, opacity_pct, high_opacity_pct, mean_hu,
        perc15_hu, laa950_pct, vessel_ml, vessel_pct, css_pan, css_chung,
        css_region_set``, the lesion measure (``lesion_pct, lesion_ggo_pct,
        lesion_consolidation_pct, lesion_ml, lesion_count``), ``qc_flags`` (failed mask checks, ``;``-separated,
        empty when clean), then provenance (:meth:`provenance`).  Percentages
        are of the region's scored voxels (0–100; NaN for an empty region);
        ``volume_ml`` excludes suppressed vessels, which are ``vessel_ml``.
        Definitions: ``docs/metrics.md``.
        """
        import pandas as pd

        if form not in ("wide", "long"):
            raise ValueError(f"form must be 'wide' or 'long', got {form!r}")
        bv = self.band_voxels()
        bands = self.scheme.band_names
        vox_ml = self.voxel_volume_ml
        if form == "long":
            return self._long_frame(bv)
        n = self.voxels
        cols: dict[str, Any] = {**self._identity()}
        cols.update(region=list(self.regions), region_set=self.region_set, voxels=n, volume_ml=n * vox_ml)
        for k, name in enumerate(bands):
            cols[f"{name}_ml"] = bv[:, k] * vox_ml
        pct = self._pct(bv)
        for k, name in enumerate(bands):
            cols[f"{name}_pct"] = pct[:, k]
        cols["damage_pct"] = self.damage_pct()
        cols["opacity_pct"] = self.opacity_pct()
        cols["high_opacity_pct"] = self.high_opacity_pct()
        cols["mean_hu"] = self.mean_hu()
        cols["perc15_hu"] = self.percentile_hu(15.0)
        cols["laa950_pct"] = self.laa950_pct()
        vessel_ml = self.vessel_ml()
        cols["vessel_ml"] = vessel_ml
        lung_ml = n * vox_ml + vessel_ml
        with np.errstate(invalid="ignore", divide="ignore"):
            cols["vessel_pct"] = np.where(lung_ml > 0, 100.0 * vessel_ml / np.where(lung_ml > 0, lung_ml, 1.0), np.nan)
        cols["css_pan"], cols["css_chung"] = self.severity_scores()
        cols["css_region_set"] = self.css_region_set()
        cols.update(self.lesion_columns())
        cols["qc_flags"] = ";".join(self.qc_flags)
        cols.update(self.provenance())
        return pd.DataFrame(cols)

    def _long_frame(self, bv: np.ndarray):
        import pandas as pd

        bands = self.scheme.band_names
        edges = {b.name: (b.lo_hu, b.hi_hu) for b in self.scheme.bands}
        n_r, n_b = bv.shape
        pct = self._pct(bv)
        cols: dict[str, Any] = {**self._identity()}
        cols.update(
            region=np.repeat(np.asarray(self.regions, dtype=object), n_b),
            region_set=self.region_set,
            band=np.tile(np.asarray(bands, dtype=object), n_r),
            lo_hu=np.tile([edges.get(b, (np.nan, np.nan))[0] for b in bands], n_r),
            hi_hu=np.tile([edges.get(b, (np.nan, np.nan))[1] for b in bands], n_r),
            is_damage=np.tile([b in self.scheme.damage for b in bands], n_r),
            voxels=bv.reshape(-1),
            ml=bv.reshape(-1) * self.voxel_volume_ml,
            pct=pct.reshape(-1),
        )
        cols.update(self.provenance())
        return pd.DataFrame(cols)

    def summary(self) -> str:
        """Readable per-region table (percent of region volume)."""
        df = self.to_frame()
        show = ["region", "volume_ml"] + [f"{b}_pct" for b in self.scheme.band_names] + ["damage_pct"]
        if self.lesion_voxels is not None:
            show.append("lesion_pct")
        if self.vessel_voxels is not None:
            show.append("vessel_ml")
        if not self.css_region_set().startswith("none"):
            show += ["css_pan", "css_chung"]
        table = df[show].rename(
            columns=lambda c: (
                c.replace("_pct", " %").replace("volume_ml", "volume mL").replace("vessel_ml", "vessels mL")
            )
        )
        head = (
            f"series {self.meta.key}  patient {self.meta.patient_id or '-'}  date {self.meta.study_date or '-'}\n"
            f"scheme {self.scheme.name} ({', '.join(str(b) for b in self.scheme.bands)}); "
            f"damage = {' + '.join(self.scheme.damage)}; regions {self.region_set} by {self.method}\n"
        )
        body = table.to_string(index=False, float_format=lambda v: f"{v:.1f}")
        tail = "".join(f"\nwarning: {w}" for w in self.comparability_warnings())
        if self.region_set == "lobes-approx" and self.css_region_set().startswith("none"):
            tail += "\nnote: no CT severity scores on approximate lobes (opt in with --css-approx-lobes)"
        return head + body + tail

    def with_meta(self, **changes: Any) -> ScanResult:
        return dataclasses.replace(self, meta=dataclasses.replace(self.meta, **changes))

    def __repr__(self) -> str:
        total = self.regions.index("total") if "total" in self.regions else -1
        vol = float(self.voxels[total]) * self.voxel_volume_ml
        return (
            f"ScanResult(series={self.meta.key!r}, scheme={self.scheme.name!r}, regions={list(self.regions)}, "
            f"method={self.method!r}, lung volume {vol:.0f} mL)"
        )


class ResultSet(tuple[ScanResult, ...]):
    """Results of one scan under several schemes (same segmentation, same histograms).

    A tuple of :class:`ScanResult`; also indexable by scheme name.
    :meth:`to_frame` concatenates the per-scheme tables (the ``scheme``
    column tells them apart; band columns of other schemes are NaN).
    """

    def __new__(cls, results: Iterable[ScanResult]) -> ResultSet:
        return super().__new__(cls, tuple(results))

    @overload
    def __getitem__(self, key: SupportsIndex | str) -> ScanResult: ...

    @overload
    def __getitem__(self, key: slice) -> tuple[ScanResult, ...]: ...

    def __getitem__(self, key: SupportsIndex | str | slice) -> ScanResult | tuple[ScanResult, ...]:
        if isinstance(key, str):
            for r in self:
                if r.scheme.name == key:
                    return r
            raise KeyError(f"no result for scheme {key!r}; schemes: {[r.scheme.name for r in self]}")
        return super().__getitem__(key)

    @property
    def schemes(self) -> tuple[str, ...]:
        return tuple(r.scheme.name for r in self)

    @property
    def meta(self) -> ScanMeta:
        return self[0].meta

    def to_frame(self, form: str = "wide"):
        """Concatenated :meth:`ScanResult.to_frame` of every scheme."""
        import pandas as pd

        frames = [r.to_frame(form) for r in self]
        df = pd.concat(frames, ignore_index=True)
        if form == "wide":  # keep provenance last, whichever scheme added band columns
            prov = list(self[0].provenance())
            df = df[[c for c in df.columns if c not in prov] + prov]
        return df

    def summary(self) -> str:
        return "\n\n".join(r.summary() for r in self)

    def __repr__(self) -> str:
        return f"ResultSet(series={self.meta.key!r}, schemes={list(self.schemes)})"


@dataclass(frozen=True, eq=False)
class Analysis:
    """Everything one scan's analysis made: the CT, its regions and the scores.

    Kept together for review outputs (QC images, masks) that need the arrays;
    :func:`~lungdamage.pipeline.analyze` returns only the (small)
    :class:`ScanResult`.

    Attributes
    ----------
    ct : CTVolume
    regions : RegionMap
    result : ScanResult
        The scores under the first scheme (the one the review outputs show).
    pseudonymize : Pseudonymizer or None
        Applied to ``ct.meta`` (None: not pseudonymized); review outputs use it
        to de-identify the DICOM SEG.
    lesions : LesionMap or None
        The lesion map the scores were made from (None: not computed); the QC
        overlay draws its classes instead of running the lesion filter again.
    results : ResultSet
        The scores under every scheme (one segmentation, one kernel pass);
        ``ResultSet((result,))`` when not given.
    """

    ct: CTVolume
    regions: RegionMap
    result: ScanResult
    pseudonymize: Pseudonymizer | None = None
    lesions: LesionMap | None = None
    results: ResultSet = field(default_factory=lambda: ResultSet(()))

    def __post_init__(self) -> None:
        if not self.results:
            object.__setattr__(self, "results", ResultSet((self.result,)))
