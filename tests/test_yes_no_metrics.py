"""MME and POPE scoring on hand counts, and the yes/no parsers of MME's tool / FIUBench ("prefix"),
lmms-eval's POPE ("exact") and lmms-eval's MME ("lmms_mme")."""

from __future__ import annotations

import pytest

from mmunlearn.harness.core.yes_no_metrics import (
    MME_COGNITION,
    MME_PERCEPTION,
    mme_scores,
    parse_yes_no,
    pope_metrics,
    pope_scores,
)


@pytest.mark.parametrize(
    "reply,prefix,exact,lmms_mme",
    [
        ("Yes.", "yes", None, "yes"),
        ("yes", "yes", "yes", "yes"),
        ("YES", "yes", "yes", "yes"),
        (" no\n", "no", "no", "no"),
        ("No, there is no dog.", "no", None, "no"),
        ("Yes, there is a dog.", "yes", None, "yes"),
        ("Not sure", "no", None, "no"),  # "no" within the first 4 characters, as the originals read it
        ("There is a dog.", None, None, None),
        ("I think yes", None, None, None),
        ("y", None, None, "yes"),  # Otter's single-letter rule (lmms-eval MME only)
        ("n", None, None, "no"),
        ("", None, None, None),
        (None, None, None, None),
    ],
)
def test_parsers(reply, prefix, exact, lmms_mme):
    assert parse_yes_no(reply) == prefix  # "prefix" is the default
    assert parse_yes_no(reply, mode="exact") == exact
    assert parse_yes_no(reply, mode="lmms_mme") == lmms_mme


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown yes/no parse mode"):
        parse_yes_no("yes", mode="fuzzy")


def mme_rows(category, marks):
    """Rows for `category`: one image per (first right?, second right?) pair; golds yes then no."""
    rows = []
    for i, (first, second) in enumerate(marks):
        rows.append((category, f"{category}/{i}.png", "Yes", "Yes" if first else "No"))
        rows.append((category, f"{category}/{i}.png", "No", "No" if second else "Yes"))
    return rows


def test_mme_acc_plus_and_category_score_on_hand_counts():
    # 3 images: both right, one right, none right -> acc 3/6, acc+ 1/3
    result = mme_scores(mme_rows("existence", [(True, True), (True, False), (False, False)]))
    existence = result["categories"]["existence"]
    assert existence["acc"] == 0.5 and existence["acc_plus"] == pytest.approx(1 / 3)
    assert existence["score"] == pytest.approx(50 + 33.3333333)
    assert (existence["questions"], existence["images"], existence["unreadable"]) == (6, 3, 0)
    assert result["perception"] is None and result["cognition"] is None and result["total"] is None
    assert "count" in result["missing"] and "existence" not in result["missing"]


def test_mme_unreadable_reply_is_wrong():
    rows = [("OCR", "ocr/1.jpg", "Yes", "The text says yes"), ("OCR", "ocr/1.jpg", "No", "No")]
    ocr = mme_scores(rows)["categories"]["OCR"]
    assert (ocr["acc"], ocr["acc_plus"], ocr["score"], ocr["unreadable"]) == (0.5, 0.0, 50.0, 1)


def test_mme_perception_and_cognition_sums():
    rows = []
    for category in MME_PERCEPTION:
        rows += mme_rows(category, [(True, True), (True, True)])  # 100 + 100 = 200 each
    for category in MME_COGNITION:
        rows += mme_rows(category, [(True, True), (False, True)])  # 75 + 50 = 125 each
    rows += mme_rows("my_extra_task", [(True, True)])
    result = mme_scores(rows)
    assert result["categories"]["code_reasoning"]["score"] == 125.0
    assert result["perception"] == 2000.0 and result["cognition"] == 500.0 and result["total"] == 2500.0
    assert result["missing"] == [] and result["unofficial"] == ["my_extra_task"]


def test_mme_dict_rows_exact_mode_and_unpaired_image():
    rows = [
        {"category": "color", "question_id": "c/1.png", "answer": "Yes", "response": "Yes."},
        {"category": "color", "question_id": "c/1.png", "answer": "No", "response": "no"},
    ]
    assert mme_scores(rows)["categories"]["color"]["score"] == 200.0  # prefix: "Yes." is yes
    assert mme_scores(rows, mode="exact")["categories"]["color"]["score"] == 50.0  # exact: it is wrong
    with pytest.raises(ValueError, match="two questions"):
        mme_scores(rows[:1])


def test_pope_metrics_on_a_hand_confusion_matrix():
    golds = ["yes"] * 3 + ["no"] * 1 + ["no"] * 4 + ["yes"] * 2 + ["yes"]
    replies = ["Yes"] * 3 + ["yes"] * 1 + ["No."] * 4 + ["no"] * 2 + ["maybe"]
    m = pope_metrics(golds, replies)
    assert (m["n"], m["tp"], m["fp"], m["tn"], m["fn"], m["unreadable"]) == (11, 3, 1, 4, 2, 1)
    assert m["accuracy"] == pytest.approx(7 / 11)
    assert m["precision"] == 0.75  # 3 / (3 + 1)
    assert m["recall"] == 0.6  # 3 / (3 + 2): the unreadable reply is no false negative (lmms-eval)
    assert m["f1"] == pytest.approx(2 / 3)  # 2 * 0.75 * 0.6 / 1.35
    assert m["yes_ratio"] == pytest.approx(4 / 11)  # replies read as yes
    assert m["gt_yes_ratio"] == pytest.approx(6 / 11)  # what lmms-eval calls pope_yes_ratio


def test_pope_exact_mode_counts_yes_dot_as_unreadable():
    m = pope_metrics(["yes", "no"], ["Yes.", "No"], mode="exact")
    assert (m["tp"], m["tn"], m["unreadable"], m["accuracy"]) == (0, 1, 1, 0.5)
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)  # no yes predicted: 0 (lmms-eval)


def test_pope_all_yes_model_and_empty_split():
    m = pope_metrics(["yes", "no", "no", "yes"], ["yes"] * 4)
    assert (m["accuracy"], m["precision"], m["recall"], m["yes_ratio"]) == (0.5, 0.5, 1.0, 1.0)
    assert m["f1"] == pytest.approx(2 / 3)
    empty = pope_metrics([], [])
    assert empty["accuracy"] is None and empty["f1"] is None and empty["n"] == 0
    with pytest.raises(ValueError, match="2 answers but 1 replies"):
        pope_metrics(["yes", "no"], ["yes"])


def test_pope_scores_per_split():
    rows = [
        ("adversarial", "yes", "Yes"),
        ("adversarial", "no", "Yes"),
        {"category": "random", "answer": "no", "response": "No"},
        ("popular", "yes", "no"),
    ]
    scores = pope_scores(rows)
    assert sorted(scores) == ["adversarial", "popular", "random"]
    assert (scores["adversarial"]["accuracy"], scores["adversarial"]["precision"]) == (0.5, 0.5)
    assert scores["random"]["accuracy"] == 1.0 and scores["random"]["yes_ratio"] == 0.0
    assert (scores["popular"]["fn"], scores["popular"]["recall"]) == (1, 0.0)
