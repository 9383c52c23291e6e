"""Review outputs: QC montage, label maps for 3D Slicer / ITK-SNAP, DICOM SEG, HTML report.

One call per scan, one per batch::

    from lungdamage.pipeline import analyze_scan
    from lungdamage.report import write_review, write_index, index_row

    analysis = analyze_scan("scan_folder/")
    files = write_review(analysis, "review/")           # dict: kind -> Path
    write_index([index_row(analysis, files)], "review/")

Files written by :func:`write_review` (``<stem>`` from :func:`default_stem`):

==========================  ===============================================
``<stem>_qc.png``           montage (5 axial + 1 coronal, lung window)
``<stem>_qc.json``          panel boxes and voxel index of every pixel row/column
``<stem>_thumb.png``        middle axial panel, 160 px (for index pages)
``<stem>_regions.nii.gz``   region label map on the CT grid (+ ``.ctbl``, ``_itksnap.txt``)
``<stem>_bands.nii.gz``     HU band map (1..n, 0 outside lungs) (+ ``.ctbl``, ``_itksnap.txt``)
``<stem>_regions.seg.nrrd`` 3D Slicer segmentation (named, coloured segments)
``<stem>_bands.seg.nrrd``   same for the bands
``<stem>_seg.dcm``          DICOM SEG referencing the source series (DICOM input only)
``<stem>_report.html``      self-contained report (images inline)
==========================  ===============================================
"""

from __future__ import annotations

import dataclasses

import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import LungDamageError
from ..pipeline import Analysis
from .html import index_row, write_html_report, write_index
from .masks import band_map, write_masks
from .qc import render_qc, voxel_to_pixel
from .seg import write_seg

__all__ = [
    "write_review",
    "ReviewHook",
    "write_index",
    "index_row",
    "default_stem",
    "render_qc",
    "voxel_to_pixel",
    "write_masks",
    "band_map",
    "write_seg",
    "write_html_report",
]

log = logging.getLogger(__name__)


def default_stem(analysis: Analysis) -> str:
    """File-name prefix ``<patient>_<studydate>_<series UID tail>`` (safe characters only)."""
    m = analysis.ct.meta
    parts = [m.patient_id, m.study_date, m.series_uid[-12:] if m.series_uid else ""]
    if not any(parts):
        name = Path(m.source).name if m.source else "scan"
        for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        parts = [name]
    stem = "_".join(p for p in parts if p)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "scan"


def write_review(
    analysis: Analysis,
    out_dir: str | os.PathLike,
    *,
    qc: bool = True,
    masks: bool = True,
    seg: bool = True,
    html: bool = True,
    source_files: Sequence[str | os.PathLike] | None = None,
    stem: str | None = None,
    panel_px: int = 320,
) -> dict[str, Path]:
    """Write the review outputs of one analysed scan into ``out_dir``.

    Parameters
    ----------
    analysis : Analysis
        From :func:`lungdamage.pipeline.analyze_scan`.
    out_dir : path
        Created if missing; files are prefixed with ``stem``.
    qc : bool
        QC montage PNG + JSON sidecar + thumbnail.
    masks : bool
        Region and band label maps (NIfTI + colour tables, ``.seg.nrrd``).
    seg : bool
        DICOM SEG, when the input was a DICOM series whose slices map 1:1 to
        the CT (otherwise skipped with a logged warning and a note in the report).
    html : bool
        Self-contained HTML report (embeds the QC PNG when ``qc``).
    source_files : sequence of paths, optional
        The source series' DICOM files for the SEG (default: found under
        ``analysis.ct.meta.source``).
    stem : str, optional
        File-name prefix (default :func:`default_stem`).
    panel_px : int
        Size of each montage panel in pixels.

    Returns
    -------
    dict of str -> Path
        Keys present for what was written: ``qc_png, qc_json, thumbnail,
        regions_nifti, regions_ctbl, regions_itksnap, regions_nrrd, bands_nifti,
        bands_ctbl, bands_itksnap, bands_nrrd, seg, html``.
    """
    if isinstance(analysis.result, tuple):  # a ResultSet (several schemes): review the first
        analysis = dataclasses.replace(analysis, result=analysis.result[0])
    final_dir = Path(out_dir)
    final_dir.mkdir(parents=True, exist_ok=True)
    # the names below are predictable: write them into a fresh private folder, then rename each
    # file into place, so a symbolic link planted at one of the names is replaced, never followed
    with tempfile.TemporaryDirectory(prefix=".lungdamage-review-", dir=final_dir) as tmp:
        out = _write_review_into(analysis, Path(tmp), qc=qc, masks=masks, seg=seg, html=html,
                                 source_files=source_files, stem=stem or default_stem(analysis), panel_px=panel_px)
        for key, path in out.items():
            target = final_dir / path.name
            os.replace(path, target)
            out[key] = target
    return out


def _write_review_into(analysis, out_dir: Path, *, qc, masks, seg, html, source_files, stem, panel_px):
    """:func:`write_review`'s work, into ``out_dir`` (a private temporary folder)."""
    ct, regions, result = analysis.ct, analysis.regions, analysis.result
    out: dict[str, Path] = {}
    notes: list[str] = []
    if qc:
        out.update(
            render_qc(ct, regions, result, out_dir / f"{stem}_qc.png", thumbnail=out_dir / f"{stem}_thumb.png",
                      panel_px=panel_px)
        )
    if masks:
        out.update(write_masks(ct, regions, result.scheme, out_dir, stem=stem))
    if seg:
        if not ct.meta.series_uid:
            notes.append("DICOM SEG not written: the input was not a DICOM series.")
        else:
            try:
                out["seg"] = write_seg(ct, regions, result.scheme, out_dir / f"{stem}_seg.dcm",
                                       source_files=source_files)
            except LungDamageError as exc:
                log.warning("DICOM SEG of %s not written: %s", ct.meta.key, exc)
                notes.append(f"DICOM SEG not written: {exc}")
    if html:
        out["html"] = out_dir / f"{stem}_report.html"
        write_html_report(analysis, out["html"], qc_png=out.get("qc_png"), outputs=out, notes=notes)
    return out


@dataclasses.dataclass(frozen=True)
class ReviewHook:
    """Picklable per-series batch hook: write the review outputs of each scan.

    Runs in the worker (``lungdamage batch --qc DIR``); returns the scan's
    index-page row (paths as strings) for the store, from which
    :func:`write_index` builds ``DIR/index.html`` at the end of the batch.
    """

    out_dir: str
    seg: bool = True

    def __call__(self, analysis: Analysis) -> dict:
        files = write_review(analysis, self.out_dir, seg=self.seg)
        row = index_row(analysis, files)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in row.items()}
