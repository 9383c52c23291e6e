"""Scoring schemes: ordered half-open HU bands ``[lo, hi)`` and which count as damage.

Schemes are data, not code paths.  Presets (:data:`PRESETS`):

``covid`` (default)
    emphysema < -950 ≤ aerated < -700 ≤ ggo < -300 ≤ consolidation < +100 ≤ dense.
    Damage = ggo + consolidation.
``lcta``
    3D Slicer Lung CT Analyzer: emphysema < -950 ≤ inflated < -750 ≤
    infiltration < -400 ≤ collapsed < 0 ≤ vessels < 3000.
    Damage = infiltration + collapsed.
``aeration``
    Gattinoni aeration compartments: hyperinflated < -900 ≤ normal < -500 ≤
    poorly_aerated < -100 ≤ non_aerated < +100.  Damage = poorly + non-aerated.

Voxels that fall in no band (e.g. > +100 HU in ``aeration``) are counted in
the implicit band ``other`` so that percentages of a region always sum to 100.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import SchemeError

__all__ = ["Band", "Scheme", "PRESETS", "get_scheme", "get_schemes", "is_scheme_list", "scheme_from_dict", "OTHER_BAND"]

#: Name of the implicit band holding voxels outside every band.
OTHER_BAND = "other"

_HU_MIN, _HU_MAX = -32768, 32767

#: Band names that would collide with derived ``<name>_ml`` / ``<name>_pct`` columns.
RESERVED_BAND_NAMES = frozenset({OTHER_BAND, "volume", "damage", "opacity", "high_opacity", "laa950", "vessel"})


def _is_number(value: Any) -> bool:
    """A real number (NumPy scalars included), not a bool."""
    import numbers

    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Band:
    """One half-open HU band ``[lo_hu, hi_hu)``; ``-inf`` / ``inf`` allowed."""

    name: str
    lo_hu: float
    hi_hu: float

    def __post_init__(self) -> None:
        for attr in ("lo_hu", "hi_hu"):
            value = getattr(self, attr)
            if _is_number(value):  # NumPy scalars become plain floats (JSON, hashing)
                object.__setattr__(self, attr, float(value))

    def __str__(self) -> str:
        lo = "-inf" if math.isinf(self.lo_hu) else f"{self.lo_hu:g}"
        hi = "+inf" if math.isinf(self.hi_hu) else f"{self.hi_hu:g}"
        return f"{self.name} [{lo}, {hi})"


@dataclass(frozen=True)
class Scheme:
    """Ordered, non-overlapping half-open HU bands plus the damage bands.

    Parameters
    ----------
    name : str
    bands : sequence of Band
        Sorted by ``lo_hu``; must not overlap (gaps are allowed and count as
        :data:`OTHER_BAND`).
    damage : sequence of str
        Names of the bands whose sum is ``damage_pct``.
    description, reference : str
        Where the definition comes from (shown in docs and provenance).
    """

    name: str
    bands: tuple[Band, ...]
    damage: tuple[str, ...] = ()
    description: str = ""
    reference: str = ""
    source: str = field(default="<object>", compare=False)

    def __post_init__(self) -> None:
        bands = tuple(b if isinstance(b, Band) else Band(*b) for b in self.bands)
        object.__setattr__(self, "bands", bands)
        object.__setattr__(self, "damage", tuple(self.damage))
        problems = _validate(self.name, bands, self.damage)
        if problems:
            raise SchemeError(
                f"Scheme {self.name!r} ({self.source}) is invalid: " + "; ".join(problems)
                + ". Potential fix: give each band a unique name and a half-open range [lo, hi) with lo < hi, "
                "bands sorted and not overlapping, damage naming existing bands."
            )

    @property
    def band_names(self) -> tuple[str, ...]:
        """Band names in order, plus ``other`` when the bands leave gaps."""
        names = tuple(b.name for b in self.bands)
        return names + ((OTHER_BAND,) if self.has_gaps else ())

    @property
    def has_gaps(self) -> bool:
        """True when some int16 HU value falls in no band."""
        lo = max(self.bands[0].lo_hu, _HU_MIN)
        if lo > _HU_MIN:
            return True
        for a, b in itertools.pairwise(self.bands):
            if a.hi_hu < b.lo_hu:
                return True
        return self.bands[-1].hi_hu <= _HU_MAX

    def edges(self) -> list[tuple[str, float, float]]:
        """``[(name, lo, hi), ...]`` for provenance."""
        return [(b.name, b.lo_hu, b.hi_hu) for b in self.bands]

    def band_index_of_hu(self) -> np.ndarray:
        """Band index of every HU value from -32768 to 32767.

        Returns
        -------
        ndarray of uint8, shape (65536,)
            Entry ``i`` is the band of HU ``i - 32768``; values in no band get
            ``len(bands)`` (the ``other`` band).
        """
        hu = np.arange(_HU_MIN, _HU_MAX + 1, dtype=np.float64)
        lut = np.full(hu.shape, len(self.bands), dtype=np.uint8)
        for k, b in enumerate(self.bands):
            lut[(hu >= b.lo_hu) & (hu < b.hi_hu)] = k
        return lut

    def band_index(self, hu: np.ndarray) -> np.ndarray:
        """Band index (uint8) of every voxel of an int16 HU array; ``len(bands)`` is ``other``."""
        hu = np.asarray(hu, dtype=np.int16)
        return self.band_index_of_hu()[hu.view(np.uint16) ^ np.uint16(0x8000)]  # bit pattern -> HU + 32768

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for provenance and scheme files)."""
        return {
            "name": self.name,
            "bands": [{"name": b.name, "lo_hu": b.lo_hu, "hi_hu": b.hi_hu} for b in self.bands],
            "damage": list(self.damage),
            "description": self.description,
            "reference": self.reference,
        }

    def __str__(self) -> str:
        return f"{self.name}: " + ", ".join(str(b) for b in self.bands)


