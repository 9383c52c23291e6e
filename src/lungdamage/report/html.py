"""Self-contained HTML: one report per scan, one index page per batch.

Reports carry their images as ``data:`` URIs and their CSS inline: one file,
no external assets, opens offline in any browser.  Links to the mask files
written next to the report are relative.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..score.result import Analysis

__all__ = ["write_html_report", "write_index", "index_row", "png_data_uri", "iso_date"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;margin:24px;color:#1b1b1b;background:#fafafa}
h1{font-size:1.35em;margin:0 0 4px 0} h2{font-size:1.1em;margin:22px 0 6px 0}
table{border-collapse:collapse;font-size:.9em;background:#fff}
th,td{border:1px solid #d0d0d0;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#eee} td.l,th.l{text-align:left}
.meta td{text-align:left} .muted{color:#666} .warn{color:#a33;font-weight:bold}
img.qc{max-width:100%;height:auto;border:1px solid #999;background:#111}
img.thumb{width:120px;height:auto;background:#111}
tr.fail td{background:#fdeaea}
code{font-size:.9em}
.tw{max-width:100%;overflow-x:auto} td.l,.meta td,code{overflow-wrap:anywhere}
"""


# Records the decoded size of every image on <body data-images="w x h, ..."> once loaded, so a headless
# browser's DOM dump shows whether the images rendered (used by the tests; harmless otherwise).
_SCRIPT = (
    "<script>window.addEventListener('load',function(){document.body.setAttribute('data-images',"
    "Array.prototype.map.call(document.images,function(i){return i.naturalWidth+'x'+i.naturalHeight}).join(','));"
    "});</script>\n"
)


def png_data_uri(path: str | Path) -> str:
    """``data:image/png;base64,...`` of a PNG file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def iso_date(value: Any) -> str:
    """A DICOM date ``YYYYMMDD`` as ``YYYY-MM-DD`` (the format of the study report); other text unchanged."""
    text = "" if value is None else str(value).strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def _e(v: Any) -> str:
    from ..io._dicom_headers import shorten

    text = "" if v is None else str(v)
    if not text.startswith("data:image/"):  # embedded images are long by nature; any other text is cut
        text = shorten(text, 1000)
    return html.escape(text)


def _write_text_replacing(path: Path, text: str) -> None:
    """Write ``text`` to a new temporary file beside ``path`` and rename it onto ``path``
    (a symbolic link planted at ``path`` is replaced, never followed)."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _num(v: Any, digits: int = 1) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _e(v)
    return "–" if not math.isfinite(f) else f"{f:.{digits}f}"


