"""``lungdamage score PATH``: score one scan, print the table, write a file."""

from __future__ import annotations

import argparse
import sys

from ..io.tables import TABLE_FORMATS, table_format, write_table
from ._analysis import add_analysis_options, analysis_options
from ._privacy import add_pseudonymize_option


def register(sub) -> None:
    p = sub.add_parser(
        "score",
        help="score one CT series (DICOM folder, or NIfTI/NRRD/MHA file)",
        description="Segment the lungs of one CT scan and report per-region GGO, consolidation and damage %.",
    )
    p.add_argument("path", help="DICOM series folder, list file, or .nii.gz/.nrrd/.mha image")
    p.add_argument("-o", "--output", default=None, help="write the table to FILE.csv, .parquet or .json")
    p.add_argument(
        "--format",
        choices=TABLE_FORMATS,
        default=None,
        help="table format (default: from the --output suffix; without --output, print the table in this format)",
    )
    p.add_argument(
        "--form",
        choices=("wide", "long"),
        default="wide",
        help="wide: one row per region (default); long: one row per region x band",
    )
    p.add_argument("--series-uid", default=None, help="which series to score when the folder holds several")
    p.add_argument(
        "--qc",
        default=None,
        metavar="DIR",
        help="write review outputs to DIR: QC montage PNG, region/band masks (NIfTI, NRRD, Slicer colour "
        "tables), DICOM SEG (DICOM input) and a self-contained HTML report",
    )
    add_analysis_options(p)
    p.add_argument(
        "--regions-from", default=None,
        help="import regions from a label file (NIfTI/NRRD/MHA on the CT grid, or a DICOM SEG of this series "
        "with segments named RUL..LLL or right/left) instead of segmenting")
    p.add_argument(
        "--label-codes", default=None,
        help="label convention of a --regions-from label map: lungmask, totalsegmentator, cip or FILE.json "
        "(not needed for a DICOM SEG)")
    add_pseudonymize_option(p)
    p.set_defaults(func=run)


def format_table(df, fmt: str) -> str:
    """CSV or JSON text of a DataFrame (for printing to stdout)."""
    from ..errors import InputError

    if fmt == "csv":
        from ..io.safe import escape_formulas

        return escape_formulas(df).to_csv(index=False)
    if fmt == "json":
        return df.to_json(orient="records", indent=1, double_precision=15)
    raise InputError(f"Format {fmt!r} cannot be printed. Potential fix: pass -o FILE.{fmt}.")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..pipeline import analyze_scan

    fmt = table_format(args.output, args.format) if args.output else args.format
    if fmt == "parquet" and not args.output:
        raise InputError("--format parquet needs an output file. Potential fix: pass -o FILE.parquet.")
    analysis = analyze_scan(
        args.path,
        analysis_options(args),
        series_uid=args.series_uid,
        regions_from=args.regions_from,
        label_codes=args.label_codes,
    )
    result = analysis.results
    df = result.to_frame(args.form)
    from ._messages import without_shown

    # the scores first: a failing review output (below) must never cost the table or the -o file
    if args.output:
        print(without_shown(result.summary()))
        out = write_table(df, args.output, fmt=fmt)
        print(f"wrote {out}", file=sys.stderr)
    elif fmt:
        print(format_table(df, fmt), end="" if fmt == "csv" else "\n")
    else:
        print(without_shown(result.summary()))
    if args.qc:
        from ..errors import ReviewError
        from ..report import write_review

        try:
            files = write_review(analysis, args.qc)
        except ReviewError as exc:
            from ._flags import to_cli

            msg = to_cli(" ".join(str(exc).split()))
            print(f"lungdamage score: error: {msg}", file=sys.stderr)
            return 1
        print(f"review outputs in {args.qc}: {', '.join(sorted(p.name for p in files.values()))}", file=sys.stderr)
    return 0
