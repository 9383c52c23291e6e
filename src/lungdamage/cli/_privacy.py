"""The ``--pseudonymize KEY`` option shared by every subcommand (see :mod:`lungdamage.privacy`)."""

from __future__ import annotations

import argparse
import logging
import warnings

__all__ = ["add_pseudonymize_option", "pseudonymizer"]

HELP = (
    "replace patient ids, UIDs, dates and source paths by keyed pseudonyms (HMAC-SHA256) in every output; "
    "names and birth dates dropped, dates shifted per patient (visit intervals kept). KEY is the secret "
    "itself, @FILE (its first line) or env:[NAME] (environment variable, default "
    "LUNGDAMAGE_PSEUDONYMIZE_KEY). The key is never written"
)


def add_pseudonymize_option(p: argparse.ArgumentParser) -> None:
    """Add ``--pseudonymize KEY`` to a subcommand parser."""
    p.add_argument("--pseudonymize", default=None, metavar="KEY", help=HELP)


def pseudonymizer(args: argparse.Namespace):
    """The :class:`~lungdamage.privacy.Pseudonymizer` of ``--pseudonymize`` (None without it)."""
    value = getattr(args, "pseudonymize", None)
    if value is None:
        return None
    from ..privacy import Pseudonymizer

    pz = Pseudonymizer.from_option(value)
    _scrub_console(pz)
    return pz


class _ScrubFilter(logging.Filter):
    """Replace UIDs and absolute paths in log lines by their pseudonyms (console output)."""

    def __init__(self, pz) -> None:
        super().__init__()
        self.pz = pz

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.pz.scrub(record.getMessage()), ()
        return True


def _scrub_console(pz) -> None:
    """Log lines and Python warnings printed by this command carry pseudonyms, not UIDs or paths."""
    for handler in logging.getLogger("lungdamage").handlers:
        if not any(isinstance(f, _ScrubFilter) for f in handler.filters):
            handler.addFilter(_ScrubFilter(pz))
    show = warnings.showwarning
    if not getattr(show, "_lungdamage_scrubbed", False):

        def scrubbed(message, category, filename, lineno, file=None, line=None):
            show(pz.scrub(str(message)), category, filename, lineno, file, line)

        scrubbed._lungdamage_scrubbed = True  # type: ignore[attr-defined]
        warnings.showwarning = scrubbed
