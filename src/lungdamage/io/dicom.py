"""Read one DICOM CT series into a :class:`~lungdamage.volume.CTVolume`.

Orientation convention of the result
------------------------------------
- Axis 0 (slice) runs along the slice normal ``n = row_cosines × column_cosines``
  (``ImageOrientationPatient[0:3] × [3:6]``); slices are sorted by *increasing*
  position ``dot(ImagePositionPatient, n)``, never by InstanceNumber or raw z.
  For a head-first supine axial series ``n`` is +z (superior), so slice 0 is the
  most inferior slice whatever order the scanner wrote them in; for feet-first
  the scanner's orientation flips ``n`` to -z and slice 0 is the most superior.
  ``direction`` always says which way each axis points; downstream code uses it.
- Axes 1 (row) and 2 (column) are kept exactly as stored: rows advance along
  the column cosines ``IOP[3:6]``, columns along the row cosines ``IOP[0:3]``.
- ``direction[:, 0] = n``, ``direction[:, 1] = IOP[3:6]``,
  ``direction[:, 2] = IOP[0:3]``; ``origin_lps`` is the position of the first
  sorted slice; ``spacing_mm[0]`` is the distance between consecutive slice
  positions along ``n`` (not SliceThickness).

HU are ``round(stored * RescaleSlope + RescaleIntercept)`` per slice, clipped to
int16; padding (PixelPaddingValue / PixelPaddingRangeLimit, in stored values)
and outside-field values (HU <= -2000, e.g. -2048 or -3024) become -1024 (air).
MONOCHROME1 only inverts the *display*; HU come from the rescale as for
MONOCHROME2 (a warning notes it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
import zipfile
import zlib
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DicomSeriesError, InputError, MultipleSeriesError
from ..volume import AIR_HU, CTVolume, ScanMeta
from ._dicom_headers import (
    IMPLICIT_LE,
    MAX_TEXT_CHARS,
    UNCOMPRESSED_LE,
    DicomHeader,
    iter_sources,
    open_member,
    read_headers,
    read_source_bytes,
    split_zip_source,
    zip_member,
)

__all__ = ["read_series", "DicomReadWarning", "OUTSIDE_FIELD_HU", "MAX_VOXELS", "max_voxels"]

logger = logging.getLogger(__name__)

#: HU at or below this value are outside the reconstruction field and become air.
OUTSIDE_FIELD_HU = -2000

#: Default voxel budget of one volume (2**30 voxels: 2 GiB as int16, about 21 GiB of peak
#: analysis memory); ``LUNGDAMAGE_MAX_VOXELS`` overrides it.  Headers declaring more are
#: refused before any pixel array is allocated.
MAX_VOXELS = 2**30

#: JPEG 2000 transfer syntaxes (checked against the codestream's SIZ header before decoding).
_J2K_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93",
     "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
)


def max_voxels() -> int:
    """The voxel budget: ``LUNGDAMAGE_MAX_VOXELS`` from the environment, else :data:`MAX_VOXELS`."""
    value = os.environ.get("LUNGDAMAGE_MAX_VOXELS", "")
    try:
        return int(float(value)) if value.strip() else MAX_VOXELS
    except ValueError:
        raise InputError(
            f"LUNGDAMAGE_MAX_VOXELS={value!r} is not a number. Potential fix: e.g. LUNGDAMAGE_MAX_VOXELS=2e9."
        ) from None

_TILT_CHOICES = ("correct", "error")
_IRREGULAR_CHOICES = ("resample", "error")


class DicomReadWarning(UserWarning):
    """Something unusual was found while reading a series; the volume is still usable.

    The same text is appended to ``CTVolume.meta.warnings``.
    """


# --------------------------------------------------------------------------- sources


def _resolve_sources(source: Any, counts: dict | None = None) -> tuple[list[tuple[str, int]], str]:
    """Files (and sizes) named by ``source`` plus a printable name for messages."""
    files = getattr(source, "files", None)
    if files is not None and not isinstance(source, (str, os.PathLike)):
        # a catalog SeriesInfo (or anything with .files)
        items = [str(f) for f in files]
        name = str(getattr(source, "series_uid", "") or (items[0] if items else "<empty>"))
        return [(s, -1) for s in items], name
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        z = split_zip_source(path)
        if z is not None:
            if not os.path.isfile(z[0]):
                raise InputError(
                    f"Zip archive {z[0]!r} does not exist. Potential fix: check the path "
                    "(members are named 'archive.zip::member/path')."
                )
            return [(path, -1)], path
        if not os.path.exists(path):
            raise InputError(
                f"Input path {path!r} does not exist. Potential fix: check the spelling and that the "
                "folder with the DICOM series is mounted."
            )
        return list(iter_sources(path, counts=counts)), path
    if isinstance(source, Sequence):
        items = [os.fspath(s) for s in source]
        if not items:
            raise InputError("read_series got an empty list of files. Potential fix: pass a folder or files.")
        missing = [s for s in items if split_zip_source(s) is None and not os.path.isfile(s)]
        if missing:
            raise InputError(
                f"{len(missing)} of {len(items)} files do not exist, e.g. {missing[0]!r}. "
                "Potential fix: check the file list."
            )
        return [(s, -1) for s in items], f"{len(items)} files starting {items[0]!r}"
    raise InputError(
        f"read_series cannot read a {type(source).__name__}. "
        "Potential fix: pass a folder, a list of files or a catalog SeriesInfo."
    )


# --------------------------------------------------------------------------- reader


@dataclass
class _Warn:
    """Collects warnings: emitted as DicomReadWarning and kept for meta.warnings."""

    messages: list

    def __call__(self, msg: str) -> None:
        self.messages.append(msg)
        logger.warning("%s", msg)
        warnings.warn(msg, DicomReadWarning, stacklevel=3)


def read_series(
    source: str | os.PathLike | Sequence[str | os.PathLike] | Any,
    *,
    series_uid: str | None = None,
    allow_gaps: bool = False,
    gap_factor: float = 1.5,
    spacing_tolerance_mm: float = 0.05,
    irregular: str = "resample",
    tilt: str = "correct",
    orientation_tolerance: float = 1e-3,
    thin_slab_mm: float = 10.0,
) -> CTVolume:
    """Read one CT series into HU with its LPS geometry.

    Parameters
    ----------
    source : path, list of paths, or SeriesInfo
        A folder (searched recursively, ``.zip`` archives included), one file,
        a list of files (``"archive.zip::member"`` names members of a zip), or
        a :class:`lungdamage.io.catalog.SeriesInfo`.
    series_uid : str, optional
        Which series to read when ``source`` holds several.
    allow_gaps : bool
        Missing slices (a step larger than ``gap_factor`` × the median step)
        raise :class:`DicomSeriesError` unless True; then the volume is
        resampled onto a regular grid at the median spacing (linear
        interpolation across the gap) with a warning.
    gap_factor : float
        Step / median-step ratio above which a step counts as a gap.
    spacing_tolerance_mm : float
        Largest deviation of a step from the median step still treated as
        regular spacing.
    irregular : {"resample", "error"}
        What to do with steps that deviate more than the tolerance but are no
        gaps: resample linearly onto a regular grid (with a warning) or raise.
    tilt : {"correct", "error"}
        Gantry tilt (slice positions not moving along the slice normal):
        shear-correct each slice in-plane onto an orthogonal grid (with a
        warning), or raise.
    orientation_tolerance : float
        Largest difference in direction cosines still treated as one orientation.
    thin_slab_mm : float
        A series covering less than this extent (incl. a single slice) is read
        with a warning.

    Returns
    -------
    CTVolume
        ``hu`` int16 (slice, row, column); see the module docstring for the
        orientation convention.

    Raises
    ------
    InputError
        ``source`` does not exist.
    MultipleSeriesError
        Several series and no ``series_uid``.
    DicomSeriesError
        No DICOM image, inconsistent geometry, conflicting duplicates, gaps.

    Notes
    -----
    Pixels go straight into one preallocated array, read by up to 4 threads (``LUNGDAMAGE_READ_THREADS``).
    A series of at least :data:`DECODE_PROCESS_MIN_FRAMES` compressed files (JPEG 2000, JPEG-LS,
    JPEG, RLE) is decoded by as many worker processes (the decoders hold the GIL), except in a
    daemonic process, where processes cannot start, or in a script whose main thread is not under
    ``if __name__ == "__main__":`` (see :func:`lungdamage._procs.may_start_processes`).
    """
    if irregular not in _IRREGULAR_CHOICES or tilt not in _TILT_CHOICES:
        raise ValueError(f"irregular must be one of {_IRREGULAR_CHOICES} and tilt one of {_TILT_CHOICES}, "
                         f"got {irregular!r} and {tilt!r}")
    counts: dict = {}
    sources, where = _resolve_sources(source, counts)
    series = _pick_series(_image_headers(sources, where, counts), series_uid, where)
    opts = {"allow_gaps": allow_gaps, "gap_factor": gap_factor, "spacing_tolerance_mm": spacing_tolerance_mm,
            "irregular": irregular, "tilt": tilt, "orientation_tolerance": orientation_tolerance,
            "thin_slab_mm": thin_slab_mm}
    reader = _SeriesReader(series, where=where, **opts)
    problems = counts.get("problems", [])
    if problems:
        src, why = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        reader.warn(f"{where}: {len(problems)} input(s) could not be read and were skipped: {src}: {why}{more}")
    return reader.read()


def _image_headers(sources: list[tuple[str, int]], where: str, counts: dict) -> list[DicomHeader]:
    """Headers of the image files among ``sources``; one clear error when there is none."""
    headers = read_headers(sources, counts=counts)
    n_other = counts.get("non_dicom", 0) + counts.get("unreadable", 0)
    if n_other:
        logger.info("%s: ignored %d non-DICOM or unreadable file(s)", where, n_other)
    images = [h for h in headers if h.is_image]
    if not images:
        raise _no_image_error(where, len(sources), len(headers), n_other, counts.get("problems", []))
    return images


def _no_image_error(where: str, n_sources: int, n_headers: int, n_other: int, problems: list) -> DicomSeriesError:
    return DicomSeriesError(
        f"No DICOM image found in {where!r} ({n_sources} files looked at, "
        f"{n_headers} DICOM without image data, {n_other} non-DICOM). "
        "Potential fix: point to the folder holding the CT slices; run `lungdamage index ROOT` "
        "to list the series under a folder tree."
        + (f" {len(problems)} input(s) could not be read, e.g. {problems[0][0]}: {problems[0][1]}." if problems else "")
    )


def _pick_series(images: list[DicomHeader], series_uid: str | None, where: str) -> list[DicomHeader]:
    groups: dict[str, list[DicomHeader]] = {}
    for h in images:
        groups.setdefault(h.series_uid, []).append(h)
    if series_uid is not None:
        if series_uid not in groups:
            listing = "; ".join(f"{uid or '<no UID>'} ({len(g)} files)" for uid, g in groups.items())
            raise DicomSeriesError(
                f"Series {series_uid!r} not found in {where!r}; found: {listing}. "
                "Potential fix: pass one of the listed UIDs as series_uid= / --series-uid."
            )
        return groups[series_uid]
    if len(groups) > 1:
        info = [(uid, len(g), g[0].series_description) for uid, g in groups.items()]
        listing = "; ".join(f"{uid or '<no UID>'} ({n} files, {desc!r})" for uid, n, desc in info)
        raise MultipleSeriesError(
            f"{where!r} holds {len(groups)} series: {listing}. "
            "Potential fix: pass series_uid= (CLI: --series-uid) to choose one, or run "
            "`lungdamage index ROOT` to see which series would be scored.",
            info,
        )
    return next(iter(groups.values()))


def _groups_text(keys: list, labels: list[str]) -> str:
    c = Counter(keys)
    return "; ".join(f"{k} ({n} frames, e.g. {labels[keys.index(k)]})" for k, n in c.most_common())


class _SeriesReader:
    def __init__(self, headers: list[DicomHeader], *, where: str, **opts: Any):
        self.headers = headers
        self.opts = opts
        self.uid = headers[0].series_uid
        self.name = self.uid or where
        self.warn = _Warn([])
        self.first = headers[0]

    # -- consistency ------------------------------------------------------
    def _check_consistency(self, fi: np.ndarray) -> None:
        hs = self.headers
        labels = [Path(hs[i].source).name for i in fi]
        checks = [
            ("matrix sizes (rows x columns)", [f"{hs[i].rows}x{hs[i].columns}" for i in fi]),
            ("frames of reference", [hs[i].frame_of_reference_uid or "<none>" for i in fi]),
            ("samples per pixel", [str(hs[i].samples_per_pixel) for i in fi]),
        ]
        for what, keys in checks:
            if len(set(keys)) > 1:
                raise DicomSeriesError(
                    f"Series {self.name} mixes {len(set(keys))} {what}: {_groups_text(keys, labels)}. "
                    "Potential fix: split the files into one folder per group, or pass the files of one "
                    "group as a list."
                )
        if hs[fi[0]].samples_per_pixel != 1:
            raise DicomSeriesError(
                f"Series {self.name} has {hs[fi[0]].samples_per_pixel} samples per pixel (colour), not a CT "
                "image. Potential fix: choose the CT series (see `lungdamage index`)."
            )

    def _check_orientation(self, ori: np.ndarray, ps: np.ndarray, labels: list[str]) -> None:
        tol = self.opts["orientation_tolerance"]
        if np.isnan(ori).any() or np.isnan(ps).any():
            bad = int(np.isnan(ori).any(axis=1).sum() + np.isnan(ps).any(axis=1).sum())
            raise DicomSeriesError(
                f"Series {self.name}: {bad} frame(s) lack ImageOrientationPatient or PixelSpacing "
                f"(e.g. {labels[int(np.argmax(np.isnan(ori).any(axis=1) | np.isnan(ps).any(axis=1)))]}); "
                "the geometry is unknown. Potential fix: this is not a cross-sectional CT image "
                "(scout, secondary capture?); choose another series."
            )
        dev = np.abs(ori - ori[0]).max(axis=1)
        if (dev > tol).any():
            keys = [",".join(f"{v:.3f}" for v in o) for o in np.round(ori, 3)]
            raise DicomSeriesError(
                f"Series {self.name} mixes image orientations (ImageOrientationPatient): "
                f"{_groups_text(keys, labels)}. Potential fix: read each orientation as its own series "
                "(pass its files as a list)."
            )
        dps = np.abs(ps - ps[0]).max(axis=1)
        if (dps > 1e-3).any():
            keys = [f"{a:.4g}x{b:.4g}" for a, b in ps]
            raise DicomSeriesError(
                f"Series {self.name} mixes pixel spacings (mm): {_groups_text(keys, labels)}. "
                "Potential fix: pass the files of one reconstruction as a list."
            )

    def _check_values(self, ori: np.ndarray, slope: np.ndarray, inter: np.ndarray, labels: list[str]) -> None:
        """Refuse rescale values and orientations that would give silently wrong HU or geometry."""
        bad = ~np.isfinite(slope) | ~np.isfinite(inter) | (slope == 0)
        if bad.any():
            k = int(np.argmax(bad))
            raise DicomSeriesError(
                f"Series {self.name}: {int(bad.sum())} slice(s) have an unusable rescale (e.g. {labels[k]}: "
                f"RescaleSlope {float(slope[k])}, RescaleIntercept {float(inter[k])}); HU cannot be computed. "
                "Potential fix: the header is damaged; re-export the series or remove the slice."
            )
        if not np.isfinite(ori).all():
            k = int(np.argmax(~np.isfinite(ori).all(axis=1)))
            raise DicomSeriesError(
                f"Series {self.name}: ImageOrientationPatient of {labels[k]} is not finite ({ori[k].tolist()}). "
                "Potential fix: the header is damaged; re-export the series."
            )
        r, c = ori[:, :3], ori[:, 3:]
        nr, nc = np.linalg.norm(r, axis=1), np.linalg.norm(c, axis=1)
        dot = np.abs(np.einsum("ij,ij->i", r, c)) / np.maximum(nr * nc, 1e-12)
        # direction cosines are written with 6 or more decimals: 1e-3 is far above rounding
        bad = (np.abs(nr - 1) > 1e-2) | (np.abs(nc - 1) > 1e-2) | (dot > 1e-3)
        if bad.any():
            k = int(np.argmax(bad))
            raise DicomSeriesError(
                f"Series {self.name}: ImageOrientationPatient of {labels[k]} is not a pair of orthonormal "
                f"direction cosines (row {np.round(r[k], 4).tolist()}, column {np.round(c[k], 4).tolist()}: "
                f"lengths {nr[k]:.4f} and {nc[k]:.4f}, dot product {dot[k]:.4f}); the geometry is undefined. "
                "Potential fix: the header is damaged; re-export the series."
            )

    def _check_instances(self, fi: np.ndarray, pos: np.ndarray) -> None:
        """One SOP Instance UID must not stand for two different slices."""
        hs = self.headers
        first: dict[str, int] = {}
        for k, i in enumerate(fi):
            uid = hs[i].sop_instance_uid
            if not uid or hs[i].is_multiframe:
                continue
            j = first.setdefault(uid, k)
            if j != k and np.abs(pos[j] - pos[k]).max() > 1e-3:
                raise DicomSeriesError(
                    f"Series {self.name}: SOP Instance UID {uid} is used by two files at different positions "
                    f"({hs[fi[j]].source} at {np.round(pos[j], 3).tolist()} and {hs[i].source} at "
                    f"{np.round(pos[k], 3).tolist()}); which slice is the instance is ambiguous. "
                    "Potential fix: remove the wrong copy, or re-export the series."
                )

    # -- main ---------------------------------------------------------------
    def read(self) -> CTVolume:
        hs = self.headers
        # frame table: one row per frame over all files
        nf = np.array([h.positions.shape[0] for h in hs])
        fi = np.repeat(np.arange(len(hs)), nf)
        fr = np.concatenate([np.arange(n) for n in nf])
        pos = np.concatenate([h.positions for h in hs])
        ori = np.concatenate([h.orientations for h in hs])
        ps = np.concatenate([h.pixel_spacing for h in hs])
        slope = np.concatenate([h.slope for h in hs])
        inter = np.concatenate([h.intercept for h in hs])
        labels = [
            Path(hs[i].source).name + (f"[frame {f}]" if hs[i].is_multiframe else "")
            for i, f in zip(fi, fr, strict=True)
        ]

        self._check_consistency(fi)
        self._check_orientation(ori, ps, labels)
        self._check_values(ori, slope, inter, labels)
        self._check_instances(fi, pos)
        if np.isnan(pos).any():
            k = int(np.argmax(np.isnan(pos).any(axis=1)))
            raise DicomSeriesError(
                f"Series {self.name}: frame {labels[k]} has no ImagePositionPatient, so slices cannot be "
                "ordered. Potential fix: choose a cross-sectional CT series (see `lungdamage index`)."
            )
        row_cos = ori[0, :3] / np.linalg.norm(ori[0, :3])
        col_cos = ori[0, 3:] / np.linalg.norm(ori[0, 3:])
        normal = np.cross(row_cos, col_cos)
        normal /= np.linalg.norm(normal)
        d = pos @ normal
        order = np.argsort(d, kind="stable")
        fi, fr, pos, d, slope, inter = fi[order], fr[order], pos[order], d[order], slope[order], inter[order]
        labels = [labels[k] for k in order]

        keep = self._duplicates(fi, fr, d, labels)
        raw, value_range = self._decode(fi, fr)
        if keep is not None:
            raw = self._resolve_duplicates(raw, keep, fi, fr, d, labels)
            sel = keep[0]
            fi, fr, pos, d, slope, inter = fi[sel], fr[sel], pos[sel], d[sel], slope[sel], inter[sel]
            labels = [labels[k] for k in sel]

        hu = _to_hu(raw, slope, inter, hs, fi, value_range)
        del raw
        row_mm, col_mm = float(ps[0, 0]), float(ps[0, 1])
        hu, spacing0, origin = self._geometry(hu, pos, d, normal, row_cos, col_cos, row_mm, col_mm, labels)
        direction = np.column_stack([normal, col_cos, row_cos])
        return CTVolume(hu, (spacing0, row_mm, col_mm), tuple(origin), direction, self._meta(fi))

    # -- duplicates -----------------------------------------------------------
    def _duplicates(self, fi, fr, d, labels):
        if len(d) < 2:
            return None
        same = np.diff(d) < 1e-3
        if not same.any():
            return None
        # keep the first frame of each run of equal positions
        keep = np.concatenate([[True], ~same])
        return np.flatnonzero(keep), same

    def _resolve_duplicates(self, raw, keep, fi, fr, d, labels):
        sel, same = keep
        dup_idx = np.flatnonzero(same) + 1  # frames equal to their predecessor
        run_start = np.maximum.accumulate(np.where(np.concatenate([[True], ~same]), np.arange(len(d)), 0))
        ref = run_start[dup_idx]
        differ = np.any(raw[dup_idx] != raw[ref], axis=(1, 2))
        if differ.any():
            k = int(dup_idx[np.argmax(differ)])
            r = int(run_start[k])
            raise DicomSeriesError(
                f"Series {self.name}: {int(differ.sum())} slice position(s) occur twice with different pixel "
                f"data, e.g. {labels[r]} and {labels[k]} at {d[k]:.3f} mm along the normal. "
                "Potential fix: the folder mixes two acquisitions or reconstructions of one series; "
                "separate them (e.g. by AcquisitionNumber) and pass one set of files as a list."
            )
        self.warn(
            f"Series {self.name}: dropped {len(dup_idx)} duplicate slice(s) with identical position and "
            f"pixels (e.g. {labels[int(dup_idx[0])]} duplicates {labels[int(ref[0])]})."
        )
        return raw[sel]

    # -- decoding -------------------------------------------------------------
    def _decode(self, fi: np.ndarray, fr: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Stored values of every frame, in ``fi``/``fr`` order, and their (min, max)."""
        hs = self.headers
        first = hs[fi[0]]
        rows, cols = first.rows, first.columns
        used = np.unique(fi)
        signed = {hs[i].pixel_representation for i in used}
        alloc = {hs[i].bits_allocated for i in used}
        if alloc == {16} and len(signed) == 1:
            dtype = np.dtype("<i2" if 1 in signed else "<u2")
        else:
            dtype = np.dtype(np.int32)
        self._check_size(fi, rows, cols)
        raw = np.empty((len(fi), rows, cols), dtype=dtype)  # the one full-size buffer; filled in place
        value_range = self._fill(raw, fi, fr)
        # unused high bits (PS3.5 8.1.1): sign-extend / mask, only when a value uses them
        bs = np.array([hs[i].bits_stored for i in fi])
        nbits = raw.dtype.itemsize * 8
        if (bs < nbits).any() and raw.size:
            b = int(bs.min())
            lo, hi = (-(1 << (b - 1)), (1 << (b - 1)) - 1) if dtype.kind == "i" else (0, (1 << b) - 1)
            if value_range[0] < lo or value_range[1] > hi:
                for b in np.unique(bs[bs < nbits]):  # one pass per distinct BitsStored
                    shift = nbits - int(b)
                    sel = slice(None) if (bs == b).all() else bs == b
                    if dtype.kind == "i":
                        raw[sel] = (raw[sel] << shift) >> shift
                    else:
                        raw[sel] &= (1 << int(b)) - 1
                value_range = (int(raw.min()), int(raw.max()))
        return raw, value_range

    def _fill(self, raw: np.ndarray, fi: np.ndarray, fr: np.ndarray) -> tuple[int, int]:
        """Read or decode every frame into ``raw``; return the (min, max) stored value.

        Multi-frame files are decoded once each and their frames scattered into
        place, the decoded array dropped before the next file.  Single-frame
        files are read in blocks of consecutive slices by a few threads (file
        reads release the GIL); each block's range is taken while it is still in
        cache.  A series of at least :data:`DECODE_PROCESS_MIN_FRAMES` compressed
        single-frame files is decoded by as many worker processes instead: the
        pylibjpeg decoders (JPEG 2000, JPEG-LS, JPEG) hold the GIL, so threads
        would decode one frame at a time.
        """
        hs = self.headers
        multi = np.array([hs[i].n_frames > 1 for i in fi], dtype=bool)
        for i in np.unique(fi[multi]):
            ks = np.flatnonzero(fi == i)
            arr = _decode_pydicom(hs[i], self.name)
            raw[ks] = arr[fr[ks]] if arr.ndim == 3 else arr
            del arr  # released before the next file is decoded
        n = len(fi)
        block = 16
        starts = range(0, n, block)

        def fill_block(start: int) -> tuple[int, int]:
            stop = min(start + block, n)
            for k in range(start, stop):
                if not multi[k]:
                    _read_frame(hs[fi[k]], raw[k], self.name)
            sub = raw[start:stop]
            return int(sub.min()), int(sub.max())

        threads = _reader_threads()
        zipped = any(split_zip_source(hs[i].source) for i in np.unique(fi))
        n_coded = sum(1 for k in range(n) if not multi[k] and hs[fi[k]].transfer_syntax not in UNCOMPRESSED_LE)
        if threads > 1 and not zipped and n_coded >= DECODE_PROCESS_MIN_FRAMES:
            from .._procs import may_start_processes

            pool = _decoder_pool(threads) if may_start_processes() else None
            if pool is not None:
                return _span(self._fill_in_processes(pool, raw, fi, multi, block, threads))
        if threads > 1 and n > block and not zipped:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(threads, thread_name_prefix="lungdamage-read") as pool:
                ranges = list(pool.map(fill_block, starts))
        else:  # zip members share one archive handle: read them in order
            ranges = [fill_block(start) for start in starts]
        return _span(ranges)

    def _fill_in_processes(
        self, pool: Any, raw: np.ndarray, fi: np.ndarray, multi: np.ndarray, block: int, workers: int
    ) -> list[tuple[int, int]]:
        """The single-frame files, in blocks of ``block`` slices, decoded by the ``workers`` processes of
        ``pool`` (at most two blocks per worker in flight, so finished blocks never pile up); each block's
        (min, max) stored value.  A decoder process that dies becomes one :class:`DicomSeriesError`."""
        from concurrent.futures.process import BrokenProcessPool

        hs, n = self.headers, len(fi)
        blocks = [(start, min(start + block, n)) for start in range(0, n, block)]
        singles = [[k for k in range(a, b) if not multi[k]] for a, b in blocks]
        ranges: list[tuple[int, int]] = []
        pids: set[int] = set()
        inflight: deque = deque()
        try:
            for j in range(len(blocks)):
                inflight.append((j, pool.submit(_decode_block, [hs[fi[k]] for k in singles[j]], raw.shape[1:],
                                                raw.dtype.str, self.name) if singles[j] else None))
                while inflight and (len(inflight) >= 2 * workers or j == len(blocks) - 1):
                    done, fut = inflight.popleft()
                    if fut is not None:
                        arr, pid, notes = fut.result()
                        raw[singles[done]] = arr
                        pids.add(pid)
                        for module, qualname, text in notes:  # what the decoder process warned about
                            warnings.warn(text, _warning_category(module, qualname), stacklevel=2)
                    sub = raw[blocks[done][0]: blocks[done][1]]
                    ranges.append((int(sub.min()), int(sub.max())))
        except (BrokenProcessPool, OSError) as exc:  # OSError: the pool broke while starting a process
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.kill()  # a broken pool's queues may be dirty: never wait on a live worker
            raise DicomSeriesError(
                f"Series {self.name}: a decoder process died decoding its compressed pixel data "
                f"({type(exc).__name__}: {exc}); it was killed (out of memory?) or a file crashed the decoder. "
                "Potential fix: free memory and read the series again; if it fails again, remove the damaged "
                "file(s) or export the series again."
            ) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        logger.info("%s: %d single-frame files decoded by processes %s", self.name,
                    sum(len(ks) for ks in singles), sorted(pids))
        return ranges

    def _check_size(self, fi: np.ndarray, rows: int, cols: int) -> None:
        """Refuse declared sizes beyond the voxel budget or the files' bytes, before allocating."""
        n_vox = len(fi) * rows * cols
        budget = max_voxels()
        if n_vox > budget:
            raise DicomSeriesError(
                f"Series {self.name}: the headers declare {len(fi)} slices of {rows} x {cols} pixels = {n_vox:.3g} "
                f"voxels, more than the budget of {budget:.3g} voxels (about {21 * budget / 2**30:.0f} GiB of "
                "analysis memory). Potential fix: if the series is genuine, raise LUNGDAMAGE_MAX_VOXELS; "
                "otherwise the header is damaged."
            )
        hs = self.headers
        for i in np.unique(fi):
            h = hs[i]
            if h.transfer_syntax in UNCOMPRESSED_LE and h.size_bytes >= 0:
                need = h.rows * h.columns * h.samples_per_pixel * max(h.bits_allocated, 8) // 8 * h.n_frames
                if need > h.size_bytes:
                    raise DicomSeriesError(
                        f"Series {self.name}: {h.source} declares {h.n_frames} x {h.rows} x {h.columns} pixels "
                        f"({need} bytes) but holds only {h.size_bytes} bytes. Potential fix: the file is "
                        "truncated or its header is damaged; remove it or copy it again."
                    )

    # -- geometry -------------------------------------------------------------
    def _geometry(self, hu, pos, d, normal, row_cos, col_cos, row_mm, col_mm, labels):
        n = len(d)
        o = self.opts
        origin = pos[0].copy()
        if n == 1:
            h = self.first
            sp = h.spacing_between_slices_mm or h.slice_thickness_mm
            src = "SpacingBetweenSlices" if h.spacing_between_slices_mm else "SliceThickness"
            if not sp or sp <= 0:
                sp, src = 1.0, "a default of 1 mm"
            self.warn(
                f"Series {self.name} has a single slice; slice spacing {sp:g} mm taken from {src}. "
                "Volumes and 3-D results are not meaningful for one slice."
            )
            return hu, float(sp), origin

        steps = np.diff(d)
        med = float(np.median(steps))
        # gantry tilt: positions move in-plane as well as along the normal
        inplane = (pos - pos[0]) - np.outer(d - d[0], normal)
        shift_per_mm = inplane[-1] / (d[-1] - d[0])
        resid = inplane - np.outer(d - d[0], shift_per_mm)
        if np.abs(resid).max() > max(0.05, 0.1 * min(row_mm, col_mm)):
            k = int(np.argmax(np.abs(resid).max(axis=1)))
            raise DicomSeriesError(
                f"Series {self.name}: slice positions do not lie on one line (slice {labels[k]} is "
                f"{np.abs(resid[k]).max():.2f} mm off). Potential fix: the files mix several stacks; "
                "pass the files of one stack as a list."
            )
        tilt_deg = float(np.degrees(np.arctan(np.linalg.norm(shift_per_mm))))
        if np.linalg.norm(inplane[-1]) > 1e-2 and tilt_deg > 0.01:
            if o["tilt"] == "error":
                raise DicomSeriesError(
                    f"Series {self.name} was acquired with gantry tilt: slices shift {tilt_deg:.2f} degrees "
                    "off the slice normal (GantryDetectorTilt "
                    f"{self.first.gantry_tilt_deg if self.first.gantry_tilt_deg is not None else 'absent'}). "
                    "Potential fix: read with tilt='correct' to shear-correct onto an orthogonal grid."
                )
            hu = _shear_correct(hu, d - d[0], shift_per_mm @ col_cos / row_mm, shift_per_mm @ row_cos / col_mm)
            self.warn(
                f"Series {self.name}: gantry tilt of {tilt_deg:.2f} degrees corrected by shifting each slice "
                "in-plane onto an orthogonal grid (linear interpolation)."
            )

        gap = steps > o["gap_factor"] * med
        tol = o["spacing_tolerance_mm"]
        if gap.any():
            k = int(np.argmax(steps))
            msg = (
                f"Series {self.name} has {int(gap.sum())} gap(s) in slice positions: largest "
                f"{steps[k]:.3f} mm between {labels[k]} and {labels[k + 1]} "
                f"(median spacing {med:.3f} mm; about {int(round(steps[k] / med)) - 1} slice(s) missing)."
            )
            if not o["allow_gaps"]:
                raise DicomSeriesError(
                    msg + " Potential fix: find the missing files, or read with allow_gaps=True "
                    "(CLI: --allow-gaps) to interpolate across the gap."
                )
            self.warn(msg + f" Resampled to a regular grid at {med:.3f} mm (interpolated across the gap).")
            hu = _resample_slices(hu, d - d[0], med)
            return hu, med, origin
        if np.abs(steps - med).max() > tol:
            msg = (
                f"Series {self.name} has irregular slice spacing: steps from {steps.min():.3f} to "
                f"{steps.max():.3f} mm (median {med:.3f}, tolerance {tol} mm)."
            )
            if o["irregular"] == "error":
                raise DicomSeriesError(
                    msg + " Potential fix: read with irregular='resample' to interpolate onto a regular grid."
                )
            self.warn(msg + f" Resampled linearly to a regular grid at {med:.3f} mm.")
            return _resample_slices(hu, d - d[0], med), med, origin
        spacing = float((d[-1] - d[0]) / (n - 1))
        extent = spacing * n
        if extent < o["thin_slab_mm"]:
            self.warn(
                f"Series {self.name} is a thin slab: {n} slices covering {extent:.1f} mm; lungs need about "
                "150 mm or more. Volumes cover only this slab."
            )
        return hu, spacing, origin

    # -- meta -------------------------------------------------------------------
    def _meta(self, fi: np.ndarray) -> ScanMeta:
        hs = self.headers
        used = [hs[i] for i in np.unique(fi)]
        h = used[0]
        if h.modality and h.modality != "CT":
            self.warn(
                f"Series {self.name} has modality {h.modality!r}, not CT: its pixel values are not Hounsfield "
                "units and lung damage scores are meaningless. Potential fix: score a CT series."
            )
        if any(u.photometric == "MONOCHROME1" for u in used):
            self.warn(
                f"Series {self.name} is MONOCHROME1: that only inverts the display; HU were taken from "
                "the rescale unchanged."
            )
        cut = [k for k in ("patient_id", "series_description", "study_description", "kernel", "manufacturer")
               if "chars cut]" in getattr(h, k)]
        if cut:
            self.warn(
                f"Series {self.name}: header text longer than {MAX_TEXT_CHARS} characters was cut ({', '.join(cut)}); "
                "DICOM allows 64 characters there."
            )
        hsh = hashlib.sha256()
        for u in sorted(used, key=lambda u: (u.sop_instance_uid, u.source)):
            hsh.update(f"{u.sop_instance_uid}|{u.size_bytes}\n".encode())
        contrast = None
        if h.contrast_agent is not None:
            contrast = h.contrast_agent.strip().upper() not in ("", "NONE", "NO", "N")
        src = os.path.commonpath([u.source for u in used]) if len(used) > 1 else used[0].source
        return ScanMeta(
            source=src,
            series_uid=h.series_uid,
            study_uid=h.study_uid,
            frame_of_reference_uid=h.frame_of_reference_uid,
            patient_id=h.patient_id,
            study_date=h.study_date,
            study_time=h.study_time,
            modality=h.modality,
            series_description=h.series_description,
            kernel=h.kernel,
            slice_thickness_mm=h.slice_thickness_mm,
            manufacturer=h.manufacturer,
            contrast=contrast,
            input_hash=hsh.hexdigest(),
            warnings=tuple(self.warn.messages),
            extra={
                "n_files": len(used),
                # source files in slice order (for DICOM SEG references and review tools)
                "files": tuple(dict.fromkeys(hs[i].source for i in fi)),
                "transfer_syntax": h.transfer_syntax,
                "image_type": "\\".join(h.image_type),
                "photometric": h.photometric,
                # in memory only: lets pseudonymization find the name in free text (lungdamage.privacy)
                "patient_name": h.patient_name,
            },
        )


