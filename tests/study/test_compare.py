"""Statistics of the arm comparison, checked against scipy/statsmodels and brute-force enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lungdamage.errors import InputError
from lungdamage.study import (
    arm_summary,
    choose_control,
    compare_arms,
    hodges_lehmann,
    mann_whitney,
    mixed_model,
    mwu_null_pmf,
    power_note,
)

# month-4 damage % of an 11 vs 6 trial (fixed data, no ties)
TREATED = np.array([1.2, 3.4, 0.8, 2.2, 5.1, 1.9, 0.4, 2.9, 1.1, 3.8, 0.6])
PLACEBO = np.array([4.4, 6.1, 3.9, 7.2, 5.5, 2.7])


def _all_split_u(pooled: np.ndarray, n: int) -> np.ndarray:
    """U of the first group for every way of choosing n of the pooled values (midranks for ties)."""
    ranks = stats.rankdata(pooled)
    out = []
    for idx in itertools.combinations(range(pooled.size), n):
        out.append(ranks[list(idx)].sum() - n * (n + 1) / 2)
    return np.array(out)


def _table(x, y, visit="month 4", metric="damage_pct"):
    rows = [dict(patient_id=f"T{i}", arm="treated", visit=visit, visit_day=120, **{metric: v}) for i, v in enumerate(x)]
    rows += [
        dict(patient_id=f"P{i}", arm="placebo", visit=visit, visit_day=120, **{metric: v}) for i, v in enumerate(y)
    ]
    return pd.DataFrame(rows)


def test_null_distribution_equals_enumeration():
    for n, m in [(1, 1), (3, 2), (5, 4), (4, 6)]:
        u = _all_split_u(np.arange(n + m, dtype=float), n)
        ref = np.bincount(u.astype(int), minlength=n * m + 1) / u.size
        np.testing.assert_allclose(mwu_null_pmf(n, m), ref, atol=1e-14)
    assert mwu_null_pmf(11, 6).sum() == pytest.approx(1.0, abs=1e-12)


def test_mann_whitney_exact_matches_scipy_and_enumeration():
    u, p, method = mann_whitney(TREATED, PLACEBO)
    ref = stats.mannwhitneyu(TREATED, PLACEBO, alternative="two-sided", method="exact")
    assert method == "exact"
    assert u == ref.statistic == 6.0  # 3.4>2.7, 5.1>4.4, 5.1>3.9, 5.1>2.7, 2.9>2.7, 3.8>2.7
    assert u == sum(a > b for a in TREATED for b in PLACEBO)
    assert p == pytest.approx(ref.pvalue, rel=1e-12)
    # independent: enumerate all C(17, 6) = 12376 splits
    allu = _all_split_u(np.concatenate([TREATED, PLACEBO]), TREATED.size)
    p_enum = min(1.0, 2 * min((allu <= u).mean(), (allu >= u).mean()))
    assert p == pytest.approx(p_enum, rel=1e-9)
    assert p == pytest.approx(0.004848, abs=5e-6)


def test_mann_whitney_with_ties_is_an_exact_permutation_test():
    x = np.array([2.0, 3.0, 3.0, 5.0, 1.0])
    y = np.array([3.0, 6.0, 5.0, 7.0])
    u, p, method = mann_whitney(x, y)
    assert method.startswith("exact permutation")
    allu = _all_split_u(np.concatenate([x, y]), x.size)
    assert u == pytest.approx(sum((a > b) + 0.5 * (a == b) for a in x for b in y))
    p_enum = min(1.0, 2 * min((allu <= u + 1e-9).mean(), (allu >= u - 1e-9).mean()))
    assert p == pytest.approx(p_enum, rel=1e-9)


def test_hodges_lehmann_estimate_and_interval_invert_the_exact_test():
    hl = hodges_lehmann(TREATED, PLACEBO, confidence=0.95)
    d = np.sort(np.subtract.outer(TREATED, PLACEBO).ravel())
    assert hl.estimate == np.median(d) == pytest.approx(-2.95)
    assert hl.method == "exact"
    # reference: brute-force inversion of scipy's exact two-sided test over every gap between differences
    # (midpoints between distinct differences: there the shifted samples have no ties)
    du = np.unique(d)
    mids = np.concatenate([[du[0] - 1], (du[1:] + du[:-1]) / 2, [du[-1] + 1]])
    accepted = np.array([stats.mannwhitneyu(TREATED - s, PLACEBO, method="exact").pvalue > 0.05 for s in mids])
    inside = (mids > hl.ci_low) & (mids < hl.ci_high)
    np.testing.assert_array_equal(accepted, inside)
    assert hl.ci_low == d[hl.k - 1] and hl.ci_high == d[d.size - hl.k]
    # achieved coverage from the exact null: 1 - 2 P(U <= k - 1) >= 95 %, and k is the largest such rank
    cdf = np.cumsum(mwu_null_pmf(11, 6))
    assert hl.achieved_confidence == pytest.approx(1 - 2 * cdf[hl.k - 1])
    assert hl.achieved_confidence >= 0.95 > 1 - 2 * cdf[hl.k]
    assert hl.k == 14 and (hl.ci_low, hl.ci_high) == pytest.approx((-4.9, -1.0))  # excludes 0, as p = 0.0048


def test_hodges_lehmann_too_small_for_an_interval():
    hl = hodges_lehmann([1.0, 2.0], [3.0, 4.0], confidence=0.95)  # min two-sided p = 2/6
    assert hl.estimate == -2.0 and math.isnan(hl.ci_low) and hl.k == 0


def test_compare_arms_direction_and_fisher_against_scipy():
    c = compare_arms(_table(TREATED, PLACEBO), metric="damage_pct", visit="month 4", threshold=3.0).set_index(
        ["quantity", "arm"])
    hl = c.loc[("hodges_lehmann", "treated − placebo")]
    assert hl["value"] == pytest.approx(-2.95) and hl["ci_high"] < 0
    mw = c.loc[("mann_whitney_u", "treated vs placebo")]
    assert mw["value"] == 6.0 and mw["p_value"] == pytest.approx(0.004848, abs=5e-6)
    # residual damage > 3 %: treated 3/11 (3.4, 5.1, 3.8), placebo 5/6
    assert c.loc[("proportion_above", "treated"), "value"] == pytest.approx(100 * 3 / 11)
    assert c.loc[("proportion_above", "placebo"), "value"] == pytest.approx(100 * 5 / 6)
    ci = stats.binomtest(3, 11).proportion_ci(method="exact")
    assert c.loc[("proportion_above", "treated"), "ci_low"] == pytest.approx(100 * ci.low)
    fe = c.loc[("fisher_exact", "treated vs placebo")]
    ref = stats.fisher_exact([[3, 8], [5, 1]])
    assert fe["p_value"] == pytest.approx(ref.pvalue) and fe["value"] == pytest.approx(ref.statistic)
    # independent: two-sided Fisher p = sum of hypergeometric tables no more likely than the observed one
    h = stats.hypergeom(17, 8, 11)  # 17 patients, 8 above threshold, 11 treated
    probs = h.pmf(np.arange(0, 9))
    assert fe["p_value"] == pytest.approx(probs[probs <= h.pmf(3) * (1 + 1e-7)].sum(), rel=1e-9)
    assert fe["p_value"] == pytest.approx(0.0498, abs=1e-4)


def test_compare_arms_refuses_missing_arm_and_three_arms():
    t = _table(TREATED, PLACEBO)
    with pytest.raises(InputError, match="No damage_pct values at visit 'day 7'"):
        compare_arms(t, visit="day 7")
    three = pd.concat([t, t.head(2).assign(arm="low dose", patient_id=["L1", "L2"])])
    with pytest.raises(InputError, match="exactly two arms"):
        compare_arms(three)


def test_choose_control():
    assert choose_control(["MSC", "placebo"]) == ("MSC", "placebo")
    assert choose_control(["Control", "Zeta"]) == ("Zeta", "Control")
    assert choose_control(["A", "B"]) == ("A", "B")
    assert choose_control(["MSC", "placebo"], "MSC") == ("placebo", "MSC")
    with pytest.raises(InputError, match="not one of"):
        choose_control(["MSC", "placebo"], "sham")


def test_arm_summary_matches_numpy():
    t = _table(TREATED, PLACEBO)
    s = arm_summary(t, metric="damage_pct").set_index("arm")
    for arm, v in (("treated", TREATED), ("placebo", PLACEBO)):
        r = s.loc[arm]
        assert r["n"] == v.size
        assert r["median"] == pytest.approx(np.median(v))
        assert (r["q1"], r["q3"]) == pytest.approx(tuple(np.percentile(v, [25, 75])))
        assert r["mean"] == pytest.approx(v.mean()) and r["sd"] == pytest.approx(v.std(ddof=1))
        assert (r["min"], r["max"]) == (v.min(), v.max())


def test_power_note_numbers():
    text = power_note(11, 6)
    min_p = 2 / math.comb(17, 6)
    d = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * math.sqrt(1 / 11 + 1 / 6) / math.sqrt(3 / math.pi)
    assert f"{min_p:.2g}" in text and f"{d:.1f} standard deviations" in text
    assert "never reach" in power_note(3, 2)  # 2 / C(5, 3) = 0.2


def _longitudinal(seed=0, effect=-6.0):
    """20 patients x 4 visits; arm effect only at the last visit (planted interaction = effect)."""
    rng = np.random.default_rng(seed)
    rows = []
    visits = [("day 0", 0), ("day 14", 14), ("month 2", 60), ("month 4", 120)]
    for i in range(20):
        arm = "treated" if i % 2 else "placebo"
        u = rng.normal(0, 3)
        for k, (v, day) in enumerate(visits):
            y = 30 - 6 * k + u + (effect if (arm == "treated" and v == "month 4") else 0) + rng.normal(0, 0.5)
            rows.append(dict(patient_id=f"S{i}", arm=arm, visit=v, visit_day=day, damage_pct=y))
    return pd.DataFrame(rows)


def test_mixed_model_matches_statsmodels_and_recovers_planted_interaction():
    smf = pytest.importorskip("statsmodels.formula.api")
    t = _longitudinal()
    mm = mixed_model(t, metric="damage_pct").set_index("term")
    assert mm.loc["arm[treated]:visit[month 4]", "coef"] == pytest.approx(-6.0, abs=0.8)
    assert mm.loc["arm[treated]:visit[month 4]", "p_value"] < 1e-6
    assert abs(mm.loc["arm[treated]:visit[day 14]", "coef"]) < 1.0
    assert list(mm.index[2:5]) == ["visit[day 14]", "visit[month 2]", "visit[month 4]"]  # protocol order
    data = t.assign(visit=pd.Categorical(t["visit"], ["day 0", "day 14", "month 2", "month 4"]))
    model = smf.mixedlm("damage_pct ~ C(arm, Treatment('placebo')) * visit", data, groups=data["patient_id"])
    ref = model.fit(reml=True)
    np.testing.assert_allclose(mm["coef"].to_numpy(), ref.fe_params.to_numpy(), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(mm["se"].to_numpy(), ref.bse_fe.to_numpy(), rtol=1e-6)
    assert mm.attrs["n_obs"] == 80 and mm.attrs["n_patients"] == 20 and mm.attrs["converged"]
