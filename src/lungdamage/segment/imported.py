"""Region maps imported from a label file written by another tool."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import GeometryError, InputError
from ..io.images import read_label_image
from ..regions import LOBE_CODES, LUNG_CODES, ZONE_CODES, RegionMap, translate_labels
from ..volume import CTVolume

__all__ = ["labels_from_file", "labels_from_dicom_seg", "is_dicom_seg"]

#: DICOM SEG SOP Class UID.
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def labels_from_file(
    ct: CTVolume, path: str | Path, *, label_codes: str | Mapping[int, str] | Path | None
) -> RegionMap:
    """Read a label image on the CT grid and translate its codes.

    Parameters
    ----------
    ct : CTVolume
        The CT the labels belong to; the label grid must match it.
    path : str or Path
        NIfTI / NRRD / MHA label map, or a DICOM SEG (see :func:`labels_from_dicom_seg`).
    label_codes : str, mapping or Path
        ``'lungmask'``, ``'lungmask-lungs'``, ``'totalsegmentator'``, ``'cip'``,
        a mapping code -> region name, or a JSON file of it
        (see :func:`lungdamage.regions.translate_labels`).  Not used for a DICOM
        SEG, whose segments are named.

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
    if is_dicom_seg(path):
        return labels_from_dicom_seg(ct, path)
    if label_codes is None:
        raise InputError(
            f"Label map {path} needs label_codes. Potential fix: pass label_codes='lungmask', "
            "'totalsegmentator', 'cip' or a JSON file mapping codes to region names."
        )
    arr = read_label_image(path, ct)
    rm = translate_labels(arr, label_codes, method=f"labels:{path.name}")
    info = dict(rm.info)
    info.update(source=str(path), label_codes=str(label_codes) if not isinstance(label_codes, Mapping) else "mapping")
    return RegionMap(rm.labels, rm.names, method=rm.method, region_set=rm.region_set, info=info)


def is_dicom_seg(path: str | Path) -> bool:
    """True when ``path`` is a DICOM file of the Segmentation Storage SOP class."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        return False
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError):
        return False
    return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS


def _seg_region_set(labels: Mapping[int, str], path: Path) -> tuple[str, Mapping[int, str], dict[int, str]]:
    """The region set a SEG's segment labels name (lobes before lungs before zones), its canonical codes and
    the segments (number -> label) that belong to it."""
    for region_set, canon in (("lobes", LOBE_CODES), ("lungs", LUNG_CODES), ("zones", ZONE_CODES)):
        chosen = {n: lab for n, lab in labels.items() if lab in canon.values()}
        if chosen:
            return region_set, canon, chosen
    raise InputError(
        f"DICOM SEG {path} has no segment named after a lung region (segments: {sorted(set(labels.values()))}). "
        f"Potential fix: label segments {sorted(LOBE_CODES.values())} or 'right'/'left'."
    )


def labels_from_dicom_seg(ct: CTVolume, path: str | Path) -> RegionMap:
    """Region map from a DICOM SEG whose segments are named by canonical region.

    The SEG must reference the CT's own source images (e.g. one written by
    ``lungdamage score --qc``, 3D Slicer or highdicom on that series): frames
    are placed by their referenced SOP Instance UIDs, so the grid is the CT's
    by construction.  Segments labelled ``RUL RML RLL LUL LLL`` give lobes,
    else ``right``/``left`` give lungs, else zones; other segments (HU bands,
    other organs) are ignored.

    Raises
    ------
    GeometryError
        The CT was not read from DICOM files, or the SEG references none of them.
    InputError
        No segment is named after a lung region.
    """
    import highdicom as hd
    import numpy as np

    from ..io.sources import read_source_header

    path = Path(path)
    files = ct.meta.extra.get("files") if ct.meta.extra else None
    if not files or len(files) != ct.shape[0]:
        raise GeometryError(
            f"DICOM SEG {path} can only be placed on a CT read from its DICOM slices (one file per slice); "
            f"CT {ct.meta.key} has {len(files or ())} source files for {ct.shape[0]} slices. "
            "Potential fix: score the DICOM series the SEG references, or export the SEG as NIfTI."
        )
    seg = hd.seg.segread(path)
    labels = {n: seg.get_segment_description(n).segment_label for n in seg.segment_numbers}
    region_set, canon, chosen = _seg_region_set(labels, path)
    uids = [str(read_source_header(f, tags=["SOPInstanceUID"]).SOPInstanceUID) for f in files]
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    if not referenced & set(uids):
        raise GeometryError(
            f"DICOM SEG {path} references none of the {len(uids)} images of CT {ct.meta.key}. "
            "Potential fix: use the SEG made on this series."
        )
    numbers = sorted(chosen)
    stack = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        segment_numbers=numbers,
        combine_segments=True,
        relabel=False,
        assert_missing_frames_are_empty=True,
    )
    inverse = {name: code for code, name in canon.items()}
    lut = np.zeros(max(numbers) + 1, np.uint8)
    for n in numbers:
        lut[n] = inverse[chosen[n]]
    return RegionMap(
        lut[np.asarray(stack)], dict(canon), method=f"labels:{path.name}", region_set=region_set,
        info={"source": str(path), "label_codes": "dicom-seg"},
    )
