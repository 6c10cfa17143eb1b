"""TOFU-family metrics (TOFU, CLEAR, FIUBench) against hand-computed values.

Losses are chosen as logs of small numbers (ln 2, ln 4) so every expected figure below is worked
out by hand in the comments, not by calling the formula under test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmunlearn.harness.core.tofu_metrics import (
    file_kind,
    forget_quality_js,
    forget_quality_ks,
    model_utility,
    normalized_probability,
    official_file_metrics,
    official_utility_metrics,
    probability,
    rouge_l_recall,
    truth_ratio_forget,
    truth_ratio_keep,
    truth_ratios,
)

LN2, LN4 = math.log(2), math.log(4)


# ----------------------------------------------------------------------------------- probability
def test_probability_is_exp_minus_mean_nll():
    # exp(-0) = 1, exp(-ln 2) = 1/2, exp(-ln 4) = 1/4
    np.testing.assert_allclose(probability([0.0, LN2, LN4]), [1.0, 0.5, 0.25])


def test_normalized_probability_with_ragged_perturbations():
    # sample 0: p_true = 1/2, perturbed 1/4 + 1/4 = 1/2 -> 0.5 / (0.5 + 0.5) = 1/2
    # sample 1: p_true = 1, perturbed 1/2 -> 1 / (1 + 1/2) = 2/3
    got = normalized_probability([LN2, 0.0], [[LN4, LN4], [LN2]])
    np.testing.assert_allclose(got, [0.5, 2 / 3])


def test_normalized_probability_rejects_bad_input():
    with pytest.raises(ValueError, match="perturbed_losses has 1 samples"):
        normalized_probability([0.0, 0.0], [[1.0]])
    with pytest.raises(ValueError, match=r"perturbed_losses\[0\] is empty"):
        normalized_probability([0.0], [[]])
    with pytest.raises(ValueError, match="gt_loss is empty"):
        probability([])
    with pytest.raises(ValueError, match="non-finite value at index 1"):
        probability([0.0, float("nan")])


# ----------------------------------------------------------------------------------- truth ratio
# paraphrased losses 0, 0; perturbed [[0, 2 ln2], [ln4, ln4]]
#   per-sample: means ln2 and ln4 -> TR = [2, 4]
#   pooled:     (0 + 2 ln2 + 2 ln2 + 2 ln2) / 4 = 1.5 ln2 -> TR = 2^1.5 = 2 sqrt 2 for both
PARA = [0.0, 0.0]
PERT = [[0.0, 2 * LN2], [LN4, LN4]]


def test_truth_ratio_per_sample_and_pooled_differ():
    np.testing.assert_allclose(truth_ratios(PARA, PERT, "per-sample"), [2.0, 4.0])
    np.testing.assert_allclose(truth_ratios(PARA, PERT, "pooled"), [2 * math.sqrt(2)] * 2)


def test_truth_ratio_transforms():
    # forget: mean(min(TR, 1/TR)); keep: mean(max(0, 1 - 1/TR))
    # per-sample TR [2, 4]: forget (1/2 + 1/4) / 2 = 0.375; keep (1/2 + 3/4) / 2 = 0.625
    tr = truth_ratios(PARA, PERT, "per-sample")
    assert truth_ratio_forget(tr) == pytest.approx(0.375)
    assert truth_ratio_keep(tr) == pytest.approx(0.625)
    # pooled TR 2 sqrt 2: forget 1 / (2 sqrt 2) = 0.35355..., keep 1 - 0.35355... = 0.64644...
    tr = truth_ratios(PARA, PERT, "pooled")
    assert truth_ratio_forget(tr) == pytest.approx(0.3535533906)
    assert truth_ratio_keep(tr) == pytest.approx(0.6464466094)
    # TR = 1/2 (the false answers likelier): forget min(1/2, 2) = 1/2; keep max(0, 1 - 2) = 0
    assert truth_ratio_forget([0.5]) == pytest.approx(0.5)
    assert truth_ratio_keep([0.5]) == 0.0


def test_truth_ratio_accepts_numpy_matrices():
    np.testing.assert_allclose(truth_ratios(np.array(PARA), np.array(PERT), "per-sample"), [2.0, 4.0])
    with pytest.raises(ValueError, match="two-dimensional"):
        truth_ratios(PARA, np.array([LN2, LN4]), "pooled")


def test_truth_ratio_ragged():
    # per-sample handles ragged lists: means ln2 and ln4 -> [2, 4]
    np.testing.assert_allclose(truth_ratios(PARA, [[LN2], [LN4, LN4, LN4]], "per-sample"), [2.0, 4.0])
    with pytest.raises(ValueError, match="ragged"):
        truth_ratios(PARA, [[LN2], [LN4, LN4, LN4]], "pooled")
    with pytest.raises(ValueError, match="averaging must be one of"):
        truth_ratios(PARA, PERT, "mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be positive"):
        truth_ratio_forget([1.0, 0.0])


# ------------------------------------------------------------------------------------------ ROUGE
def test_rouge_l_recall_reference_first():
    # reference 6 tokens, LCS "the cat sat" = 3 -> recall 3/6 (precision would be 3/3 = 1)
    assert rouge_l_recall("the cat sat on the mat", "the cat sat") == pytest.approx(0.5)
    # LCS of "the cat sat on the mat" and "mat the cat on" is "the cat on" = 3 -> 3/6
    assert rouge_l_recall("the cat sat on the mat", "mat the cat on") == pytest.approx(0.5)
    # the Porter stemmer maps running -> run, dogs -> dog: full recall
    assert rouge_l_recall("running dogs", "run dog") == pytest.approx(1.0)
    assert rouge_l_recall("a b", "") == 0.0


# -------------------------------------------------------------------------------- forget quality
def test_forget_quality_ks():
    # identical samples: KS statistic 0 -> p = 1
    assert forget_quality_ks([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    # [1, 2] vs [3, 4]: D = 1; of the C(4, 2) = 6 equally likely splits only the two fully separated
    # ones reach D = 1 -> exact two-sided p = 2/6
    assert forget_quality_ks([1.0, 2.0], [3.0, 4.0]) == pytest.approx(1 / 3)
    # a two-sample test: lengths may differ
    assert 0.0 <= forget_quality_ks([1.0, 2.0, 3.0], [1.5]) <= 1.0


def test_forget_quality_js():
    # identical vectors: JS distance 0 -> 1
    assert forget_quality_js([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    # [1, 3] -> (1/4, 3/4), [3, 1] -> (3/4, 1/4), m = (1/2, 1/2)
    # KL(p||m) = KL(q||m) = 1/4 ln(1/2) + 3/4 ln(3/2); JS divergence (nats) = their mean;
    # distance = sqrt(divergence) (no base given upstream -> natural log)
    div = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)  # = 0.130812...
    expected = 1 - math.sqrt(div)  # = 0.638320...
    assert expected == pytest.approx(0.6383205, abs=1e-6)
    assert forget_quality_js([1.0, 3.0], [3.0, 1.0]) == pytest.approx(expected)
    # scipy normalises each vector: a uniform rescaling changes nothing
    assert forget_quality_js([2.0, 6.0], [30.0, 10.0]) == pytest.approx(expected)
    # position by position: the same values in another order are not "identical"
    assert forget_quality_js([1.0, 3.0], [3.0, 1.0]) < 1.0


def test_forget_quality_js_rejects_what_scipy_would_misread():
    # scipy would broadcast the length-1 vector and return a number
    with pytest.raises(ValueError, match="unlearned_tr has 3 samples and gold_tr 1"):
        forget_quality_js([1.0, 2.0, 3.0], [1.0])
    with pytest.raises(ValueError, match="same samples in the same order"):
        forget_quality_js([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-negative"):
        forget_quality_js([1.0, -1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="gold_tr is empty"):
        forget_quality_ks([1.0], [])


# -------------------------------------------------------------------------------- model utility
def test_model_utility_harmonic_mean():
    # 2 / (1/0.5 + 1/0.25) = 2 / 6 = 1/3
    assert model_utility([0.5, 0.25]) == pytest.approx(1 / 3)
    # 3 / (1 + 2 + 4) = 3/7
    assert model_utility({"a": 1.0, "b": 0.5, "c": 0.25}) == pytest.approx(3 / 7)
    # a zero metric drags the harmonic mean to zero
    assert model_utility([0.9, 0.0]) == 0.0


def test_model_utility_missing_values():
    with pytest.raises(ValueError, match="Prob. Retain is missing"):
        model_utility({"ROUGE Retain": 0.5, "Prob. Retain": None})
    with pytest.raises(ValueError, match=r"values\[1\] is missing"):
        model_utility([0.5, None])
    with pytest.raises(ValueError, match="finite non-negative"):
        model_utility([0.5, float("nan")])
    with pytest.raises(ValueError, match="at least one"):
        model_utility([])


def test_official_utility_metrics_drops_forget_keys():
    metrics = {"ROUGE Retain": 0.5, "Prob. Forget": 0.1, "Truth Ratio Forget FaceRec": 0.2, "Prob. Real World": 0.25}
    kept = official_utility_metrics(metrics)
    assert kept == {"ROUGE Retain": 0.5, "Prob. Real World": 0.25}
    # 2 / (2 + 4) = 1/3
    assert model_utility(kept) == pytest.approx(1 / 3)


# ------------------------------------------------------------------------- one file, as upstream
def test_file_kind():
    assert file_kind("eval_log_forget.json") == (True, True)
    assert file_kind("eval_log.json") == (True, False)
    assert file_kind("eval_forget_facerec.json") == (False, True)
    assert file_kind("eval_retain_facerec.json") == (False, False)
    assert file_kind("eval_real_faces_wo_options.json") == (False, False)


def test_official_file_metrics_caption_forget_pooled():
    # gt losses [0, ln2] -> probs [1, 1/2] -> caption Prob. = 3/4
    # pooled TR 2 sqrt 2 for both samples -> forget TR 1 / (2 sqrt 2)
    m = official_file_metrics([0.0, LN2], PARA, PERT, caption=True, forget=True)
    assert m.probability == pytest.approx(0.75)
    assert m.truth_ratio == pytest.approx(0.3535533906)
    assert m.truth_ratios == pytest.approx((2 * math.sqrt(2),) * 2)
    assert m.rouge_l_recall is None


def test_official_file_metrics_non_caption_keep_per_sample():
    # gt losses [ln2, 0] vs perturbed [[0, 2 ln2], [ln4, ln4]]:
    #   sample 0: 1/2 / (1/2 + 1 + 1/4) = 2/7; sample 1: 1 / (1 + 1/4 + 1/4) = 2/3
    #   Prob. = (2/7 + 2/3) / 2 = 10/21
    # per-sample TR [2, 4] -> keep 0.625; ROUGE pairs 1/2 and 1 -> 3/4
    m = official_file_metrics(
        [LN2, 0.0],
        PARA,
        PERT,
        caption=False,
        forget=False,
        averaging="per-sample",
        rouge_pairs=[("the cat sat on the mat", "the cat sat"), ("running dogs", "run dog")],
    )
    assert m.probability == pytest.approx(10 / 21)
    assert m.truth_ratio == pytest.approx(0.625)
    assert m.rouge_l_recall == pytest.approx(0.75)


def test_official_file_metrics_length_mismatch():
    with pytest.raises(ValueError, match="paraphrased_loss has 2 samples but gt_loss has 1"):
        official_file_metrics([0.0], PARA, PERT, caption=True, forget=True)
