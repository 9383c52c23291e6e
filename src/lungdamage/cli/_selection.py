"""Series-selection options shared by ``index`` and ``batch`` (one definition, same names and defaults)."""

from __future__ import annotations

import argparse

__all__ = ["add_selection_options", "selection_policy"]


def add_selection_options(p: argparse.ArgumentParser) -> None:
    """Add the options of :class:`lungdamage.io.catalog.SelectionPolicy` to a subcommand parser."""
    g = p.add_argument_group(
        "series selection",
        "which CT series of each study is scored (`lungdamage index ROOT` shows the choice and the reasons)",
    )
    g.add_argument(
        "--prefer-kernel", choices=("soft", "lung"), default="soft",
        help="preferred reconstruction kernel family among equally thin series (default: soft)",
    )
    g.add_argument(
        "--min-extent-mm", type=float, default=150.0, metavar="MM",
        help="minimum head-foot extent of a scorable series in mm (default 150; lungs are 200-300 mm long)",
    )
    g.add_argument(
        "--max-preferred-thickness-mm", type=float, default=3.0, metavar="MM",
        help="series with slices at most this thick are preferred over thicker ones (default 3)",
    )
    g.add_argument("--allow-derived", action="store_true", help="accept DERIVED/SECONDARY (reformatted) series")


def selection_policy(args: argparse.Namespace):
    """The :class:`~lungdamage.io.catalog.SelectionPolicy` of the parsed options."""
    from ..errors import InputError
    from ..io.catalog import SelectionPolicy

    for flag, value in (("--min-extent-mm", args.min_extent_mm),
                        ("--max-preferred-thickness-mm", args.max_preferred_thickness_mm)):
        if not value >= 0:  # also rejects nan
            raise InputError(f"{flag} must be >= 0 mm, got {value:g}. Potential fix: e.g. {flag} 100.")
    return SelectionPolicy(
        prefer_kernel=args.prefer_kernel,
        min_extent_mm=args.min_extent_mm,
        max_preferred_thickness_mm=args.max_preferred_thickness_mm,
        allow_derived=args.allow_derived,
    )
