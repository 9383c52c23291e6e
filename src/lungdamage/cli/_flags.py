"""Library messages in command-line terms: Python keyword arguments become the CLI flags.

Library errors name the Python argument (``pass regions_from=<label file>``);
a CLI user needs the flag (``--regions-from FILE``).  :func:`to_cli` rewrites
the argument names that have a flag; the CLI applies it to every error line
and to the selection reasons it prints.
"""

from __future__ import annotations

import re

__all__ = ["to_cli"]

# (pattern, replacement), applied in order; more specific forms first
_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"\bseries_uid= (?:/ |\(CLI: )--series-uid\)?", "--series-uid"),
        (r"\bparams_hash= \(CLI --params-hash\)", "--params-hash"),
        (r"\bload_results\(run_hash=\.\.\.\) \(CLI --run-hash\)", "--run-hash"),
        (r"\bregions_from=<label file>", "--regions-from FILE"),
        (r"\bregions_from=", "--regions-from "),
        (r"\blabel_codes='(\w+)', '(\w+)', '(\w+)'", r"--label-codes \1, \2, \3"),
        (r"\blabel_codes='(\w+)'", r"--label-codes \1"),
        (r"\blabel_codes=", "--label-codes "),
        (r"\blabel_codes\b", "--label-codes"),
        (r"\ballow_derived=True", "--allow-derived"),
        (r"\bmin_extent_mm=", "--min-extent-mm "),
        (r"\bprefer_kernel=", "--prefer-kernel "),
        (r"\bsuppress_vessels=True", "--suppress-vessels"),
        (r"\bsmooth_sigma_mm=", "--smooth-sigma-mm "),
        (r"\bseries_uid=", "--series-uid "),
    )
)


def to_cli(text: str) -> str:
    """``text`` with Python argument names replaced by the CLI flags that set them."""
    for pattern, repl in _REWRITES:
        text = pattern.sub(repl, text)
    return text
