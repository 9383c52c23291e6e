"""Label maps for review in 3D Slicer / ITK-SNAP: regions and HU bands on the CT grid.

Two label maps per scan, both uint8 on the CT grid (same size, spacing, origin
and direction as the CT, so they overlay it exactly):

``<stem>_regions``
    The region map's codes (canonical codes of its region set, see
    :mod:`lungdamage.regions`), 0 outside the lungs.
``<stem>_bands``
    ``1 + band index`` of each lung voxel's HU in the scheme (codes
    ``1..n`` in ``scheme.band_names`` order, the implicit ``other`` band last),
    0 outside the lungs.  Counting its codes gives exactly the ``total`` row of
    the scores.

Each map is written as NIfTI (``.nii.gz``) plus a colour table (``.ctbl``,
3D Slicer's "Color table file" format ``index name R G B A``) and an ITK-SNAP
label description (``_itksnap.txt``), and as a 3D Slicer segmentation
(``.seg.nrrd``: NRRD with ``SegmentN_*`` fields, which Slicer opens with the
segment names and colours -- no colour table needed).

Loading in 3D Slicer: drag ``<stem>_regions.seg.nrrd`` onto Slicer (opens as a
segmentation over the CT).  For the NIfTI: load ``<stem>_regions.ctbl`` first
(Add Data), then the ``.nii.gz`` with *Options > LabelMap* checked and its
colour node set to the loaded table (Volumes module > Display > Lookup table).
ITK-SNAP: Segmentation > Open segmentation (the ``.nii.gz``), then
Segmentation > Import label descriptions (``_itksnap.txt``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import GeometryError
from ..regions import RegionMap
from ..score.schemes import Scheme
from ..volume import CTVolume
from ._colors import band_colors, region_color

__all__ = [
    "band_map",
    "band_codes",
    "region_codes",
    "write_color_table",
    "write_itksnap_labels",
    "write_seg_nrrd",
    "write_masks",
]

log = logging.getLogger(__name__)



def band_map(ct: CTVolume, regions: RegionMap, scheme: Scheme) -> np.ndarray:
    """Per-voxel band code inside the lungs: ``1 + band index``, 0 outside.

    Parameters
    ----------
    ct : CTVolume
    regions : RegionMap
        On the CT grid; every labelled voxel counts as lung.
    scheme : Scheme

    Returns
    -------
    ndarray of uint8, shape (slices, rows, columns)
        Codes ``1..len(scheme.band_names)`` in band order; bands are half-open
        ``[lo, hi)`` exactly as in scoring (same lookup table).

    Examples
    --------
    >>> import numpy as np
    >>> from lungdamage import CTVolume, RegionMap
    >>> from lungdamage.score import get_scheme
    >>> ct = CTVolume(np.array([[[-960, -800, -700, -300, 100]]], np.int16), (1, 1, 1))
    >>> lungs = RegionMap(np.array([[[1, 1, 1, 1, 0]]], np.uint8), {1: "right"})
    >>> band_map(ct, lungs, get_scheme("covid")).tolist()
    [[[1, 2, 3, 4, 0]]]
    """
    regions.check_grid(ct.shape, where=ct.meta.key)
    codes = scheme.band_index(ct.hu) + np.uint8(1)
    codes[regions.labels == 0] = 0
    return codes


def band_codes(scheme: Scheme) -> dict[int, str]:
    """Code -> band name of :func:`band_map` (``1..n``)."""
    return {k + 1: name for k, name in enumerate(scheme.band_names)}


def region_codes(regions: RegionMap) -> dict[int, str]:
    """Code -> region name of the region label map (the map's own codes)."""
    return dict(sorted(regions.names.items()))


def write_color_table(path: str | Path, names: Mapping[int, str], colors: Mapping[str, tuple[int, int, int]]) -> Path:
    """Write a 3D Slicer colour table (``# Color table file`` / ``index name R G B A``).

    Spaces in names become underscores (the format is space-separated).
    """
    path = Path(path)
    lines = [f"# Color table file {path.name}", f"# {len(names) + 1} values", "0 Background 0 0 0 0"]
    for code, name in sorted(names.items()):
        r, g, b = colors[name]
        lines.append(f"{int(code)} {name.replace(' ', '_')} {r} {g} {b} 255")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_itksnap_labels(
    path: str | Path, names: Mapping[int, str], colors: Mapping[str, tuple[int, int, int]]
) -> Path:
    """Write an ITK-SNAP label description file (``IDX R G B A VIS MSH "LABEL"``)."""
    path = Path(path)
    lines = [
        "# ITK-SnAP Label Description File (written by lungdamage)",
        "#    IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        '      0     0    0    0     0    0   0  "Clear Label"',
    ]
    for code, name in sorted(names.items()):
        r, g, b = colors[name]
        lines.append(f'{int(code):7d} {r:5d} {g:4d} {b:4d}     1    1   1  "{name}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_seg_nrrd(
    path: str | Path,
    labels: np.ndarray,
    ct: CTVolume,
    names: Mapping[int, str],
    colors: Mapping[str, tuple[int, int, int]],
) -> Path:
    """Write a non-overlapping label map as a 3D Slicer segmentation (``.seg.nrrd``).

    The NRRD carries ``SegmentN_ID/Name/Color/LabelValue/Layer/Extent`` fields
    (Slicer's segmentation file format), so Slicer shows named, coloured
    segments.  Codes absent from ``labels`` are still listed (empty segments).
    """
    import SimpleITK as sitk

    path = Path(path)
    if tuple(labels.shape) != ct.shape:
        raise GeometryError(f"Labels of shape {labels.shape} do not match CT {ct.meta.key} of shape {ct.shape}.")
    img = ct.to_sitk(np.asarray(labels, dtype=np.uint8))
    nz, ny, nx = ct.shape
    extent = f"0 {nx - 1} 0 {ny - 1} 0 {nz - 1}"
    # Slicer >= 5.4 reads SourceRepresentation, older versions MasterRepresentation
    img.SetMetaData("Segmentation_SourceRepresentation", "Binary labelmap")
    img.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    img.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    img.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    for i, (code, name) in enumerate(sorted(names.items())):
        r, g, b = colors[name]
        img.SetMetaData(f"Segment{i}_ID", f"{name}")
        img.SetMetaData(f"Segment{i}_Name", f"{name}")
        img.SetMetaData(f"Segment{i}_Color", f"{r / 255:.6f} {g / 255:.6f} {b / 255:.6f}")
        img.SetMetaData(f"Segment{i}_ColorAutoGenerated", "0")
        img.SetMetaData(f"Segment{i}_LabelValue", str(int(code)))
        img.SetMetaData(f"Segment{i}_Layer", "0")
        img.SetMetaData(f"Segment{i}_Extent", extent)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)
    return path