def _page(title: str, body: str) -> str:
    # every table in a box of its own that scrolls sideways if it must: the page never does
    body = body.replace("<table", '<div class="tw"><table').replace("</table>", "</table></div>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n{_SCRIPT}</body></html>\n"
    )


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
    ct, result = analysis.ct, analysis.result
    m = ct.meta
    df = result.to_frame()
    scheme = result.scheme
    bands = list(scheme.band_names)
    title = f"lungdamage report · {m.patient_id or '-'} · {iso_date(m.study_date) or '-'}"
    parts = [f"<h1>{_e(title)}</h1>", f"<div class=\"muted\">series <code>{_e(m.key)}</code></div>"]

    ident = [
        ("patient", m.patient_id), ("study date", iso_date(m.study_date)), ("study time", m.study_time),
        ("series UID", m.series_uid), ("study UID", m.study_uid), ("series description", m.series_description),
        ("source", m.source), ("manufacturer", m.manufacturer), ("kernel", m.kernel),
        ("slice thickness (mm)", m.slice_thickness_mm),
        ("voxel (mm, slice×row×column)", " × ".join(f"{s:.3g}" for s in ct.spacing_mm)),
        ("matrix", " × ".join(str(s) for s in ct.shape)), ("orientation", ct.orientation),
        ("contrast", {True: "yes", False: "no", None: "unknown"}[m.contrast]),
    ]
    parts.append("<h2>Scan</h2><table class=\"meta\">" + "".join(
        f"<tr><th class=\"l\">{_e(k)}</th><td>{_e(v if v not in (None, '') else '–')}</td></tr>" for k, v in ident
    ) + "</table>")

    if result.warnings or notes:
        items = "".join(f"<li class=\"warn\">{_e(w)}</li>" for w in result.warnings)
        items += "".join(f"<li>{_e(n)}</li>" for n in notes)
        parts.append(f"<h2>Warnings and notes</h2><ul>{items}</ul>")

    if qc_png is not None:
        parts.append(
            "<h2>QC montage</h2>"
            f"<img class=\"qc\" alt=\"QC montage of {_e(m.key)}\" src=\"{png_data_uri(qc_png)}\">"
            "<div class=\"muted\">Radiological convention: patient right on image left; axial anterior at top, "
            "coronal superior at top. Colour = damage bands; lines = region outlines.</div>"
        )

    head = ["region", "volume mL", "damage %"] + [f"{b} %" for b in bands] + ["mean HU", "Perc15 HU", "LAA-950 %"]
    rows = []
    for _, r in df.iterrows():
        cells = [f"<td class=\"l\">{_e(r['region'])}</td>", f"<td>{_num(r['volume_ml'])}</td>",
                 f"<td><b>{_num(r['damage_pct'])}</b></td>"]
        cells += [f"<td>{_num(r[f'{b}_pct'])}</td>" for b in bands]
        cells += [f"<td>{_num(r['mean_hu'], 0)}</td>", f"<td>{_num(r['perc15_hu'], 0)}</td>",
                  f"<td>{_num(r['laa950_pct'])}</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    parts.append(
        f"<h2>Results by region ({_e(result.region_set)}; % of region volume)</h2>"
        "<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
    )

    prov = [
        ("segmentation method", result.method), ("region set", result.region_set),
        ("scheme", f"{scheme.name}: " + ", ".join(str(b) for b in scheme.bands)),
        ("damage", " + ".join(scheme.damage) or "–"), ("scheme reference", scheme.reference),
        ("parameters hash", result.params_hash), ("input hash", m.input_hash),
        ("versions", ", ".join(f"{k} {v}" for k, v in result.versions.items())),
        ("timings (s)", ", ".join(f"{k} {v:.2f}" for k, v in result.timings_s.items()) or "–"),
        ("report written", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
    ]
    parts.append("<h2>Provenance</h2><table class=\"meta\">" + "".join(
        f"<tr><th class=\"l\">{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in prov
    ) + "</table>")

    if outputs:
        items = "".join(
            f"<li><a href=\"{_e(_rel(p, path.parent))}\">{_e(Path(p).name)}</a> <span class=\"muted\">({_e(k)})</span></li>"
            for k, p in outputs.items() if Path(p) != path
        )
        parts.append(
            "<h2>Files for review</h2><ul>" + items + "</ul><div class=\"muted\">3D Slicer: drag a "
            "<code>.seg.nrrd</code> onto Slicer together with the CT (segments keep names and colours), or load "
            "the DICOM SEG via the DICOM module. NIfTI label maps: load the <code>.ctbl</code> colour table, then "
            "the <code>.nii.gz</code> as a label map. ITK-SNAP: open the <code>.nii.gz</code> as segmentation "
            "and import the <code>_itksnap.txt</code> label descriptions.</div>"
        )
    _write_text_replacing(path, _page(title, "\n".join(parts)))
    return path


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
    body = []
    for i, r in enumerate(rows, start=1):
        failed = bool(r.get("error"))
        thumb = r.get("thumbnail")
        if thumb and Path(thumb).is_file():
            src = png_data_uri(thumb) if embed_thumbnails else _rel(thumb, out_dir)
            img = f"<img class=\"thumb\" alt=\"thumbnail {i}\" src=\"{_e(src)}\">"
        else:
            img = ""
        report = r.get("report")
        series = _e(r.get("series_uid") or r.get("source") or "–")
        if report:
            series = f"<a href=\"{_e(_rel(report, out_dir))}\">{series}</a>"
        cells = [f"<td>{i}</td>", f"<td>{img}</td>", f"<td class=\"l\">{_e(r.get('patient_id') or '–')}</td>",
                 f"<td class=\"l\">{_e(iso_date(r.get('study_date')) or '–')}</td>", f"<td class=\"l\"><code>{series}</code></td>"]
        nums = r.get("numbers") or {}
        cells += [f"<td>{_num(nums[k]) if k in nums else ''}</td>" for k in number_cols]
        if failed:
            status = f"<span class=\"warn\">failed at {_e(r.get('stage') or '?')}</span>: {_e(r.get('error'))}"
        else:
            w = int(r.get("warnings") or 0)
            status = "ok" + (f" ({w} warning{'s' if w != 1 else ''})" if w else "")
            if r.get("review_error"):
                status += f"; <span class=\"warn\">review outputs incomplete</span>: {_e(r.get('review_error'))}"
        cells.append(f"<td class=\"l\">{status}</td>")
        body.append(f"<tr class=\"{'fail' if failed else 'ok'}\">" + "".join(cells) + "</tr>")
    summary = f"{len(rows)} scan(s), {len(rows) - n_fail} scored, {n_fail} failed"
    page = (
        f"<h1>{_e(title)}</h1><div class=\"muted\">{_e(summary)} · written "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}</div>"
        "<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" + "".join(body) + "</table>"
    )
    _write_text_replacing(path, _page(title, page))
    return path
