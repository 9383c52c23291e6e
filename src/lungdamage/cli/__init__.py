"""Command-line interface: ``lungdamage SUBCOMMAND ...``.

A thin layer: each subcommand module (``cli/<name>.py``) defines
``register(subparsers)`` adding its parser with ``set_defaults(func=run)``;
``run(args) -> int`` parses nothing more, calls one library function and
prints.  Heavy imports happen inside ``run``.

Exit codes: 0 success, 1 some inputs failed or could not be read (batch), 2 usage or input
error, and any other failure (one line on stderr, never a traceback; ``-vv`` logs the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .._version import __version__
from ..errors import LungDamageError

__all__ = ["main"]

#: Subcommand modules, in the order shown by ``--help``.
COMMANDS = ("score", "index", "batch", "export", "study", "models")

#: Exit code of a usage or input error (the subcommands return 0 or 1 themselves).
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lungdamage",
        description="Quantify lung damage (GGO, consolidation) on chest CT.",
    )
    parser.add_argument("--version", action="version", version=f"lungdamage {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:  # a subcommand module not yet present
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        module.register(sub)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("lungdamage")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    from ._messages import install

    install(handler)  # each message once: no raw Python-warning lines, no repeats


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (never calls ``sys.exit``)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    _configure_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except LungDamageError as exc:
        # one line, no traceback: what failed, where, what to do
        from ._flags import to_cli

        msg = to_cli(" ".join(str(exc).split()))  # name the flags, not the Python arguments
        print(f"lungdamage {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # unwritable output, full disk, permission denied
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(
            f"lungdamage {args.command}: error: {exc.strerror or exc}{where}. "
            "Potential fix: check the path and its permissions or free space.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("lungdamage: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure gets one line and exit code 2, never a traceback
        logging.getLogger("lungdamage").debug("unexpected error", exc_info=True)
        print(f"lungdamage {args.command}: error: {unexpected_error_text(exc)}", file=sys.stderr)
        return EXIT_USAGE


def unexpected_error_text(exc: BaseException) -> str:
    """One line for an exception that is not a :class:`LungDamageError`: what, the values, what to do."""
    import sqlite3
    import zlib

    what = " ".join(str(exc).split())[:500] or "(no message)"
    if isinstance(exc, MemoryError):
        return (
            f"out of memory ({type(exc).__name__} {what}). Potential fix: lower --jobs, score the series alone, "
            "or check that its header declares a plausible size (LUNGDAMAGE_MAX_VOXELS sets the voxel budget)."
        )
    if isinstance(exc, sqlite3.Error):
        return (
            f"the result store cannot be used ({type(exc).__name__}: {what}). Potential fix: check that the "
            "store file and its folder are writable, the disk has free space, and the file is a lungdamage store."
        )
    if isinstance(exc, RecursionError):
        return (
            f"an input is nested too deeply to read ({type(exc).__name__}: {what}). Potential fix: the file is "
            "damaged or hostile; remove it."
        )
    if isinstance(exc, (zlib.error, EOFError)):
        return f"compressed or truncated input cannot be read ({type(exc).__name__}: {what}). Potential fix: " \
            "copy the file again or remove it."
    if isinstance(exc, (ValueError, OverflowError, TypeError, NotImplementedError, KeyError, IndexError)):
        return (
            f"input or option could not be used ({type(exc).__name__}: {what}). Potential fix: check the "
            "input files and options; rerun with -vv for details."
        )
    return f"unexpected {type(exc).__name__}: {what}. Potential fix: rerun with -vv for details and report it."
