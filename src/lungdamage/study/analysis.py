"""One call from a results table and a manifest to every study table."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, MissingDependencyError
from .compare import arm_summary, choose_control, compare_arms, mixed_model
from .visits import (
    Manifest,
    Protocol,
    assign_visits,
    blind_arms,
    comparability_warnings,
    read_manifest,
    read_protocol,
    select_results,
    visit_table,
)

__all__ = ["StudyResult", "analyze_study"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class StudyResult:
    """Every table of a study analysis (pandas DataFrames) and what they were computed from.

    Attributes
    ----------
    assignments : DataFrame
        One row per scan: visit, rule, used flag (:func:`assign_visits`).
    visits : DataFrame
        Per-patient × visit values and change from baseline (:func:`visit_table`).
    summary : DataFrame
        Per-arm, per-visit statistics of ``metric`` and ``<metric>_change``
        (:func:`arm_summary`, stacked; column ``metric`` says which).
    comparison : DataFrame
        The two-arm comparison at ``compare_visit`` (:func:`compare_arms`).
    mixed : DataFrame or None
        Mixed-model fixed effects, or None (``mixed_note`` says why).
    warnings : DataFrame
        Comparability warnings (:func:`comparability_warnings`).
    protocol, manifest : Protocol, Manifest
    metric, region, compare_visit : str
    threshold : float
    treated, control : str
        Arm labels (``A``/``B`` when blinded).
    provenance : dict
        Scheme, region set, method, parameter hashes and versions of the rows used.
    notes : list of str
        Unmatched manifest rows, ignored scans and other remarks.
    """

    assignments: pd.DataFrame
    visits: pd.DataFrame
    summary: pd.DataFrame
    comparison: pd.DataFrame | None
    mixed: pd.DataFrame | None
    warnings: pd.DataFrame
    protocol: Protocol
    manifest: Manifest
    metric: str
    region: str
    compare_visit: str
    threshold: float
    treated: str
    control: str
    provenance: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    mixed_note: str = ""
    comparison_note: str = ""

    @property
    def blinded(self) -> bool:
        return self.manifest.blinded

    @property
    def off_window_at_compare(self) -> int:
        """Scans at the comparison visit that a manifest override placed outside that visit's window."""
        t = self.visits
        if "off_window" not in t.columns:
            return 0
        return int((t["off_window"].fillna(False).astype(bool) & (t["visit"] == self.compare_visit)).sum())

    def tables(self) -> dict[str, pd.DataFrame]:
        """Name → DataFrame of every table present (the CSV files of the report)."""
        out = {
            "assignments": self.assignments,
            "visits": self.visits,
            "arm_summary": self.summary,
            "comparability_warnings": self.warnings,
        }
        if self.comparison is not None:
            out["comparison"] = self.comparison
        if self.mixed is not None:
            out["mixed_model"] = self.mixed
        return out

    def __repr__(self) -> str:
        n = self.visits["patient_id"].nunique()
        return (
            f"StudyResult({n} patients, {len(self.visits)} patient-visits, arms {self.treated!r} vs "
            f"{self.control!r}, metric {self.metric!r} of region {self.region!r}, compare at {self.compare_visit!r}"
            f"{', blinded' if self.blinded else ''})"
        )


def _provenance(rows: pd.DataFrame) -> dict:
    out = {}
    for col in ("scheme", "scheme_edges", "region_set", "css_region_set", "method", "params_hash", "version"):
        if col in rows.columns:
            out[col] = sorted(set(rows[col].dropna().astype(str)) - {""})
    return out


