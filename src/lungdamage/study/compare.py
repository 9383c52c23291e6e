"""Between-arm statistics: per-visit summaries and the end-of-study comparison.

All functions take the per-patient × visit table of
:func:`lungdamage.study.visit_table` (or any DataFrame with ``patient_id,
arm, visit`` and a numeric metric column) and return DataFrames.

Conventions: differences are *treated − control* (or, blinded, the first
label − the second); percentiles use linear interpolation (Hyndman–Fan
type 7, NumPy's default); SD uses ``ddof=1``; p-values are two-sided.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import InputError, MissingDependencyError

__all__ = [
    "HodgesLehmann",
    "arm_summary",
    "mwu_null_pmf",
    "hodges_lehmann",
    "mann_whitney",
    "choose_control",
    "compare_arms",
    "mixed_model",
    "power_note",
]

logger = logging.getLogger(__name__)

#: Arm names taken as the control arm when ``control`` is not given.
_CONTROL_NAMES = re.compile(r"placebo|control|sham|vehicle|standard|usual|soc\b", re.IGNORECASE)

#: Largest n·m for which the U null distribution is computed exactly.
EXACT_MAX_PAIRS = 10_000


def arm_summary(table: pd.DataFrame, *, metric: str = "damage_pct", visits: list[str] | None = None) -> pd.DataFrame:
    """Per-arm, per-visit descriptive statistics of ``metric``.

    Parameters
    ----------
    table : DataFrame
        ``patient_id, arm, visit`` and ``metric`` (NaN values are left out).
    metric : str
        Column to summarise (e.g. ``damage_pct`` or ``damage_pct_change``).
    visits : list of str, optional
        Visit order of the output (default: order of first appearance after
        sorting by ``visit_day`` when present).

    Returns
    -------
    DataFrame
        ``arm, visit, metric, n, median, q1, q3, mean, sd, min, max``; ``q1``
        and ``q3`` are the 25th/75th percentiles (linear interpolation), ``sd``
        has ``ddof=1`` (NaN for n < 2).
    """
    if metric not in table.columns:
        raise InputError(
            f"Column {metric!r} is not in the visit table ({list(table.columns)}). Potential fix: pick one of those."
        )
    if visits is None:
        src = table.sort_values("visit_day") if "visit_day" in table.columns else table
        visits = list(dict.fromkeys(src["visit"]))
    rows = []
    for arm in sorted(table["arm"].unique()):
        for visit in visits:
            v = table.loc[(table["arm"] == arm) & (table["visit"] == visit), metric].astype(float).dropna().to_numpy()
            n = v.size
            q1, med, q3 = np.percentile(v, [25, 50, 75]) if n else (np.nan,) * 3
            rows.append(
                dict(arm=arm, visit=visit, metric=metric, n=n, median=med, q1=q1, q3=q3,
                     mean=v.mean() if n else np.nan, sd=v.std(ddof=1) if n > 1 else np.nan,
                     min=v.min() if n else np.nan, max=v.max() if n else np.nan)
            )
    return pd.DataFrame(rows, columns=["arm", "visit", "metric", "n", "median", "q1", "q3", "mean", "sd", "min", "max"])


def mwu_null_pmf(n: int, m: int) -> np.ndarray:
    """Exact null distribution of the Mann–Whitney U statistic (no ties).

    ``U`` counts the pairs ``(x_i, y_j)`` with ``x_i > y_j`` for samples of
    sizes ``n`` and ``m`` drawn from one continuous distribution.

    Returns
    -------
    ndarray of float64, shape (n*m + 1,)
        ``pmf[u] = P(U = u)``.

    Notes
    -----
    Recurrence on the largest observation: it belongs to ``x`` with
    probability ``n/(n+m)`` and then adds ``m`` to ``U``; so
    ``p(n, m, u) = n/(n+m) p(n-1, m, u-m) + m/(n+m) p(n, m-1, u)``.
    O(n·m) vector steps of length n·m + 1.
    """
    if n < 0 or m < 0:
        raise ValueError(f"sample sizes must be >= 0, got {n}, {m}")
    size = n * m + 1
    # prev[j] = pmf for (i-1, j); cur[j] = pmf for (i, j)
    prev = [np.eye(1, size, 0).ravel() for _ in range(m + 1)]  # i = 0: U = 0 with certainty
    for i in range(1, n + 1):
        cur = [np.eye(1, size, 0).ravel()]  # j = 0
        for j in range(1, m + 1):
            p = np.zeros(size)
            p[j:] += i / (i + j) * prev[j][: size - j]
            p += j / (i + j) * cur[j - 1]
            cur.append(p)
        prev = cur
    return prev[m]


@dataclass(frozen=True)
class HodgesLehmann:
    """Hodges–Lehmann shift estimate ``x − y`` and its distribution-free interval.

    Attributes
    ----------
    estimate : float
        Median of the ``n·m`` pairwise differences ``x_i − y_j``.
    ci_low, ci_high : float
        ``D_(k)`` and ``D_(N+1−k)`` of the sorted differences (NaN when the
        samples are too small for the requested level).
    confidence : float
        Requested level (e.g. 0.95).
    achieved_confidence : float
        ``1 − 2 P(U ≤ k − 1)`` under the null (exact), >= ``confidence``.
    k : int
        Rank of the lower limit (1-based); 0 when no interval exists.
    method : str
        ``exact`` or ``normal approximation``.
    """

    estimate: float
    ci_low: float
    ci_high: float
    confidence: float
    achieved_confidence: float
    k: int
    method: str


def _two_samples(x, y, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Finite values of both samples as float arrays; both must be non-empty."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size == 0 or y.size == 0:
        raise InputError(f"{what} needs two non-empty samples, got sizes {x.size} and {y.size}.")
    return x, y


def hodges_lehmann(x, y, *, confidence: float = 0.95) -> HodgesLehmann:
    """Hodges–Lehmann estimate of the shift ``x − y`` with its exact confidence interval.

    The interval inverts the two-sided exact Mann–Whitney test (Bauer 1972;
    Hollander & Wolfe, *Nonparametric Statistical Methods*, §4.3): with
    ``N = n·m`` sorted pairwise differences ``D``, and ``u*`` the largest
    ``u`` with ``P(U ≤ u) ≤ (1 − confidence)/2``, ``k = u* + 1`` and the
    interval is ``[D_(k), D_(N+1−k)]``.  It holds every shift ``Δ`` for
    which the exact test of ``x − Δ`` against ``y`` does not reject.
    Ties are not corrected for (the coverage is then approximate).

    Parameters
    ----------
    x, y : array_like, 1-D
        The two samples (NaN removed).
    confidence : float
        Two-sided level in (0, 1).

    Returns
    -------
    HodgesLehmann
    """
    x, y = _two_samples(x, y, "Hodges–Lehmann")
    n, m = x.size, y.size
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be in (0, 1), got {confidence}.")
    d = np.sort(np.subtract.outer(x, y).ravel())
    big_n = d.size
    alpha2 = (1.0 - confidence) / 2.0
    if big_n <= EXACT_MAX_PAIRS:
        cdf = np.cumsum(mwu_null_pmf(n, m))
        ok = np.flatnonzero(cdf <= alpha2 + 1e-12)
        k = int(ok[-1]) + 1 if ok.size else 0
        achieved = 1.0 - 2.0 * float(cdf[k - 1]) if k else np.nan
        method = "exact"
    else:
        from scipy.stats import norm

        z = norm.ppf(1 - alpha2)
        k = int(math.floor(big_n / 2 - z * math.sqrt(n * m * (n + m + 1) / 12.0)))
        k = max(k, 0)
        achieved = confidence
        method = "normal approximation"
    if k == 0 or k > big_n + 1 - k:
        lo = hi = np.nan
        k = 0
    else:
        lo, hi = float(d[k - 1]), float(d[big_n - k])
    return HodgesLehmann(float(np.median(d)), lo, hi, confidence, achieved, k, method)


def ci_not_estimable(n_treated: int, n_control: int, confidence: float = 0.95) -> str:
    """Plain words for a Hodges–Lehmann interval that no sample of this size can give."""
    return (
        f"{confidence:.0%} CI not estimable at this sample size ({n_treated} vs {n_control} patients): even the most "
        f"extreme split of the ranks is not rare enough for a distribution-free {confidence:.0%} interval"
    )


def mann_whitney(x, y) -> tuple[float, float, str]:
    """Two-sided Mann–Whitney U test of ``x`` against ``y``.

    Exact for small samples: scipy's exact null distribution when there are
    no ties; with ties an exact permutation test (all
    ``C(n+m, n)`` splits, if at most 200 000); otherwise the
    tie-corrected normal approximation.

    Returns
    -------
    (U, p, method)
        ``U`` of ``x`` = #pairs ``x_i > y_j`` + ½ #ties (scipy's statistic).
    """
    from scipy import stats

    x, y = _two_samples(x, y, "Mann–Whitney")
    n, m = x.size, y.size
    ties = np.unique(np.concatenate([x, y])).size < n + m
    splits = math.comb(n + m, n)
    if not ties and n * m <= EXACT_MAX_PAIRS:
        res = stats.mannwhitneyu(x, y, alternative="two-sided", method="exact")
        method = "exact"
    elif ties and splits <= 200_000:
        res = stats.mannwhitneyu(
            x, y, alternative="two-sided", method=stats.PermutationMethod(n_resamples=splits)
        )
        method = f"exact permutation ({splits} splits; ties present)"
    else:
        res = stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic")
        method = "normal approximation (tie-corrected, continuity-corrected)"
    return float(res.statistic), float(res.pvalue), method


def choose_control(arms: list[str], control: str | None = None) -> tuple[str, str]:
    """``(treated, control)`` of a two-arm trial.

    Without ``control``, the arm whose name says placebo / control / sham /
    vehicle / standard of care; if none or both do, the second in sorted
    order (for blinded labels: treated = ``A``, control = ``B``).

    Raises
    ------
    InputError
        Not exactly two arms, or ``control`` is not one of them.
    """
    arms = sorted(arms)
    if len(arms) != 2:
        raise InputError(
            f"The arm comparison needs exactly two arms with scored scans; found {arms}. "
            "Potential fix: check that both arms' patients are in the result store, or restrict the manifest "
            "to two arms."
        )
    if control is not None:
        if control not in arms:
            raise InputError(f"Control arm {control!r} is not one of {arms}. Potential fix: use one of these names.")
        return (arms[0] if arms[1] == control else arms[1]), control
    named = [a for a in arms if _CONTROL_NAMES.search(a)]
    ctrl = named[0] if len(named) == 1 else arms[1]
    return (arms[0] if arms[1] == ctrl else arms[1]), ctrl


def power_note(n_treated: int, n_control: int, *, alpha: float = 0.05, power: float = 0.8) -> str:
    """Plain-language statement of what a two-arm comparison of this size can detect.

    Uses the smallest exact two-sided Mann–Whitney p-value, ``2 / C(n1+n2,
    n1)``, and the normal-theory minimal detectable shift (in SD units) at
    the given power, divided by the square root of the Mann–Whitney
    asymptotic relative efficiency 3/π.
    """
    from scipy.stats import norm

    n1, n2 = int(n_treated), int(n_control)
    if min(n1, n2) == 0:
        return "One arm has no patients at this visit: no comparison is possible."
    min_p = min(1.0, 2.0 / math.comb(n1 + n2, n1))
    d = (norm.ppf(1 - alpha / 2) + norm.ppf(power)) * math.sqrt(1 / n1 + 1 / n2) / math.sqrt(3 / math.pi)
    text = (
        f"With {n1} vs {n2} patients, only large differences can be detected: {power:.0%} power at two-sided "
        f"α = {alpha:g} requires a shift of about {d:.1f} standard deviations between arms (normal approximation). "
        f"The smallest attainable exact Mann–Whitney p-value is {min_p:.2g}. "
        "A non-significant result is therefore not evidence of no effect, and a significant one from a "
        "trial this small deserves replication."
    )
    if min_p > alpha:
        text += f" At this size the test can never reach p < {alpha:g}."
    return text


def compare_arms(
    table: pd.DataFrame,
    *,
    metric: str = "damage_pct",
    visit: str = "month 4",
    control: str | None = None,
    threshold: float = 5.0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Compare two arms at one visit.

    Parameters
    ----------
    table : DataFrame
        Per-patient × visit table (``patient_id, arm, visit, <metric>``).
    metric : str
        Compared column (percent of region volume for ``*_pct`` columns).
    visit : str
        Visit name (e.g. ``"month 4"``).
    control : str, optional
        Control arm (see :func:`choose_control`).
    threshold : float
        "Residual damage" means ``metric > threshold``.
    confidence : float
        Level of the intervals.

    Returns
    -------
    DataFrame
        One row per quantity: ``quantity, arm, n, value, ci_low, ci_high,
        p_value, method, definition``.  Quantities: ``mann_whitney_u``,
        ``hodges_lehmann``, ``proportion_above`` (one row per arm, percent
        of patients, Clopper–Pearson interval), ``fisher_exact`` (value =
        odds ratio, treated vs control).  ``attrs`` holds ``treated``,
        ``control``, ``visit``, ``metric``, ``threshold`` and ``power_note``.

    Raises
    ------
    InputError
        Not two arms, or an arm without values at the visit.
    """
    if metric not in table.columns:
        raise InputError(
            f"Column {metric!r} is not in the visit table. Potential fix: choose one of {list(table.columns)}."
        )
    treated, ctrl = choose_control(sorted(table["arm"].unique()), control)
    at = table[table["visit"] == visit]
    x = at.loc[at["arm"] == treated, metric].astype(float).dropna().to_numpy()
    y = at.loc[at["arm"] == ctrl, metric].astype(float).dropna().to_numpy()
    if x.size == 0 or y.size == 0:
        raise InputError(
            f"No {metric} values at visit {visit!r} for arm {treated if x.size == 0 else ctrl!r} "
            f"(visits present: {sorted(table['visit'].unique())}). Potential fix: check the visit assignment "
            "or choose another visit."
        )
    what = _Compared(treated, ctrl, x, y, metric, visit)
    rows = [_mann_whitney_row(what), _hodges_lehmann_row(what, confidence)]
    rows += _threshold_rows(what, threshold, confidence)
    out = pd.DataFrame(rows, columns=["quantity", "arm", "n", "value", "ci_low", "ci_high", "p_value", "method",
                                      "definition"])
    out.attrs.update(treated=treated, control=ctrl, visit=visit, metric=metric, threshold=threshold,
                     n_treated=int(x.size), n_control=int(y.size), power_note=power_note(x.size, y.size))
    return out


