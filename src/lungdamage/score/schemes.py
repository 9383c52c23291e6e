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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import SchemeError

__all__ = ["Band", "Scheme", "PRESETS", "get_scheme", "OTHER_BAND"]

#: Name of the implicit band holding voxels outside every band.
OTHER_BAND = "other"

_HU_MIN, _HU_MAX = -32768, 32767


@dataclass(frozen=True)
class Band:
    """One half-open HU band ``[lo_hu, hi_hu)``; ``-inf`` / ``inf`` allowed."""

    name: str
    lo_hu: float
    hi_hu: float

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
    source: str = field(default="preset", compare=False)

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
        for a, b in zip(self.bands, self.bands[1:]):
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
        if b.name == OTHER_BAND:
            problems.append(f"band name {OTHER_BAND!r} is reserved")
        seen.add(b.name)
        if not (isinstance(b.lo_hu, (int, float)) and isinstance(b.hi_hu, (int, float))):
            problems.append(f"band {b.name!r} edges must be numbers, got {b.lo_hu!r}, {b.hi_hu!r}")
            continue
        if math.isnan(b.lo_hu) or math.isnan(b.hi_hu) or not b.lo_hu < b.hi_hu:
            problems.append(f"band {b.name!r} needs lo < hi, got [{b.lo_hu}, {b.hi_hu})")
    for a, b in zip(bands, bands[1:]):
        if isinstance(a.hi_hu, (int, float)) and isinstance(b.lo_hu, (int, float)) and b.lo_hu < a.hi_hu:
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
    key = str(scheme)
    if key in PRESETS:
        return PRESETS[key]
    from pathlib import Path

    path = Path(key)
    if path.suffix.lower() in (".toml", ".yaml", ".yml", ".json"):
        from .scheme_files import load_scheme_file

        return load_scheme_file(path)
    raise SchemeError(
        f"Unknown scheme {key!r}. Allowed: {', '.join(PRESETS)}, or a scheme file (.toml/.yaml/.json)."
    )


def _edge(value: Any, where: str) -> float:
    if isinstance(value, str) and value.strip().lower() in ("-inf", "inf", "+inf"):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemeError(f"{where}: expected a number or '-inf'/'inf', got {value!r}")
    return float(value)


def scheme_from_dict(data: Mapping[str, Any], *, source: str = "<mapping>") -> Scheme:
    """Build a scheme from plain data: ``{"name", "bands": [{"name", "lo_hu", "hi_hu"}], "damage"}``."""
    if not isinstance(data, Mapping):
        raise SchemeError(f"{source}: a scheme must be a table/mapping, got {type(data).__name__}")
    allowed = {"name", "bands", "damage", "description", "reference"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SchemeError(f"{source}: unknown field(s) {unknown}; allowed fields: {sorted(allowed)}")
    if "bands" not in data or not isinstance(data["bands"], Sequence) or isinstance(data["bands"], str):
        raise SchemeError(f"{source}: field 'bands' must be a list of {{name, lo_hu, hi_hu}} tables")
    bands = []
    for i, b in enumerate(data["bands"]):
        where = f"{source}: bands[{i}]"
        if not isinstance(b, Mapping):
            raise SchemeError(f"{where}: expected a table with name, lo_hu, hi_hu; got {b!r}")
        extra = sorted(set(b) - {"name", "lo_hu", "hi_hu"})
        missing = sorted({"name", "lo_hu", "hi_hu"} - set(b))
        if extra or missing:
            raise SchemeError(
                f"{where}: missing {missing} / unknown {extra}; allowed fields: ['hi_hu', 'lo_hu', 'name']"
            )
        bands.append(Band(str(b["name"]), _edge(b["lo_hu"], f"{where}.lo_hu"), _edge(b["hi_hu"], f"{where}.hi_hu")))
    damage = data.get("damage", ())
    if isinstance(damage, str):
        damage = (damage,)
    return Scheme(
        str(data.get("name", "custom")),
        tuple(bands),
        damage=tuple(damage),
        description=str(data.get("description", "")),
        reference=str(data.get("reference", "")),
        source=source,
    )
