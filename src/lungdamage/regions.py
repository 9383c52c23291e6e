"""Region maps, canonical region names and foreign label translations.

Canonical region names (see DESIGN.md): lobes ``RUL RML RLL LUL LLL``, lungs
``right left``, zones ``RUZ RMZ RLZ LUZ LMZ LLZ`` and the aggregate ``total``.
Aggregates are always derived from the finest regions of a map, never
segmented twice.

Foreign label codes (lungmask, TotalSegmentator, CIP) are translated here and
nowhere else: :data:`FOREIGN_CODES` and :func:`translate_labels`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import GeometryError, InputError

__all__ = [
    "RegionMap",
    "LUNG_CODES",
    "LOBE_CODES",
    "ZONE_CODES",
    "FOREIGN_CODES",
    "REGION_SETS",
    "side_of",
    "translate_labels",
    "labelled_box",
    "nonzero_indices",
    "load_label_codes",
]

#: Canonical codes of each region set (code -> name).
LUNG_CODES: dict[int, str] = {1: "right", 2: "left"}
LOBE_CODES: dict[int, str] = {1: "RUL", 2: "RML", 3: "RLL", 4: "LUL", 5: "LLL"}
ZONE_CODES: dict[int, str] = {1: "RUZ", 2: "RMZ", 3: "RLZ", 4: "LUZ", 5: "LMZ", 6: "LLZ"}

#: Region-set names as they appear in outputs.
REGION_SETS = ("lungs", "lobes", "lobes-approx", "zones")

#: Foreign label code -> canonical region name.  Codes not listed are background.
FOREIGN_CODES: dict[str, dict[int, str]] = {
    # lungmask R231 / R231CovidWeb (lungs) -- 1 right, 2 left
    "lungmask-lungs": {1: "right", 2: "left"},
    # lungmask LTRCLobes and LTRCLobes_R231
    "lungmask": {1: "LUL", 2: "LLL", 3: "RUL", 4: "RML", 5: "RLL"},
    # TotalSegmentator v2 task "total"
    "totalsegmentator": {10: "LUL", 11: "LLL", 12: "RUL", 13: "RML", 14: "RLL"},
    # Chest Imaging Platform: value = type*256 + region; region = value & 255
    "cip": {2: "right", 3: "left", 4: "RUL", 5: "RML", 6: "RLL", 7: "LUL", 8: "LLL",
            # ChestRegion thirds: 9-11 left upper/middle/lower, 12-14 right upper/middle/lower
            9: "LUZ", 10: "LMZ", 11: "LLZ", 12: "RUZ", 13: "RMZ", 14: "RLZ"},
    # CIP whole-lung region (1) cannot be split into sides
    "cip-wholelung": {1: "lung"},
}

_CANONICAL = {**{v: ("lungs", k) for k, v in LUNG_CODES.items()},
              **{v: ("lobes", k) for k, v in LOBE_CODES.items()},
              **{v: ("zones", k) for k, v in ZONE_CODES.items()}}


def side_of(name: str) -> str | None:
    """``'right'`` or ``'left'`` for a canonical region name, else ``None``."""
    if name in ("right", "left"):
        return name
    if len(name) == 3 and name[0] in "RL" and name.isupper():
        return "right" if name[0] == "R" else "left"
    return None


@dataclass(frozen=True, eq=False)
class RegionMap:
    """Labelled regions on a CT grid.

    Parameters
    ----------
    labels : ndarray of uint8, shape (slices, rows, columns)
        0 is background; other codes are looked up in ``names``.
    names : mapping int -> str
        Code to canonical region name (finest regions only).
    method : str
        What produced the map: ``'threshold'``, ``'lungmask:R231'``,
        ``'labels:<file>'``, ...
    region_set : str
        ``'lungs'``, ``'lobes'``, ``'lobes-approx'`` or ``'zones'``.
    """

    labels: np.ndarray
    names: Mapping[int, str]
    method: str = "threshold"
    region_set: str = "lungs"
    info: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        if labels.ndim == 2:
            labels = labels[np.newaxis]
        if labels.ndim != 3:
            raise ValueError(f"RegionMap.labels must be 3-D; got shape {labels.shape}")
        if labels.dtype != np.uint8:
            if labels.size and (labels.min() < 0 or labels.max() > 255):
                raise ValueError("RegionMap.labels must fit uint8 (codes 0..255)")
            labels = labels.astype(np.uint8)
        if labels.flags.writeable:
            labels = labels.view()
            labels.setflags(write=False)
        names = {int(k): str(v) for k, v in dict(self.names).items() if int(k) != 0}
        if self.region_set not in REGION_SETS:
            raise ValueError(f"region_set must be one of {REGION_SETS}; got {self.region_set!r}")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "names", names)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.labels.shape)

    @property
    def lung_mask(self) -> np.ndarray:
        """Boolean mask of every labelled voxel (computed on the labels' bounding box: the rest of the
        volume stays untouched zero pages)."""
        box = labelled_box(self.labels)
        mask = np.zeros(self.labels.shape, bool)
        np.not_equal(self.labels[box], 0, out=mask[box])
        return mask

    def groups(self) -> dict[str, tuple[int, ...]]:
        """Every reported region and the label codes that make it up.

        Finest regions first (in code order), then ``right``, ``left`` (when
        the finest regions have sides) and ``total``.
        """
        out: dict[str, tuple[int, ...]] = {}
        for code in sorted(self.names):
            out[self.names[code]] = (code,)
        for side in ("right", "left"):
            if side in out:
                continue
            codes = tuple(c for c in sorted(self.names) if side_of(self.names[c]) == side)
            if codes:
                out[side] = codes
        out["total"] = tuple(sorted(self.names))
        return out

    def to_lungs(self) -> RegionMap:
        """Collapse to the ``lungs`` set (1 right, 2 left)."""
        lut = np.zeros(256, np.uint8)
        for code, name in self.names.items():
            side = side_of(name)
            lut[code] = 1 if side == "right" else 2 if side == "left" else 0
        # (code 0 stays 0: the table is applied on the labelled voxels' bounding box only)
        box = labelled_box(self.labels)
        labels = np.zeros(self.labels.shape, np.uint8)
        labels[box] = lut[self.labels[box]]
        return dataclasses.replace(self, labels=labels, names=dict(LUNG_CODES), region_set="lungs")

    def voxel_counts(self) -> dict[str, int]:
        """Voxels per finest region (name -> count)."""
        counts = np.bincount(self.labels.ravel(), minlength=256)
        return {name: int(counts[code]) for code, name in self.names.items()}

    def check_grid(self, shape: tuple[int, ...], where: str = "") -> None:
        """Raise :class:`GeometryError` unless the map is on a grid of ``shape``."""
        if tuple(shape) != self.shape:
            raise GeometryError(
                f"Region map from {self.method!r} has shape {self.shape} but the CT {where} has shape "
                f"{tuple(shape)}. Potential fix: use a label map resampled onto the CT grid."
            )

    def __repr__(self) -> str:
        counts = self.voxel_counts()
        parts = ", ".join(f"{n}={c}" for n, c in counts.items())
        return f"RegionMap({self.region_set}, method={self.method!r}, shape={self.shape}, voxels: {parts})"


def load_label_codes(codes: str | Mapping[int, str] | Path) -> dict[int, str]:
    """Resolve a label-code convention name, mapping or JSON file to ``{code: name}``.

    A JSON file maps codes (strings or ints) to canonical region names, e.g.
    ``{"1": "right", "2": "left"}``.
    """
    if isinstance(codes, Mapping):
        table = {int(k): str(v) for k, v in codes.items()}
    elif str(codes) in FOREIGN_CODES:
        table = dict(FOREIGN_CODES[str(codes)])
    else:
        path = Path(codes)
        if not path.is_file():
            raise InputError(
                f"Unknown label-code convention {str(codes)!r}. Allowed: {', '.join(FOREIGN_CODES)}, "
                "or a JSON file mapping codes to region names."
            )
        try:
            table = {int(k): str(v) for k, v in json.loads(path.read_text()).items()}
        except (ValueError, AttributeError) as exc:
            raise InputError(
                f"Label-code file {path} is not a JSON object of code -> region name ({exc}). "
                'Potential fix: write e.g. {"1": "right", "2": "left"}.'
            ) from None
    allowed = set(_CANONICAL) | {"lung"}
    bad = sorted({v for v in table.values() if v not in allowed})
    if bad:
        raise InputError(
            f"Label codes name unknown regions {bad}. Allowed region names: {sorted(allowed)}."
        )
    return table


def labelled_box(labels: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the non-zero voxels of a label array (slices; views, no copy).

    Every non-zero label lies inside it, hence any count over it equals the count over the whole array;
    empty slices when there is no label (see :func:`nonzero_indices`).

    Examples
    --------
    >>> labelled_box(np.array([[[0, 0, 0], [0, 2, 1]]], np.uint8))
    (slice(0, 1, None), slice(1, 2, None), slice(1, 3, None))
    """
    if labels.ndim != 3 or not labels.size:
        return (slice(None),) * labels.ndim
    indices = nonzero_indices(labels)
    if not indices[0].size:
        return (slice(0, 0),) * 3
    return tuple(slice(int(i[0]), int(i[-1]) + 1) for i in indices)


