"""``lungdamage index ROOT``: list patients, studies and series; say which would be scored."""

from __future__ import annotations

import argparse

from ._flags import to_cli
from ._selection import add_selection_options, selection_policy

__all__ = ["register", "run"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "index",
        help="catalog DICOM files under a folder and show which series would be scored",
        description=(
            "Walk ROOT recursively (zip archives included), read DICOM headers only, list "
            "patients / studies / series, and show for every study which series the selection "
            "policy would score and why, and what was rejected and why."
        ),
    )
    p.add_argument("root", metavar="ROOT", help="folder, zip archive or file, or dicomweb+http(s)://HOST:PORT/PATH")
    p.add_argument("-o", "--output", metavar="CSV", help="write one row per series (with selection and reason)")
    add_selection_options(p)
    from ._privacy import add_pseudonymize_option

    add_pseudonymize_option(p)

    from ._dicomweb import add_source_options

    add_source_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io.catalog import catalog_frame, scan, select_series
    from ._privacy import pseudonymizer

    pz = pseudonymizer(args)  # first: the catalog's log lines are scrubbed too
    from ._dicomweb import root_from_args

    policy = selection_policy(args)
    summary: dict = {}
    series = scan(root_from_args(args), summary=summary)
    if not series:
        from ..batch.runner import nothing_found_message
        from ..errors import InputError

        raise InputError(nothing_found_message(args.root, summary))
    selections = select_series(series, policy)
    if pz is not None:  # list and write pseudonymous values only
        series, selections, summary = _pseudonymized(pz, series, selections, summary)
    print(
        f"{summary['root']}: {summary['n_files']} files, {summary['n_dicom']} DICOM, "
        f"{summary['n_non_dicom']} non-DICOM skipped, {summary['n_truncated']} truncated, "
        f"{summary['n_dicomdir']} DICOMDIR"
    )
    problems = summary.get("problems", ())
    if problems:
        print(f"{len(problems)} input(s) could not be read (skipped):")
        for source, reason in problems[:20]:
            print(f"  {source}: {reason}")
        if len(problems) > 20:
            print(f"  ... and {len(problems) - 20} more (run with -v to log every one)")
    patients = sorted({s.patient_id for s in series})
    studies = {(s.patient_id, s.study_uid) for s in series}
    print(f"{len(patients)} patient(s), {len(studies)} study(ies), {len(series)} series")
    n_selected = 0
    current = None
    for sel in selections:
        s = sel.series
        if (s.patient_id, s.study_uid) != current:
            current = (s.patient_id, s.study_uid)
            print(f"\npatient {s.patient_id or '<none>'}  study {s.study_date or '?'} {s.study_uid}")
        mark = "SCORE" if sel.selected else "  -  "
        n_selected += sel.selected
        print(f"  [{mark}] {s.series_uid}  {s.series_description!r}  {s.n_slices} slices")
        print(f"          {to_cli(sel.reason)}")
    studies_without = len(studies) - n_selected
    print(f"\n{n_selected} series would be scored; {studies_without} study(ies) have no scorable series")
    if args.output:
        frame = catalog_frame(series)
        frame["selected"] = [sel.selected for sel in selections]
        frame["reason"] = [to_cli(sel.reason) for sel in selections]
        frame["n_files"] = [len(s.files) for s in series]
        from ..io.safe import escape_formulas

        escape_formulas(frame).to_csv(args.output, index=False)
        print(f"wrote {args.output}")
    return 0


def _pseudonymized(pz, series, selections, summary):
    """Catalog entries, selections (reasons scrubbed) and summary with pseudonymous values."""
    import dataclasses

    terms: dict[str, str] = {}
    for s in series:
        terms.update(pz.terms_for(s))
    new = {id(s): pz.series_info(s) for s in series}
    selections = [
        dataclasses.replace(sel, series=new[id(sel.series)], reason=pz.scrub(sel.reason, terms)) for sel in selections
    ]
    problems = [  # unreadable inputs: their paths hold folder names
        (pz.token(source), pz.scrub(reason, {**terms, str(source): pz.token(source)}))
        for source, reason in summary.get("problems", ())
    ]
    private_summary = {**summary, "root": pz.token(summary["root"]), "problems": problems}
    return [new[id(s)] for s in series], selections, private_summary