@dataclass(frozen=True)
class _Compared:
    """The two samples of :func:`compare_arms`: ``x`` of the treated arm, ``y`` of the control arm."""

    treated: str
    control: str
    x: np.ndarray
    y: np.ndarray
    metric: str
    visit: str

    @property
    def pair(self) -> str:
        return f"{self.treated} vs {self.control}"


def _mann_whitney_row(c: _Compared) -> dict:
    x, y = c.x, c.y
    u, p, how = mann_whitney(x, y)
    return dict(
        quantity="mann_whitney_u", arm=c.pair, n=x.size + y.size, value=u, ci_low=np.nan, ci_high=np.nan,
        p_value=p, method=how,
        definition=f"U = number of ({c.treated}, {c.control}) patient pairs in which the {c.treated} patient has "
        f"the higher {c.metric} at {c.visit} (ties count ½), out of {x.size}×{y.size} = {x.size * y.size} pairs; "
        "two-sided p-value for the null hypothesis that both arms have the same distribution.",
    )


def _hodges_lehmann_row(c: _Compared, confidence: float) -> dict:
    x, y = c.x, c.y
    unit = ", in percentage points" if c.metric.endswith("_pct") or c.metric.endswith("_pct_change") else ""
    hl = hodges_lehmann(x, y, confidence=confidence)
    if hl.k:
        achieved = (f" (achieved {hl.achieved_confidence:.1%}, k = {hl.k})"
                    if np.isfinite(hl.achieved_confidence) else "")
        method = f"{hl.method} distribution-free {confidence:.0%} CI" + achieved
    else:
        method = ci_not_estimable(x.size, y.size, confidence)
    return dict(
        quantity="hodges_lehmann", arm=f"{c.treated} − {c.control}", n=x.size + y.size, value=hl.estimate,
        ci_low=hl.ci_low, ci_high=hl.ci_high, p_value=np.nan, method=method,
        definition=f"Median of the {x.size * y.size} pairwise differences {c.treated} − {c.control} of {c.metric} "
        f"at {c.visit}{unit}; negative = lower in {c.treated}. The interval [D(k), D(N+1−k)] of the sorted "
        "differences inverts the exact Mann–Whitney test (Bauer 1972; Hollander & Wolfe).",
    )


