"""``lungdamage models download|list``: lungmask's weight files, fetched once and verified."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "models",
        help="download and list lungmask weight files (true lobes need LTRCLobes_R231)",
        description=(
            "Fetch lungmask's published weight files into the torch hub cache lungmask reads "
            "($TORCH_HOME/hub/checkpoints), verified by SHA-256; list what is there.  Scoring "
            "never downloads anything."
        ),
    )
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    d = msub.add_parser(
        "download",
        help="download weight files (default: LTRCLobes and R231, for --model LTRCLobes_R231)",
        description="Download lungmask weight files, verify them and put them where lungmask looks.",
    )
    d.add_argument("names", nargs="*", default=["LTRCLobes_R231"], metavar="MODEL",
                   help="R231, R231CovidWeb, LTRCLobes, LTRCLobes_R231 or all (default LTRCLobes_R231)")
    _common(d)
    d.add_argument("--force", action="store_true", help="download again even if a verified file is present")
    d.add_argument("--retries", type=int, default=3, help="resume attempts after an interrupted transfer (default 3)")
    d.add_argument("--timeout", type=float, default=60.0, metavar="S", help="network timeout in seconds (default 60)")
    d.set_defaults(func=run_download)
    ls = msub.add_parser("list", help="which weight files are present, where, and whether they verify")
    _common(ls)
    ls.set_defaults(func=run_list)
    p.set_defaults(func=lambda args: _usage(p))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=None, help="weights folder (default: the torch hub cache lungmask reads)")
    p.add_argument("--base-url", default=None, metavar="URL",
                   help="download from URL/<file name> instead of lungmask's release (also $LUNGDAMAGE_MODELS_URL)")
    p.add_argument("--sha256", action="append", default=None, metavar="NETWORK=HEX",
                   help="require this full SHA-256 digest for a network's file (repeatable)")


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def _digests(values: list[str] | None) -> dict[str, str]:
    from ..errors import InputError

    out = {}
    for v in values or []:
        name, sep, digest = v.partition("=")
        if not sep or not name or not digest:
            raise InputError(f"--sha256 {v!r}: expected NETWORK=HEX, e.g. R231=<64 hex digits>.")
        out[name.strip()] = digest.strip().lower()
    return out


def run_download(args: argparse.Namespace) -> int:
    from ..models import download_weights

    results = download_weights(
        args.names,
        directory=args.dir,
        base_url=args.base_url,
        sha256=_digests(args.sha256),
        force=args.force,
        retries=args.retries,
        timeout_s=args.timeout,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    for r in results:
        what = "downloaded" if r.action == "downloaded" else "already present"
        print(f"{r.network}: {what}, {r.size_bytes / 1e6:.1f} MB, SHA-256 {r.sha256} verified -> {r.path}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ..models import list_weights, weights_dir

    df = list_weights(directory=args.dir, base_url=args.base_url, sha256=_digests(args.sha256))
    folder = args.dir or weights_dir()
    print(f"lungmask weights folder: {folder}")
    for row in df.itertuples():
        if not row.present:
            state = "absent"
        elif row.verified:
            state = f"present, {row.size_bytes / 1e6:.1f} MB, verified"
        else:
            state = f"present, {row.size_bytes / 1e6:.1f} MB, DOES NOT VERIFY: {row.problem}"
        print(f"{row.network:<13} {row.file:<30} {state}  (models: {row.models})")
    missing = df.loc[~df["present"], "network"].tolist()
    if missing:
        print(f"get them with: lungdamage models download {' '.join(missing)}")
    return 0 if bool(df.loc[df["present"], "verified"].all()) else 1
