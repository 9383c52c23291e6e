"""lungdamage: quantify lung damage (GGO, consolidation) on chest CT.

The public API is a handful of verbs and small immutable nouns::

    import lungdamage as ld
    ct = ld.read_series("scan_folder/")          # CTVolume (HU int16, LPS geometry)
    regions = ld.segment_lungs(ct)                # RegionMap (right/left lungs)
    result = ld.score(ct, regions, scheme="covid")  # ScanResult
    result.to_frame()                             # tidy pandas DataFrame

or in one call: ``ld.analyze("scan_folder/").to_frame()``.  Several schemes
from one pass: ``ld.score_many`` / ``ld.analyze_many`` (a ``ResultSet``).

Every public name is listed in ``__init__.pyi`` (what IDEs and type checkers
read) and loads on first use through ``lazy_loader``, so that
``import lungdamage`` and the CLI start fast.  ``lungdamage.score`` is the
function; its subpackage's modules import as usual
(``from lungdamage.score.schemes import PRESETS``).
"""

import logging

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)

logging.getLogger(__name__).addHandler(logging.NullHandler())