def _validate(name: str, bands: Sequence[Band], damage: Sequence[str]) -> list[str]:
    problems: list[str] = []
    if not name or not isinstance(name, str):
        problems.append("name is empty")
    if not bands:
        problems.append("no bands")
        return problems
    seen: set[str] = set()
    for b in bands:
        if not b.name or not str(b.name).replace("_", "").isalnum():
            problems.append(f"band name {b.name!r} must be letters, digits or '_'")
        if b.name in seen:
            problems.append(f"band name {b.name!r} repeated")
        if b.name in RESERVED_BAND_NAMES:
            problems.append(
                f"band name {b.name!r} is reserved (it would collide with a derived column); "
                f"reserved: {sorted(RESERVED_BAND_NAMES)}"
            )
        seen.add(b.name)
        if not (_is_number(b.lo_hu) and _is_number(b.hi_hu)):
            problems.append(f"band {b.name!r} edges must be numbers, got {b.lo_hu!r}, {b.hi_hu!r}")
            continue
        if math.isnan(b.lo_hu) or math.isnan(b.hi_hu) or not b.lo_hu < b.hi_hu:
            problems.append(f"band {b.name!r} needs lo < hi, got [{b.lo_hu}, {b.hi_hu})")
    for a, b in itertools.pairwise(bands):
        if _is_number(a.hi_hu) and _is_number(b.lo_hu) and b.lo_hu < a.hi_hu:
            problems.append(f"bands {a.name!r} and {b.name!r} overlap or are not sorted")
    for d in damage:
        if d not in seen:
            problems.append(f"damage band {d!r} is not one of {sorted(seen)}")
    return problems


INF = math.inf

#: Preset schemes by name.
PRESETS: dict[str, Scheme] = {
    "covid": Scheme(
        "covid",
        (
            Band("emphysema", -INF, -950),
            Band("aerated", -950, -700),
            Band("ggo", -700, -300),
            Band("consolidation", -300, 100),
            Band("dense", 100, INF),
        ),
        damage=("ggo", "consolidation"),
        description="GGO and consolidation by HU bands (lungdamage default)",
        reference="Ground-glass [-700,-300) and consolidation [-300,+100) HU as in quantitative COVID-19 CT "
        "studies (e.g. Lanza et al., Eur Radiol 2020; Colombi et al., Radiology 2020).",
    ),
    "lcta": Scheme(
        "lcta",
        (
            Band("emphysema", -INF, -950),
            Band("inflated", -950, -750),
            Band("infiltration", -750, -400),
            Band("collapsed", -400, 0),
            Band("vessels", 0, 3000),
        ),
        damage=("infiltration", "collapsed"),
        description="3D Slicer Lung CT Analyzer default thresholds",
        reference="Rudolf Bumm, Lung CT Analyzer (3D Slicer extension), default thresholds -950/-750/-400/0/3000.",
    ),
    "aeration": Scheme(
        "aeration",
        (
            Band("hyperinflated", -INF, -900),
            Band("normal", -900, -500),
            Band("poorly_aerated", -500, -100),
            Band("non_aerated", -100, 100),
        ),
        damage=("poorly_aerated", "non_aerated"),
        description="Aeration compartments",
        reference="Gattinoni et al., Am J Respir Crit Care Med 2001; Vieira et al., 1998.",
    ),
}
PRESETS = {name: dataclasses.replace(sch, source="preset") for name, sch in PRESETS.items()}


