"""Study figures (PNG): trajectories, per-arm medians, end-of-study distribution.

matplotlib is used through its object-oriented API with the Agg canvas
(no pyplot state, no display needed, safe in worker processes).  Every
figure is ``FIGSIZE_IN`` at ``DPI``, so its pixel size is fixed:
``PIXELS`` = (width, height).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["plot_trajectories", "plot_arm_medians", "plot_distribution", "FIGSIZE_IN", "DPI", "PIXELS"]

FIGSIZE_IN = (8.0, 5.0)
DPI = 100
PIXELS = (int(FIGSIZE_IN[0] * DPI), int(FIGSIZE_IN[1] * DPI))

#: Colour-blind-safe palette (Okabe–Ito), assigned to arms in sorted order.
_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")


def _figure():
    # Figure + FigureCanvasAgg directly: never touches pyplot or the user's chosen backend
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _colours(arms) -> dict[str, str]:
    return {a: _COLOURS[i % len(_COLOURS)] for i, a in enumerate(sorted(arms))}


def _label(metric: str) -> str:
    base = metric.replace("_change", "")
    name = {"damage_pct": "damage", "ggo_pct": "GGO", "consolidation_pct": "consolidation",
            "lesion_pct": "lesion"}.get(base, base)
    unit = " (% of region volume)" if base.endswith("_pct") else ""
    return ("change in " if metric.endswith("_change") else "") + name + unit


def _sqrt_days(ax) -> None:
    """Signed square-root day axis: early visits (days 0, 7, 14) stay apart next to day 120."""
    ax.set_xscale("function", functions=(lambda d: np.sign(d) * np.sqrt(np.abs(d)),
                                         lambda s: np.sign(s) * s**2))


def _visit_axis(ax, table: pd.DataFrame) -> None:
    ticks = table[["visit", "visit_day"]].drop_duplicates().sort_values("visit_day")
    _sqrt_days(ax)
    ax.set_xticks(ticks["visit_day"].astype(float).to_numpy(), ticks["visit"].tolist())
    ax.set_xlabel("visit (at its nominal day after baseline; square-root scale)")


def _zero_based(ax, metric: str) -> None:
    """Start the y-axis at 0 for percentages and severity scores (never negative), so heights compare."""
    if metric.endswith("_change"):
        return
    if metric.endswith("_pct") or metric.startswith("css"):
        top = max(ax.get_ylim()[1], 1.0)
        ax.set_ylim(0.0, top)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the y-range of each panel as PNG text metadata ("ylim": "lo,hi;..."): checkable without reading pixels
    ylim = ";".join(f"{lo:g},{hi:g}" for lo, hi in (ax.get_ylim() for ax in fig.axes))
    fig.savefig(path, format="png", dpi=DPI, metadata={"ylim": ylim})
    return path


def plot_trajectories(table: pd.DataFrame, path: str | Path, *, metric: str = "damage_pct", title: str = "") -> Path:
    """One line per patient over days since baseline, coloured by arm.

    Parameters
    ----------
    table : DataFrame
        Visit table (``patient_id, arm, visit, visit_day, day, <metric>``).
    path : path
        Output PNG (``PIXELS`` in size).

    Returns
    -------
    Path
    """
    fig = _figure()
    ax = fig.add_subplot()
    colours = _colours(table["arm"].unique())
    seen = set()
    for _patient, g in table.sort_values("visit_day").groupby("patient_id", sort=True):
        arm = g["arm"].iloc[0]
        x = g["day"].astype(float).fillna(g["visit_day"].astype(float)).to_numpy()
        ax.plot(x, g[metric].astype(float).to_numpy(), marker="o", ms=3, lw=1, alpha=0.75, color=colours[arm],
                label=None if arm in seen else f"{arm} (n = {table.loc[table['arm'] == arm, 'patient_id'].nunique()})")
        seen.add(arm)
    ax.set_ylabel(_label(metric))
    _zero_based(ax, metric)
    ticks = table[["visit", "visit_day"]].drop_duplicates().sort_values("visit_day")
    days = ticks["visit_day"].astype(float).to_numpy()
    _sqrt_days(ax)
    ax.set_xticks(days, [f"{d:g}\n{v}" for d, v in zip(days, ticks["visit"], strict=True)])
    ax.set_xlabel("days since baseline (square-root scale; ticks at the nominal visit days)")
    ax.legend(title="arm", loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"Per-patient trajectories of {_label(metric)}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_arm_medians(summary: pd.DataFrame, table: pd.DataFrame, path: str | Path, *, title: str = "") -> Path:
    """Per-arm median (points) and interquartile range (bars) at every visit.

    Parameters
    ----------
    summary : DataFrame
        :func:`lungdamage.study.arm_summary` output (one metric).
    table : DataFrame
        Visit table (for the nominal days of the visits).
    """
    fig = _figure()
    ax = fig.add_subplot()
    arms = sorted(summary["arm"].unique())
    colours = _colours(arms)
    day_of = dict(zip(table["visit"], table["visit_day"].astype(float), strict=True))
    for i, arm in enumerate(arms):
        s = summary[(summary["arm"] == arm) & (summary["n"] > 0)].copy()
        # dodge arms apart by a constant step on the square-root axis
        r = np.sqrt(s["visit"].map(day_of).clip(lower=0)) + (i - (len(arms) - 1) / 2) * 0.12
        s["x"] = np.sign(r) * r**2
        s = s.sort_values("x")
        ax.errorbar(s["x"], s["median"], yerr=[s["median"] - s["q1"], s["q3"] - s["median"]], marker="o",
                    capsize=3, color=colours[arm], label=f"{arm}")
        for xv, yv, n in zip(s["x"], s["q3"], s["n"], strict=True):
            ax.annotate(f"n={n}", (xv, yv), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=7,
                        color=colours[arm])
    _visit_axis(ax, table)
    ax.set_ylabel("median " + _label(summary["metric"].iloc[0]) + " (bars: IQR)")
    _zero_based(ax, str(summary["metric"].iloc[0]))
    ax.legend(title="arm", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title or "Per-arm median and interquartile range by visit", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_distribution(table: pd.DataFrame, path: str | Path, *, metric: str = "damage_pct", visit: str = "month 4",
                      threshold: float | None = None, title: str = "") -> Path:
    """Box plot with every patient's value (jittered points) per arm at one visit."""
    fig = _figure()
    ax = fig.add_subplot()
    at = table[table["visit"] == visit]
    arms = sorted(table["arm"].unique())
    colours = _colours(arms)
    data = [at.loc[at["arm"] == a, metric].astype(float).dropna().to_numpy() for a in arms]
    ax.boxplot([d if d.size else [np.nan] for d in data], positions=np.arange(len(arms)), widths=0.5,
               showfliers=False, medianprops={"color": "black"})
    rng = np.random.default_rng(0)  # fixed jitter: the same figure every run
    for i, (a, d) in enumerate(zip(arms, data, strict=True)):
        ax.scatter(i + rng.uniform(-0.12, 0.12, d.size), d, color=colours[a], s=22, zorder=3, alpha=0.85)
    ax.set_xticks(np.arange(len(arms)), [f"{a}\n(n = {d.size})" for a, d in zip(arms, data, strict=True)])
    if threshold is not None:
        ax.axhline(threshold, ls="--", lw=1, color="grey")
        ax.annotate(f"threshold {threshold:g}", (len(arms) - 0.5, threshold), xytext=(0, 3), textcoords="offset points",
                    ha="right", fontsize=8, color="grey")
    ax.set_ylabel(_label(metric))
    _zero_based(ax, metric)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title or f"{_label(metric)} at {visit} by arm", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