def nonzero_indices(mask: np.ndarray) -> list[np.ndarray]:
    """Indices along each axis (slice, row, column) at which a 3-D ``mask`` or label array is non-zero.

    Two passes: the slices holding a non-zero voxel over the whole array, then the rows and columns over
    those slices only.  Empty arrays when there is none.
    """
    slices = np.flatnonzero(mask.max(axis=(1, 2))) if mask.size else np.zeros(0, np.intp)
    if not slices.size:
        return [slices, slices, slices]
    plane = np.asarray(mask[int(slices[0]): int(slices[-1]) + 1].max(axis=0))
    return [slices, np.flatnonzero(plane.max(axis=1)), np.flatnonzero(plane.max(axis=0))]


def translate_labels(
    labels: np.ndarray,
    codes: str | Mapping[int, str] | Path,
    *,
    method: str = "labels",
) -> RegionMap:
    """Translate a foreign label array into a canonical :class:`RegionMap`.

    ``codes`` is a convention name from :data:`FOREIGN_CODES`, a mapping or a
    JSON file.  CIP values are reduced with ``& 255`` first.  The region set is
    ``lobes`` when lobe codes occur in ``labels`` (lung-level codes are then
    ignored), else ``zones`` or ``lungs`` likewise.
    """
    table = load_label_codes(codes)
    arr = np.asarray(labels)
    if str(codes).startswith("cip"):
        arr = arr.astype(np.int64) & 255
    if arr.size and arr.min() < 0:
        raise InputError(f"Label map has negative values (min {arr.min()}); expected codes >= 0.")
    # the region set follows the codes actually present: a CIP right/left map is "lungs"
    # although the CIP convention also names lobes
    present = np.flatnonzero(np.bincount(arr.reshape(-1).astype(np.intp))) if arr.size else np.array([], int)
    kinds = {_CANONICAL.get(table[c], ("lungs", 0))[0] for c in present if c in table}
    kinds = kinds or {_CANONICAL.get(v, ("lungs", 0))[0] for v in table.values()}
    target = "lobes" if "lobes" in kinds else "zones" if "zones" in kinds else "lungs"
    canon = {"lobes": LOBE_CODES, "zones": ZONE_CODES, "lungs": LUNG_CODES}[target]
    inverse = {v: k for k, v in canon.items()}
    lut_size = int(max(max(table, default=0), int(arr.max()) if arr.size else 0)) + 1
    lut = np.zeros(lut_size, np.uint8)
    for code, name in table.items():
        if name in inverse and code >= 0:
            lut[code] = inverse[name]
        elif name == "lung" and target == "lungs":
            raise InputError(
                "A whole-lung label cannot be split into right and left. "
                "Potential fix: import a right/left or lobe label map."
            )
    labels = lut[arr]
    if present.size and present.max() > 0 and not labels.any():
        shown = ", ".join(str(int(c)) for c in present[present > 0][:12])
        raise InputError(
            f"None of the label codes present ({shown}) names a lung region in the {str(codes)!r} convention "
            f"(known codes: {sorted(table)}). A whole-lung label (e.g. CIP region 1) cannot be split into "
            "right and left. Potential fix: import a right/left or lobe map, or pass a JSON code table."
        )
    return RegionMap(labels, dict(canon), method=method, region_set=target)
