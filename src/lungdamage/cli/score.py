"""``lungdamage score PATH``: score one scan, print the table, write a file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_analysis_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``score`` and ``batch`` (same names, same meaning)."""
    p.add_argument("--scheme", default="covid", help="HU band scheme: covid (default), lcta, aeration, or a .toml/.yaml file")
    p.add_argument("--regions", default="lungs", choices=("lungs", "zones", "lobes"), help="region set to report (default lungs)")
    p.add_argument("--method", default="threshold", choices=("threshold", "lungmask"), help="lung segmentation (default threshold)")
    p.add_argument("--model", default=None, help="lungmask model: R231, R231CovidWeb, LTRCLobes, LTRCLobes_R231")
    p.add_argument("--weights", default=None, help="local lungmask weight file (.pth); nothing is downloaded")


def register(sub) -> None:
    p = sub.add_parser(
        "score",
        help="score one CT series (DICOM folder, or NIfTI/NRRD/MHA file)",
        description="Segment the lungs of one CT scan and report per-region GGO, consolidation and damage %.",
    )
    p.add_argument("path", help="DICOM series folder, list file, or .nii.gz/.nrrd/.mha image")
    p.add_argument("-o", "--output", default=None, help="write the table to FILE.csv, .parquet or .json")
    p.add_argument("--series-uid", default=None, help="which series to score when the folder holds several")
    add_analysis_options(p)
    p.add_argument("--regions-from", default=None, help="import regions from a label file instead of segmenting")
    p.add_argument("--label-codes", default=None, help="label convention of --regions-from: lungmask, totalsegmentator, cip or FILE.json")
    p.set_defaults(func=run)


def write_table(df, path: str | Path) -> Path:
    """Write a DataFrame as CSV, Parquet or JSON (records) by suffix."""
    from ..errors import InputError

    path = Path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif suffix == ".json":
        df.to_json(path, orient="records", indent=1)
    else:
        raise InputError(f"Output {path}: unknown format {suffix!r}. Potential fix: end the file name in .csv, .parquet or .json.")
    return path


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..pipeline import analyze

    if args.output and Path(args.output).suffix.lower() not in (".csv", ".parquet", ".json"):
        raise InputError(
            f"Output {args.output}: unknown format. Potential fix: end the file name in .csv, .parquet or .json."
        )
    result = analyze(
        args.path,
        scheme=args.scheme,
        method=args.method,
        regions=args.regions,
        series_uid=args.series_uid,
        model=args.model,
        weights=args.weights,
        regions_from=args.regions_from,
        label_codes=args.label_codes,
    )
    print(result.summary())
    if args.output:
        out = write_table(result.to_frame(), args.output)
        print(f"wrote {out}", file=sys.stderr)
    return 0
