"""Longitudinal trial analysis: visits, per-arm summaries, the month-4 comparison.

``study`` never reads CT: it works on the results table (one row per scan ×
region, :func:`lungdamage.load_results`) plus a manifest of arms, so scoring
stays blind to treatment.  Every step returns pandas DataFrames::

    import lungdamage as ld
    from lungdamage import study

    results = ld.load_results("results.sqlite")
    manifest = study.read_manifest("arms.csv")
    visits = study.visit_table(results, manifest)          # patient × visit
    summary = study.arm_summary(visits, metric="damage_pct")
    month4 = study.compare_arms(visits, visit="month 4")   # U, HL, Fisher

or all at once, with the report::

    s = study.analyze_study(results, "arms.csv")
    study.write_report(s, "study_out/")
"""

from __future__ import annotations

from .analysis import StudyResult, analyze_study
from .compare import (
    HodgesLehmann,
    arm_summary,
    choose_control,
    compare_arms,
    hodges_lehmann,
    mann_whitney,
    mixed_model,
    mwu_null_pmf,
    power_note,
)
from .report import write_report
from .visits import (
    SELECTION_RULE,
    Manifest,
    Protocol,
    Visit,
    assign_visits,
    blind_arms,
    comparability_warnings,
    default_protocol,
    manifest_from_frame,
    protocol_from_dict,
    read_manifest,
    read_protocol,
    select_results,
    to_dates,
    visit_table,
)

__all__ = [
    "Visit",
    "Protocol",
    "Manifest",
    "StudyResult",
    "HodgesLehmann",
    "SELECTION_RULE",
    "default_protocol",
    "read_protocol",
    "protocol_from_dict",
    "read_manifest",
    "manifest_from_frame",
    "blind_arms",
    "to_dates",
    "select_results",
    "assign_visits",
    "visit_table",
    "comparability_warnings",
    "arm_summary",
    "mwu_null_pmf",
    "hodges_lehmann",
    "mann_whitney",
    "choose_control",
    "compare_arms",
    "mixed_model",
    "power_note",
    "analyze_study",
    "write_report",
]