#: Compressed single-frame files (at least this many) are decoded by worker processes, one per core of the
#: scan's thread budget; below it, starting the processes (about 0.4 s) costs about what it saves.
DECODE_PROCESS_MIN_FRAMES = 100


def _span(ranges: list[tuple[int, int]]) -> tuple[int, int]:
    """(min, max) over per-block (min, max) pairs; (0, 0) for none."""
    if not ranges:
        return 0, 0
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def _decoder_pool(workers: int) -> Any:
    """A forkserver pool of ``workers`` decoder processes (the reader preloaded, each exiting with this
    process); None where processes cannot be started (no semaphores, no forkserver): the caller reads
    with threads instead."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from .._procs import exit_with_parent

    try:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ProcessPoolExecutor(workers, mp_context=ctx, initializer=exit_with_parent, initargs=(os.getpid(),))
    except (OSError, ImportError, RuntimeError, ValueError) as exc:
        logger.info("decoder processes unavailable (%s: %s); decoding in this process", type(exc).__name__, exc)
        return None


def _warning_category(module: str, qualname: str) -> type[Warning]:
    """The warning class named by ``module`` and ``qualname`` (UserWarning when it cannot be found)."""
    import importlib

    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return UserWarning
    return obj if isinstance(obj, type) and issubclass(obj, Warning) else UserWarning


def _decode_block(
    headers: list[DicomHeader], shape: tuple[int, int], dtype: str, name: str
) -> tuple[np.ndarray, int, tuple[tuple[str, str, str], ...]]:
    """In a decoder process: the frames of ``headers`` (single-frame files), this process's id and the
    warnings decoding raised as (category module, category name, text), for the caller to raise again
    under its own filters."""
    out = np.empty((len(headers), *shape), np.dtype(dtype))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for j, h in enumerate(headers):
            _read_frame(h, out[j], name)
    notes = ((w.category.__module__, w.category.__qualname__, str(w.message)) for w in caught)
    return out, os.getpid(), tuple(dict.fromkeys(notes))


def _read_frame(h: DicomHeader, out: np.ndarray, name: str) -> None:
    """One single-frame file's pixels into ``out`` (direct read when uncompressed, else pydicom)."""
    if _read_fast(h, out):
        return
    arr = _decode_pydicom(h, name)
    out[...] = arr[0] if arr.ndim == 3 else arr


