"""``lungdamage study``: per-visit damage and the between-arm comparison of a trial."""

from __future__ import annotations

import argparse
import math
import sys

__all__ = ["register", "run"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "study",
        help="assign scans to visits, summarise per arm, compare arms at month 4, write a report",
        description=(
            "Read scored scans from a result store (lungdamage batch --store), arms and visit overrides from a "
            "manifest CSV, and write per-patient x visit tables, per-arm summaries, the month-4 comparison "
            "(Mann-Whitney U, Hodges-Lehmann, Fisher), figures and a Markdown/HTML report to DIR."
        ),
    )
    p.add_argument("--store", required=True, metavar="SQLITE", help="result store written by 'lungdamage batch'")
    p.add_argument("--manifest", required=True, metavar="CSV",
                   help="patient_id, arm [, baseline_date] [, study_date | series_uid, visit] per row")
    p.add_argument("--protocol", default=None, metavar="TOML",
                   help="visit protocol (.toml/.yaml); default day 0, 7±2, 14±3, 60±14, 120±21")
    p.add_argument("--metric", default="damage_pct", help="results column to analyse (default damage_pct)")
    p.add_argument("--region", default="total", help="region to analyse (default total)")
    p.add_argument("--visit", default=None, help="visit of the arm comparison (default: the protocol's, month 4)")
    p.add_argument("--control", default=None, help="control arm name (default: the arm named placebo/control)")
    p.add_argument("--threshold", type=float, default=5.0,
                   help="residual damage = metric above this value (default 5)")
    p.add_argument("--confidence", type=float, default=0.95, help="level of the intervals (default 0.95)")
    p.add_argument("--params-hash", default=None, help="use results with this parameter hash only")
    p.add_argument("--run-hash", default=None, help="use results of this batch run only")
    p.add_argument("--blind", action="store_true", help="relabel arms A/B; the key is not written")
    p.add_argument("--blind-key", default="", help="private key of the A/B relabelling (default: none)")
    p.add_argument("--no-mixed", action="store_true", help="skip the linear mixed model")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..batch.store import load_results
    from ..study import analyze_study, write_report

    results = load_results(args.store, run_hash=args.run_hash)
    if results.empty:
        from ..errors import InputError

        everything = load_results(args.store)
        hashes = sorted(set(everything["run_hash"])) if "run_hash" in everything else []
        what = f"with run hash {args.run_hash!r}" if args.run_hash else "at all"
        raise InputError(
            f"Result store {args.store} has no results {what}; run hashes present: {hashes or 'none'}. "
            "Potential fix: run `lungdamage batch ... --store` first, or pass one of the listed --run-hash values."
        )
    study = analyze_study(
        results,
        args.manifest,
        protocol=args.protocol,
        metric=args.metric,
        region=args.region,
        visit=args.visit,
        control=args.control,
        threshold=args.threshold,
        confidence=args.confidence,
        params_hash=args.params_hash,
        blind=args.blind,
        blind_key=args.blind_key,
        mixed=False if args.no_mixed else None,
    )
    files = write_report(study, args.out, plots=not args.no_plots)
    a = study.assignments
    print(
        f"{study.visits['patient_id'].nunique()} patients, {len(study.visits)} patient-visits "
        f"({int(a['used'].sum())} of {len(a)} scans used, {int((a['flag'] != '').sum())} flagged)"
    )
    if study.comparison is not None:
        c = study.comparison.set_index("quantity")
        hl, mw, fe = c.loc["hodges_lehmann"], c.loc["mann_whitney_u"], c.loc["fisher_exact"]
        if math.isfinite(hl["ci_low"]) and math.isfinite(hl["ci_high"]):
            ci = f"[{hl['ci_low']:.2f}, {hl['ci_high']:.2f}]"
        else:
            ci = f"({study.comparison.attrs['n_treated']} vs {study.comparison.attrs['n_control']} patients: " \
                 f"{args.confidence:.0%} CI not estimable at this sample size)"
        print(
            f"{study.compare_visit}: {study.metric} {study.treated} - {study.control} (Hodges-Lehmann) "
            f"{hl['value']:.2f} {ci}; Mann-Whitney U {mw['value']:g}, "
            f"p = {mw['p_value']:.4f}; above {study.threshold:g}: Fisher p = {fe['p_value']:.4f}"
        )
        off = study.off_window_at_compare
        if off:
            print(f"{study.compare_visit}: {off} of {int((study.visits['visit'] == study.compare_visit).sum())} "
                  "scans are off-window manifest overrides (see the report's visit assignment)")
    else:
        print(study.comparison_note)
    if len(study.warnings):
        print(f"{len(study.warnings)} comparability warning(s); see the report")
    print(f"wrote {files['report.html'] if 'report.html' in files else args.out}", file=sys.stderr)
    return 0
