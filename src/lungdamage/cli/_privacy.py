"""The ``--pseudonymize KEY`` option shared by every subcommand (see :mod:`lungdamage.privacy`)."""

from __future__ import annotations

import argparse

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

    return Pseudonymizer.from_option(value)
