"""Header-only DICOM parsing shared by :mod:`.dicom` and :mod:`.catalog`.

One :class:`DicomHeader` per file (or ``archive.zip::member``), built from
``pydicom.dcmread(..., stop_before_pixels=True)``; pixel data is never decoded
here.  Per-frame geometry (one frame for classic single-frame images, many for
enhanced multi-frame CT) is held as small NumPy arrays so that grouping and
sorting are vectorized.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError

logger = logging.getLogger(__name__)

#: Separator between a zip archive path and a member path inside it.
ZIP_SEP = "::"

#: Uncompressed little-endian transfer syntaxes whose pixels are read directly.
UNCOMPRESSED_LE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
IMPLICIT_LE = "1.2.840.10008.1.2"

#: SOP classes that never hold an image.
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

_NAN3 = np.full(3, np.nan)


def split_zip_source(source: str) -> tuple[str, str] | None:
    """``("a.zip", "member")`` for ``"a.zip::member"``, else None."""
    if ZIP_SEP not in source:
        return None
    archive, member = source.split(ZIP_SEP, 1)
    if archive.lower().endswith(".zip"):
        return archive, member
    return None


#: Largest zip member (uncompressed bytes, as declared in the archive) read into memory
#: for pixel decoding; ``LUNGDAMAGE_MAX_MEMBER_BYTES`` overrides it.  Headers are always
#: parsed from a stream, whatever the member's size.
MAX_MEMBER_BYTES = int(os.environ.get("LUNGDAMAGE_MAX_MEMBER_BYTES", str(2 * 2**30)))

#: Header values longer than this (bytes) are not read (pydicom defers them): a header
#: claiming a huge text or private element costs no memory.
HEADER_DEFER_BYTES = 1 << 20

#: Text attributes longer than this are cut (DICOM LO/SH/CS values are at most 64 characters).
MAX_TEXT_CHARS = 256

#: Zip compression methods :mod:`zipfile` can decompress here.
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}

#: Suffix naming the k-th copy (k >= 2) of a member name that occurs several times in one archive.
_DUP_RE = re.compile(r"(.*)::#(\d+)")

_ZIP_CACHE: dict[tuple[int, str], tuple[tuple[int, int], zipfile.ZipFile]] = {}


def _zipfile(archive: str) -> zipfile.ZipFile:
    """An open :class:`zipfile.ZipFile` of ``archive``, cached per process.

    Opening an archive parses its whole central directory; reading thousands of
    members one by one through a fresh ``ZipFile`` each is quadratic in the
    member count.  The cache is keyed by process id (a forked worker never
    shares a file offset with its parent) and by size and mtime (a rewritten
    archive is reopened).
    """
    st = os.stat(archive)
    stamp = (st.st_mtime_ns, st.st_size)
    key = (os.getpid(), os.path.abspath(archive))
    hit = _ZIP_CACHE.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    zf = zipfile.ZipFile(archive)
    if len(_ZIP_CACHE) >= 8:
        for k, (_, old) in list(_ZIP_CACHE.items()):
            if k[0] == os.getpid():
                old.close()
        _ZIP_CACHE.clear()
    index: dict[str, list[zipfile.ZipInfo]] = {}
    for info in zf.infolist():
        index.setdefault(info.filename, []).append(info)
    zf._lungdamage_index = index  # type: ignore[attr-defined]
    _ZIP_CACHE[key] = (stamp, zf)
    return zf


def member_names(infos: list[zipfile.ZipInfo]) -> list[tuple[str, zipfile.ZipInfo]]:
    """``(member source name, info)`` per member; the k-th copy of a repeated name is ``name::#k``."""
    seen: Counter = Counter()
    out = []
    for info in infos:
        seen[info.filename] += 1
        k = seen[info.filename]
        out.append((info.filename if k == 1 else f"{info.filename}{ZIP_SEP}#{k}", info))
    return out


