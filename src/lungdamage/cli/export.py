"""``lungdamage export --store results.sqlite -o results.parquet``: write the stored results as a table."""

from __future__ import annotations

import argparse
import sys

from ..io.tables import write_table
from ._privacy import add_pseudonymize_option, pseudonymizer


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write the results of a batch store to CSV, Parquet or JSON",
        description=(
            "Write one row per scan x region (the columns of `lungdamage score -o`, plus study UID, "
            "run hash and scan id) from a result store.  Failures go to a separate file with --failures."
        ),
    )
    p.add_argument("--store", default=None, help="SQLite result store written by `lungdamage batch`")
    p.add_argument(
        "--from-sr", nargs="+", default=None, metavar="PATH",
        help="instead of a store: read lungdamage DICOM SRs (files, or folders searched for *_sr.dcm and "
        "other SR files) back into a table (one row per scan x region x scheme)",
    )
    p.add_argument("-o", "--output", required=True, help="FILE.csv, .parquet or .json")
    p.add_argument("--failures", default=None, metavar="FILE", help="also write the failed series to FILE (.csv, ...)")
    p.add_argument("--run-hash", default=None, help="only results of these analysis options (see `batch` summary)")
    p.add_argument("--version-filter", default=None, metavar="VERSION", help="only results of this lungdamage version")
    add_pseudonymize_option(p)
    p.set_defaults(func=run)


def _run_from_sr(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..report.sr import read_srs

    files: list[Path] = []
    for p in map(Path, args.from_sr):
        files.extend(sorted(f for f in p.rglob("*.dcm") if f.name.endswith("_sr.dcm")) if p.is_dir() else [p])
    df = read_srs(files)
    out = write_table(df, args.output)
    print(f"wrote {out}: {len(df)} rows from {len(files)} SR file(s)", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    from ..batch.store import ResultStore
    from ..errors import InputError

    if args.from_sr:
        return _run_from_sr(args)
    if not args.store:
        raise InputError("export needs --store STORE or --from-sr PATH. Potential fix: give one of them.")

    with ResultStore(args.store, readonly=True) as store:
        df = store.results(run_hash=args.run_hash, version=args.version_filter)
        failures = store.failures(run_hash=args.run_hash, version=args.version_filter)
    pz = pseudonymizer(args)
    if pz is not None:  # rows already pseudonymous (batch --pseudonymize) pass unchanged
        df, failures = pz.frame(df), pz.frame(failures)
    out = write_table(df, args.output)
    n_scans = df["series_uid"].nunique() if len(df) else 0
    print(f"wrote {out}: {len(df)} rows ({n_scans} scans); {len(failures)} failed series in the store", file=sys.stderr)
    if args.failures:
        fout = write_table(failures, args.failures)
        print(f"wrote {fout}", file=sys.stderr)
    return 0
