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


def resolve_metric(metric: str, results: pd.DataFrame) -> str:
    """The primary metric: ``auto`` is ``lesion_pct`` when ``results`` has values of it, else ``damage_pct``."""
    if metric != "auto":
        return metric
    if "lesion_pct" in results.columns and pd.to_numeric(results["lesion_pct"], errors="coerce").notna().any():
        return "lesion_pct"
    logger.warning(
        "These results have no lesion measure (scored before it existed, or with it off): the primary metric "
        "is damage_pct. Rescore to use lesion_pct, or pass metric='damage_pct' to silence this."
    )
    return "damage_pct"


def analyze_study(
    results: pd.DataFrame,
    manifest: Manifest | str | Path,
    *,
    protocol: Protocol | str | Path | None = None,
    metric: str = "auto",
    region: str = "total",
    visit: str | None = None,
    control: str | None = None,
    threshold: float = 5.0,
    confidence: float = 0.95,
    params_hash: str | None = None,
    blind: bool = False,
    blind_key: str = "",
    mixed: bool | None = None,
    pseudonymize=None,
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
        Primary metric: a numeric results column, or ``auto`` (default):
        ``lesion_pct`` (the lesion measure: opacities only, normal lungs near
        zero) when the results carry it, else ``damage_pct`` (GGO +
        consolidation bands, percent of region volume; results scored before
        the lesion measure existed).  See ``docs/metrics.md``, "Which metric
        for a trial".
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
    pseudonymize : Pseudonymizer or str, optional
        Pseudonymize results and manifest before any computation
        (:mod:`lungdamage.privacy`): patient ids and series UIDs become keyed
        hashes, every date of a patient moves by the same keyed offset, so
        visit assignment and every statistic are unchanged.  Rows already
        pseudonymous (a store written with ``batch --pseudonymize``) pass
        unchanged; the manifest keeps the original ids and is mapped with the key.

    Returns
    -------
    StudyResult
    """
    if not (0.0 < float(confidence) < 1.0):
        raise InputError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence!r}.")
    if not np.isfinite(float(threshold)):
        raise InputError(f"threshold must be a finite number (percent), got {threshold!r}.")
    results, manifest_, protocol_ = _study_inputs(results, manifest, protocol, pseudonymize, blind, blind_key)
    control = None if blind else control
    compare_visit = protocol_.lookup(visit).name if visit else protocol_.compare
    sel = select_results(results, region=region, params_hash=params_hash)
    metric = resolve_metric(metric, sel)
    assignments = assign_visits(sel, manifest_, protocol=protocol_)
    table = _placed_visits(sel, manifest_, protocol_, region, metric, assignments)
    arms = sorted(manifest_.patients["arm"].unique())
    treated, ctrl = choose_control(arms, control) if len(arms) == 2 else (arms[0], "")
    visits_order = [v for v in protocol_.names if v in set(table["visit"])]
    summary = pd.concat(
        [arm_summary(table, metric=m, visits=visits_order) for m in (metric, f"{metric}_change")], ignore_index=True
    )
    comparison, comparison_note = _try_compare_arms(table, metric, compare_visit, ctrl, threshold, confidence)
    fit, mixed_note = _try_mixed_model(table, metric, ctrl, protocol_.baseline.name, mixed)
    used = sel[sel["series_uid"].isin(set(table["series_uid"]))]
    return StudyResult(
        assignments=assignments, visits=table, summary=summary, comparison=comparison, mixed=fit,
        warnings=comparability_warnings(table), protocol=protocol_, manifest=manifest_, metric=metric,
        region=region, compare_visit=compare_visit, threshold=threshold, treated=treated, control=ctrl,
        provenance=_provenance(used), notes=list(table.attrs.get("notes", assignments.attrs.get("notes", []))),
        mixed_note=mixed_note, comparison_note=comparison_note,
    )


def _study_inputs(results: pd.DataFrame, manifest, protocol, pseudonymize, blind: bool,
                  blind_key: str) -> tuple[pd.DataFrame, Manifest, Protocol]:
    """Read the protocol and manifest; pseudonymize, then blind, before any computation."""
    protocol = read_protocol(protocol)
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    if pseudonymize is not None:  # the pipeline is imported only when needed
        from ..pipeline import _pseudonymizer

        pz = _pseudonymizer(pseudonymize)
        if pz is not None:
            results, manifest = pz.frame(results), pz.manifest(manifest)
    if blind:
        manifest = blind_arms(manifest, key=blind_key)
    return results, manifest, protocol


def _placed_visits(sel: pd.DataFrame, manifest: Manifest, protocol: Protocol, region: str, metric: str,
                   assignments: pd.DataFrame) -> pd.DataFrame:
    """The patient × visit table; refuses when no scan could be placed at a visit."""
    table = visit_table(sel, manifest, protocol=protocol, region=region, metric=metric, assignments=assignments)
    if table.empty:
        raise InputError(
            f"No scan of the {len(manifest.patients)} manifest patients could be placed at a visit "
            f"(scans seen: {sel['series_uid'].nunique()}, patients in results: {sel['patient_id'].nunique()}). "
            "Potential fix: check that the manifest's patient_id values match the DICOM PatientID."
        )
    return table


def _try_compare_arms(table: pd.DataFrame, metric: str, compare_visit: str, control: str, threshold: float,
                      confidence: float) -> tuple[pd.DataFrame | None, str]:
    """The arm comparison, or None and the reason it could not be made."""
    try:
        return compare_arms(table, metric=metric, visit=compare_visit, control=control or None,
                            threshold=threshold, confidence=confidence), ""
    except InputError as exc:
        note = f"No arm comparison: {exc}"
        logger.warning("%s", note)
        return None, note


def _try_mixed_model(table: pd.DataFrame, metric: str, control: str, baseline_visit: str,
                     mixed: bool | None) -> tuple[pd.DataFrame | None, str]:
    """The mixed-model fit (tri-state ``mixed``), or None and why it was not fitted."""
    if mixed is False:
        return None, "Linear mixed model not requested."
    try:
        return mixed_model(table, metric=metric, control=control or None, baseline_visit=baseline_visit), ""
    except MissingDependencyError as exc:
        if mixed:
            raise
        return None, f"Linear mixed model not fitted: {exc}"
    except InputError as exc:
        return None, f"Linear mixed model not fitted: {exc}"
    except Exception as exc:  # patsy / statsmodels errors on degenerate designs (e.g. no baseline scans)
        return None, f"Linear mixed model not fitted: {type(exc).__name__}: {exc}"