def _threshold_rows(c: _Compared, threshold: float, confidence: float) -> list[dict]:
    """Percent of each arm above ``threshold`` (Clopper–Pearson) and Fisher's exact test of the 2×2 table."""
    from scipy import stats

    rows, above = [], {}
    for arm, v in ((c.treated, c.x), (c.control, c.y)):
        k = int((v > threshold).sum())
        above[arm] = k
        ci = stats.binomtest(k, v.size).proportion_ci(confidence_level=confidence, method="exact")
        rows.append(dict(
            quantity="proportion_above", arm=arm, n=v.size, value=100.0 * k / v.size,
            ci_low=100.0 * ci.low, ci_high=100.0 * ci.high, p_value=np.nan,
            method=f"{k}/{v.size}; Clopper–Pearson exact {confidence:.0%} CI",
            definition=f"Percent of {arm} patients with residual damage, {c.metric} > {threshold:g} at {c.visit}.",
        ))
    counts = [[above[c.treated], c.x.size - above[c.treated]], [above[c.control], c.y.size - above[c.control]]]
    odds, p_fisher = stats.fisher_exact(counts, alternative="two-sided")
    rows.append(dict(
        quantity="fisher_exact", arm=c.pair, n=c.x.size + c.y.size, value=float(odds), ci_low=np.nan,
        ci_high=np.nan, p_value=float(p_fisher), method=f"Fisher's exact test, two-sided, 2×2 table {counts}",
        definition=f"Odds ratio (sample, unconditional) of residual damage ({c.metric} > {threshold:g}) in "
        f"{c.treated} relative to {c.control} at {c.visit}, rows [{c.treated}, {c.control}] × columns "
        "[above, not above]; two-sided p.",
    ))
    return rows


