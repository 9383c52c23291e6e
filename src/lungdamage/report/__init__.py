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
``<stem>_sr.dcm``           DICOM SR (TID 1500) of the numbers, referencing the series and the SEG
``<stem>_report.html``      self-contained report (images inline)
==========================  ===============================================
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import LungDamageError, ReviewError
from ..score.result import Analysis
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
    "safe_stem",
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
    return safe_stem(stem)


#: Longest file-name prefix: the longest suffix added (``_regions_itksnap.txt``, 20) stays far below
#: the 255-byte limit of common file systems.
MAX_STEM_CHARS = 96


def safe_stem(text: str, *, max_chars: int = MAX_STEM_CHARS) -> str:
    """``text`` as a file-name prefix: safe characters only, at most ``max_chars`` long.

    Characters other than ``A-Za-z0-9._-`` become ``-``.  A longer prefix (a
    250-character PatientID) is cut and ends in 8 hex digits of the SHA-1 of the
    full text, so distinct long names stay distinct.
    """
    import hashlib

    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.") or "scan"
    if len(stem) > max_chars:
        digest = hashlib.sha1(str(text).encode("utf-8")).hexdigest()[:8]
        stem = stem[: max_chars - 9].rstrip("-.") + "-" + digest
    return stem


def write_review(
    analysis: Analysis,
    out_dir: str | os.PathLike,
    *,
    qc: bool = True,
    masks: bool = True,
    seg: bool = True,
    html: bool = True,
    sr: bool = True,
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
    sr : bool
        DICOM SR (TID 1500 measurement report, :func:`~lungdamage.report.sr.write_sr`)
        referencing the source series and the SEG, whenever the SEG was written.
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
        bands_ctbl, bands_itksnap, bands_nrrd, seg, sr, html``.

    Raises
    ------
    ReviewError
        After writing every output it could: one or more outputs failed (any
        exception: unreadable header, unwritable folder, ...).  ``exc.files``
        holds what was written; the HTML report (if written) lists the failures.
        Review outputs never affect the scores.
    """
    ct = analysis.ct
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReviewError(
            f"Review outputs of {ct.meta.key} not written (the scores are unaffected): "
            f"cannot create the folder {out_dir} "
            f"({exc.strerror or exc}). Potential fix: pass a writable folder to --qc.",
            failures={"folder": str(exc)},
        ) from exc
    stem = safe_stem(stem) if stem else default_stem(analysis)
    # the names are predictable: write into a fresh private folder, then rename each file into place,
    # so a symbolic link planted at one of the names is replaced, never followed
    work_dir = Path(tempfile.mkdtemp(prefix=".lungdamage-review-", dir=out_dir))
    try:
        return _write_review_into(analysis, out_dir, work_dir, qc=qc, masks=masks, seg=seg, sr=sr,
                                  html=html, source_files=source_files, stem=stem, panel_px=panel_px)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _move_into_place(out: dict[str, Path], out_dir: Path, key_of_scan: str, failures: dict[str, str],
                     notes: list[str]) -> None:
    """Rename every written file of ``out`` into ``out_dir``; a file that cannot be moved becomes a failure."""
    for key, path in list(out.items()):
        target = out_dir / path.name
        try:
            os.replace(path, target)
            out[key] = target
        except OSError as exc:
            del out[key]
            kind = {"seg": "DICOM SEG", "sr": "DICOM SR"}.get(key) or (
                "QC montage" if key.startswith(("qc_", "thumb")) else "label maps"
            )
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            log.info("%s of %s not written: %s", kind, key_of_scan, reason)
            failures[kind] = reason
            notes.append(f"{kind} not written: {reason}")


def _write_review_into(analysis: Analysis, out_dir: Path, work_dir: Path, *, qc, masks, seg, sr, html,
                       source_files, stem, panel_px) -> dict[str, Path]:
    """:func:`write_review`'s work: written into ``work_dir``, then renamed into ``out_dir``.

    The images and masks show ``analysis.result`` (the first scheme); the DICOM SR reports every scheme.
    """
    ct, regions, result = analysis.ct, analysis.regions, analysis.result
    out: dict[str, Path] = {}
    notes: list[str] = []
    failures: dict[str, str] = {}

    def attempt(kind: str, write) -> None:
        # one failing review output (a header it cannot use, a full disk) must not stop the others
        try:
            write()
        except Exception as exc:  # noqa: BLE001 - reported, never swallowed
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            log.info("%s of %s not written: %s", kind, ct.meta.key, reason)  # the ReviewError says it once
            failures[kind] = reason
            notes.append(f"{kind} not written: {reason}")

    if qc:
        attempt("QC montage", lambda: out.update(
            render_qc(ct, regions, result, work_dir / f"{stem}_qc.png", thumbnail=work_dir / f"{stem}_thumb.png",
                      panel_px=panel_px, lesion_map=getattr(analysis, "lesions", None))
        ))
    if masks:
        attempt("label maps", lambda: out.update(write_masks(ct, regions, result.scheme, work_dir, stem=stem)))
    if seg:
        if not ct.meta.series_uid:
            notes.append("DICOM SEG not written: the input was not a DICOM series.")
        else:
            def _seg() -> None:
                try:
                    out["seg"] = write_seg(ct, regions, result.scheme, work_dir / f"{stem}_seg.dcm",
                                           source_files=source_files, pseudonymize=analysis.pseudonymize)
                except LungDamageError as exc:  # expected for resampled / multi-frame sources: a note
                    log.warning("DICOM SEG of %s not written: %s", ct.meta.key, exc)
                    notes.append(f"DICOM SEG not written: {exc}")

            attempt("DICOM SEG", _seg)
    if sr and "seg" in out:

        def _sr() -> None:
            from .sr import write_sr

            try:
                out["sr"] = write_sr(ct, analysis.results, work_dir / f"{stem}_sr.dcm", seg=out["seg"],
                                     source_files=source_files, pseudonymize=analysis.pseudonymize)
            except LungDamageError as exc:  # as for the SEG: a note, not a failure
                log.warning("DICOM SR of %s not written: %s", ct.meta.key, exc)
                notes.append(f"DICOM SR not written: {exc}")

        attempt("DICOM SR", _sr)
    # rename what was written into place before the HTML report, so that it can list any failure
    _move_into_place(out, out_dir, ct.meta.key, failures, notes)
    if html:
        # written in place through a temporary file and a rename (never through a planted link)
        html_path = out_dir / f"{stem}_report.html"

        def _html() -> None:
            write_html_report(analysis, html_path, qc_png=out.get("qc_png"), outputs=out, notes=notes)
            out["html"] = html_path

        attempt("HTML report", _html)
    if failures:
        raise ReviewError(
            f"Review outputs of {ct.meta.key} incomplete (the scores are unaffected): "
            + "; ".join(f"{k} not written ({v})" for k, v in failures.items())
            + f". Written: {', '.join(sorted(out)) or 'nothing'} in {out_dir}.",
            files=out,
            failures=failures,
        )
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
        try:
            files = write_review(analysis, self.out_dir, seg=self.seg)
            error = ""
        except ReviewError as exc:  # the scan is scored: keep its row, say what is missing
            files, error = exc.files, " ".join(str(exc).split())
        row = index_row(analysis, files)
        if error:
            row["review_error"] = error
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in row.items()}