def zip_member(source: str) -> tuple[zipfile.ZipFile, zipfile.ZipInfo]:
    """The open archive and the member info of an ``archive.zip::member`` source.

    Raises
    ------
    OSError, KeyError, zipfile.BadZipFile
        Missing archive, missing member, damaged archive.
    """
    z = split_zip_source(source)
    if z is None:
        raise KeyError(source)
    zf = _zipfile(z[0])
    index = zf._lungdamage_index  # type: ignore[attr-defined]
    copies = index.get(z[1])
    k = 1
    if copies is None:
        m = _DUP_RE.fullmatch(z[1])
        if m is None or m.group(1) not in index:
            raise KeyError(f"there is no member {z[1]!r} in zip archive {z[0]}")
        copies, k = index[m.group(1)], int(m.group(2))
        if not 1 <= k <= len(copies):
            raise KeyError(f"there is no member {z[1]!r} in zip archive {z[0]}")
    return zf, copies[k - 1]


def _check_member(source: str, info: zipfile.ZipInfo) -> None:
    if info.flag_bits & 0x1:
        raise MemberError(f"zip member {source} is encrypted; it cannot be read. Potential fix: unpack it first.")
    if info.compress_type not in _ZIP_METHODS:
        raise MemberError(
            f"zip member {source} uses compression method {info.compress_type}, which cannot be decompressed "
            "here. Potential fix: re-zip the archive with deflate, or unpack it first."
        )


def open_member(source: str):
    """A readable stream of a zip member (decompressed on the fly)."""
    zf, info = zip_member(source)
    _check_member(source, info)
    return zf.open(info)