def is_scheme_list(scheme: Any) -> bool:
    """True when ``scheme`` names several schemes (a list/tuple, or a string with commas)."""
    if isinstance(scheme, str):
        return "," in scheme
    return isinstance(scheme, Sequence) and not isinstance(scheme, (str, bytes))


def get_schemes(scheme: Any) -> tuple[Scheme, ...]:
    """Resolve one or several schemes (list, tuple or comma-separated string).

    Raises
    ------
    SchemeError
        An unknown or invalid scheme, or two schemes with the same name.
    """
    if isinstance(scheme, str):
        items: list[Any] = [s.strip() for s in scheme.split(",") if s.strip()]
    elif is_scheme_list(scheme):
        items = list(scheme)
    else:
        items = [scheme]
    if not items:
        raise SchemeError(f"No scheme given ({scheme!r}). Allowed: {', '.join(PRESETS)}, or a scheme file.")
    out = tuple(get_scheme(s) for s in items)
    names = [s.name for s in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SchemeError(
            f"Schemes {names} repeat the name(s) {repeated}; results are told apart by scheme name. "
            "Potential fix: give each scheme file a distinct 'name'."
        )
    return out


def get_scheme(scheme: str | Scheme | Mapping[str, Any]) -> Scheme:
    """Resolve a preset name, a :class:`Scheme`, a mapping or a scheme file path.

    Raises
    ------
    SchemeError
        Unknown name (the message lists the presets) or invalid definition.
    """
    if isinstance(scheme, Scheme):
        return scheme
    if isinstance(scheme, Mapping):
        return scheme_from_dict(scheme, source="<mapping>")
    from os import PathLike
    from pathlib import Path

    if not isinstance(scheme, (str, PathLike)):
        raise SchemeError(
            f"A scheme must be a preset name, a file path, a mapping or a Scheme; got {type(scheme).__name__}. "
            f"Allowed presets: {', '.join(PRESETS)}."
        )
    key = str(scheme)
    if key in PRESETS:
        return PRESETS[key]
    path = Path(key)
    if path.suffix.lower() in (".toml", ".yaml", ".yml", ".json"):
        from .scheme_files import load_scheme_file

        return load_scheme_file(path)
    raise SchemeError(
        f"Unknown scheme {key!r}. Allowed: {', '.join(PRESETS)}, or a scheme file (.toml/.yaml/.yml/.json). "
        "Potential fix: check the spelling or the file suffix."
    )


_FIELDS = ("name", "bands", "damage", "description", "reference")
_BAND_FIELDS = ("name", "lo_hu", "hi_hu")


def _edge(value: Any, where: str, problems: list[str]) -> float:
    if isinstance(value, str) and value.strip().lower() in ("-inf", "inf", "+inf"):
        return float(value)
    if not _is_number(value):
        problems.append(f"{where}: expected a number or '-inf'/'inf', got {value!r}")
        return math.nan
    if math.isnan(value):
        problems.append(f"{where}: NaN is not an edge")
    return float(value)


def scheme_from_dict(
    data: Mapping[str, Any],
    *,
    source: str = "<mapping>",
    locate: Any = None,
) -> Scheme:
    """Build a scheme from plain data: ``{"name", "bands": [{"name", "lo_hu", "hi_hu"}], "damage"}``.

    Every problem is collected and reported at once, each naming its field
    (``bands[2].lo_hu``) and, when ``locate(field) -> line`` is given (scheme
    files), its line.

    Raises
    ------
    SchemeError
        Listing every problem and the allowed fields / values.
    """
    problems: list[str] = []

    def where(fld: str) -> str:
        line = locate(fld) if locate else None
        return f"{fld} (line {line})" if line else fld

    if not isinstance(data, Mapping):
        raise SchemeError(
            f"{source}: a scheme must be a table/mapping with fields {list(_FIELDS)}, got {type(data).__name__}. "
            "Potential fix: see examples/schemes/ for the layout."
        )
    unknown = sorted(set(data) - set(_FIELDS))
    for u in unknown:
        problems.append(f"{where(u)}: unknown field; allowed fields: {list(_FIELDS)}")
    name = data.get("name", "custom")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where('name')}: must be a non-empty string, got {name!r}")
        name = "custom"
    bands = _parse_bands(data.get("bands"), where, problems)
    damage = data.get("damage", ())
    if isinstance(damage, str):
        damage = (damage,)
    if not isinstance(damage, Sequence) or not all(isinstance(d, str) for d in damage):
        problems.append(f"{where('damage')}: must be a list of band names, got {damage!r}")
        damage = ()
    for fld in ("description", "reference"):
        if fld in data and not isinstance(data[fld], str):
            problems.append(f"{where(fld)}: must be a string, got {data[fld]!r}")
    seen = _check_band_names_and_order(bands, where, problems)
    for j, d in enumerate(damage):
        if d not in seen:
            problems.append(f"{where('damage')}: damage[{j}] = {d!r} is not a band; bands: {sorted(seen)}")
    if problems:
        names = [b.name for b in bands]
        raise SchemeError(
            f"Scheme file {source} is invalid:\n  - " + "\n  - ".join(problems)
            + f"\nAllowed: fields {list(_FIELDS)}; each band {{name, lo_hu, hi_hu}} with lo_hu < hi_hu "
            "(numbers or '-inf'/'inf', half-open [lo, hi)), bands sorted and not overlapping; "
            f"damage = names of bands ({names}). Potential fix: compare with examples/schemes/covid.toml."
        )
    return Scheme(
        name,
        tuple(bands),
        damage=tuple(damage),
        description=str(data.get("description", "")),
        reference=str(data.get("reference", "")),
        source=source,
    )