def mixed_model(
    table: pd.DataFrame,
    *,
    metric: str = "damage_pct",
    control: str | None = None,
    baseline_visit: str | None = None,
) -> pd.DataFrame:
    """Linear mixed model ``metric ~ arm × visit`` with a random intercept per patient.

    Fitted by REML with statsmodels ``mixedlm``; arm coded against the
    control arm, visit against ``baseline_visit`` (default: the visit with
    the smallest ``visit_day``).

    Returns
    -------
    DataFrame
        Fixed effects: ``term, coef, se, z, p_value, ci_low, ci_high`` (95 %
        Wald).  ``attrs``: ``formula``, ``n_obs``, ``n_patients``,
        ``converged``, ``group_var`` (random-intercept variance),
        ``notes`` (warnings raised while fitting, e.g. a singular fit).

    Raises
    ------
    MissingDependencyError
        statsmodels is not installed (extra ``stats``).
    InputError
        Too few observations to fit.
    """
    try:
        import statsmodels.formula.api as smf
    except ImportError:
        raise MissingDependencyError("The linear mixed model", "statsmodels", "stats") from None
    treated, ctrl = choose_control(sorted(table["arm"].unique()), control)
    data, baseline_visit = _mixed_model_data(table, metric, baseline_visit)
    formula = f"y ~ C(arm, Treatment('{_quoted(ctrl)}')) * C(visit, Treatment('{_quoted(baseline_visit)}'))"
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = smf.mixedlm(formula, data, groups=data["patient_id"]).fit(reml=True)
        except (np.linalg.LinAlgError, ValueError) as exc:
            raise InputError(f"The mixed model could not be fitted: {exc}.") from exc
    for w in caught:
        msg = f"{w.category.__name__}: {w.message}"
        if msg not in notes:
            notes.append(msg)
    out = _fixed_effects(fit, ctrl, baseline_visit)
    out.attrs.update(
        formula=f"{metric} ~ arm × visit + (1 | patient_id); arm reference {ctrl!r}, "
        f"visit reference {baseline_visit!r}",
        n_obs=int(fit.nobs), n_patients=int(data["patient_id"].nunique()), converged=bool(fit.converged),
        group_var=float(np.asarray(fit.cov_re)[0, 0]), notes=notes,
    )
    return out


