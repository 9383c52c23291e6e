"""The CT volume type that flows between the stages of the pipeline.

Array axes are always ``(slice, row, column)``.  Geometry is stored once, in
patient LPS coordinates (DICOM convention: +x to the patient's Left, +y to
Posterior, +z to Superior):

- ``spacing_mm``: voxel size along (slice, row, column), in mm;
- ``origin_lps``: LPS position (x, y, z) in mm of the centre of voxel (0, 0, 0);
- ``direction``: 3×3 matrix whose *columns* are the LPS unit vectors of the
  array axes (slice, row, column), i.e. the LPS position of voxel index
  ``(k, i, j)`` is ``origin + direction @ ([k, i, j] * spacing)``.

SimpleITK orders axes (x=column, y=row, z=slice); :meth:`CTVolume.to_sitk` and
:meth:`CTVolume.from_sitk` convert between the two conventions in one place.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["CTVolume", "ScanMeta", "AIR_HU"]

#: HU written for padding / outside-field-of-view voxels.
AIR_HU = -1024


@dataclass(frozen=True)
class ScanMeta:
    """Header facts about the scan a volume came from.

    All fields are optional; images read from NIfTI/NRRD carry little more than
    ``source``.  ``warnings`` holds the reader's warnings (strings) so they
    travel with the result into tables and reports.
    """

    source: str = ""
    series_uid: str = ""
    study_uid: str = ""
    frame_of_reference_uid: str = ""
    patient_id: str = ""
    study_date: str = ""
    study_time: str = ""
    modality: str = ""
    series_description: str = ""
    kernel: str = ""
    slice_thickness_mm: float | None = None
    manufacturer: str = ""
    contrast: bool | None = None
    input_hash: str = ""
    warnings: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def with_warnings(self, *more: str) -> ScanMeta:
        """Return a copy with ``more`` warnings appended."""
        return dataclasses.replace(self, warnings=self.warnings + tuple(more))

    @property
    def key(self) -> str:
        """Series UID if known, else the source path: names the scan in messages."""
        return self.series_uid or self.source or "<in-memory volume>"


def _as_direction(direction: Any) -> np.ndarray:
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    d.setflags(write=False)
    return d


@dataclass(frozen=True, eq=False)
class CTVolume:
    """A CT volume in Hounsfield units with its geometry.

    Parameters
    ----------
    hu : ndarray of int16, shape (slices, rows, columns)
        Hounsfield units.  Padding and outside-field voxels are already air
        (:data:`AIR_HU`).
    spacing_mm : (3,) floats
        Voxel size along (slice, row, column) in mm.
    origin_lps : (3,) floats
        LPS position (x, y, z) of voxel (0, 0, 0) in mm.
    direction : (3, 3) floats
        Columns are LPS unit vectors of the (slice, row, column) axes.
    meta : ScanMeta

    Examples
    --------
    >>> import numpy as np
    >>> ct = CTVolume(np.full((2, 3, 4), -1000, np.int16), (2.5, 0.7, 0.7))
    >>> ct.shape, ct.voxel_volume_ml
    ((2, 3, 4), 0.001225)
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_lps: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(
        default_factory=lambda: _as_direction([[0, 0, 1], [0, 1, 0], [1, 0, 0]])
    )
    meta: ScanMeta = field(default_factory=ScanMeta)

    def __post_init__(self) -> None:
        hu = np.asarray(self.hu)
        if hu.ndim == 2:
            hu = hu[np.newaxis]
        if hu.ndim != 3:
            raise ValueError(f"CTVolume.hu must be 3-D (slice, row, column); got shape {hu.shape}")
        if hu.dtype != np.int16:
            if hu.dtype.kind == "f":
                if hu.size and not np.isfinite(hu).all():
                    raise ValueError("CTVolume.hu has NaN or infinite values; HU must be finite numbers")
                hu = np.rint(hu)  # round, never truncate: -700.6 is -701 (aerated), not -700 (GGO)
            if hu.size and (hu.min() < -32768 or hu.max() > 32767):
                raise ValueError("CTVolume.hu values do not fit int16")
            hu = hu.astype(np.int16)
        if hu.flags.writeable:
            hu = hu.view()
            hu.setflags(write=False)
        spacing = tuple(float(s) for s in self.spacing_mm)
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"CTVolume.spacing_mm must be 3 positive numbers; got {self.spacing_mm}")
        object.__setattr__(self, "hu", hu)
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "origin_lps", tuple(float(o) for o in self.origin_lps))
        object.__setattr__(self, "direction", _as_direction(self.direction))

    # -- derived properties -------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        slices, rows, columns = self.hu.shape  # 3-D by construction (checked in __post_init__)
        return (int(slices), int(rows), int(columns))

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (mm³ / 1000)."""
        s = self.spacing_mm
        return s[0] * s[1] * s[2] / 1000.0

    @property
    def orientation(self) -> str:
        """Three-letter code of the patient directions the (slice, row, column)
        axes point to, e.g. ``'SPL'`` for a head-first supine axial series."""
        letters = ("LR", "PA", "SI")
        code = ""
        for k in range(3):
            v = self.direction[:, k]
            a = int(np.argmax(np.abs(v)))
            code += letters[a][0] if v[a] > 0 else letters[a][1]
        return code

    def index_to_lps(self, index: np.ndarray) -> np.ndarray:
        """LPS coordinates (mm) of voxel indices ``(..., 3)`` in (slice, row, column)."""
        idx = np.asarray(index, dtype=np.float64)
        return np.asarray(self.origin_lps) + (idx * np.asarray(self.spacing_mm)) @ self.direction.T

    def with_array(self, hu: np.ndarray) -> CTVolume:
        """Return a new volume with the same geometry and ``hu`` as data."""
        if tuple(np.shape(hu)) != self.shape:
            raise ValueError(f"with_array: shape {np.shape(hu)} differs from {self.shape}")
        return dataclasses.replace(self, hu=hu)

    def with_meta(self, **changes: Any) -> CTVolume:
        """Return a new volume whose meta has ``changes`` applied."""
        return dataclasses.replace(self, meta=dataclasses.replace(self.meta, **changes))

    def content_hash(self) -> str:
        """SHA-256 over the HU array and geometry (hex, first 16 chars)."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.hu).tobytes())
        h.update(np.asarray(self.spacing_mm + self.origin_lps).tobytes())
        h.update(np.ascontiguousarray(self.direction).tobytes())
        return h.hexdigest()[:16]

    # -- SimpleITK ------------------------------------------------------------
    def to_sitk(self, array: np.ndarray | None = None):
        """SimpleITK image of ``array`` (default: HU) with this volume's geometry."""
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(np.ascontiguousarray(self.hu if array is None else array))
        img.SetSpacing(self.spacing_mm[::-1])
        img.SetOrigin(self.origin_lps)
        # SimpleITK direction is row-major over (x, y, z) = (column, row, slice).
        img.SetDirection(tuple(self.direction[:, ::-1].ravel()))
        return img

    @staticmethod
    def geometry_from_sitk(img) -> tuple[tuple[float, float, float], tuple[float, float, float], np.ndarray]:
        """``(spacing_mm, origin_lps, direction)`` of a SimpleITK image, in our axis order."""
        spacing = tuple(float(s) for s in img.GetSpacing()[::-1])
        origin = tuple(float(o) for o in img.GetOrigin())
        d = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)[:, ::-1]
        return spacing, origin, d  # type: ignore[return-value]

    @classmethod
    def from_sitk(cls, img, meta: ScanMeta | None = None) -> CTVolume:
        """Build a volume from a 3-D SimpleITK image of HU."""
        import SimpleITK as sitk

        if img.GetDimension() == 2:
            img = sitk.JoinSeries(img)
        arr = sitk.GetArrayFromImage(img)
        spacing, origin, d = cls.geometry_from_sitk(img)
        return cls(arr, spacing, origin, d, meta or ScanMeta())

    def same_grid(self, other: CTVolume | Any, *, atol_mm: float = 1e-3) -> bool:
        """True when ``other`` (volume or SimpleITK image) has this volume's grid."""
        if not isinstance(other, CTVolume):
            spacing, origin, d = self.geometry_from_sitk(other)
            shape = tuple(other.GetSize()[::-1])
        else:
            spacing, origin, d, shape = other.spacing_mm, other.origin_lps, other.direction, other.shape
        return (
            tuple(shape) == self.shape
            and np.allclose(spacing, self.spacing_mm, atol=atol_mm)
            and np.allclose(origin, self.origin_lps, atol=atol_mm)
            and np.allclose(d, self.direction, atol=1e-4)
        )

    def __repr__(self) -> str:
        if self.hu.size:
            lo, hi = int(self.hu.min()), int(self.hu.max())
        else:
            lo = hi = 0
        mib = self.hu.nbytes / 2**20
        sp = ", ".join(f"{s:.3g}" for s in self.spacing_mm)
        return (
            f"CTVolume(shape={self.shape}, spacing_mm=({sp}), orientation={self.orientation!r}, "
            f"HU=[{lo}, {hi}], {mib:.1f} MiB, series={self.meta.key!r})"
        )
