"""ScanResult: per-region HU histograms of one scan and everything derived from them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from ..volume import ScanMeta
from .schemes import Scheme

__all__ = ["ScanResult", "params_hash", "dependency_versions"]


def params_hash(params: Mapping[str, Any]) -> str:
    """SHA-256 (first 16 hex characters) of the JSON form of ``params`` (sorted keys)."""
    text = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def dependency_versions() -> dict[str, str]:
    """Versions of lungdamage and the libraries that shape its numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("lungdamage", "numpy", "scipy", "scikit-image", "pydicom", "SimpleITK"):
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
        idx = np.array([np.searchsorted(c, t, side="left") for c, t in zip(cum[ok], target)], dtype=np.int64)
        out[ok] = idx + self.hist_lo_hu
        return out

    def mean_hu(self) -> np.ndarray:
        """Mean lung density (HU) per region; NaN for empty regions."""
        n = self.voxels
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.histograms @ self.hu_values.astype(np.float64)) / np.where(n > 0, n, np.nan)

    # -- tables -----------------------------------------------------------------
    def to_frame(self):
        """Tidy table: one row per region, one column per measure.

        Columns: ``series_uid, patient_id, study_date, region, region_set,
        voxels, volume_ml, <band>_ml, <band>_pct`` (every band of the scheme),
        ``damage_pct, mean_hu, perc15_hu, laa950_pct``, then provenance
        (``method, scheme, scheme_edges, params_hash, input_hash, version,
        slice_thickness_mm, kernel, warnings``).  Percentages are of the
        region's voxels (0–100); NaN for an empty region.
        """
        import pandas as pd

        n = self.voxels.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = self.band_voxels() / np.where(n > 0, n, np.nan)[:, None]
        cols: dict[str, Any] = {
            "series_uid": self.meta.series_uid,
            "patient_id": self.meta.patient_id,
            "study_date": self.meta.study_date,
            "region": list(self.regions),
            "region_set": self.region_set,
            "voxels": self.voxels,
            "volume_ml": n * self.voxel_volume_ml,
        }
        bands = self.scheme.band_names
        bv = self.band_voxels()
        for k, name in enumerate(bands):
            cols[f"{name}_ml"] = bv[:, k] * self.voxel_volume_ml
        for k, name in enumerate(bands):
            cols[f"{name}_pct"] = 100.0 * frac[:, k]
        damage_idx = [bands.index(d) for d in self.scheme.damage]
        cols["damage_pct"] = 100.0 * frac[:, damage_idx].sum(axis=1) if damage_idx else np.nan
        cols["mean_hu"] = self.mean_hu()
        cols["perc15_hu"] = self.percentile_hu(15.0)
        hu = self.hu_values
        with np.errstate(invalid="ignore", divide="ignore"):
            cols["laa950_pct"] = 100.0 * self.histograms[:, hu < -950].sum(axis=1) / np.where(n > 0, n, np.nan)
        cols.update(
            method=self.method,
            scheme=self.scheme.name,
            scheme_edges=", ".join(str(b) for b in self.scheme.bands),
            params_hash=self.params_hash,
            input_hash=self.meta.input_hash,
            version=self.versions.get("lungdamage", ""),
            slice_thickness_mm=self.meta.slice_thickness_mm,
            kernel=self.meta.kernel,
            warnings="; ".join(self.warnings),
        )
        return pd.DataFrame(cols)

    def summary(self) -> str:
        """Readable per-region table (percent of region volume)."""
        df = self.to_frame()
        show = ["region", "volume_ml"] + [f"{b}_pct" for b in self.scheme.band_names] + ["damage_pct"]
        table = df[show].rename(columns=lambda c: c.replace("_pct", " %").replace("volume_ml", "volume mL"))
        head = (
            f"series {self.meta.key}  patient {self.meta.patient_id or '-'}  date {self.meta.study_date or '-'}\n"
            f"scheme {self.scheme.name} ({', '.join(str(b) for b in self.scheme.bands)}); "
            f"damage = {' + '.join(self.scheme.damage)}; regions {self.region_set} by {self.method}\n"
        )
        body = table.to_string(index=False, float_format=lambda v: f"{v:.1f}")
        tail = "".join(f"\nwarning: {w}" for w in self.warnings)
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
