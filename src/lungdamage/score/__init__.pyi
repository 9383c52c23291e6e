from ._score import scan_lesions as scan_lesions
from ._score import score as score
from ._score import score_many as score_many
from .lesion import LesionMap as LesionMap
from .lesion import LesionParams as LesionParams
from .lesion import find_lesions as find_lesions
from .prefilter import find_vessels as find_vessels
from .prefilter import smooth_lungs as smooth_lungs
from .result import Analysis as Analysis
from .result import ResultSet as ResultSet
from .result import ScanResult as ScanResult
from .result import dependency_versions as dependency_versions
from .result import params_hash as params_hash
from .schemes import PRESETS as PRESETS
from .schemes import Band as Band
from .schemes import Scheme as Scheme
from .schemes import get_scheme as get_scheme
from .schemes import get_schemes as get_schemes

__all__ = [
    "score",
    "score_many",
    "scan_lesions",
    "Scheme",
    "Band",
    "ScanResult",
    "ResultSet",
    "Analysis",
    "PRESETS",
    "get_scheme",
    "get_schemes",
    "params_hash",
    "dependency_versions",
    "find_vessels",
    "smooth_lungs",
    "find_lesions",
    "LesionMap",
    "LesionParams",
]
