"""Exception hierarchy of :mod:`lungdamage`.

Every error raised for bad input derives from :class:`LungDamageError` and,
where the problem is the input's fault, also from :class:`ValueError`, so
callers may catch either.  Messages follow one pattern: what failed, where
(path or series UID), the values seen, and a ``Potential fix:`` sentence.
"""

from __future__ import annotations

__all__ = [
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
    "ReviewError",
]


class LungDamageError(Exception):
    """Base class of every error raised by lungdamage."""


class InputError(LungDamageError, ValueError):
    """An input file, folder or argument cannot be used."""


class DicomSeriesError(InputError):
    """A DICOM series cannot be read into one consistent volume."""


class MultipleSeriesError(DicomSeriesError):
    """A folder holds more than one series and none was chosen.

    ``series`` lists ``(series_uid, n_files, description)`` for each one found.
    """

    def __init__(self, message: str, series: list[tuple[str, int, str]] | None = None):
        super().__init__(message)
        self.series = list(series or [])


class GeometryError(InputError):
    """Two grids that must match (CT and label map) do not."""


class SchemeError(InputError):
    """A scoring scheme (HU bands) is malformed."""


class SegmentationError(LungDamageError, ValueError):
    """Segmentation found no usable lung (e.g. the scan does not cover the chest)."""


class MissingDependencyError(LungDamageError, ImportError):
    """An optional dependency needed by a feature is not installed."""

    def __init__(self, feature: str, package: str, extra: str):
        super().__init__(
            f"{feature} needs the optional package {package!r}, which is not installed. "
            f"Potential fix: pip install 'lungdamage[{extra}]'"
        )
        self.feature = feature
        self.package = package
        self.extra = extra


class StoreError(LungDamageError):
    """The result store cannot be opened or written."""


class ManifestError(InputError):
    """A trial manifest or visit protocol file is malformed."""


class ReviewError(LungDamageError):
    """Some review outputs (QC image, masks, DICOM SEG, HTML) could not be written.

    The scan's scores are unaffected.  ``files`` maps each output kind that
    *was* written to its path; ``failures`` maps each kind that failed to a
    one-line reason.
    """

    def __init__(self, message: str, files: dict | None = None, failures: dict[str, str] | None = None):
        super().__init__(message)
        self.files = dict(files or {})
        self.failures = dict(failures or {})
