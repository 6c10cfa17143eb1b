"""Profile-bootstrap intervals, paired differences, seed summaries and power: the behaviours a
reader of an interval relies on, checked against exact enumeration, hand values and simulation."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from mmunlearn.harness.core import privacy
from mmunlearn.harness.core.statistics import (
    Interval,
    design_effect,
    estimate_icc,
    minimum_detectable_difference,
    paired_bootstrap_difference,
    privleak_interval,
    profile_bootstrap_mean,
    recovery_bootstrap,
    stratified_auc_bootstrap,
    summarize_seeds,
)


# ---------------------------------------------------------------- exact bootstrap distributions
def _multisets(n_profiles: int):
    """Every bootstrap resample of n_profiles profiles as (count vector, multinomial probability)."""
    for combo in itertools.combinations_with_replacement(range(n_profiles), n_profiles):
        counts = np.bincount(combo, minlength=n_profiles)
        prob = math.factorial(n_profiles) / math.prod(math.factorial(int(k)) for k in counts) / n_profiles**n_profiles
        yield counts, prob


def _exact_quantile(support: np.ndarray, probs: np.ndarray, u: float) -> float:
    """Smallest support value whose CDF reaches u."""
    order = np.argsort(support)
    cdf = np.cumsum(probs[order])
    return float(support[order][min(np.searchsorted(cdf, u - 1e-12), len(cdf) - 1)])


def _expanded_tail(n_clusters: int, level: float = 0.95) -> float:
    """Hesterberg's expanded percentile, written out independently of the module."""
    z = math.sqrt(n_clusters / (n_clusters - 1)) * stats.t.ppf(1 - (1 - level) / 2, n_clusters - 1)
    return float(stats.norm.sf(z))


# Unequal question counts so the ratio estimator (sum / count) differs from a mean of profile means.
TOY = {
    "a": [1.0, 0.0, 1.0],
    "b": [0.0],
    "c": [1.0, 1.0],
    "d": [0.0, 0.0, 1.0, 0.5],
}


@pytest.mark.parametrize("n_profiles", [3, 4])
@pytest.mark.parametrize("interval", ["percentile", "expanded"])
def test_profile_bootstrap_matches_full_enumeration(n_profiles, interval):
    names = list(TOY)[:n_profiles]
    values = [v for p in names for v in TOY[p]]
    profiles = [p for p in names for _ in TOY[p]]
    sums = np.array([sum(TOY[p]) for p in names])
    sizes = np.array([len(TOY[p]) for p in names])
    support, probs = [], []
    for counts, prob in _multisets(n_profiles):
        support.append(counts @ sums / (counts @ sizes))
        probs.append(prob)
    support_arr, probs_arr = np.array(support), np.array(probs)
    assert probs_arr.sum() == pytest.approx(1.0)
    exact_mean = float(probs_arr @ support_arr)
    exact_sd = math.sqrt(float(probs_arr @ (support_arr - exact_mean) ** 2))

    iv = profile_bootstrap_mean(values, profiles, resamples=20_000, seed=3, interval=interval)
    assert iv.value == pytest.approx(np.mean(values))
    assert iv.n_clusters == n_profiles
    assert iv.se == pytest.approx(exact_sd, rel=0.03)
    tail = 0.025 if interval == "percentile" else _expanded_tail(n_profiles)
    lo_range = (
        _exact_quantile(support_arr, probs_arr, max(tail - 0.01, 0.0)),
        _exact_quantile(support_arr, probs_arr, tail + 0.01),
    )
    hi_range = (
        _exact_quantile(support_arr, probs_arr, 1 - tail - 0.01),
        _exact_quantile(support_arr, probs_arr, min(1 - tail + 0.01, 1.0)),
    )
    assert lo_range[0] <= iv.lo <= lo_range[1]
    assert hi_range[0] <= iv.hi <= hi_range[1]


