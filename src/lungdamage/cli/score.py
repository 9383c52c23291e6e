"""``lungdamage score PATH``: score one scan, print the table, write a file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._privacy import add_pseudonymize_option, pseudonymizer


def add_analysis_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``score`` and ``batch`` (same names, same meaning)."""
    p.add_argument(
        "--scheme",
        action="append",
        default=None,
        metavar="NAME|FILE",
        help="HU band scheme: covid (default), lcta, aeration, or a .toml/.yaml file; repeat or "
        "comma-separate for several (one segmentation, one row set per scheme)",
    )
    p.add_argument(
        "--suppress-vessels",
        action="store_true",
        help="exclude vessels inside the lungs before counting (reported as vessel_ml; off by default): dense "
        "voxels the lesion measure's structure filter did not count as opacity, so consolidation stays counted",
    )
    p.add_argument(
        "--smooth-sigma-mm",
        type=float,
        default=None,
        metavar="MM",
        help="Gaussian noise pre-filter inside the lungs, sigma in mm (sharp kernels / low dose; off by default)",
    )
    p.add_argument("--regions", default="lungs", choices=("lungs", "zones", "lobes"), help="region set to report (default lungs)")
    p.add_argument("--method", default="threshold", choices=("threshold", "lungmask"), help="lung segmentation (default threshold)")
    p.add_argument("--model", default=None, help="lungmask model: R231, R231CovidWeb, LTRCLobes, LTRCLobes_R231")
    p.add_argument(
        "--weights",
        default=None,
        help="local lungmask weight file (.pth), or a folder holding lungmask's weight files (needed for the "
        "LTRCLobes_R231 fusion); default: the torch hub cache (fill it once with `lungdamage models download`). "
        "Nothing is downloaded while scoring",
    )
    p.add_argument(
        "--partial-lobes",
        action="store_true",
        help="accept approximate lobes (--regions lobes without a lobe model) on a scan that does not cover each "
        "lung from apex to base (refused by default); every row then carries a warning",
    )
    p.add_argument(
        "--css-approx-lobes",
        action="store_true",
        help="compute css_pan / css_chung on approximate lobes too (empty there by default: the scores are "
        "defined on true lobes)",
    )


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
        choices=FORMATS,
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
    p.add_argument("--regions-from", default=None, help="import regions from a label file (NIfTI/NRRD/MHA on the CT grid, or a DICOM SEG of this series "
        "with segments named RUL..LLL or right/left) instead of segmenting")
    p.add_argument("--label-codes", default=None, help="label convention of a --regions-from label map: lungmask, totalsegmentator, cip or FILE.json "
        "(not needed for a DICOM SEG)")
    add_pseudonymize_option(p)
    p.set_defaults(func=run)


FORMATS = ("csv", "parquet", "json")


def table_format(path: str | Path | None, fmt: str | None) -> str:
    """The output format: ``fmt`` if given, else from the suffix of ``path``."""
    from ..errors import InputError

    if fmt:
        if fmt not in FORMATS:
            raise InputError(f"Unknown table format {fmt!r}. Allowed: {', '.join(FORMATS)}.")
        return fmt
    suffix = Path(str(path)).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise InputError(
            f"Output {path}: unknown format {('.' + suffix) if suffix else '(no suffix)'}. "
            "Potential fix: end the file name in .csv, .parquet or .json, or pass --format."
        )
    return suffix


def write_table(df, path: str | Path, *, fmt: str | None = None) -> Path:
    """Write a DataFrame as CSV, Parquet or JSON (a list of row records), by ``fmt`` or suffix."""
    path = Path(path)
    fmt = table_format(path, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        from ..io.safe import escape_formulas

        escape_formulas(df).to_csv(path, index=False)
    elif fmt == "parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_json(path, orient="records", indent=1, double_precision=15)
    return path


def format_table(df, fmt: str) -> str:
    """CSV or JSON text of a DataFrame (for printing to stdout)."""
    from ..errors import InputError

    if fmt == "csv":
        from ..io.safe import escape_formulas

        return escape_formulas(df).to_csv(index=False)
    if fmt == "json":
        return df.to_json(orient="records", indent=1, double_precision=15)
    raise InputError(f"Format {fmt!r} cannot be printed. Potential fix: pass -o FILE.{fmt}.")


def scheme_arg(values: list[str] | None) -> str | list[str]:
    """``--scheme`` values (repeated and/or comma-separated) -> one name or a list."""
    if not values:
        return "covid"
    # an existing file name is one scheme even if it contains a comma
    items = [s.strip() for v in values for s in ([v] if Path(v).is_file() else v.split(",")) if s.strip()]
    return items if len(items) > 1 else items[0]


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..pipeline import analyze_scan

    fmt = table_format(args.output, args.format) if args.output else args.format
    if fmt == "parquet" and not args.output:
        raise InputError("--format parquet needs an output file. Potential fix: pass -o FILE.parquet.")
    analysis = analyze_scan(
        args.path,
        scheme=scheme_arg(args.scheme),
        suppress_vessels=args.suppress_vessels,
        smooth_sigma_mm=args.smooth_sigma_mm,
        method=args.method,
        regions=args.regions,
        series_uid=args.series_uid,
        model=args.model,
        weights=args.weights,
        regions_from=args.regions_from,
        label_codes=args.label_codes,
        partial_lobes=args.partial_lobes,
        css_approx_lobes=args.css_approx_lobes,
        pseudonymize=pseudonymizer(args),
    )
    result = analysis.result
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
