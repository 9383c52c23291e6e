"""Colours of regions and HU bands, shared by QC images, colour tables and DICOM SEG.

One table so that a region or band has the same colour in the QC PNG, in 3D
Slicer (colour table / ``.seg.nrrd``) and in the DICOM SEG display colour.
Damage bands get warm, saturated colours (first damage band yellow -- GGO in
the ``covid`` scheme -- then red); the outlines of regions use a qualitative
palette kept far (in CIEDE2000) from those colours so that they never look
like damage.
"""

from __future__ import annotations

from ..score.schemes import OTHER_BAND, Scheme

__all__ = ["REGION_COLORS", "region_color", "band_colors", "DAMAGE_COLORS"]

RGB = tuple[int, int, int]

#: Outline / label colour of every canonical region name (RGB 0-255).  A qualitative palette chosen
#: so that the lobes (or zones) of one lung differ by CIEDE2000 >= 30, any two by >= 24, and every
#: region colour is >= 25 from the damage colours (yellow, red, orange): an outline never looks like damage.
REGION_COLORS: dict[str, RGB] = {
    "right": (0, 170, 255),
    "left": (0, 230, 120),
    "RUL": (0, 220, 255),  # cyan
    "RML": (255, 120, 220),  # pink
    "RLL": (60, 110, 255),  # blue
    "LUL": (0, 220, 80),  # green
    "LLL": (240, 240, 240),  # white
    "RUZ": (0, 220, 255),
    "RMZ": (255, 120, 220),
    "RLZ": (60, 110, 255),
    "LUZ": (0, 220, 80),
    "LMZ": (170, 90, 255),  # violet
    "LLZ": (240, 240, 240),
    "lung": (0, 191, 255),
}

#: Colours of damage bands, in the scheme's damage order (GGO yellow, consolidation red).
DAMAGE_COLORS: tuple[RGB, ...] = ((255, 215, 0), (255, 0, 0), (255, 120, 0), (255, 0, 200))
_BELOW: tuple[RGB, ...] = ((40, 40, 170), (110, 150, 220), (150, 200, 255), (90, 120, 200))
_ABOVE: tuple[RGB, ...] = ((235, 235, 235), (255, 170, 200), (200, 200, 120))
_OTHER: RGB = (128, 128, 128)


def region_color(name: str) -> RGB:
    """RGB colour of a region name (grey for unknown names)."""
    return REGION_COLORS.get(name, (180, 180, 180))


def band_colors(scheme: Scheme) -> dict[str, RGB]:
    """RGB colour of every band of ``scheme`` (``scheme.band_names`` order).

    Damage bands take :data:`DAMAGE_COLORS` in the order of ``scheme.damage``;
    bands below the first damage band are blues, bands above are light
    colours, the implicit ``other`` band is grey.
    """
    names = [b.name for b in scheme.bands]
    damage = [d for d in scheme.damage if d in names]
    first = min((names.index(d) for d in damage), default=len(names))
    out: dict[str, RGB] = {}
    n_below = n_above = 0
    for i, name in enumerate(names):
        if name in damage:
            out[name] = DAMAGE_COLORS[damage.index(name) % len(DAMAGE_COLORS)]
        elif i < first:
            out[name] = _BELOW[n_below % len(_BELOW)]
            n_below += 1
        else:
            out[name] = _ABOVE[n_above % len(_ABOVE)]
            n_above += 1
    if OTHER_BAND in scheme.band_names:
        out[OTHER_BAND] = _OTHER
    return out