def _parse_bands(raw_bands: Any, where: Callable[[str], str], problems: list[str]) -> list[Band]:
    """The bands of a scheme mapping; every problem appended to ``problems``."""
    bands: list[Band] = []
    if raw_bands is None:
        problems.append("bands: missing; a scheme needs a list of {name, lo_hu, hi_hu} tables")
    elif not isinstance(raw_bands, Sequence) or isinstance(raw_bands, str):
        problems.append(f"{where('bands')}: must be a list of {{name, lo_hu, hi_hu}} tables, got {raw_bands!r}")
    else:
        for i, b in enumerate(raw_bands):
            fld = f"bands[{i}]"
            if not isinstance(b, Mapping):
                problems.append(f"{where(fld)}: expected a table with name, lo_hu, hi_hu; got {b!r}")
                continue
            for e in sorted(set(b) - set(_BAND_FIELDS)):
                problems.append(f"{where(f'{fld}.{e}')}: unknown field; allowed band fields: {list(_BAND_FIELDS)}")
            for m in [f for f in _BAND_FIELDS if f not in b]:
                problems.append(f"{where(fld)}: missing field {m!r}; a band needs {list(_BAND_FIELDS)}")
            if any(f not in b for f in _BAND_FIELDS):
                continue
            if not isinstance(b["name"], str):
                problems.append(f"{where(f'{fld}.name')}: must be a string, got {b['name']!r}")
            lo_hu = _edge(b["lo_hu"], where(f"{fld}.lo_hu"), problems)
            hi_hu = _edge(b["hi_hu"], where(f"{fld}.hi_hu"), problems)
            bands.append(Band(str(b["name"]), lo_hu, hi_hu))
    return bands


def _check_band_names_and_order(bands: list[Band], where: Callable[[str], str], problems: list[str]) -> set[str]:
    """Band names valid and unique, each band non-empty, bands sorted without overlap; returns the names."""
    seen: set[str] = set()
    for i, b in enumerate(bands):
        fld = f"bands[{i}]"
        if not b.name or not b.name.replace("_", "").isalnum():
            problems.append(f"{where(fld + '.name')}: band name {b.name!r} must be letters, digits or '_'")
        elif b.name == OTHER_BAND:
            problems.append(f"{where(fld + '.name')}: band name {OTHER_BAND!r} is reserved (voxels in no band)")
        elif b.name in seen:
            problems.append(f"{where(fld + '.name')}: band name {b.name!r} repeated")
        seen.add(b.name)
        if not (math.isnan(b.lo_hu) or math.isnan(b.hi_hu)) and not b.lo_hu < b.hi_hu:
            problems.append(f"{where(fld)}: needs lo_hu < hi_hu, got [{b.lo_hu:g}, {b.hi_hu:g})")
        if i and bands[i - 1].hi_hu > b.lo_hu:
            problems.append(
                f"{where(fld + '.lo_hu')}: band {b.name!r} starts at {b.lo_hu:g}, below the end "
                f"{bands[i - 1].hi_hu:g} of band {bands[i - 1].name!r} (bands must be sorted and not overlap)"
            )
    return seen
