from . import batch as batch
from . import io as io
from . import phantom as phantom
from . import pipeline as pipeline
from . import privacy as privacy
from . import regions as regions
from . import report as report
from . import segment as segment
from . import study as study
from . import volume as volume
from ._version import __version__ as __version__
from .batch.store import load_results as load_results
from .errors import DicomSeriesError as DicomSeriesError
from .errors import GeometryError as GeometryError
from .errors import InputError as InputError
from .errors import LungDamageError as LungDamageError
from .errors import ManifestError as ManifestError
from .errors import MissingDependencyError as MissingDependencyError
from .errors import MultipleSeriesError as MultipleSeriesError
from .errors import SchemeError as SchemeError
from .errors import SegmentationError as SegmentationError
from .errors import StoreError as StoreError
from .io.dicom import read_series as read_series
from .io.images import read_image as read_image
from .pipeline import Analysis as Analysis
from .pipeline import AnalysisOptions as AnalysisOptions
from .pipeline import analyze as analyze
from .pipeline import analyze_many as analyze_many
from .pipeline import analyze_scan as analyze_scan
from .privacy import Pseudonymizer as Pseudonymizer
from .regions import RegionMap as RegionMap
from .score import ResultSet as ResultSet
from .score import ScanResult as ScanResult
from .score import Scheme as Scheme
from .score import get_scheme as get_scheme
from .score import score as score
from .score import score_many as score_many
from .segment import segment_lungs as segment_lungs
from .volume import CTVolume as CTVolume
from .volume import ScanMeta as ScanMeta

__all__ = [
    "__version__",
    "CTVolume",
    "ScanMeta",
    "RegionMap",
    "Scheme",
    "ScanResult",
    "ResultSet",
    "Analysis",
    "AnalysisOptions",
    "read_series",
    "read_image",
    "segment_lungs",
    "score",
    "score_many",
    "get_scheme",
    "analyze",
    "analyze_many",
    "analyze_scan",
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
    "StoreError",
    "ManifestError",
]
