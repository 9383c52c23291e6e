"""NIfTI / NRRD / MHA volumes in (via SimpleITK) and label maps out.

Geometry follows :mod:`lungdamage.volume`: arrays (slice, row, column), LPS.
SimpleITK converts NIfTI's RAS storage to LPS on read, so a NIfTI and the
DICOM series it came from give the same :class:`~lungdamage.volume.CTVolume`
geometry.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np

from .._files import file_sha256
from ..errors import GeometryError, InputError
from ..volume import AIR_HU, CTVolume, ScanMeta

__all__ = ["IMAGE_SUFFIXES", "is_image_file", "read_image", "read_label_image", "write_label_image"]

log = logging.getLogger(__name__)

#: File name endings read by :func:`read_image`.
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_image_file(path: str | Path) -> bool:
    """True when ``path`` names a NIfTI / NRRD / MetaImage file (by suffix)."""
    name = str(path).lower()
    return any(name.endswith(s) for s in IMAGE_SUFFIXES)


def _read_sitk(path: Path, what: str):
    import SimpleITK as sitk

    if not path.exists():
        raise InputError(f"{what} {path} does not exist. Potential fix: check the path.")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a file. Potential fix: pass a .nii.gz, .nrrd or .mha file.")
    _check_declared_size(path, what)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise InputError(
            f"Cannot read {what.lower()} {path}: {first}. "
            "Potential fix: pass a NIfTI (.nii/.nii.gz), NRRD (.nrrd) or MetaImage (.mha/.mhd) file."
        ) from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{what} {path} has {img.GetNumberOfComponentsPerPixel()} components per voxel; "
            "expected a scalar volume. Potential fix: export a single-channel image."
        )
    if img.GetDimension() not in (2, 3):
        raise InputError(f"{what} {path} is {img.GetDimension()}-D; expected a 2-D or 3-D image.")
    return img


def _read_volume(path: Path, what: str):
    """The image at ``path`` (a 2-D image becomes one slice) and its array, shape (slices, rows, columns)."""
    import SimpleITK as sitk

    img = _read_sitk(path, what)
    if img.GetDimension() == 2:
        img = sitk.JoinSeries(img)
    return img, sitk.GetArrayFromImage(img)


def _check_declared_size(path: Path, what: str) -> None:
    """Refuse, before reading voxels, an image whose header declares more voxels than the budget
    (:func:`lungdamage.io.dicom.max_voxels`) or whose NIfTI file is shorter than its header says
    (ITK reads a truncated NIfTI with zeros for the missing voxels, without a word)."""
    import SimpleITK as sitk

    from .dicom import max_voxels

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return  # unreadable: ReadImage reports it
    size = reader.GetSize()
    n_vox = int(np.prod(size, dtype=np.int64)) * max(1, reader.GetNumberOfComponents())
    budget = max_voxels()
    if n_vox > budget:
        raise InputError(
            f"{what} {path} declares {' x '.join(map(str, size))} = {n_vox:.3g} voxels, more than the budget of "
            f"{budget:.3g} voxels. Potential fix: if the image is genuine, raise LUNGDAMAGE_MAX_VOXELS; "
            "otherwise its header is damaged."
        )
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return
    itemsize = sitk.GetArrayViewFromImage(sitk.Image([1] * len(size), reader.GetPixelID())).itemsize
    need = n_vox * itemsize
    offset, have, nonfinite = _scan_nifti(path)
    if offset is not None and have < offset + need:
        raise InputError(
            f"{what} {path} is truncated: its header declares {' x '.join(map(str, size))} voxels "
            f"({need} bytes from offset {offset}) but the {'decompressed ' if name.endswith('.gz') else ''}file "
            f"holds only {have} bytes. Potential fix: copy or export the file again."
        )
    if nonfinite:
        raise InputError(
            f"{what} {path} holds {nonfinite} non-finite voxel value(s) (NaN or infinity); their HU are unknown "
            "(the NIfTI reader would turn them into 0). Potential fix: re-export the image, or replace the "
            "non-finite values (e.g. by -1024 HU outside the body) before scoring."
        )


def _nifti_chunks(path: Path):
    """Decompressed bytes of a NIfTI file in chunks of at most 1 MiB; a cut gzip stream yields
    what it holds and stops."""
    import zlib

    with open(path, "rb") as fh:
        if not str(path).lower().endswith(".gz"):
            yield from iter(lambda: fh.read(1 << 20), b"")
            return
        d = zlib.decompressobj(wbits=47)
        for comp in iter(lambda: fh.read(1 << 16), b""):
            try:
                out = d.decompress(comp, 1 << 20)
                while out:
                    yield out
                    out = d.decompress(d.unconsumed_tail, 1 << 20) if d.unconsumed_tail else b""
            except zlib.error:
                return
            if d.eof:
                return


#: NIfTI datatype codes of floating-point voxels (float32, float64).
_NIFTI_FLOAT = {16: "f4", 64: "f8"}


def _scan_nifti(path: Path) -> tuple[int | None, int, int]:
    """``(vox_offset, decompressed length, non-finite float voxels)`` of a NIfTI file, streamed.

    ITK's NIfTI reader turns NaN and infinite voxels into 0 (soft tissue in HU)
    and a truncated file into zeros, both silently; this reads the file once in
    chunks (memory stays at a few MiB) to find out.
    """
    head = b""
    total = nonfinite = 0
    offset: int | None = None
    dtype: str | None = None
    carry = b""
    for chunk in _nifti_chunks(path):
        start = total
        total += len(chunk)
        if offset is None:
            head += chunk[: 560 - len(head)]
            if len(head) < 348:
                continue
            offset, dtype = _nifti_layout(head)
            if offset is None:
                offset = -1
        if offset < 0 or dtype is None or total <= offset:
            continue
        buf = carry + chunk[max(offset - start, 0):]
        size = np.dtype(dtype).itemsize
        n = len(buf) // size * size
        nonfinite += int(np.count_nonzero(~np.isfinite(np.frombuffer(buf, dtype=dtype, count=n // size))))
        carry = buf[n:]
    return (None if offset is None or offset < 0 else offset), total, nonfinite


def _nifti_layout(head: bytes) -> tuple[int | None, str | None]:
    """``vox_offset`` and float dtype (None for integer voxels) of a NIfTI-1/-2 header, either byte order."""
    byte_orders: tuple[tuple[str, Literal["little", "big"]], ...] = (("<", "little"), (">", "big"))
    for order, name in byte_orders:
        size = int.from_bytes(head[:4], name)
        if size == 348 and len(head) >= 112:
            code = int.from_bytes(head[70:72], name)
            f = _NIFTI_FLOAT.get(code)
            return int(np.frombuffer(head[108:112], dtype=f"{order}f4")[0]), (order + f) if f else None
        if size == 540 and len(head) >= 176:
            code = int.from_bytes(head[12:14], name)
            f = _NIFTI_FLOAT.get(code)
            return int(np.frombuffer(head[168:176], dtype=f"{order}i8")[0]), (order + f) if f else None
    return None, None


def read_image(path: str | Path) -> CTVolume:
    """Read a CT volume in HU from a NIfTI, NRRD or MetaImage file.

    Values are rounded to int16; values at or below -2000 HU (outside the
    field of view) become air (-1024).  A 2-D image becomes one slice.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    CTVolume
        With ``meta.source`` set to the path and ``meta.input_hash`` to the
        SHA-256 of the file (first 16 hex characters).

    Raises
    ------
    InputError
        Missing, unreadable or multi-component file.
    """

    path = Path(path)
    img, arr = _read_volume(path, "Image")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            k = np.unravel_index(int(np.argmax(bad)), arr.shape)
            raise InputError(
                f"Image {path} holds {int(bad.sum())} non-finite voxel value(s) (NaN or infinity), e.g. "
                f"{arr[k]} at (slice, row, column) {tuple(int(i) for i in k)}; HU there are unknown. "
                "Potential fix: re-export the image, or replace the non-finite values (e.g. by -1024 HU "
                "outside the body) before scoring."
            )
        arr = np.rint(arr)
    hu = np.clip(arr, -32768, 32767).astype(np.int16, copy=False)
    hu[hu <= -2000] = AIR_HU
    spacing, origin, direction = CTVolume.geometry_from_sitk(img)
    meta = ScanMeta(source=str(path), input_hash=file_sha256(path)[:16])
    log.debug("read %s: %s", path, hu.shape)
    return CTVolume(hu, spacing, origin, direction, meta)


def read_label_image(path: str | Path, ct: CTVolume | None = None, *, atol_mm: float = 1e-3) -> np.ndarray:
    """Read an integer label map; when ``ct`` is given check it lies on the CT grid.

    Returns
    -------
    ndarray, shape (slices, rows, columns)
        The raw label codes (not yet translated; see
        :func:`lungdamage.regions.translate_labels`).

    Raises
    ------
    GeometryError
        The label map's size, spacing, origin or direction differ from the CT's
        (beyond ``atol_mm``).
    """
    path = Path(path)
    img, arr = _read_volume(path, "Label map")
    if arr.dtype.kind == "f":
        if not np.all(arr == np.rint(arr)):
            raise InputError(f"Label map {path} has non-integer values. Potential fix: export integer labels.")
        arr = arr.astype(np.int64)
    if ct is not None and not ct.same_grid(img, atol_mm=atol_mm):
        spacing, origin, direction = CTVolume.geometry_from_sitk(img)
        raise GeometryError(
            f"Label map {path} is not on the grid of CT {ct.meta.key}: label shape {arr.shape}, "
            f"spacing {tuple(round(s, 4) for s in spacing)} mm, origin {tuple(round(o, 3) for o in origin)}; "
            f"CT shape {ct.shape}, spacing {tuple(round(s, 4) for s in ct.spacing_mm)} mm, "
            f"origin {tuple(round(o, 3) for o in ct.origin_lps)}; label axis directions (LPS, per slice/row/column "
            f"axis) {np.round(direction.T, 3).tolist()}, CT {np.round(ct.direction.T, 3).tolist()}. "
            "Potential fix: export the labels on the CT grid (resample with nearest neighbour)."
        )
    return arr


def write_label_image(path: str | Path, labels: np.ndarray, ct: CTVolume) -> Path:
    """Write a uint8 label array on ``ct``'s grid as NIfTI / NRRD / MHA (by suffix)."""
    import SimpleITK as sitk

    path = Path(path)
    if tuple(labels.shape) != ct.shape:
        raise GeometryError(f"Labels of shape {labels.shape} do not match CT {ct.meta.key} of shape {ct.shape}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(ct.to_sitk(np.asarray(labels, dtype=np.uint8)), str(path), useCompression=True)
    return path
