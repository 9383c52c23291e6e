"""Region maps imported from a label file written by another tool."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..io.images import read_label_image
from ..regions import RegionMap, translate_labels
from ..volume import CTVolume

__all__ = ["labels_from_file"]


def labels_from_file(ct: CTVolume, path: str | Path, *, label_codes: str | Mapping[int, str] | Path) -> RegionMap:
    """Read a label image on the CT grid and translate its codes.

    Parameters
    ----------
    ct : CTVolume
        The CT the labels belong to; the label grid must match it.
    path : str or Path
        NIfTI / NRRD / MHA label map.
    label_codes : str, mapping or Path
        ``'lungmask'``, ``'lungmask-lungs'``, ``'totalsegmentator'``, ``'cip'``,
        a mapping code -> region name, or a JSON file of it
        (see :func:`lungdamage.regions.translate_labels`).

    Returns
    -------
    RegionMap
        ``method='labels:<file name>'``; region set ``lobes`` or ``lungs``
        depending on the codes.

    Raises
    ------
    GeometryError
        The label map is not on the CT grid (both geometries are named).
    InputError
        Unreadable file or unknown label-code convention.
    """
    path = Path(path)
    arr = read_label_image(path, ct)
    rm = translate_labels(arr, label_codes, method=f"labels:{path.name}")
    info = dict(rm.info)
    info.update(source=str(path), label_codes=str(label_codes) if not isinstance(label_codes, Mapping) else "mapping")
    return RegionMap(rm.labels, rm.names, method=rm.method, region_set=rm.region_set, info=info)