def analyze_study(
    results: pd.DataFrame,
    manifest: Manifest | str | Path,
    *,
    protocol: Protocol | str | Path | None = None,
    metric: str = "damage_pct",
    region: str = "total",
    visit: str | None = None,
    control: str | None = None,
    threshold: float = 5.0,
    confidence: float = 0.95,
    params_hash: str | None = None,
    blind: bool = False,
    blind_key: str = "",
    mixed: bool | None = None,
) -> StudyResult:
    """Visits, per-arm summaries and the between-arm comparison of a trial.

    Parameters
    ----------
    results : DataFrame
        Results table, one row per scan × region (:func:`lungdamage.load_results`).
    manifest : Manifest or path
        Arms, baselines, visit overrides (:func:`read_manifest`).
    protocol : Protocol or path, optional
        Visit protocol (default: :func:`default_protocol`).
    metric : str
        Primary metric (default ``damage_pct`` = GGO + consolidation, percent of region volume).
    region : str
        Region whose values are analysed (default ``total``).
    visit : str, optional
        Visit of the arm comparison (default: the protocol's ``compare`` visit, ``month 4``).
    control : str, optional
        Control arm name (default: the arm named placebo/control/..., see
        :func:`choose_control`).  Ignored when blinded.
    threshold : float
        Residual damage = ``metric > threshold`` (default 5).
    confidence : float
        Level of all intervals (default 0.95).
    params_hash : str, optional
        Parameter set to use when the results hold several.
    blind : bool
        Relabel arms ``A``/``B`` before any computation (:func:`blind_arms`).
    blind_key : str
        Private key of the blind relabelling.
    mixed : bool or None
        Fit the linear mixed model: True requires statsmodels, False never,
        None when statsmodels is installed (tri-state as in highdicom).

    Returns
    -------
    StudyResult
    """
    if not (0.0 < float(confidence) < 1.0):
        raise InputError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence!r}.")
    if not np.isfinite(float(threshold)):
        raise InputError(f"threshold must be a finite number (percent), got {threshold!r}.")
    protocol = read_protocol(protocol)
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    if blind:
        manifest = blind_arms(manifest, key=blind_key)
        control = None
    compare_visit = protocol.lookup(visit).name if visit else protocol.compare

    sel = select_results(results, region=region, params_hash=params_hash)
    assignments = assign_visits(sel, manifest, protocol=protocol)
    table = visit_table(sel, manifest, protocol=protocol, region=region, metric=metric, assignments=assignments)
    if table.empty:
        raise InputError(
            f"No scan of the {len(manifest.patients)} manifest patients could be placed at a visit "
            f"(scans seen: {sel['series_uid'].nunique()}, patients in results: {sel['patient_id'].nunique()}). "
            "Potential fix: check that the manifest's patient_id values match the DICOM PatientID."
        )
    arms = sorted(manifest.patients["arm"].unique())
    treated, ctrl = choose_control(arms, control) if len(arms) == 2 else (arms[0], "")
    visits_order = [v for v in protocol.names if v in set(table["visit"])]
    summary = pd.concat(
        [arm_summary(table, metric=m, visits=visits_order) for m in (metric, f"{metric}_change")], ignore_index=True
    )

    comparison, comparison_note = None, ""
    try:
        comparison = compare_arms(table, metric=metric, visit=compare_visit, control=ctrl or None,
                                  threshold=threshold, confidence=confidence)
    except InputError as exc:
        comparison_note = f"No arm comparison: {exc}"
        logger.warning("%s", comparison_note)

    fit, mixed_note = None, ""
    if mixed is not False:
        try:
            fit = mixed_model(table, metric=metric, control=ctrl or None, baseline_visit=protocol.baseline.name)
        except MissingDependencyError as exc:
            if mixed:
                raise
            mixed_note = f"Linear mixed model not fitted: {exc}"
        except InputError as exc:
            mixed_note = f"Linear mixed model not fitted: {exc}"
        except Exception as exc:  # patsy / statsmodels errors on degenerate designs (e.g. no baseline scans)
            mixed_note = f"Linear mixed model not fitted: {type(exc).__name__}: {exc}"
    else:
        mixed_note = "Linear mixed model not requested."

    used = sel[sel["series_uid"].isin(set(table["series_uid"]))]
    return StudyResult(
        assignments=assignments,
        visits=table,
        summary=summary,
        comparison=comparison,
        mixed=fit,
        warnings=comparability_warnings(table),
        protocol=protocol,
        manifest=manifest,
        metric=metric,
        region=region,
        compare_visit=compare_visit,
        threshold=threshold,
        treated=treated,
        control=ctrl,
        provenance=_provenance(used),
        notes=list(table.attrs.get("notes", assignments.attrs.get("notes", []))),
        mixed_note=mixed_note,
        comparison_note=comparison_note,
    )