def _quoted(text: str) -> str:
    """``text`` inside single quotes of a patsy formula."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _mixed_model_data(table: pd.DataFrame, metric: str, baseline_visit: str | None) -> tuple[pd.DataFrame, str]:
    """Rows with a value (``metric`` renamed ``y``), visits categorical in protocol order, and the
    baseline visit (default: the earliest); refuses fewer than 4 rows or 3 patients."""
    data = table[["patient_id", "arm", "visit", metric] + (["visit_day"] if "visit_day" in table else [])].dropna(
        subset=[metric])
    data = data.rename(columns={metric: "y"})
    levels = list(dict.fromkeys(data.sort_values("visit_day")["visit"] if "visit_day" in data else data["visit"]))
    if baseline_visit is None:
        baseline_visit = levels[0]
    # categorical in protocol order, so the terms come out day 7, day 14, ... not alphabetically
    data["visit"] = pd.Categorical(data["visit"], categories=levels)
    if len(data) < 4 or data["patient_id"].nunique() < 3:
        raise InputError(
            f"Too few observations for a mixed model ({len(data)} rows, {data['patient_id'].nunique()} patients)."
        )
    return data, baseline_visit


def _fixed_effects(fit, ctrl: str, baseline_visit: str) -> pd.DataFrame:
    """The fixed effects of a statsmodels MixedLM fit, terms renamed ``arm[X]``, ``visit[V]``."""
    names = [n for n in fit.fe_params.index]
    ci = fit.conf_int().loc[names]
    pretty = {
        n: n.replace(f"C(arm, Treatment('{_quoted(ctrl)}'))[T.", "arm[").replace(
            f"C(visit, Treatment('{_quoted(baseline_visit)}'))[T.", "visit[")
        for n in names
    }
    return pd.DataFrame({
        "term": [pretty[n] for n in names],
        "coef": fit.fe_params.to_numpy(),
        "se": fit.bse_fe.loc[names].to_numpy(),
        "z": fit.tvalues.loc[names].to_numpy(),
        "p_value": fit.pvalues.loc[names].to_numpy(),
        "ci_low": ci.iloc[:, 0].to_numpy(),
        "ci_high": ci.iloc[:, 1].to_numpy(),
    })
