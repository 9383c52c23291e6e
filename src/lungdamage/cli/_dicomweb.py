"""Options of ``index`` and ``batch`` for a DICOMweb source (``dicomweb+http(s)://...``) and target."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

__all__ = ["add_send_option", "add_source_options", "print_send_summary", "root_from_args", "send_hook"]

_FILTERS = ("patient_id", "study_date", "accession", "manifest")


def add_source_options(p: argparse.ArgumentParser, *, batch: bool = False) -> None:
    """Query filters (and, for ``batch``, cache options) used when ROOT is a DICOMweb URL."""
    g = p.add_argument_group(
        "DICOMweb source (ROOT = dicomweb+http(s)://HOST:PORT/PATH)",
        "Credentials come from LUNGDAMAGE_DICOMWEB_USER + LUNGDAMAGE_DICOMWEB_PASSWORD or "
        "LUNGDAMAGE_DICOMWEB_TOKEN, or a credentials file (--dicomweb-config or LUNGDAMAGE_DICOMWEB_CONFIG); "
        "never on the command line.",
    )
    g.add_argument("--patient-id", action="append", default=None, metavar="ID", help="only this patient (repeatable)")
    g.add_argument(
        "--study-date", default=None, metavar="FROM-TO",
        help="study date range, YYYYMMDD-YYYYMMDD (either end optional)",
    )
    g.add_argument(
        "--accession", action="append", default=None, metavar="NUMBER",
        help="only this accession number (repeatable)",
    )
    g.add_argument(
        "--manifest", default=None, metavar="CSV",
        help="only the patients (and study dates) of a trial manifest",
    )
    g.add_argument("--dicomweb-config", default=None, metavar="FILE", help="credentials file (TOML/JSON/YAML)")
    g.add_argument(
        "--dicomweb-timeout", type=float, default=60.0, metavar="S",
        help="timeout per request (default 60 s)",
    )
    g.add_argument(
        "--dicomweb-retries", type=int, default=3, metavar="N",
        help="retries with backoff per request (default 3)",
    )
    if batch:
        g.add_argument(
            "--cache-dir", default=None, metavar="DIR",
            help="where retrieved series are cached while scored",
        )
        g.add_argument(
            "--cache-max-gb", type=float, default=20.0, metavar="GB",
            help="size limit of the cache (default 20)",
        )
        g.add_argument("--keep-cache", action="store_true", help="keep retrieved series after scoring (and reuse them)")


def add_send_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--send-results", default=None, metavar="URL",
        help="after each DICOM series is scored, store its DICOM SEG and SR on this DICOMweb server "
        "(dicomweb+http(s)://...) with STOW-RS; failed sends are retried and recorded in the store",
    )


def root_from_args(args: argparse.Namespace) -> Any:
    """``args.root``, or a :class:`~lungdamage.io.dicomweb.DicomwebSource` when it is a DICOMweb URL."""
    from ..errors import InputError
    from ..io.dicomweb import DicomwebQuery, DicomwebSource, is_dicomweb_url

    if not is_dicomweb_url(args.root):
        given = [f"--{f.replace('_', '-')}" for f in _FILTERS if getattr(args, f, None)]
        if given:
            raise InputError(
                f"{', '.join(given)} filter a DICOMweb query, but ROOT {args.root!r} is a folder. "
                "Potential fix: drop them, or give ROOT as dicomweb+http://HOST:PORT/PATH."
            )
        return args.root
    lo = hi = ""
    if args.study_date:
        lo, hi = args.study_date.split("-", 1) if "-" in args.study_date else (args.study_date, args.study_date)
    query = DicomwebQuery(
        patient_ids=tuple(args.patient_id or ()), date_from=lo, date_to=hi,
        accession_numbers=tuple(args.accession or ()),
    )
    if args.manifest:
        query = query.merged(DicomwebQuery.from_manifest(args.manifest))
    options: dict[str, Any] = {}
    if getattr(args, "cache_max_gb", None) is not None:
        options.update(
            cache_dir=args.cache_dir, cache_max_bytes=int(args.cache_max_gb * 2**30), keep_cache=args.keep_cache
        )
    return DicomwebSource(
        args.root, query=query, timeout_s=args.dicomweb_timeout, retries=args.dicomweb_retries,
        config=args.dicomweb_config, **options,
    )


def outbox_dir(store: str) -> str:
    """Folder of SEG/SR files written for ``--send-results`` without ``--qc`` (unsent ones stay there)."""
    from pathlib import Path

    p = Path(store)
    return str(p.with_name(p.name + ".outbox"))


def send_hook(args: argparse.Namespace):
    """The batch hook for ``--send-results URL`` (with the review outputs when ``--qc``)."""
    from ..io.dicomweb import DicomwebSource, SendResultsHook

    target = DicomwebSource(
        args.send_results, timeout_s=args.dicomweb_timeout, retries=args.dicomweb_retries, config=args.dicomweb_config
    )
    if args.qc:
        return SendResultsHook(target, str(args.qc), review=True)
    return SendResultsHook(target, outbox_dir(args.store), review=False)


def print_send_summary(store_path: str, run_hash: str) -> int:
    """One line: results sent / failed (failed files stay in the --qc folder or the outbox); returns failed sends."""
    from ..batch.store import ResultStore
    from ..io.dicomweb import send_summary

    with ResultStore(store_path, readonly=True) as store:
        counts = send_summary(store.hook_values(run_hash=run_hash))
    line = f"results sent: {counts.get('sent', 0)} series (SEG + SR)"
    if counts.get("failed"):
        line += (
            f"; NOT sent: {counts['failed']} series (the results are stored; the files stay in the --qc folder "
            "or the store's .outbox folder; see the log)"
        )
    if counts.get("nothing to send"):
        line += f"; {counts['nothing to send']} series had no DICOM SEG/SR (not a DICOM source or resampled)"
    print(line)
    with contextlib.suppress(OSError):  # an empty outbox (everything sent) is removed
        os.rmdir(outbox_dir(store_path))
    return counts.get("failed", 0)
