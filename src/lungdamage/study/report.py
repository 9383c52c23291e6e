"""Study report: CSV tables, PNG figures, and one Markdown + one self-contained HTML page.

The report is built once as a list of blocks (heading, paragraph, list,
table, figure) and rendered to both formats, so they always say the same
thing.  Every column of every table shown is defined in the report's
*Definitions* section.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._html import escape, img_tag, page, write_page
from .analysis import StudyResult
from .visits import SELECTION_RULE

__all__ = ["write_report", "COLUMN_DEFINITIONS"]

logger = logging.getLogger(__name__)

#: Definition of every column of the study tables (``{m}`` = metric column).
COLUMN_DEFINITIONS: dict[str, str] = {
    "patient_id": "patient key (DICOM PatientID), as in the manifest",
    "arm": "trial arm from the manifest (A/B when the report is blinded)",
    "series_uid": "DICOM SeriesInstanceUID of the scored scan",
    "study_date": "DICOM StudyDate of the scan (YYYY-MM-DD)",
    "baseline_date": "the patient's day 0: manifest baseline_date, else the scan placed at the baseline visit by an "
    "override, else the patient's first scan",
    "day": "days from the patient's baseline date to the study date",
    "visit": "protocol visit the scan was assigned to",
    "visit_day": "nominal day of the visit in the protocol",
    "assigned_by": "how the visit was chosen: override:series_uid / override:study_date (manifest rows), window "
    "(|day − nominal day| ≤ window) or none",
    "used": "whether the scan's values enter the tables (false: out of every window, no date, or another scan "
    "of the same visit was chosen)",
    "flag": "why a scan was not used, or which rule chose it among several",
    "damage_pct": "damage = GGO + consolidation bands, percent of the region's voxels (region volume)",
    "ggo_pct": "ground-glass opacity band, percent of the region's voxels",
    "consolidation_pct": "consolidation band, percent of the region's voxels",
    "lesion_pct": "lesion measure: GGO- and consolidation-band voxels that belong to an opacity (vessels, airway "
    "walls, partial-volume shells and opacities below the minimum size excluded), percent of the region's voxels",
    "css_pan": "CT severity score, Pan/Francone bins per lobe (0: none, 1: <5 %, 2: 5–25 %, 3: 26–50 %, "
    "4: 51–75 %, 5: >75 %), summed over five lobes (0–25; over six zones 0–30 — see css_region_set)",
    "css_chung": "CT severity score, Chung/Li bins per lobe (0–4), summed over five lobes (0–20; over six zones "
    "0–24 — see css_region_set)",
    "slice_thickness_mm": "reconstructed slice thickness of the scan (mm)",
    "kernel": "reconstruction kernel (DICOM ConvolutionKernel)",
    "scheme": "HU band scheme used for scoring",
    "region_set": "region set of the segmentation (lungs, lobes, zones); CT severity scores use it",
    "method": "lung segmentation method",
    "params_hash": "hash of all scoring parameters (same hash = same settings)",
    "version": "lungdamage version that scored the scan",
    "scan_warnings": "warnings recorded while reading or scoring the scan",
    "metric": "column summarised in the row",
    "n": "number of patients with a value",
    "median": "median over patients",
    "q1": "25th percentile over patients (linear interpolation)",
    "q3": "75th percentile over patients (linear interpolation)",
    "mean": "arithmetic mean over patients",
    "sd": "standard deviation over patients (n − 1 denominator)",
    "min": "smallest value",
    "max": "largest value",
    "quantity": "statistic of the arm comparison (each defined in the table's definition column)",
    "value": "value of the statistic",
    "ci_low": "lower limit of the confidence interval",
    "ci_high": "upper limit of the confidence interval",
    "p_value": "two-sided p-value",
    "definition": "what the statistic is",
    "statistical_method": "how the value and its interval or p-value were computed (test, estimator, interval)",
    "off_window": "true when a manifest override placed the scan at a visit whose window does not hold its day",
    "warning_ref": "reference to the scoring warnings listed under the table (W1, W2, ...)",
    "term": "fixed effect of the mixed model (arm[X]: difference X − reference arm at the baseline visit; "
    "visit[V]: change from baseline in the reference arm; arm[X]:visit[V]: additional change in arm X)",
    "coef": "estimated coefficient (units of the metric)",
    "se": "standard error of the coefficient",
    "z": "Wald z statistic (coef / se)",
    "issue": "what differs",
    "detail": "values seen",
    "window_days": "allowed distance from the nominal day (± days)",
    "first_day": "first day of the visit window",
    "last_day": "last day of the visit window",
}


def _definition(col: str) -> str:
    if col in COLUMN_DEFINITIONS:
        return COLUMN_DEFINITIONS[col]
    if col.endswith("_change"):
        base = col[: -len("_change")]
        return f"{base} minus the same patient's value at the baseline visit (empty without a baseline scan)"
    if col.endswith("_pct"):
        return f"{col[:-4]} band, percent of the region's voxels"
    if col.startswith("css"):
        return "CT severity score column from scoring (see the scoring documentation)"
    return "see the lungdamage documentation"


# -----------------------------------------------------------------------------
# blocks and their two renderings
# -----------------------------------------------------------------------------
@dataclass
class _Block:
    kind: str  # h1 h2 p ul table img
    content: Any
    extra: Any = None


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if v.is_integer() and abs(v) < 1e6:
            return str(int(v))
        if v != 0 and (abs(v) < 0.001 or abs(v) >= 1e6):
            return f"{v:.3g}"
        return f"{v:.3f}" if abs(v) < 1 else f"{v:.2f}"
    if isinstance(v, pd.Timestamp):
        return v.strftime("%Y-%m-%d")
    return str(v)


def _cells(df: pd.DataFrame) -> list[list[str]]:
    out = []
    for row in df.itertuples(index=False):
        cells = []
        for col, v in zip(df.columns, row, strict=True):
            if col == "p_value" and isinstance(v, (float, np.floating)) and np.isfinite(v):
                cells.append(f"{v:.4f}" if v >= 0.0001 else f"{v:.2e}")
            else:
                cells.append(_fmt(v))
        out.append(cells)
    return out


def _md(blocks: list[_Block]) -> str:
    lines: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            lines += [f"# {b.content}", ""]
        elif b.kind == "h2":
            lines += [f"## {b.content}", ""]
        elif b.kind == "p":
            lines += [str(b.content), ""]
        elif b.kind == "ul":
            lines += [f"- {item}" for item in b.content] + [""]
        elif b.kind == "table":
            df: pd.DataFrame = b.content
            esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
            lines.append("| " + " | ".join(esc(c) for c in df.columns) + " |")
            lines.append("|" + "|".join("---" for _ in df.columns) + "|")
            lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in _cells(df)]
            lines.append("")
        elif b.kind == "img":
            path, alt = b.content, b.extra
            lines += [f"![{alt}]({path.name})", ""]
    return "\n".join(lines)


#: The study report's own rules, on top of :data:`lungdamage._html.BASE_CSS`.
_CSS = """
body{max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}
.tw{margin:0.5em 0 1.5em}
table{font-size:.85em}
th,td{text-align:left}
tr:nth-child(even) td{background:#fafafa}
img{border:1px solid #ddd} h2{border-bottom:1px solid #ddd;padding-bottom:0.2em;margin-top:1.6em}
"""


def _html_block(b: _Block) -> str:
    if b.kind in ("h1", "h2"):
        return f"<{b.kind}>{escape(b.content)}</{b.kind}>"
    if b.kind == "p":
        return f"<p>{escape(b.content)}</p>"
    if b.kind == "ul":
        return "<ul>" + "".join(f"<li>{escape(i)}</li>" for i in b.content) + "</ul>"
    if b.kind == "table":
        df = b.content
        head = "".join(f"<th>{escape(c)}</th>" for c in df.columns)
        body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in _cells(df))
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if b.kind == "img":
        return f"<figure>{img_tag(b.content, str(b.extra))}<figcaption>{escape(b.extra)}</figcaption></figure>"
    return ""


def _html(blocks: list[_Block], title: str) -> str:
    return page(title, "\n".join(_html_block(b) for b in blocks), css=_CSS)


# -----------------------------------------------------------------------------
# the report
# -----------------------------------------------------------------------------
def _join(values) -> str:
    return ", ".join(values) if values else "not recorded"


def write_report(
    study: StudyResult,
    out_dir: str | Path,
    *,
    plots: bool = True,
    formats: tuple[str, ...] = ("md", "html"),
) -> dict[str, Path]:
    """Write the study tables (CSV), figures (PNG) and report (Markdown, HTML) to ``out_dir``.

    Returns
    -------
    dict
        Name → path of every file written (``report.md``, ``report.html``,
        ``visits.csv``, ..., ``trajectories.png``, ...).
    """
    from . import plots as _plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    from ..io.safe import escape_formulas

    for name, df in study.tables().items():
        path = out_dir / f"{name}.csv"
        escape_formulas(df).to_csv(path, index=False)  # DICOM text never becomes a spreadsheet formula
        written[f"{name}.csv"] = path
    protocol_csv = out_dir / "protocol.csv"
    study.protocol.to_frame().to_csv(protocol_csv, index=False)
    written["protocol.csv"] = protocol_csv

    m, t = study.metric, study.visits
    figures: list[tuple[Path, str]] = []
    if plots:
        figures.append((_plots.plot_trajectories(t, out_dir / "trajectories.png", metric=m),
                        f"Per-patient trajectories of {m} ({study.region}), coloured by arm"))
        figures.append((_plots.plot_arm_medians(study.summary[study.summary["metric"] == m], t,
                                                out_dir / "arm_medians.png"),
                        f"Per-arm median {m} ({study.region}) by visit; bars: interquartile range"))
        slug = study.compare_visit.replace(" ", "_")
        figures.append((_plots.plot_distribution(t, out_dir / f"distribution_{slug}.png", metric=m,
                                                 visit=study.compare_visit, threshold=study.threshold),
                        f"{m} ({study.region}) at {study.compare_visit} by arm; dashed line: threshold "
                        f"{study.threshold:g}"))
        for path, _ in figures:
            written[path.name] = path

    blocks = _blocks(study, figures)
    title = "lungdamage study report" + (" (blinded)" if study.blinded else "")
    if "md" in formats:
        p = out_dir / "report.md"
        p.write_text(_md(blocks), encoding="utf-8")
        written["report.md"] = p
    if "html" in formats:
        p = out_dir / "report.html"
        write_page(p, _html(blocks, title))
        written["report.html"] = p
    logger.info("study report written to %s", out_dir)
    return written


def _blocks(study: StudyResult, figures: list[tuple[Path, str]]) -> list[_Block]:
    """The report, section by section; the Definitions section lists every column of every table shown."""
    blocks = _intro_blocks(study)
    blocks += _numbers_blocks(study)
    blocks += _assignment_blocks(study)
    blocks += _comparability_blocks(study)
    blocks += _summary_blocks(study)
    blocks += _comparison_blocks(study)
    blocks += _mixed_model_blocks(study)
    if figures:
        blocks.append(_Block("h2", "Figures"))
        blocks += [_Block("img", path, caption) for path, caption in figures]
    blocks.append(_Block("h2", "Per-patient values by visit"))
    blocks += _per_patient_blocks(study.visits)
    blocks += _definition_blocks(study, blocks)
    return blocks


def _intro_blocks(study: StudyResult) -> list[_Block]:
    from .. import __version__

    t, a = study.visits, study.assignments
    blocks = [_Block("h1", "lungdamage study report" + (" (blinded)" if study.blinded else ""))]
    per_arm = t.groupby("arm")["patient_id"].nunique()
    blocks.append(_Block("p", (
        f"Generated {_dt.date.today().isoformat()} by lungdamage {__version__}. "
        f"{t['patient_id'].nunique()} patients ("
        + ", ".join(f"{arm}: {n}" for arm, n in per_arm.items())
        + f"), {len(t)} patient-visits from {int(a['used'].sum())} of {len(a)} scans. "
        f"Primary metric: {study.metric} of region '{study.region}'; arm comparison at visit "
        f"'{study.compare_visit}'."
    )))
    if study.blinded:
        blocks.append(_Block("p", (
            "BLINDED REPORT: arms are relabelled A and B by a deterministic mapping whose key is withheld; "
            "it is not written to this report or to any file next to it. Differences are A − B; neither label "
            "reveals which arm received the treatment."
        )))
    return blocks


def _numbers_blocks(study: StudyResult) -> list[_Block]:
    """What the numbers are: scheme, metric, regions, method, provenance, protocol."""
    m, prov = study.metric, study.provenance
    scheme = _join(prov.get("scheme", []))
    edges = (f" — bands {_join(prov.get('scheme_edges', []))} (half-open [lo, hi) HU)"
             if prov.get("scheme_edges") else "")
    css_on = (f" CT severity scores were computed on: {_join(prov['css_region_set'])}."
              if prov.get("css_region_set") else "")
    return [_Block("h2", "What the numbers are"), _Block("ul", [
        f"HU band scheme: {scheme}" + edges,
        f"{m}: {_definition(m)}.",
        f"Region: '{study.region}'; region set: {_join(prov.get('region_set', []))} "
        "(CT severity scores, when present, are computed on this region set: lobes, or zones as a lobe surrogate).",
        f"Segmentation method: {_join(prov.get('method', []))}." + css_on,
        f"Parameter hash(es): {_join(prov.get('params_hash', []))}; scored with lungdamage "
        f"{_join(prov.get('version', []))}.",
        f"Visit protocol: {study.protocol.source}; manifest: {study.manifest.source}.",
        f"Visit assignment: explicit manifest rows (series_uid, then study_date) win; other scans go to the visit "
        f"whose window holds their day since baseline. When several scans fall in one visit the rule is: "
        f"{SELECTION_RULE}.",
        f"Residual damage: {m} > {study.threshold:g} at {study.compare_visit}.",
    ]), _Block("table", study.protocol.to_frame())]


def _assignment_blocks(study: StudyResult) -> list[_Block]:
    a = study.assignments
    blocks = [_Block("h2", "Visit assignment")]
    counts = a.groupby("assigned_by").size()
    blocks.append(_Block("p", "Scans by assignment rule: " + ", ".join(f"{k}: {v}" for k, v in counts.items())
                         + f"; not used: {int((~a['used']).sum())}."))
    flagged = a[a["flag"] != ""][["patient_id", "series_uid", "study_date", "day", "visit", "assigned_by", "used",
                                  "flag"]]
    off = a[a["off_window"]] if "off_window" in a.columns else a.iloc[:0]
    if len(off):
        where = ", ".join(f"{p} {v} (day {d})"
                          for p, v, d in zip(off["patient_id"], off["visit"], off["day"], strict=True))
        blocks.append(_Block("p", (
            f"OFF WINDOW: {len(off)} scan(s) were placed by a manifest override at a visit whose window does not "
            f"hold their day, and are used as the manifest says: {where}. Check the manifest rows."
        )))
    if len(flagged):
        blocks.append(_Block("p", "Flagged scans (out of window, placed off-window by a manifest override, several "
                             "in one window, or no date):"))
        blocks.append(_Block("table", flagged))
    else:
        blocks.append(_Block("p", "No scan was out of window or competing with another for the same visit."))
    if study.notes:
        blocks.append(_Block("ul", study.notes))
    return blocks


def _comparability_blocks(study: StudyResult) -> list[_Block]:
    if len(study.warnings):
        return [_Block("h2", "Comparability warnings"), _Block("p", (
            "Slice thickness and reconstruction kernel change partial-volume averaging and noise, "
            "and so the HU bands; values of visits listed here are less comparable.")),
            _Block("table", study.warnings)]
    return [_Block("h2", "Comparability warnings"), _Block("p", (
        "None: every patient's visits share slice thickness and kernel, and all scans were "
        "scored with one scheme, region set, method and parameter set."))]


def _summary_blocks(study: StudyResult) -> list[_Block]:
    m, s = study.metric, study.summary
    return [
        _Block("h2", f"Per-arm summary of {m} by visit"),
        _Block("table", s[s["metric"] == m]),
        _Block("h2", f"Per-arm summary of the change from baseline ({m}_change)"),
        _Block("table", s[s["metric"] == f"{m}_change"]),
    ]


def _comparison_blocks(study: StudyResult) -> list[_Block]:
    blocks = [_Block("h2", f"Comparison of arms at {study.compare_visit}")]
    c = study.comparison
    if c is None:
        return blocks + [_Block("p", study.comparison_note)]
    n1, n2 = c.attrs["n_treated"], c.attrs["n_control"]
    blocks.append(_Block("p", (
        f"{study.treated} (n = {n1}) vs {study.control} (n = {n2}); differences are {study.treated} − "
        f"{study.control}. " + ("" if study.blinded else f"Reference (control) arm: {study.control}. ")
    )))
    n_off = study.off_window_at_compare
    n_at = int((study.visits["visit"] == study.compare_visit).sum())
    if n_off:
        blocks.append(_Block("p", (
            f"{n_off} of the {n_at} scans at {study.compare_visit} are off-window manifest overrides (see Visit "
            "assignment): their day is outside the visit's window, so they measure a different time point."
        )))
    # "method" here is the statistical method, not the segmentation method of the provenance
    blocks.append(_Block("table", c.rename(columns={"method": "statistical_method"})))
    hl = c[c["quantity"] == "hodges_lehmann"].iloc[0]
    mw = c[c["quantity"] == "mann_whitney_u"].iloc[0]
    if np.isfinite(hl["ci_low"]) and np.isfinite(hl["ci_high"]):
        interval = f"({_fmt(hl['ci_low'])} to {_fmt(hl['ci_high'])}, {hl['method']})"
    else:
        interval = f"(the {hl['method']})"
    blocks.append(_Block("p", (
        f"In words: the Hodges–Lehmann estimate of the difference in {study.metric} is {_fmt(hl['value'])} "
        f"{interval}; Mann–Whitney U = {_fmt(mw['value'])}, p = {mw['p_value']:.4f} ({mw['method']})."
    )))
    blocks.append(_Block("p", "Power: " + c.attrs["power_note"]))
    return blocks


def _mixed_model_blocks(study: StudyResult) -> list[_Block]:
    blocks = [_Block("h2", "Linear mixed model (all visits)")]
    mm = study.mixed
    if mm is None:
        return blocks + [_Block("p", study.mixed_note)]
    blocks.append(_Block("p", (
        f"Model: {mm.attrs['formula']}; REML fit by statsmodels mixedlm on {mm.attrs['n_obs']} observations of "
        f"{mm.attrs['n_patients']} patients; converged: {'yes' if mm.attrs['converged'] else 'NO'}; "
        f"random-intercept variance {mm.attrs['group_var']:.3g}. 95 % Wald intervals. With few patients per "
        "arm the model-based p-values are approximate; read them with the exact tests above."
    )))
    blocks.append(_Block("table", mm))
    if mm.attrs.get("notes"):
        blocks.append(_Block("p", "Fitting warnings:"))
        blocks.append(_Block("ul", mm.attrs["notes"]))
    return blocks


def _definition_blocks(study: StudyResult, blocks: list[_Block]) -> list[_Block]:
    """Definitions of every column of the tables in ``blocks``, then of the comparison statistics."""
    shown: list[str] = []
    for b in blocks:
        if b.kind == "table":
            shown += [c for c in b.content.columns if c not in shown]
    out = [_Block("h2", "Definitions"), _Block("ul", [f"{c}: {_definition(c)}." for c in shown])]
    if study.comparison is not None:
        out.append(_Block("p", "Comparison statistics:"))
        out.append(_Block("ul", [f"{r.quantity} ({r.arm}): {r.definition}" for r in study.comparison.itertuples()]))
    out.append(_Block("p", (
        "Percentages are of the region's voxel count (equivalently its volume). Medians and quartiles are over "
        "patients. p-values are two-sided and not adjusted for multiplicity; the comparison at "
        f"{study.compare_visit} is the pre-specified one, everything else is descriptive."
    )))
    return out


def _per_patient_blocks(t: pd.DataFrame) -> list[_Block]:
    """The per-patient table as shown: values first, the series UID last, warnings by reference.

    Provenance columns (the same on every row, listed under "What the numbers are") and
    ``off_window`` (its ``flag`` says it) are left out; each distinct scoring warning is
    listed once below the table and referenced as W1, W2, ... (the CSV keeps the full text).
    """
    show = [c for c in t.columns
            if c not in ("scheme", "region_set", "method", "params_hash", "version", "off_window", "series_uid")]
    shown = t[show + (["series_uid"] if "series_uid" in t.columns else [])].copy()
    legend: dict[str, str] = {}
    if "scan_warnings" in shown.columns:
        def refs(text: str) -> str:
            msgs = [m.strip() for m in str(text).split(";") if m.strip()]
            return ", ".join(legend.setdefault(m, f"W{len(legend) + 1}") for m in msgs)

        shown["scan_warnings"] = shown["scan_warnings"].fillna("").map(refs)
        shown = shown.rename(columns={"scan_warnings": "warning_ref"})
    out = [_Block("table", shown)]
    if legend:
        out.append(_Block("ul", [f"{ref}: {msg}" for msg, ref in legend.items()]))
    return out