def write_masks(
    ct: CTVolume,
    regions: RegionMap,
    scheme: Scheme,
    out_dir: str | Path,
    *,
    stem: str,
    nifti: bool = True,
    nrrd: bool = True,
) -> dict[str, Path]:
    """Write the region and band label maps with their colour tables.

    Parameters
    ----------
    ct : CTVolume
    regions : RegionMap
        On the CT grid.
    scheme : Scheme
    out_dir : path
    stem : str
        File name prefix.
    nifti, nrrd : bool
        Write ``<stem>_{regions,bands}.nii.gz`` (+ ``.ctbl`` and ``_itksnap.txt``)
        and/or ``<stem>_{regions,bands}.seg.nrrd``.

    Returns
    -------
    dict of str -> Path
        Keys ``regions_nifti, regions_ctbl, regions_itksnap, regions_nrrd`` and
        the same with ``bands_``.
    """
    from ..io.images import write_label_image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    maps = {
        "regions": (regions.labels, region_codes(regions), {n: region_color(n) for n in regions.names.values()}),
        "bands": (band_map(ct, regions, scheme), band_codes(scheme), band_colors(scheme)),
    }
    out: dict[str, Path] = {}
    for kind, (labels, names, colors) in maps.items():
        if nifti:
            out[f"{kind}_nifti"] = write_label_image(out_dir / f"{stem}_{kind}.nii.gz", labels, ct)
            out[f"{kind}_ctbl"] = write_color_table(out_dir / f"{stem}_{kind}.ctbl", names, colors)
            out[f"{kind}_itksnap"] = write_itksnap_labels(out_dir / f"{stem}_{kind}_itksnap.txt", names, colors)
        if nrrd:
            out[f"{kind}_nrrd"] = write_seg_nrrd(out_dir / f"{stem}_{kind}.seg.nrrd", labels, ct, names, colors)
    log.debug("wrote masks of %s to %s", ct.meta.key, out_dir)
    return out
