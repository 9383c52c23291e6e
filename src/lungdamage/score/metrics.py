"""Derived metrics that do not depend on the scheme: CT severity scores,
percent opacity, and the comparability rules for provenance.

Definitions, edges and references are in ``docs/metrics.md``; the constants
here are the single source of those edges.  Pure functions, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import numpy as np

__all__ = [
    "OPACITY_HU",
    "HIGH_OPACITY_HU",
    "LAA_THRESHOLD_HU",
    "THICK_SLICE_MM",
    "SHARP_KERNEL_PATTERN",
    "css_pan",
    "css_chung",
    "comparability_warnings",
    "is_sharp_kernel",
]

#: Percent opacity: lo <= HU < hi (ground glass + consolidation; Chaganti et al. 2020).
OPACITY_HU = (-700, 100)
#: Percent high opacity: lo < HU < hi, i.e. integer HU -199 ... 99 (the issue's "HU > -200",
#: bounded above by the opacity upper edge so that contrast-filled vessels and calcium are not opacity).
HIGH_OPACITY_HU = (-200, 100)
#: LAA-950: HU < -950 (strict; Gevenois et al. 1996, Wang et al. 2013).
LAA_THRESHOLD_HU = -950
#: Slices thicker than this (mm) get the "thick slices" warning.
THICK_SLICE_MM = 2.5

#: Reconstruction kernels treated as sharp (high-frequency): Siemens B/I/Br/Bl >= 50 and
#: H/ >= 60, GE LUNG/BONE/EDGE, Philips YA/YB/YC/L/D/E, Canon/Toshiba FC5x/FC8x, generic SHARP.
SHARP_KERNEL_PATTERN = re.compile(
    r"""^(
        [BI][5-9]\d[a-z]?         # Siemens B60f, B70f, I50f
      | B[rl][5-9]\d[a-z]?\d?     # Siemens Br59, Bl57, Br64
      | [HQ][6-9]\d[a-z]?         # Siemens H60s, Q70f
      | LUNG | BONE(PLUS)? | EDGE | DETAIL  # GE
      | Y[ABC] | [LDE]           # Philips lung / sharp
      | FC5\d | FC8\d             # Canon / Toshiba lung kernels
      | .*SHARP.*
    )$""",
    re.VERBOSE | re.IGNORECASE,
)


def _bin(pct: np.ndarray | float, inner_edges: Iterable[float], *, first_open: bool) -> np.ndarray:
    """Score from bins: 0 when pct == 0, else 1 + number of inner edges exceeded.

    An edge ``e`` is exceeded when ``pct > e`` (upper edge inclusive), except
    the first edge when ``first_open`` (Pan: "1 = < 5 %", so 5 % itself scores 2).
    """
    pct = np.asarray(pct, dtype=np.float64)
    out = np.where(pct > 0, 1.0, 0.0)
    for k, edge in enumerate(inner_edges):
        exceeded = (pct >= edge) if (k == 0 and first_open) else (pct > edge)
        out += exceeded
    return np.where(np.isnan(pct), np.nan, out)


def css_pan(pct: np.ndarray | float) -> np.ndarray:
    """Pan / Francone lobe score 0–5 from the percent of the lobe involved.

    Bins on the continuous percentage ``p``: 0 if p = 0; 1 if 0 < p < 5;
    2 if 5 ≤ p ≤ 25; 3 if 25 < p ≤ 50; 4 if 50 < p ≤ 75; 5 if p > 75.
    NaN stays NaN.

    Examples
    --------
    >>> css_pan([0, 4.99, 5, 25, 25.01, 50, 75, 75.01]).tolist()
    [0.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 5.0]
    """
    return _bin(pct, (5.0, 25.0, 50.0, 75.0), first_open=True)


def css_chung(pct: np.ndarray | float) -> np.ndarray:
    """Chung / Li lobe score 0–4 from the percent of the lobe involved.

    Bins: 0 if p = 0; 1 if 0 < p ≤ 25; 2 if 25 < p ≤ 50; 3 if 50 < p ≤ 75;
    4 if p > 75.  NaN stays NaN.

    Examples
    --------
    >>> css_chung([0, 0.1, 25, 25.01, 50, 75, 75.01, 100]).tolist()
    [0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 4.0, 4.0]
    """
    return _bin(pct, (25.0, 50.0, 75.0), first_open=False)


def is_sharp_kernel(kernel: str | None) -> bool:
    """True when a reconstruction kernel name looks sharp (see :data:`SHARP_KERNEL_PATTERN`).

    DICOM ConvolutionKernel may be multi-valued (``"Br59\\3"``, ``"I50f\\3"``): each
    value is tested.
    """
    if not kernel:
        return False
    parts = re.split(r"[\\,/ ]+", str(kernel).strip())
    return any(SHARP_KERNEL_PATTERN.match(p) for p in parts if p)


def slice_spacing_warnings(slice_thickness_mm: float | None, slice_spacing_mm: float) -> list[str]:
    """The thick-slice rule from the voxel spacing when no slice thickness is recorded (NIfTI, NRRD, MHA).

    A DICOM SliceThickness decides when present (see :func:`comparability_warnings`); without it the
    spacing between slices is the best estimate of the reconstructed thickness (contiguous slices).
    """
    if slice_thickness_mm is not None and math.isfinite(slice_thickness_mm):
        return []
    if math.isfinite(slice_spacing_mm) and slice_spacing_mm > THICK_SLICE_MM:
        return [
            f"thick slices (slice spacing {slice_spacing_mm:.3g} mm > {THICK_SLICE_MM:g} mm; no slice thickness "
            "recorded): partial volume inflates GGO"
        ]
    return []


def comparability_warnings(
    *,
    slice_thickness_mm: float | None,
    kernel: str | None,
    contrast: bool | None,
) -> list[str]:
    """Warnings for acquisition facts that change HU-band results.

    Rules (documented in ``docs/metrics.md``): slice thickness >
    :data:`THICK_SLICE_MM`; a sharp reconstruction kernel; contrast given.
    """
    out = []
    if slice_thickness_mm is not None and math.isfinite(slice_thickness_mm) and slice_thickness_mm > THICK_SLICE_MM:
        out.append(
            f"thick slices ({slice_thickness_mm:g} mm > {THICK_SLICE_MM:g} mm): partial volume inflates GGO"
        )
    if is_sharp_kernel(kernel):
        out.append(f"sharp kernel ({kernel}): noise widens HU bands (consider smooth_sigma_mm)")
    if contrast:
        out.append("contrast given: vessels and enhancing lung are denser than on a plain scan")
    return out