def test_auc_bootstrap_resamples_members_and_nonmembers_separately():
    """Exact two-sample distribution: 2 member profiles and 3 non-member profiles, each sample
    resampled on its own (a pooled resample of 5 profiles would give a different spread)."""
    members = {"m1": [0.9, 0.4], "m2": [0.6]}
    nonmembers = {"n1": [0.5, 0.1], "n2": [0.6, 0.3, 0.7], "n3": [0.2]}
    x = [v for p in members for v in members[p]]
    xp = [p for p in members for _ in members[p]]
    y = [v for p in nonmembers for v in nonmembers[p]]
    yp = [p for p in nonmembers for _ in nonmembers[p]]

    def auc_of(xs, ys):
        return sum((a > b) + 0.5 * (a == b) for a in xs for b in ys) / (len(xs) * len(ys))

    support, probs = [], []
    for (cm, pm), (cn, pn) in itertools.product(_multisets(2), _multisets(3)):
        xs = [v for p, k in zip(members, cm) for _ in range(k) for v in members[p]]
        ys = [v for p, k in zip(nonmembers, cn) for _ in range(k) for v in nonmembers[p]]
        support.append(auc_of(xs, ys))
        probs.append(pm * pn)
    support_arr, probs_arr = np.array(support), np.array(probs)
    exact_mean = float(probs_arr @ support_arr)
    exact_sd = math.sqrt(float(probs_arr @ (support_arr - exact_mean) ** 2))

    iv = stratified_auc_bootstrap(x, xp, y, yp, resamples=20_000, seed=1)
    assert iv.value == pytest.approx(auc_of(x, y))
    assert iv.n_clusters == 5
    assert iv.se == pytest.approx(exact_sd, rel=0.03)
    assert support_arr.min() <= iv.lo <= iv.value <= iv.hi <= support_arr.max()


# ---------------------------------------------------------------- clustering matters
def test_profile_interval_is_wider_than_question_interval_on_correlated_data():
    rng = np.random.default_rng(7)
    n_profiles, per = 20, 10
    p = np.where(np.arange(n_profiles) % 2 == 0, 0.1, 0.9)  # each person mostly right or mostly wrong
    values = rng.binomial(1, np.repeat(p, per)).astype(float)
    profiles = np.repeat(np.arange(n_profiles), per)

    iv = profile_bootstrap_mean(values, profiles, resamples=2000, seed=0, interval="percentile")
    # the reference a naive harness would use: resample questions, ignoring who they are about
    idx = rng.integers(0, len(values), size=(2000, len(values)))
    q_lo, q_hi = np.quantile(values[idx].mean(axis=1), [0.025, 0.975])
    assert iv.half_width > 1.8 * (q_hi - q_lo) / 2  # design effect ~ 1 + 9 * 0.64


@pytest.mark.parametrize("n_profiles", [10, 25, 50])
def test_interval_covers_the_true_mean_95_percent_of_the_time(n_profiles):
    """Clustered binomial data of known mean: 9 questions per profile, profile accuracy ~ Beta
    with mean 0.45 and ICC 0.2. (`python scripts/interval_coverage.py` prints the plain percentile
    interval's lower coverage beside it: the default expanded percentile keeps the nominal 95%.)"""
    rng = np.random.default_rng(2024 + n_profiles)
    a, b, per, n_sim = 1.8, 2.2, 9, 2000
    truth = a / (a + b)
    profiles = np.repeat(np.arange(n_profiles), per)
    covered = 0
    for sim in range(n_sim):
        values = rng.binomial(1, np.repeat(rng.beta(a, b, size=n_profiles), per)).astype(float)
        iv = profile_bootstrap_mean(values, profiles, resamples=500, seed=sim)
        covered += iv.lo <= truth <= iv.hi
    assert 0.93 <= covered / n_sim <= 0.97


# ---------------------------------------------------------------- means: edge cases and output
def test_missing_scores_are_dropped_and_empty_input_is_not_a_number():
    iv = profile_bootstrap_mean([1.0, None, float("nan"), 0.0], ["a", "a", "b", "c"])
    assert iv.value == 0.5 and iv.n_clusters == 2  # b had no scored question

    empty = profile_bootstrap_mean([None, float("nan")], ["a", "b"])
    assert (empty.value, empty.se, empty.lo, empty.hi, empty.n_clusters) == (None, None, None, None, 0)
    assert empty.half_width is None
    assert profile_bootstrap_mean([], []).value is None


