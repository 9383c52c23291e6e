"""lungdamage: quantify lung damage (GGO, consolidation) on chest CT.

The public API is a handful of verbs and small immutable nouns::

    import lungdamage as ld
    ct = ld.read_series("scan_folder/")          # CTVolume (HU int16, LPS geometry)
    regions = ld.segment_lungs(ct)                # RegionMap (right/left lungs)
    result = ld.score(ct, regions, scheme="covid")  # ScanResult
    result.to_frame()                             # tidy pandas DataFrame

or in one call: ``ld.analyze("scan_folder/").to_frame()``.
"""

from __future__ import annotations

import logging

from ._version import __version__
from .errors import (
    DicomSeriesError,
    GeometryError,
    InputError,
    LungDamageError,
    MissingDependencyError,
    MultipleSeriesError,
    SchemeError,
    SegmentationError,
)
from .regions import RegionMap
from .volume import CTVolume, ScanMeta

# Heavy submodules (SimpleITK, pandas, scipy) load on first use, so that
# ``import lungdamage`` and the CLI start fast (PEP 562 lazy attributes).
_LAZY = {
    "read_series": "lungdamage.io.dicom",
    "read_image": "lungdamage.io.images",
    "segment_lungs": "lungdamage.segment",
    "ResultSet": "lungdamage.score",
    "get_scheme": "lungdamage.score",
    "Scheme": "lungdamage.score",
    "ScanResult": "lungdamage.score",
    "analyze": "lungdamage.pipeline",
    "load_results": "lungdamage.batch.store",
    "Pseudonymizer": "lungdamage.privacy",
}


#: Subpackages reachable as attributes (``lungdamage.study.compare_arms``) without an explicit import.
# ``score`` is the callable subpackage (see lungdamage/score/__init__.py): ``lungdamage.score(ct, regions)``.
_SUBMODULES = (
    "io", "segment", "score", "batch", "study", "report", "phantom", "pipeline", "regions", "volume", "privacy",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lungdamage' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "__version__",
    "CTVolume",
    "ScanMeta",
    "RegionMap",
    "Scheme",
    "ScanResult",
    "read_series",
    "read_image",
    "segment_lungs",
    "score",
    "get_scheme",
    "analyze",
    "load_results",
    "Pseudonymizer",
    "LungDamageError",
    "InputError",
    "DicomSeriesError",
    "MultipleSeriesError",
    "GeometryError",
    "SchemeError",
    "SegmentationError",
    "MissingDependencyError",
]