def _read_fast(h: DicomHeader, out: np.ndarray) -> bool:
    """Read uncompressed little-endian pixel bytes straight into ``out``; False when not possible.

    The pixel data element is found by :func:`seek_trailing_pixel_data`.
    """
    if h.transfer_syntax not in UNCOMPRESSED_LE or h.bits_allocated != 16 or out.dtype.itemsize != 2:
        return False
    nbytes = out.nbytes
    implicit = h.transfer_syntax == IMPLICIT_LE
    z = split_zip_source(h.source)
    if z is not None:
        # streamed: seek to the pixel data (decompressing, not keeping, what comes before)
        _, info = zip_member(h.source)
        try:
            with open_member(h.source) as fh:
                if seek_trailing_pixel_data(fh, info.file_size, nbytes, implicit=implicit) is None:
                    return False
                got = fh.readinto(out.data.cast("B"))
                fh.read(1)  # reach the end of the member: its CRC is checked there
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
            raise DicomSeriesError(
                f"Cannot read zip member {h.source}: {type(exc).__name__}: {exc}. Potential fix: the archive "
                "is damaged; copy it again or unpack what can be read."
            ) from None
        return got == nbytes
    try:
        with open(h.source, "rb", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            if seek_trailing_pixel_data(fh, size, nbytes, implicit=implicit) is None:
                return False
            got = fh.readinto(out.data.cast("B"))
    except OSError:
        return False
    return got == nbytes


def _decode_pydicom(h: DicomHeader, name: str) -> np.ndarray:
    """One file's pixels decoded by pydicom (and its pixel plugins); ``name`` names the series in errors."""
    import io

    import pydicom

    try:
        z = split_zip_source(h.source)
        if z is None:
            ds = pydicom.dcmread(h.source)
        else:
            # a compressed image is never larger than its pixels uncompressed: bound what is read
            expected = h.rows * h.columns * h.samples_per_pixel * max(h.bits_allocated, 8) // 8 * h.n_frames
            ds = pydicom.dcmread(io.BytesIO(read_source_bytes(h.source, max_bytes=2 * expected + (64 << 20))))
        if h.transfer_syntax in _J2K_SYNTAXES:
            _check_j2k_size(ds, h, name)
        arr = ds.pixel_array
    except DicomSeriesError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoder errors come in many types
        raise DicomSeriesError(
            f"Series {name}: cannot decode pixel data of {h.source!r} "
            f"(transfer syntax {h.transfer_syntax}): {type(exc).__name__}: {exc}. "
            "Potential fix: the file may be truncated or use a codec without an installed decoder; "
            "install pylibjpeg plugins / python-gdcm, or remove the file."
        ) from exc
    if arr.shape[-2:] != (h.rows, h.columns):
        raise DicomSeriesError(
            f"Series {name}: pixel data of {h.source!r} has shape {arr.shape}, header says "
            f"{h.n_frames} x {h.rows} x {h.columns}. Potential fix: the file is damaged; remove it."
        )
    return arr


def _check_j2k_size(ds: Any, h: DicomHeader, name: str) -> None:
    """Compare every JPEG 2000 codestream's image size (SIZ marker) with Rows x Columns.

    The decoder allocates what the codestream claims; a codestream claiming
    60000 x 60000 aborts the interpreter inside the decoder.  ``Xsiz - XOsiz``
    and ``Ysiz - YOsiz`` of each SIZ segment (ISO/IEC 15444-1 A.5.1) must equal
    Columns and Rows.
    """
    data = bytes(ds.get("PixelData", b"") or b"")
    found = 0
    for m in re.finditer(rb"\xff\x4f\xff\x51", data):
        seg = data[m.end() : m.end() + 20]
        if len(seg) < 20:
            break
        xsiz, ysiz, xo, yo = (int.from_bytes(seg[4 + 4 * j : 8 + 4 * j], "big") for j in range(4))
        width, height = xsiz - xo, ysiz - yo
        if (height, width) != (h.rows, h.columns):
            raise DicomSeriesError(
                f"Series {name}: the JPEG 2000 codestream of {h.source} claims {width} x {height} pixels "
                f"but the header says Columns {h.columns}, Rows {h.rows}; decoding it would allocate "
                f"{width * height:.3g} pixels. Potential fix: the file is damaged; remove it."
            )
        found += 1
    if not found:
        raise DicomSeriesError(
            f"Series {name}: {h.source} says JPEG 2000 (transfer syntax {h.transfer_syntax}) but its pixel data "
            "holds no JPEG 2000 codestream header. Potential fix: the file is damaged; remove it."
        )


def seek_trailing_pixel_data(fh: Any, size_bytes: int, nbytes: int, *, implicit: bool) -> int | None:
    """Seek ``fh`` to the value of an uncompressed Pixel Data element that ends the file.

    The fast path of :func:`read_series` reads pixel bytes without parsing the
    file again: in practice Pixel Data (7FE0,0010) is the last element, so its
    ``nbytes`` value ends the file and its element header (tag, VR for
    explicit VR, length) sits just before.  The header is verified; anything
    else (a trailing element, another length, a compressed file) returns None
    and the caller decodes through pydicom.  This is the one place that relies
    on that layout: ``tests/io/test_dicom_headers.py`` compares the bytes it
    finds with ``pydicom.dcmread(...).PixelData``.

    Returns
    -------
    int or None
        Offset (bytes) of the first pixel byte, ``fh`` positioned there; None when not found.
    """
    hdr = 8 if implicit else 12
    start = size_bytes - nbytes - hdr
    if start < 0:
        return None
    fh.seek(start)
    b = fh.read(hdr)
    if len(b) != hdr or b[:4] != b"\xe0\x7f\x10\x00":
        return None
    if implicit:
        ok = int.from_bytes(b[4:8], "little") == nbytes
    else:  # explicit VR little endian: tag, VR, 2 reserved, uint32 length
        ok = b[4:6] in (b"OW", b"OB") and int.from_bytes(b[8:12], "little") == nbytes
    return start + hdr if ok else None


def _reader_threads() -> int:
    """Threads for reading one series: ``LUNGDAMAGE_READ_THREADS`` when set, else the scan's
    thread budget (:func:`lungdamage._procs.thread_budget`: batch workers share the cores);
    at most 4."""
    from .._procs import thread_budget

    value = os.environ.get("LUNGDAMAGE_READ_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return max(1, min(4, thread_budget()))


def _to_hu(
    raw: np.ndarray,
    slope: np.ndarray,
    inter: np.ndarray,
    hs: list[DicomHeader],
    fi: np.ndarray,
    value_range: tuple[int, int] | None = None,
) -> np.ndarray:
    """Stored values -> HU int16, padding and outside-field values -> air. Vectorized.

    ``value_range``: (min, max) of ``raw`` when already known (saves two passes).
    """
    pad = _padding_mask(raw, hs, fi)
    integral = bool(np.all(slope == 1.0) and np.all(inter == np.round(inter)))
    hu = None
    outside_possible = True
    if integral and raw.size:
        rmin, rmax = value_range if value_range is not None else (int(raw.min()), int(raw.max()))
        if -32768 <= rmin + int(inter.min()) and rmax + int(inter.max()) <= 32767 and rmax <= 32767:
            # fits: add in place in int16 (raw is ours), no wide temporaries
            hu = raw.view(np.int16) if raw.dtype.itemsize == 2 else raw.astype(np.int16)
            hu += inter.astype(np.int16)[:, None, None]
            outside_possible = rmin + int(inter.min()) <= OUTSIDE_FIELD_HU
    if hu is None:
        hu = _rescale_blocks(raw, slope, inter)
    if outside_possible:
        np.putmask(hu, hu <= OUTSIDE_FIELD_HU, AIR_HU)
    if pad is not None:
        np.putmask(hu, pad, AIR_HU)
    return hu


def _rescale_blocks(raw: np.ndarray, slope: np.ndarray, inter: np.ndarray, block: int = 16) -> np.ndarray:
    """``rint(raw * slope + inter)`` clipped to int16, in float32 blocks of ``block`` slices.

    The float32 work array is one block, never the volume (a full-size float32
    copy would double the reader's peak memory).
    """
    hu = np.empty(raw.shape, np.int16)
    slope32, inter32 = slope.astype(np.float32)[:, None, None], inter.astype(np.float32)[:, None, None]
    for start in range(0, raw.shape[0], block):
        part = slice(start, start + block)
        wide = raw[part].astype(np.float32)
        wide *= slope32[part]
        wide += inter32[part]
        np.rint(wide, out=wide)
        np.clip(wide, -32768, 32767, out=wide)
        hu[part] = wide
    return hu


def _padding_mask(raw: np.ndarray, hs: list[DicomHeader], fi: np.ndarray) -> np.ndarray | None:
    """Voxels equal to PixelPaddingValue (or in [value, PixelPaddingRangeLimit]), in stored values."""
    keys = [(hs[i].padding_value, hs[i].padding_limit) for i in fi]
    if all(k[0] is None for k in keys):
        return None
    bits = raw.dtype.itemsize * 8

    def fit(v: int) -> int:  # the same bit pattern read with the array's signedness
        if raw.dtype.kind == "u" and v < 0:
            return v + (1 << bits)
        if raw.dtype.kind == "i" and bits == 16 and v > 32767:
            return v - (1 << bits)
        return v

    mask = np.zeros(raw.shape, dtype=bool)
    kk = np.array([hash(k) for k in keys])
    for key in set(keys):  # a handful of distinct (value, limit) pairs at most
        value, limit = key
        if value is None:
            continue
        sel = kk == hash(key)
        lo, hi = sorted((fit(value), fit(limit if limit is not None else value)))
        sub = raw[sel]
        mask[sel] = (sub >= lo) & (sub <= hi)
    return mask


def _resample_slices(hu: np.ndarray, z: np.ndarray, step: float) -> np.ndarray:
    """Linear interpolation along axis 0 from positions ``z`` (increasing, mm) to a regular grid."""
    n_out = int(np.floor((z[-1] - z[0]) / step + 1e-6)) + 1
    zt = z[0] + step * np.arange(n_out)
    i = np.clip(np.searchsorted(z, zt, side="right") - 1, 0, len(z) - 2)
    w = ((zt - z[i]) / (z[i + 1] - z[i])).astype(np.float32)[:, None, None]
    out = hu[i].astype(np.float32) * (1 - w) + hu[i + 1].astype(np.float32) * w
    return np.rint(out).astype(np.int16)


def _shear_correct(hu: np.ndarray, z: np.ndarray, drow_per_mm: float, dcol_per_mm: float) -> np.ndarray:
    """Shift slice k in-plane by ``-z[k] * d*_per_mm`` pixels (gantry-tilt correction)."""
    from scipy import ndimage

    n, r, c = hu.shape
    # output (k, i, j) samples input (k, i - z_k*drow, j - z_k*dcol); z_k is linear in k here
    span = z[-1] if n > 1 else 0.0
    step = span / max(n - 1, 1)
    # rounded so that whole-pixel shifts sample exactly (no spurious out-of-bounds at the edge)
    a, b = np.round(-step * drow_per_mm, 6), np.round(-step * dcol_per_mm, 6)
    matrix = np.array([[1.0, 0.0, 0.0], [a, 1.0, 0.0], [b, 0.0, 1.0]])
    out = ndimage.affine_transform(
        hu.astype(np.float32), matrix, order=1, mode="constant", cval=float(AIR_HU), output=np.float32
    )
    return np.rint(out).astype(np.int16)
