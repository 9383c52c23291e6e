"""Self-contained HTML: one report per scan, one index page per batch.

Reports carry their images as ``data:`` URIs and their CSS inline: one file,
no external assets, opens offline in any browser.  Links to the mask files
written next to the report are relative.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._html import escape, img_tag, page, png_data_uri, write_page
from ..score.result import Analysis

__all__ = ["write_html_report", "write_index", "index_row", "png_data_uri", "iso_date"]

#: The scan report's and batch index's own rules, on top of :data:`lungdamage._html.BASE_CSS`.
_CSS = """
body{margin:24px;background:#fafafa}
h1{font-size:1.35em;margin:0 0 4px 0} h2{font-size:1.1em;margin:22px 0 6px 0}
table{font-size:.9em}
th,td{text-align:right} td.l,th.l{text-align:left}
.meta td{text-align:left} .muted{color:#666} .warn{color:#a33;font-weight:bold}
img.qc{border:1px solid #999;background:#111}
img.thumb{width:120px;background:#111}
tr.fail td{background:#fdeaea}
td.l,.meta td,code{overflow-wrap:anywhere}
"""


# Records the decoded size of every image on <body data-images="w x h, ..."> once loaded, so a headless
# browser's DOM dump shows whether the images rendered (used by the tests; harmless otherwise).
_SCRIPT = (
    "<script>window.addEventListener('load',function(){document.body.setAttribute('data-images',"
    "Array.prototype.map.call(document.images,function(i){return i.naturalWidth+'x'+i.naturalHeight}).join(','));"
    "});</script>\n"
)


def iso_date(value: Any) -> str:
    """A DICOM date ``YYYYMMDD`` as ``YYYY-MM-DD`` (the format of the study report); other text unchanged."""
    text = "" if value is None else str(value).strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def _e(v: Any) -> str:
    """HTML text of a header value or message, cut to 1000 characters."""
    return escape(v, max_chars=1000)


def _num(v: Any, digits: int = 1) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _e(v)
    return "–" if not math.isfinite(f) else f"{f:.{digits}f}"


def _page(title: str, body: str) -> str:
    return page(title, body, css=_CSS, script=_SCRIPT)


def _now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _meta_table(rows: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of labelled values (label cells left-aligned)."""
    return "<table class=\"meta\">" + "".join(
        f"<tr><th class=\"l\">{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows
    ) + "</table>"


def write_html_report(
    analysis: Analysis,
    path: str | Path,
    *,
    qc_png: str | Path | None = None,
    outputs: Mapping[str, Path] | None = None,
    notes: Iterable[str] = (),
) -> Path:
    """Write the per-scan report: identity, QC montage, per-region table, provenance.

    Parameters
    ----------
    analysis : Analysis
    path : path
        ``.html`` file to write.
    qc_png : path, optional
        QC montage embedded as a data URI.
    outputs : mapping, optional
        Other files written for this scan (listed with relative links).
    notes : iterable of str
        Extra remarks (e.g. outputs that were skipped and why).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta, result = analysis.ct.meta, analysis.result
    title = f"lungdamage report · {meta.patient_id or '-'} · {iso_date(meta.study_date) or '-'}"
    parts = [f"<h1>{_e(title)}</h1>", f"<div class=\"muted\">series <code>{_e(meta.key)}</code></div>",
             _scan_section(analysis)]
    if result.warnings or notes:
        items = "".join(f"<li class=\"warn\">{_e(w)}</li>" for w in result.warnings)
        items += "".join(f"<li>{_e(n)}</li>" for n in notes)
        parts.append(f"<h2>Warnings and notes</h2><ul>{items}</ul>")
    if qc_png is not None:
        parts.append(
            "<h2>QC montage</h2>" + img_tag(qc_png, f"QC montage of {meta.key}", css_class="qc")
            + "<div class=\"muted\">Radiological convention: patient right on image left; axial anterior at top, "
            "coronal superior at top. Colour = damage bands; lines = region outlines.</div>"
        )
    parts += [_results_section(result), _provenance_section(analysis)]
    if outputs:
        parts.append(_files_section(outputs, path))
    write_page(path, _page(title, "\n".join(parts)))
    return path


def _scan_section(analysis: Analysis) -> str:
    """Identity and geometry of the scan."""
    ct = analysis.ct
    m = ct.meta
    ident = [
        ("patient", m.patient_id), ("study date", iso_date(m.study_date)), ("study time", m.study_time),
        ("series UID", m.series_uid), ("study UID", m.study_uid), ("series description", m.series_description),
        ("source", m.source), ("manufacturer", m.manufacturer), ("kernel", m.kernel),
        ("slice thickness (mm)", m.slice_thickness_mm),
        ("voxel (mm, slice×row×column)", " × ".join(f"{s:.3g}" for s in ct.spacing_mm)),
        ("matrix", " × ".join(str(s) for s in ct.shape)), ("orientation", ct.orientation),
        ("contrast", {True: "yes", False: "no", None: "unknown"}[m.contrast]),
    ]
    return "<h2>Scan</h2>" + _meta_table((k, v if v not in (None, "") else "–") for k, v in ident)


def _results_section(result) -> str:
    """Per-region table: volume, damage, each band, mean HU, Perc15, LAA-950."""
    bands = list(result.scheme.band_names)
    head = ["region", "volume mL", "damage %"] + [f"{b} %" for b in bands] + ["mean HU", "Perc15 HU", "LAA-950 %"]
    rows = []
    for _, r in result.to_frame().iterrows():
        cells = [f"<td class=\"l\">{_e(r['region'])}</td>", f"<td>{_num(r['volume_ml'])}</td>",
                 f"<td><b>{_num(r['damage_pct'])}</b></td>"]
        cells += [f"<td>{_num(r[f'{b}_pct'])}</td>" for b in bands]
        cells += [f"<td>{_num(r['mean_hu'], 0)}</td>", f"<td>{_num(r['perc15_hu'], 0)}</td>",
                  f"<td>{_num(r['laa950_pct'])}</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<h2>Results by region ({_e(result.region_set)}; % of region volume)</h2>"
        "<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
    )


def _provenance_section(analysis: Analysis) -> str:
    result, scheme = analysis.result, analysis.result.scheme
    prov = [
        ("segmentation method", result.method), ("region set", result.region_set),
        ("scheme", f"{scheme.name}: " + ", ".join(str(b) for b in scheme.bands)),
        ("damage", " + ".join(scheme.damage) or "–"), ("scheme reference", scheme.reference),
        ("parameters hash", result.params_hash), ("input hash", analysis.ct.meta.input_hash),
        ("versions", ", ".join(f"{k} {v}" for k, v in result.versions.items())),
        ("timings (s)", ", ".join(f"{k} {v:.2f}" for k, v in result.timings_s.items()) or "–"),
        ("report written", _now_utc()),
    ]
    return "<h2>Provenance</h2>" + _meta_table(prov)


def _files_section(outputs: Mapping[str, Path], path: Path) -> str:
    """Relative links to the other files written for the scan, and how to open them."""
    items = "".join(
        f"<li><a href=\"{_e(_rel(p, path.parent))}\">{_e(Path(p).name)}</a> <span class=\"muted\">({_e(k)})</span></li>"
        for k, p in outputs.items() if Path(p) != path
    )
    return (
        "<h2>Files for review</h2><ul>" + items + "</ul><div class=\"muted\">3D Slicer: drag a "
        "<code>.seg.nrrd</code> onto Slicer together with the CT (segments keep names and colours), or load "
        "the DICOM SEG via the DICOM module. NIfTI label maps: load the <code>.ctbl</code> colour table, then "
        "the <code>.nii.gz</code> as a label map. ITK-SNAP: open the <code>.nii.gz</code> as segmentation "
        "and import the <code>_itksnap.txt</code> label descriptions.</div>"
    )


def _rel(p: str | Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(Path(p).resolve(), start.resolve())).as_posix()
    except ValueError:  # other drive (Windows)
        return Path(p).resolve().as_uri()


def index_row(analysis: Analysis, outputs: Mapping[str, Path]) -> dict[str, Any]:
    """Index-page row of one scored scan (pass the dict :func:`write_review` returned).

    Numbers: damage % of total / right / left, and each damage band's % of the
    total lung.
    """
    df = analysis.result.to_frame().set_index("region")
    m = analysis.ct.meta
    numbers: dict[str, float] = {}
    for region in ("total", "right", "left"):
        if region in df.index:
            numbers[f"damage % {region}"] = float(df.loc[region, "damage_pct"])
    if "total" in df.index:
        for d in analysis.result.scheme.damage:
            numbers[f"{d} % total"] = float(df.loc["total", f"{d}_pct"])
        numbers["lung volume mL"] = float(df.loc["total", "volume_ml"])
    return {
        "patient_id": m.patient_id,
        "study_date": m.study_date,
        "series_uid": m.series_uid,
        "source": m.source,
        "method": analysis.result.method,
        "region_set": analysis.result.region_set,
        "scheme": analysis.result.scheme.name,
        "report": outputs.get("html"),
        "thumbnail": outputs.get("thumbnail"),
        "numbers": numbers,
        "warnings": len(analysis.result.warnings),
    }


def write_index(
    rows: Iterable[Mapping[str, Any]],
    out_dir: str | Path,
    *,
    filename: str = "index.html",
    title: str = "lungdamage batch",
    embed_thumbnails: bool = True,
) -> Path:
    """Write the batch index page: one row per scan, failures included.

    Parameters
    ----------
    rows : iterable of mappings
        Scored scans: :func:`index_row` output (keys ``patient_id, study_date,
        series_uid, source, report, thumbnail, numbers`` (label -> value),
        optional ``warnings``, and ``review_error`` when some review outputs of a
        scored scan failed).  Failed scans: ``{"series_uid" or "source",
        "stage", "error"}`` (any row with a non-empty ``error`` is a failure).
    out_dir : path
        Folder of the index; report links are relative to it.
    embed_thumbnails : bool
        Embed thumbnails as data URIs (self-contained page) or link them.

    Returns
    -------
    Path of the index file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / filename
    rows = list(rows)
    number_cols: list[str] = []
    for r in rows:
        for k in (r.get("numbers") or {}):
            if k not in number_cols:
                number_cols.append(k)
    n_fail = sum(1 for r in rows if r.get("error"))
    head = ["#", "QC", "patient", "study date", "series"] + number_cols + ["status"]
    body = [_index_tr(i, r, number_cols, out_dir, embed_thumbnails) for i, r in enumerate(rows, start=1)]
    summary = f"{len(rows)} scan(s), {len(rows) - n_fail} scored, {n_fail} failed"
    text = (
        f"<h1>{_e(title)}</h1><div class=\"muted\">{_e(summary)} · written {_now_utc()}</div>"
        "<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" + "".join(body) + "</table>"
    )
    write_page(path, _page(title, text))
    return path


def _index_status(r: Mapping[str, Any]) -> str:
    if r.get("error"):
        return f"<span class=\"warn\">failed at {_e(r.get('stage') or '?')}</span>: {_e(r.get('error'))}"
    n_warnings = int(r.get("warnings") or 0)
    status = "ok" + (f" ({n_warnings} warning{'s' if n_warnings != 1 else ''})" if n_warnings else "")
    if r.get("review_error"):
        status += f"; <span class=\"warn\">review outputs incomplete</span>: {_e(r.get('review_error'))}"
    return status


def _index_tr(i: int, r: Mapping[str, Any], number_cols: list[str], out_dir: Path, embed_thumbnails: bool) -> str:
    """Row ``i`` (1-based) of the index table."""
    thumb = r.get("thumbnail")
    img = ""
    if thumb and Path(thumb).is_file():
        src = png_data_uri(thumb) if embed_thumbnails else _rel(thumb, out_dir)
        img = f"<img class=\"thumb\" alt=\"thumbnail {i}\" src=\"{_e(src)}\">"
    report = r.get("report")
    series = _e(r.get("series_uid") or r.get("source") or "–")
    if report:
        series = f"<a href=\"{_e(_rel(report, out_dir))}\">{series}</a>"
    cells = [f"<td>{i}</td>", f"<td>{img}</td>", f"<td class=\"l\">{_e(r.get('patient_id') or '–')}</td>",
             f"<td class=\"l\">{_e(iso_date(r.get('study_date')) or '–')}</td>",
             f"<td class=\"l\"><code>{series}</code></td>"]
    nums = r.get("numbers") or {}
    cells += [f"<td>{_num(nums[k]) if k in nums else ''}</td>" for k in number_cols]
    cells.append(f"<td class=\"l\">{_index_status(r)}</td>")
    return f"<tr class=\"{'fail' if r.get('error') else 'ok'}\">" + "".join(cells) + "</tr>"