def test_one_profile_has_no_profile_sampling_spread():
    iv = profile_bootstrap_mean([0.2, 0.7, 0.3], ["p", "p", "p"])
    assert (iv.se, iv.lo, iv.hi, iv.half_width) == (0.0, iv.value, iv.value, 0.0)
    assert iv.value == pytest.approx(0.4)


def test_to_dict_is_plain_json():
    d = profile_bootstrap_mean([1, 0, 1, 1], ["a", "b", "c", "d"], resamples=200, seed=5).to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert all(type(d[k]) is float for k in ("value", "se", "lo", "hi", "half_width"))
    assert (d["resamples"], d["seed"], d["level"]) == (200, 5, 0.95)
    nan = Interval(float("nan"), None, None, None, 0, "x").to_dict()
    assert nan["value"] is None and nan["half_width"] is None


def test_same_seed_same_interval_and_seed_matters():
    rng = np.random.default_rng(0)
    values = rng.random(300)
    profiles = rng.integers(0, 30, 300)
    assert profile_bootstrap_mean(values, profiles, seed=11) == profile_bootstrap_mean(values, profiles, seed=11)
    assert profile_bootstrap_mean(values, profiles, seed=11).lo != profile_bootstrap_mean(values, profiles, seed=12).lo
    args = (values[:150], profiles[:150], values[150:], profiles[150:])
    assert stratified_auc_bootstrap(*args, seed=4) == stratified_auc_bootstrap(*args, seed=4)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        profile_bootstrap_mean([1.0, 0.0], ["a"])
    with pytest.raises(ValueError):
        profile_bootstrap_mean([1.0], [None])
    with pytest.raises(ValueError):
        profile_bootstrap_mean([1.0], ["a"], resamples=1)
    with pytest.raises(ValueError):
        paired_bootstrap_difference([1.0, 0.0], [1.0], ["a", "b"])
    with pytest.raises(ValueError):
        profile_bootstrap_mean([1.0], ["a"], interval="bca")  # type: ignore[arg-type]


# ---------------------------------------------------------------- paired differences
def test_paired_constant_shift_is_certain():
    base = [0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    pd = paired_bootstrap_difference([v + 1 for v in base], base, list("aabbcc"), resamples=999)
    assert (pd.diff, pd.se, pd.lo, pd.hi) == (1.0, 0.0, 1.0, 1.0)
    assert pd.p_value == pytest.approx(2 / 1000)  # the +1 correction: never exactly 0
    assert (pd.n_profiles, pd.n_questions) == (3, 6)


def test_paired_identical_runs_differ_by_nothing():
    values = [0.3, 0.9, 0.1, 0.4]
    pd = paired_bootstrap_difference(values, list(values), ["a", "b", "b", "c"])
    assert (pd.diff, pd.se, pd.lo, pd.hi, pd.p_value) == (0.0, 0.0, 0.0, 0.0, 1.0)


def test_paired_difference_is_a_difference_of_ratio_means_on_aligned_questions():
    run = [1, 1, 0, 1, 0, None]
    base = [0, 1, 0, 0, 0, 1]  # the last question is unscored in the run: dropped from both
    pd = paired_bootstrap_difference(run, base, list("aabccc"), resamples=500)
    assert pd.diff == pytest.approx((3 - 1) / 5)
    assert pd.n_questions == 5 and pd.n_profiles == 3
    assert pd.lo <= pd.diff <= pd.hi

    swapped = paired_bootstrap_difference(base, run, list("aabccc"), resamples=500)
    assert swapped.diff == pytest.approx(-pd.diff)
    assert (swapped.lo, swapped.hi) == pytest.approx((-pd.hi, -pd.lo))
    assert swapped.p_value == pd.p_value


def test_pairing_tightens_the_interval_when_runs_agree():
    rng = np.random.default_rng(3)
    profiles = np.repeat(np.arange(40), 8)
    base = rng.binomial(1, np.repeat(rng.beta(2, 2, 40), 8)).astype(float)
    run = base.copy()
    flip = rng.random(len(run)) < 0.08
    run[flip] = 1 - run[flip]
    pd = paired_bootstrap_difference(run, base, profiles, seed=1)
    se_run = profile_bootstrap_mean(run, profiles, seed=1).se
    se_base = profile_bootstrap_mean(base, profiles, seed=2).se
    assert pd.se < 0.5 * math.sqrt(se_run**2 + se_base**2)
    assert pd.to_dict()["p_value"] == pd.p_value


# ---------------------------------------------------------------- AUC and privleak
def test_auc_point_estimate_by_hand():
    iv = stratified_auc_bootstrap([3, 2], ["m", "m"], [1, 2], ["n", "n"])
    assert iv.value == 0.875  # (1 + 1 + 1 + 0.5) / 4


def test_auc_separated_samples_have_a_degenerate_interval():
    iv = stratified_auc_bootstrap([5, 6, 7, 8], list("abcd"), [1, 2, 3], list("xyz"))
    assert (iv.value, iv.se, iv.lo, iv.hi) == (1.0, 0.0, 1.0, 1.0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=12),
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=12),
)
def test_auc_agrees_with_the_privacy_module_on_negated_loss_scores(member_rows, nonmember_rows):
    """privacy.auc takes loss-like scores (higher = non-member); this module wants higher = member."""
    losses_m = [float(s) for s, _ in member_rows]
    losses_n = [float(s) for s, _ in nonmember_rows]
    iv = stratified_auc_bootstrap(
        [-s for s in losses_m],
        [p for _, p in member_rows],
        [-s for s in losses_n],
        [p for _, p in nonmember_rows],
        resamples=20,
    )
    assert iv.value == pytest.approx(privacy.auc(losses_m, losses_n))
    assert iv.lo <= iv.hi