def read_source_bytes(source: str, *, max_bytes: int | None = None) -> bytes:
    """Whole content of a file or zip member.

    Raises
    ------
    MemberError
        The member is larger than ``max_bytes`` (default :data:`MAX_MEMBER_BYTES`),
        encrypted or compressed with an unsupported method.
    """
    z = split_zip_source(source)
    limit = MAX_MEMBER_BYTES if max_bytes is None else max_bytes
    if z is None:
        with open(source, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > limit:
                raise MemberError(
                    f"{source} holds {size} bytes, more than the {limit} bytes allowed in memory "
                    "(LUNGDAMAGE_MAX_MEMBER_BYTES). Potential fix: raise the limit if the file is genuine."
                )
            return fh.read()
    zf, info = zip_member(source)
    _check_member(source, info)
    if info.file_size > limit:
        raise MemberError(
            f"zip member {source} declares {info.file_size} bytes, more than the {limit} bytes allowed in "
            "memory (LUNGDAMAGE_MAX_MEMBER_BYTES). Potential fix: unpack the archive, or raise the limit if "
            "the member is genuine."
        )
    return zf.read(info)


def open_source(source: str | os.PathLike):
    """A path, or a readable in-memory file for an ``archive.zip::member`` source, for ``pydicom.dcmread``."""
    if split_zip_source(str(source)) is not None:
        return io.BytesIO(read_source_bytes(str(source)))
    return source


class MemberError(InputError):
    """A file or zip member cannot be read (encrypted, unsupported compression, too large)."""


def _problem(counts: dict | None, source: str, reason: str, kind: str = "unreadable") -> None:
    """Record an input that could not be read: logged, counted and listed in ``counts['problems']``."""
    logger.warning("%s: %s", source, reason)
    if counts is not None:
        counts[kind] = counts.get(kind, 0) + 1
        counts.setdefault("problems", []).append((source, reason))


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def iter_sources(root: str | os.PathLike, *, counts: dict | None = None) -> Iterator[tuple[str, int]]:
    """Yield ``(source, size_bytes)`` for every regular file under ``root``.

    Walks sub-folders recursively (sorted, deterministic) and expands ``.zip``
    archives into ``archive.zip::member`` sources.  ``root`` may also be a
    single file or a single zip archive.  Only regular files are opened:
    named pipes, devices and sockets (which would block or never end), folders
    that cannot be listed, damaged or truncated zip archives, zip archives
    inside zip archives, encrypted members and members with an unsupported
    compression are skipped and recorded in ``counts['problems']`` as
    ``(source, reason)`` (with ``counts['special']`` / ``counts['unreadable']``).
    A member name that occurs several times in one archive is read once per
    copy: the k-th copy is ``archive.zip::name::#k``.
    """
    root = os.fspath(root)

    def _walk_error(exc: OSError) -> None:
        _problem(counts, exc.filename or root, f"folder cannot be read ({exc.strerror or exc}); skipped")

    if not os.path.isdir(root):
        paths: Iterable[str] = [root]
    else:
        def _walk() -> Iterator[str]:
            for dirpath, dirnames, filenames in os.walk(root, onerror=_walk_error):
                dirnames.sort()
                for name in sorted(filenames):
                    yield os.path.join(dirpath, name)

        paths = _walk()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            _problem(counts, path, f"cannot be read ({exc.strerror or exc}); skipped")
            continue
        if not stat.S_ISREG(st.st_mode):
            _problem(counts, path, f"is {_file_kind(st.st_mode)}, not a regular file; skipped", "special")
            continue
        if path.lower().endswith(".zip"):
            yield from _iter_zip(path, counts)
        else:
            yield path, st.st_size


def _iter_zip(path: str, counts: dict | None) -> Iterator[tuple[str, int]]:
    try:
        zf = _zipfile(path)
        infos = [i for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        _problem(counts, path, f"damaged or truncated zip archive ({exc}); skipped")
        return
    for name, info in sorted(member_names(infos), key=lambda t: t[0]):
        src = f"{path}{ZIP_SEP}{name}"
        if info.filename.lower().endswith(".zip"):
            _problem(counts, src, "zip archive inside a zip archive is not read; unpack the outer archive first")
            continue
        try:
            _check_member(src, info)
        except MemberError as exc:
            _problem(counts, src, str(exc))
            continue
        yield src, info.file_size


@dataclass(frozen=True, eq=False)
class DicomHeader:
    """Header facts of one DICOM file (no pixel data).

    Per-frame arrays have one row per frame: ``positions`` (n, 3) LPS mm
    (NaN when absent), ``orientations`` (n, 6), ``pixel_spacing`` (n, 2)
    (row spacing, column spacing) mm, ``slope`` and ``intercept`` (n,).
    """

    source: str
    size_bytes: int
    transfer_syntax: str
    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    study_time: str
    series_date: str
    series_number: int | None
    instance_number: int | None
    acquisition_number: int | None
    modality: str
    image_type: tuple[str, ...]
    series_description: str
    study_description: str
    kernel: str
    slice_thickness_mm: float | None
    spacing_between_slices_mm: float | None
    manufacturer: str
    contrast_agent: str | None
    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    samples_per_pixel: int
    n_frames: int
    padding_value: int | None
    padding_limit: int | None
    has_pixels: bool
    positions: np.ndarray = field(repr=False)
    orientations: np.ndarray = field(repr=False)
    pixel_spacing: np.ndarray = field(repr=False)
    slope: np.ndarray = field(repr=False)
    intercept: np.ndarray = field(repr=False)
    is_multiframe: bool = False
    gantry_tilt_deg: float | None = None
    truncated: bool = False

    @property
    def is_image(self) -> bool:
        return self.has_pixels and self.rows > 0 and self.columns > 0


from pydicom.datadict import tag_for_keyword as _tag_for_keyword  # noqa: E402
from pydicom.dataelem import RawDataElement as _RawDataElement  # noqa: E402

_TAGS: dict[str, int] = {}


def _tag(keyword: str) -> int:
    t = _TAGS.get(keyword)
    if t is None:
        found = _tag_for_keyword(keyword)
        if found is None:
            raise KeyError(f"not a DICOM keyword: {keyword}")
        t = _TAGS[keyword] = int(found)
    return t


# Header parsing is the hot loop of indexing thousands of files: the attributes
# read here are decoded straight from the raw element bytes (their VRs are
# fixed by the standard) instead of through pydicom's per-element conversion.
_US_KEYWORDS = frozenset(
    {"Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel"}
)


def stored_element(ds, keyword: str) -> Any:
    """The element ``keyword`` of ``ds`` as pydicom holds it, without converting it.

    Returns None when absent, a ``pydicom.dataelem.RawDataElement`` (``.value``
    the raw bytes, or None when longer than ``defer_size``; ``.length``;
    ``.is_little_endian``) when pydicom has not converted it yet, else the
    converted value (a ``DataElement``'s ``.value``).

    This is the one place that reads pydicom's private ``Dataset._dict`` and
    ``RawDataElement`` (header parsing is the hot loop of indexing thousands
    of files: the fixed-VR attributes read here are decoded from the raw
    bytes, skipping pydicom's per-element conversion).
    ``tests/io/test_dicom_headers.py`` compares what the
    header reader decodes from it with the public API's values, so a pydicom
    release that changes these internals fails there, loudly.
    """
    e = ds._dict.get(_tag(keyword))
    if e is None or type(e) is _RawDataElement:
        return e
    return e.value


def _is_raw(v: Any) -> bool:
    return type(v) is _RawDataElement


def _raw_value(ds, keyword: str):
    """The raw element (bytes not None) of a not-yet-converted element, or the converted value."""
    e = stored_element(ds, keyword)
    if _is_raw(e) and e.value is None:
        return None
    return e


def _text(ds, keyword: str) -> list[str] | None:
    e = stored_element(ds, keyword)
    if _is_raw(e) and e.value is None and e.length:
        # a value longer than HEADER_DEFER_BYTES was skipped, not read: say so in the text
        return [f"[{e.length} bytes not read: {e.length} chars cut]"]
    v = None if _is_raw(e) and e.value is None else e
    if v is None:
        return None
    if _is_raw(v):
        raw = v.value
        if len(raw) > 4 * MAX_TEXT_CHARS:  # far beyond any DICOM text limit: cut before decoding
            raw = raw[: 4 * MAX_TEXT_CHARS]
        txt = raw.decode("latin-1")
        if not txt.isascii():  # leave character-set handling to pydicom
            v = ds.get(keyword, None)
        else:
            return [p.strip(" \x00") for p in txt.split("\\")]
    if v is None:
        return None
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return [str(x).strip() for x in v]
    return [str(v).strip()]


def _s(ds, keyword: str) -> str:
    parts = _text(ds, keyword)
    if not parts:
        return ""
    return shorten("\\".join(parts).strip())


def shorten(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` cut to ``limit`` characters (marked with ``...[N chars cut]``) so that no header
    text can blow up a table, a page or an image."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} chars cut]"


def _f(ds, keyword: str) -> float | None:
    parts = _text(ds, keyword)
    if not parts or parts[0] == "":
        return None
    try:
        return float(parts[0])
    except ValueError:
        return None


def _i(ds, keyword: str) -> int | None:
    if keyword in _US_KEYWORDS or keyword == "PixelPaddingValue" or keyword == "PixelPaddingRangeLimit":
        v = _raw_value(ds, keyword)
        if v is None:
            return None
        if _is_raw(v):
            b = v.value
            if len(b) < 2:
                return None
            signed = keyword.startswith("PixelPadding") and _i(ds, "PixelRepresentation") == 1
            return int.from_bytes(b[:2], "little" if v.is_little_endian else "big", signed=signed)
        try:
            return int(v[0] if isinstance(v, (list, tuple)) else v)
        except (TypeError, ValueError, IndexError):
            return None
    parts = _text(ds, keyword)
    if not parts or parts[0] == "":
        return None
    try:
        return int(float(parts[0]))
    except ValueError:
        return None


def _floats(ds, keyword: str, n: int) -> np.ndarray:
    parts = _text(ds, keyword)
    if parts is None or len(parts) != n:
        return np.full(n, np.nan)
    try:
        return np.array([float(x) for x in parts])
    except ValueError:
        return np.full(n, np.nan)


def _vec(v, n: int) -> np.ndarray:
    if v is None:
        return np.full(n, np.nan)
    try:
        a = np.asarray([float(x) for x in v], dtype=np.float64)
    except (TypeError, ValueError):
        return np.full(n, np.nan)
    if a.shape != (n,):
        return np.full(n, np.nan)
    return a


def _fg(per_frame, shared, seq: str, keyword: str):
    """Value of ``seq[0].keyword`` from a per-frame item, else the shared item."""
    for item in (per_frame, shared):
        if item is None:
            continue
        s = item.get(seq, None)
        if s:
            v = s[0].get(keyword, None)
            if v is not None:
                return v
    return None


def _frame_arrays(ds, n_frames: int):
    """Per-frame geometry and rescale arrays (vectorized over frames after parsing)."""
    pfg = ds.get("PerFrameFunctionalGroupsSequence", None) if _tag("PerFrameFunctionalGroupsSequence") in ds else None
    if pfg is not None and len(pfg) >= 1:
        sfg_seq = ds.get("SharedFunctionalGroupsSequence", None)
        shared = sfg_seq[0] if sfg_seq else None
        n = len(pfg)
        pos = np.full((n, 3), np.nan)
        ori = np.full((n, 6), np.nan)
        ps = np.full((n, 2), np.nan)
        slope = np.ones(n)
        inter = np.zeros(n)
        for k, item in enumerate(pfg):
            pos[k] = _vec(_fg(item, shared, "PlanePositionSequence", "ImagePositionPatient"), 3)
            ori[k] = _vec(_fg(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
            ps[k] = _vec(_fg(item, shared, "PixelMeasuresSequence", "PixelSpacing"), 2)
            sl = _fg(item, shared, "PixelValueTransformationSequence", "RescaleSlope")
            ic = _fg(item, shared, "PixelValueTransformationSequence", "RescaleIntercept")
            slope[k] = float(sl) if sl not in (None, "") else 1.0
            inter[k] = float(ic) if ic not in (None, "") else 0.0
        return pos, ori, ps, slope, inter, True
    n = max(n_frames, 1)
    sl = _f(ds, "RescaleSlope")
    ic = _f(ds, "RescaleIntercept")
    if n == 1:  # the common case: one small array per attribute, no tiling
        pos = _floats(ds, "ImagePositionPatient", 3)[None]
        ori = _floats(ds, "ImageOrientationPatient", 6)[None]
        ps = _floats(ds, "PixelSpacing", 2)[None]
        return pos, ori, ps, np.array([1.0 if sl is None else sl]), np.array([0.0 if ic is None else ic]), False
    pos = np.tile(_floats(ds, "ImagePositionPatient", 3), (n, 1))
    ori = np.tile(_floats(ds, "ImageOrientationPatient", 6), (n, 1))
    ps = np.tile(_floats(ds, "PixelSpacing", 2), (n, 1))
    slope = np.full(n, 1.0 if sl is None else sl)
    inter = np.full(n, 0.0 if ic is None else ic)
    if n > 1:  # legacy multi-frame without functional groups: positions unknown per frame
        pos[1:] = np.nan
    return pos, ori, ps, slope, inter, n > 1


def _shared_pm(ds, keyword: str):
    """A PixelMeasures attribute of an enhanced image (shared group first)."""
    for seq_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        seq = ds.get(seq_name, None)
        if seq:
            pm = seq[0].get("PixelMeasuresSequence", None)
            if pm:
                v = pm[0].get(keyword, None)
                if v is not None:
                    return v
    return None


def header_from_dataset(
    ds, source: str, size_bytes: int, *, has_pixels: bool | None = None, truncated: bool = False
) -> DicomHeader:
    """Build a :class:`DicomHeader` from a dataset read with ``stop_before_pixels``."""
    fm = getattr(ds, "file_meta", None)
    ts = _s(fm, "TransferSyntaxUID") if fm is not None else ""
    sop_class = _s(ds, "SOPClassUID") or (_s(fm, "MediaStorageSOPClassUID") if fm is not None else "")
    n_frames = _i(ds, "NumberOfFrames") or 1
    if n_frames < 1 or (size_bytes >= 0 and n_frames > max(1, size_bytes // 8)):
        # every frame needs at least its 8-byte item header: a count the file cannot hold is a
        # damaged header, and must not size per-frame arrays
        raise MemberError(
            f"{source}: NumberOfFrames is {n_frames} but the file holds only {size_bytes} bytes. "
            "Potential fix: the header is damaged; remove the file."
        )
    pos, ori, ps, slope, inter, multi = _frame_arrays(ds, n_frames)
    rows = _i(ds, "Rows") or 0
    cols = _i(ds, "Columns") or 0
    kernel, thickness, sbs = _kernel_and_thickness(ds, multi)
    contrast_parts = _text(ds, "ContrastBolusAgent")
    contrast = None if contrast_parts is None else "\\".join(contrast_parts)
    if contrast is None and _tag("ContrastBolusUsageSequence") in ds:
        contrast = "yes"
    image_type = tuple(x.upper() for x in (_text(ds, "ImageType") or ()))
    if not image_type or image_type == ("",):
        image_type = tuple(x.upper() for x in (_text(ds, "FrameType") or ()))
    if has_pixels is None:
        has_pixels = rows > 0 and cols > 0
    return DicomHeader(
        source=source,
        size_bytes=int(size_bytes),
        transfer_syntax=ts,
        sop_class_uid=sop_class,
        sop_instance_uid=_s(ds, "SOPInstanceUID"),
        series_uid=_s(ds, "SeriesInstanceUID"),
        study_uid=_s(ds, "StudyInstanceUID"),
        frame_of_reference_uid=_s(ds, "FrameOfReferenceUID"),
        patient_id=_s(ds, "PatientID"),
        patient_name=_s(ds, "PatientName"),
        study_date=_s(ds, "StudyDate"),
        study_time=_s(ds, "StudyTime"),
        series_date=_s(ds, "SeriesDate"),
        series_number=_i(ds, "SeriesNumber"),
        instance_number=_i(ds, "InstanceNumber"),
        acquisition_number=_i(ds, "AcquisitionNumber"),
        modality=_s(ds, "Modality").upper(),
        image_type=image_type,
        series_description=_s(ds, "SeriesDescription"),
        study_description=_s(ds, "StudyDescription"),
        kernel=kernel,
        slice_thickness_mm=thickness,
        spacing_between_slices_mm=sbs,
        manufacturer=_s(ds, "Manufacturer"),
        contrast_agent=None if contrast is None else str(contrast).strip(),
        rows=rows,
        columns=cols,
        bits_allocated=_i(ds, "BitsAllocated") or 0,
        bits_stored=_i(ds, "BitsStored") or (_i(ds, "BitsAllocated") or 0),
        pixel_representation=_i(ds, "PixelRepresentation") or 0,
        photometric=_s(ds, "PhotometricInterpretation").upper(),
        samples_per_pixel=_i(ds, "SamplesPerPixel") or 1,
        n_frames=n_frames,
        padding_value=_i(ds, "PixelPaddingValue"),
        padding_limit=_i(ds, "PixelPaddingRangeLimit"),
        has_pixels=bool(has_pixels),
        positions=pos,
        orientations=ori,
        pixel_spacing=ps,
        slope=slope,
        intercept=inter,
        is_multiframe=multi,
        gantry_tilt_deg=_f(ds, "GantryDetectorTilt"),
        truncated=truncated,
    )


def _kernel_and_thickness(ds, multi: bool) -> tuple[str, float | None, float | None]:
    """ConvolutionKernel, SliceThickness and SpacingBetweenSlices (mm), from the functional groups of an
    enhanced multi-frame image when not at the top level."""
    kernel = _s(ds, "ConvolutionKernel")
    thickness = _f(ds, "SliceThickness")
    sbs = _f(ds, "SpacingBetweenSlices")
    if not (multi and _tag("PerFrameFunctionalGroupsSequence") in ds):
        return kernel, thickness, sbs
    if thickness is None:
        thickness = _f_val(_shared_pm(ds, "SliceThickness"))
    if sbs is None:
        sbs = _f_val(_shared_pm(ds, "SpacingBetweenSlices"))
    if not kernel:
        for seq_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            seq = ds.get(seq_name, None)
            if seq:
                rec = seq[0].get("CTReconstructionSequence", None)
                if rec and rec[0].get("ConvolutionKernel", None) is not None:
                    kernel = _s(rec[0], "ConvolutionKernel")
                    break
    return kernel, thickness, sbs


def _f_val(v) -> float | None:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def read_header(source: str, size_bytes: int | None = None) -> DicomHeader | None:
    """Parse the header of one file or zip member; None when it is not DICOM.

    Zip members are parsed from a decompressing stream (never read whole), and
    header values longer than :data:`HEADER_DEFER_BYTES` are skipped, so a
    header's claims cost no memory.

    Raises
    ------
    Exception
        Anything else that goes wrong reading a DICOM file (OSError, a damaged
        zip member, a damaged header, RecursionError from absurdly nested
        sequences, ...): the caller records the file as unreadable.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    z = split_zip_source(source)
    try:
        if z is None:
            with open(source, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise MemberError(f"{source} is {_file_kind(st.st_mode)}, not a regular file")
                size_bytes = st.st_size
                ds = pydicom.dcmread(fh, stop_before_pixels=True, defer_size=HEADER_DEFER_BYTES)
                at_end = fh.tell() >= size_bytes
        else:
            zf, info = zip_member(source)
            _check_member(source, info)
            size_bytes = info.file_size
            with zf.open(info) as fh:
                ds = pydicom.dcmread(fh, stop_before_pixels=True, defer_size=HEADER_DEFER_BYTES)
                at_end = fh.tell() >= size_bytes
    except InvalidDicomError as exc:
        logger.debug("not a DICOM file: %s (%s)", source, exc)
        return None
    if _tag("SOPClassUID") not in ds and getattr(ds, "file_meta", None) is None:
        return None
    # pydicom stops quietly at a premature end of file: a header that ran to the end of
    # the file without the identifiers every DICOM object has is a truncated file
    truncated = at_end and (_tag("SOPInstanceUID") not in ds or _tag("SeriesInstanceUID") not in ds)
    return header_from_dataset(ds, source, size_bytes, truncated=truncated)


def _read_chunk(chunk: list[tuple[str, int]]) -> list[DicomHeader | None | str]:
    """Headers of a chunk of sources (worker side); any failure becomes its one-line message."""
    out: list[DicomHeader | None | str] = []
    for src, size in chunk:
        try:
            out.append(read_header(src, size))
        except Exception as exc:  # noqa: BLE001 - one bad file must never stop a catalog
            text = " ".join(str(exc).split())[:300] or repr(exc)
            if text.startswith(f"{src}: "):  # the caller names the source
                text = text[len(src) + 2 :]
            if isinstance(exc, MemberError):
                out.append(text)
            else:
                out.append(f"cannot read the DICOM header ({type(exc).__name__}: {text})")
    return out


#: Below this many files, parsing in one process is faster than starting workers.
PARALLEL_MIN_FILES = 1000


def _parsed(sources: list[tuple[str, int]], workers: int | None) -> Iterator[tuple[str, DicomHeader | None | str]]:
    if workers is None:
        workers = os.cpu_count() or 1
    if workers <= 1 or len(sources) < PARALLEL_MIN_FILES:
        for item, res in zip(sources, _read_chunk(sources), strict=True):
            yield item[0], res
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    size = max(64, len(sources) // (workers * 8))
    chunks = [sources[i : i + size] for i in range(0, len(sources), size)]
    # "forkserver": workers fork from a clean server process that has pydicom loaded once
    # (safe with threads in the caller, and much cheaper to start than "spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    from .._procs import exit_with_parent

    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
        for chunk, results in zip(chunks, pool.map(_read_chunk, chunks), strict=True):
            for item, res in zip(chunk, results, strict=True):
                yield item[0], res


def read_headers(
    sources: Iterable[tuple[str, int]], *, counts: dict | None = None, workers: int | None = 1
) -> list[DicomHeader]:
    """Headers of every DICOM source; non-DICOM sources are skipped and counted.

    ``counts`` (if given) receives ``dicom``, ``non_dicom`` and ``dicomdir`` totals, and
    ``problems``: ``(source, reason)`` of every file that could not be read.
    ``workers`` > 1 (``None`` = all cores) parses large archives (at least
    :data:`PARALLEL_MIN_FILES` files) in that many processes; order is kept.
    """
    out: list[DicomHeader] = []
    c = counts if counts is not None else {}
    for src, h in _parsed(list(sources), workers):
        if isinstance(h, str):
            _problem(c, src, h)
            continue
        if h is None:
            c["non_dicom"] = c.get("non_dicom", 0) + 1
            continue
        if h.truncated:
            _problem(c, src, f"truncated DICOM file ({h.size_bytes} bytes, ends inside its header); skipped",
                     "truncated")
            continue
        if h.sop_class_uid == DICOMDIR_SOP_CLASS:
            c["dicomdir"] = c.get("dicomdir", 0) + 1
            continue
        c["dicom"] = c.get("dicom", 0) + 1
        out.append(h)
    return out

