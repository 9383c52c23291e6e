"""``lungdamage batch ROOT --store results.sqlite``: score a scan archive, resumably, in parallel."""

from __future__ import annotations

import argparse
import sys

from ._analysis import add_analysis_options, analysis_options
from ._privacy import add_pseudonymize_option
from ._selection import add_selection_options, selection_policy

_MEMORY_NOTE = (
    "Memory: one worker peaks at about {measured:.1f} GiB on a 512x512x400 series (threshold method; proportional to "
    "the voxel count); the default --jobs budgets {peak:.1f} GiB per worker: min(cores, available memory / "
    "{peak:.1f} GiB) = {jobs} on this machine."
)


def register(sub) -> None:
    from ..batch.runner import MEASURED_SCAN_PEAK_MIB, TYPICAL_SCAN_PEAK_MIB, default_jobs

    note = _MEMORY_NOTE.format(
        measured=MEASURED_SCAN_PEAK_MIB / 1024, peak=TYPICAL_SCAN_PEAK_MIB / 1024, jobs=default_jobs()
    )
    p = sub.add_parser(
        "batch",
        help="score every CT series of an archive into a resumable result store",
        description=(
            "Catalog ROOT (folders and .zip archives, headers only), select one CT series per study, "
            "score each and store the results in an SQLite file.  A rerun skips series already stored "
            "with the same options and lungdamage version.  Exit code 1 when any series failed.  " + note
        ),
    )
    p.add_argument(
        "root", help="archive folder (walked recursively, .zip included), or dicomweb+http(s)://HOST:PORT/PATH"
    )
    p.add_argument("--store", required=True, help="SQLite result store (created if missing)")
    p.add_argument(
        "--jobs", "-j", type=int, default=None,
        help="local worker processes (default: min(cores, memory / per-scan peak)); 0 runs in this process",
    )
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="run on a Dask cluster, e.g. tcp://host:8786")
    p.add_argument("--dask-local", type=int, default=None, metavar="N", help="start a local Dask cluster of N workers")
    add_analysis_options(p)
    add_selection_options(p)
    p.add_argument(
        "--qc",
        default=None,
        metavar="DIR",
        help="write review outputs of every scan to DIR (QC PNG, masks, DICOM SEG, HTML report) and an "
        "index page DIR/index.html listing every scan with its numbers, thumbnail and any failure",
    )
    add_pseudonymize_option(p)
    p.add_argument("--retry-failed", action="store_true", help="score again series that failed in an earlier run")
    p.add_argument("--force", action="store_true", help="score everything again, replacing stored results")
    p.add_argument(
        "--progress-interval", type=float, default=30.0, metavar="S",
        help="seconds between progress lines when stderr is not a terminal (default 30)",
    )
    from ._dicomweb import add_send_option, add_source_options

    add_send_option(p)
    add_source_options(p, batch=True)
    p.set_defaults(func=run)


def make_hook(args: argparse.Namespace):
    """Per-series callback run in the worker with the Analysis (None: no extra outputs).

    ``--qc DIR`` writes each scan's review outputs in the worker; the hook's
    return value (the scan's index row) is kept in the store for the index page.
    """
    if getattr(args, "send_results", None):
        from ._dicomweb import send_hook

        return send_hook(args)
    if not getattr(args, "qc", None):
        return None
    from ..report import ReviewHook

    return ReviewHook(str(args.qc))


def write_qc_index(store_path: str, run_hash: str, qc_dir: str) -> str:
    """Build ``qc_dir/index.html`` from the store: every scan of this run and every failure."""
    from ..batch.store import ResultStore
    from ..report import write_index

    with ResultStore(store_path, readonly=True) as store:
        rows = list(store.hook_values(run_hash=run_hash))
        missing = store.count_without_hook(run_hash=run_hash)
        if missing:
            print(
                f"note: {missing} series stored by an earlier run without --qc have no review outputs; "
                "rerun with --force to make them",
                file=sys.stderr,
            )
        for f in store.failures(run_hash=run_hash).to_dict("records"):
            rows.append(
                {"series_uid": f["series_uid"], "source": f["source"], "patient_id": f["patient_id"],
                 "study_date": f["study_date"], "stage": f["stage"], "error": f"{f['error_type']}: {f['message']}"}
            )
    return str(write_index(rows, qc_dir))


def run(args: argparse.Namespace) -> int:
    from ..batch.progress import make_progress
    from ..batch.runner import make_engine, run_batch
    from ..errors import InputError

    if args.jobs is not None and args.jobs < 0:
        raise InputError(f"--jobs must be >= 0, got {args.jobs}. Potential fix: --jobs 2, or 0 to run in this process.")
    if args.dask_local is not None and args.dask_local < 1:
        raise InputError(f"--dask-local must be >= 1, got {args.dask_local}. Potential fix: --dask-local 2.")
    params = analysis_options(args)
    engine = make_engine(jobs=args.jobs, scheduler=args.scheduler, dask_local=args.dask_local)
    progress = make_progress(sys.stderr, interval_s=args.progress_interval, enabled=not args.quiet)
    from ._dicomweb import root_from_args

    summary = run_batch(
        root_from_args(args),
        args.store,
        params=params,
        engine=engine,
        policy=selection_policy(args),
        retry_failed=args.retry_failed,
        force=args.force,
        hook=make_hook(args),
        progress=progress,
    )
    print(summary.text())
    not_sent = 0
    if getattr(args, "send_results", None):
        from ._dicomweb import print_send_summary

        not_sent = print_send_summary(args.store, summary.run_hash)
    if args.qc:
        print(f"review index: {write_qc_index(args.store, summary.run_hash, args.qc)}")
    return max(summary.exit_code, 1) if not_sent else summary.exit_code