def test_auc_with_an_empty_sample_is_not_available():
    iv = stratified_auc_bootstrap([0.5, None], ["a", "b"], [None], ["c"])
    assert iv.value is None and iv.lo is None


def test_privleak_interval_is_the_mapped_auc_interval():
    rng = np.random.default_rng(1)
    auc = stratified_auc_bootstrap(
        rng.normal(0.5, 1, 90), np.repeat(np.arange(10), 9), rng.normal(0, 1, 90), np.repeat(np.arange(10), 9)
    )
    pl = privleak_interval(auc, auc_reference=0.4)
    assert pl.value == pytest.approx(privacy.privleak(auc.value, 0.4))
    assert pl.lo == pytest.approx(privacy.privleak(auc.hi, 0.4))  # privleak falls as AUC rises
    assert pl.hi == pytest.approx(privacy.privleak(auc.lo, 0.4))
    assert pl.se == pytest.approx(auc.se * 100 / 0.6)
    assert pl.lo <= pl.value <= pl.hi
    with pytest.raises(ValueError):
        privleak_interval(auc, auc_reference=1.0)


# ---------------------------------------------------------------- relearn recovery
def test_recovery_by_hand_and_undefined_when_unlearning_changed_nothing():
    profiles = list("aabbc")
    iv = recovery_bootstrap([1] * 5, [0] * 5, [0.5] * 5, profiles)
    assert (iv.value, iv.lo, iv.hi, iv.dropped) == (0.5, 0.5, 0.5, 0)

    nothing = recovery_bootstrap([0.2] * 5, [0.2] * 5, [0.6] * 5, profiles)
    assert (nothing.value, nothing.lo, nothing.hi, nothing.dropped) == (None, None, None, 1000)
    assert "undefined" in nothing.method

    # only profile "a" changed under unlearning: resamples without it are undefined and dropped
    partial = recovery_bootstrap([1, 1, 0, 0, 0, 0, 0, 0], [0] * 8, [0.5, 1, 0, 0, 0, 0, 0, 0], list("aabcdefg"))
    assert partial.value == pytest.approx(0.75)
    assert 0 < partial.dropped < 500 and partial.lo is not None  # P(no "a" in 8 draws) = (7/8)^8 ~ 0.34


# ---------------------------------------------------------------- seeds
def test_seed_prediction_interval_by_hand():
    s = summarize_seeds([1.0, 2.0, 3.0])
    assert (s.mean, s.sd, s.n, s.values) == (2.0, 1.0, 3, (1.0, 2.0, 3.0))
    half = 4.302653 * math.sqrt(4 / 3)
    assert s.prediction_interval == pytest.approx((2 - half, 2 + half), abs=1e-5)
    assert (s.lo, s.hi) == pytest.approx((2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)), abs=1e-5)
    assert json.loads(json.dumps(s.to_dict())) == s.to_dict()


