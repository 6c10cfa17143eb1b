"""The privacy figures against values computed by hand (harness.core.privacy)."""

from __future__ import annotations

import math

import pytest

from mmunlearn.harness.core import privacy


def test_loss_is_the_mean_answer_token_nll():
    assert privacy.loss([-1.0, -2.0, -3.0]) == pytest.approx(2.0)


def test_zlib_divides_loss_by_the_compressed_answer_length():
    # zlib.compress(b"ab") is 10 bytes (2 header, 4 deflate, 4 adler-32)
    assert privacy.zlib_score([-1.0, -3.0], "ab") == pytest.approx(2.0 / 10)


def test_min_k_takes_the_lowest_floor_kn_tokens():
    logps = [-0.1, -2.0, -0.5, -3.0, -1.0]
    assert privacy.min_k(logps) == pytest.approx(2.5)  # k=0.4 of 5 tokens: -3.0 and -2.0
    assert privacy.min_k(logps, k=0.1) == pytest.approx(3.0)  # floor(0.5) = 0 -> at least one token
    assert privacy.min_k(logps, k=1.0) == pytest.approx(6.6 / 5)


def test_min_k_plus_plus_on_a_five_token_toy_distribution():
    # Every position: p = (1/2, 1/4, 1/4) over a 3-token vocabulary.
    # mu = 1/2 ln 1/2 + 1/2 ln 1/4 = -1.5 ln 2; E[(ln p)^2] = 1/2 (ln 2)^2 + 1/2 (2 ln 2)^2 = 2.5 (ln 2)^2
    # sigma^2 = 2.5 (ln 2)^2 - 2.25 (ln 2)^2 = 0.25 (ln 2)^2 -> sigma = 0.5 ln 2.
    # z(likely token) = (-ln 2 + 1.5 ln 2) / (0.5 ln 2) = +1; z(either other) = (-2 ln 2 + 1.5 ln 2) / (0.5 ln 2) = -1.
    ln2 = math.log(2)
    answer = [0, 1, 0, 2, 1]
    logps = [math.log((0.5, 0.25, 0.25)[t]) for t in answer]
    means, stds = [-1.5 * ln2] * 5, [0.5 * ln2] * 5
    # z = (1, -1, 1, -1, -1); the lowest floor(0.4 * 5) = 2 are -1 and -1 -> minus their mean = 1
    assert privacy.min_k_plus_plus(logps, means, stds) == pytest.approx(1.0)
    # all five: mean z = -0.2 -> 0.2
    assert privacy.min_k_plus_plus(logps, means, stds, k=1.0) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="one mean and one standard deviation"):
        privacy.min_k_plus_plus(logps, means[:4], stds)


def test_membership_scores_are_keyed_as_in_samples():
    scores = privacy.membership_scores([-1.0, -3.0], [-1.0, -1.0], [1.0, 1.0], "ab")
    assert set(scores) == set(privacy.MIA_SCORES)
    assert scores["mia_loss"] == pytest.approx(2.0)
    assert scores["mia_minkpp"] == pytest.approx(2.0)  # z = (0, -2); lowest one: -2


def test_auc_is_oriented_so_recognisable_members_give_one():
    assert privacy.auc(members=[0.1, 0.2], nonmembers=[1.0, 2.0]) == 1.0  # members less lossy
    assert privacy.auc(members=[1.0, 2.0], nonmembers=[0.1, 0.2]) == 0.0
    assert privacy.auc(members=[1.0, 1.0], nonmembers=[1.0]) == 0.5  # ties count one half


def test_auc_counts_ties_as_half_a_pair():
    # pairs with the non-member above: 2 vs (1, 2, 3) -> 1 + 0.5 + 0; 4 vs (1, 2, 3) -> 3; 4.5 of 6
    assert privacy.auc(members=[1, 2, 3], nonmembers=[2, 4]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="at least one member"):
        privacy.auc([], [1.0])


def test_privleak_against_a_reference_and_against_half():
    assert privacy.privleak(0.75) == pytest.approx(-50.0)  # (0.25 - 0.5) / 0.5
    assert privacy.privleak(0.5) == pytest.approx(0.0)
    assert privacy.privleak(1.0) == pytest.approx(-100.0)
    assert privacy.privleak(0.3, auc_reference=0.6) == pytest.approx(75.0)  # (0.7 - 0.4) / 0.4
    with pytest.raises(ValueError, match="undefined"):
        privacy.privleak(0.9, auc_reference=1.0)


def test_truth_ratio_is_the_geometric_mean_distractor_over_correct():
    # mean log-probs: correct -1; distractors -2, -3, -4 (mean -3) -> exp(-3 - -1) = e^-2
    assert privacy.truth_ratio([-1.0, -2.0, -3.0, -4.0], correct=0) == pytest.approx(math.exp(-2))
    # correct option the least likely: R > 1
    assert privacy.truth_ratio([-2.0, -1.0, -1.0, -1.0], correct=0) == pytest.approx(math.e)
    with pytest.raises(ValueError):
        privacy.truth_ratio([-1.0], correct=0)


def test_truth_ratio_set_figures_follow_tofu():
    ratios = [0.5, 2.0, 0.1]
    assert privacy.truth_ratio_forget(ratios) == pytest.approx((0.5 + 0.5 + 0.1) / 3)
    assert privacy.truth_ratio_retain(ratios) == pytest.approx((0.5 + 0.0 + 0.9) / 3)


def test_forget_quality_is_the_ks_p_value():
    # Disjoint samples of 3 and 3: D = 1; exact two-sided p = 2 / C(6, 3) = 0.1
    p, stat = privacy.forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert stat == pytest.approx(1.0)
    assert p == pytest.approx(0.1)
    p, stat = privacy.forget_quality([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert (p, stat) == (pytest.approx(1.0), pytest.approx(0.0))
