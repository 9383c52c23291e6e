"""The analysis options of ``score`` and ``batch``: one set of flags, one :class:`AnalysisOptions` built from them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ._privacy import pseudonymizer

if TYPE_CHECKING:
    from ..pipeline import AnalysisOptions


def add_analysis_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``score`` and ``batch`` (same names, same meaning)."""
    p.add_argument(
        "--scheme",
        action="append",
        default=None,
        metavar="NAME|FILE",
        help="HU band scheme: covid (default), lcta, aeration, or a .toml/.yaml file; repeat or "
        "comma-separate for several (one segmentation, one row set per scheme)",
    )
    p.add_argument(
        "--suppress-vessels",
        action="store_true",
        help="exclude vessels inside the lungs before counting (reported as vessel_ml; off by default): dense "
        "voxels the lesion measure's structure filter did not count as opacity, so consolidation stays counted",
    )
    p.add_argument(
        "--smooth-sigma-mm",
        type=float,
        default=None,
        metavar="MM",
        help="Gaussian noise pre-filter inside the lungs, sigma in mm (sharp kernels / low dose; off by default)",
    )
    p.add_argument(
        "--regions", dest="region_set", default="lungs", choices=("lungs", "zones", "lobes"),
        help="region set to report (default lungs)",
    )
    p.add_argument(
        "--method", default="threshold", choices=("threshold", "lungmask"), help="lung segmentation (default threshold)"
    )
    p.add_argument("--model", default=None, help="lungmask model: R231, R231CovidWeb, LTRCLobes, LTRCLobes_R231")
    p.add_argument(
        "--weights",
        default=None,
        help="local lungmask weight file (.pth), or a folder holding lungmask's weight files (needed for the "
        "LTRCLobes_R231 fusion); default: the torch hub cache (fill it once with `lungdamage models download`). "
        "Nothing is downloaded while scoring",
    )
    p.add_argument(
        "--partial-lobes",
        action="store_true",
        help="accept approximate lobes (--regions lobes without a lobe model) on a scan that does not cover each "
        "lung from apex to base (refused by default); every row then carries a warning",
    )
    p.add_argument(
        "--css-approx-lobes",
        action="store_true",
        help="compute css_pan / css_chung on approximate lobes too (empty there by default: the scores are "
        "defined on true lobes)",
    )


def scheme_arg(values: list[str] | None) -> str | list[str]:
    """``--scheme`` values (repeated and/or comma-separated) -> one name or a list."""
    if not values:
        return "covid"
    # an existing file name is one scheme even if it contains a comma
    items = [s.strip() for v in values for s in ([v] if Path(v).is_file() else v.split(",")) if s.strip()]
    return items if len(items) > 1 else items[0]


def analysis_options(args: argparse.Namespace) -> AnalysisOptions:
    """The :class:`~lungdamage.pipeline.AnalysisOptions` of the parsed flags (those of :func:`add_analysis_options`
    and ``--pseudonymize``); the one place the CLI maps flags to options."""
    from ..pipeline import AnalysisOptions

    return AnalysisOptions(
        scheme=scheme_arg(args.scheme),
        method=args.method,
        region_set=args.region_set,
        model=args.model,
        weights=args.weights,
        suppress_vessels=args.suppress_vessels,
        smooth_sigma_mm=args.smooth_sigma_mm,
        partial_lobes=args.partial_lobes,
        css_approx_lobes=args.css_approx_lobes,
        pseudonymize=pseudonymizer(args),
    )