def test_one_seed_has_no_seed_interval():
    s = summarize_seeds([0.4], [0.05])
    assert s.sd is None and s.prediction_interval is None and s.lo is None and s.hi is None


def test_seed_interval_adds_question_sampling():
    ses = [0.1, 0.2, 0.3]
    s = summarize_seeds([1.0, 2.0, 3.0], ses)
    between, questions = 1 / 3, (0.01 + 0.04 + 0.09) / 3
    assert s.se == pytest.approx(math.sqrt(between + questions))
    assert s.df == pytest.approx((between + questions) ** 2 * 2 / between**2)
    assert s.hi - s.mean == pytest.approx(stats.t.ppf(0.975, s.df) * s.se)
    assert s.prediction_interval == summarize_seeds([1.0, 2.0, 3.0]).prediction_interval

    # identical seeds: only question sampling is left, with the normal quantile
    same = summarize_seeds([0.5, 0.5, 0.5], [0.04, 0.04, 0.04])
    assert (same.lo, same.hi) == pytest.approx((0.5 - 1.959964 * 0.04, 0.5 + 1.959964 * 0.04), abs=1e-6)

    with pytest.raises(ValueError):
        summarize_seeds([0.5, float("nan")])
    with pytest.raises(ValueError):
        summarize_seeds([0.5, 0.6], [0.1])


# ---------------------------------------------------------------- power
def test_minimum_detectable_difference_matches_the_design_note():
    mdd = minimum_detectable_difference(0.45, 220, 25, icc=0.0)
    assert mdd == pytest.approx(0.13, abs=0.005)  # DESIGN.md: MLLMU-Bench forget 5%, unpaired, no clustering
    clustered = minimum_detectable_difference(0.45, 220, 25, icc=0.1)
    assert clustered == pytest.approx(mdd * math.sqrt(design_effect(220 / 25, 0.1)))
    assert clustered > mdd
    paired = minimum_detectable_difference(0.45, 220, 25, icc=0.0, paired=True, rho=0.5)
    assert paired == pytest.approx(mdd * math.sqrt(0.5))
    assert design_effect(9, 0.2) == pytest.approx(2.6)
    assert design_effect(1, 0.9) == 1.0  # one question per profile: nothing to cluster


def test_estimate_icc():
    rng = np.random.default_rng(5)
    profiles = np.repeat(np.arange(300), 10)
    independent = rng.binomial(1, 0.45, len(profiles)).astype(float)
    assert estimate_icc(independent, profiles) < 0.03

    identical = np.repeat(rng.binomial(1, 0.5, 300), 10).astype(float)
    assert estimate_icc(identical, profiles) == 1.0

    # beta-binomial with a + b = 4: ICC = 1 / (a + b + 1) = 0.2
    clustered = rng.binomial(1, np.repeat(rng.beta(1.8, 2.2, 300), 10)).astype(float)
    assert estimate_icc(clustered, profiles) == pytest.approx(0.2, abs=0.05)

    assert estimate_icc([1.0, 0.0], ["a", "a"]) is None  # one profile
    assert estimate_icc([1.0, 1.0, 1.0], ["a", "a", "b"]) is None  # no variance at all


def test_paired_p_value_agrees_with_the_expanded_interval():
    """p < 0.05 exactly when the 95% expanded interval of the difference excludes 0 (check prints
    both; they must never contradict each other)."""
    rng = np.random.default_rng(5)
    checked = 0
    for trial in range(60):
        n_profiles = int(rng.integers(4, 30))
        profiles = np.repeat(np.arange(n_profiles), 6)
        base = rng.random(len(profiles))
        run = base + rng.normal(rng.uniform(-0.15, 0.15), 0.3, len(profiles))
        pd = paired_bootstrap_difference(run, base, profiles, resamples=2000, seed=trial)
        excludes = pd.lo > 0 or pd.hi < 0
        if abs(pd.p_value - 0.05) > 0.01:  # away from the edge, where resample discreteness decides
            assert (pd.p_value < 0.05) == excludes, (pd.p_value, pd.lo, pd.hi)
            checked += 1
    assert checked > 40
