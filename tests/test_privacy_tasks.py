"""The membership and truth_ratio tasks on canned log-probs: per-question values by hand."""

from __future__ import annotations

import math

import pytest

from mmunlearn.harness.core.contracts import TaskContext, get_task
from mmunlearn.harness.core.model import TokenStats
from tests.test_tasks import FakeVLM, question


class TokenVLM(FakeVLM):
    """FakeVLM plus the token-level scoring primitives, from canned per-answer numbers."""

    def __init__(self, tokens=None, option_means=None, **kw):
        super().__init__(**kw)
        self.tokens = tokens or {}  # answer -> (logps, means, stds)
        self.option_means = option_means or {}  # option text -> mean token log-prob
        self.distribution, self.option_prefixes = [], []

    def answer_logprobs(self, reqs, answers, batch_size=None, prefixes=None, distribution=False, desc=None):
        self.distribution.append(distribution)
        return [TokenStats(*self.tokens[a]) for a in answers]

    def option_token_logprobs(self, reqs, options, batch_size=None, prefixes=None):
        self.option_prefixes.append(prefixes)
        # two tokens per option, each at the option's mean log-prob
        return [[TokenStats([self.option_means[o]] * 2) for o in opts] for opts in options]


def test_membership_scores_each_ground_truth_answer():
    q = question("generation", "text_only", text="Where was Anna born?", answer="ab")
    vlm = TokenVLM(tokens={"ab": ([-1.0, -3.0], [-1.0, -1.0], [1.0, 2.0])})
    (r,) = get_task("membership").evaluate(vlm, [q], TaskContext())
    assert vlm.distribution == [True]  # Min-K%++ needs the next-token distribution
    assert r.qid == q.qid + "#membership" and r.task == "membership"
    assert r.scores["mia_loss"] == pytest.approx(2.0)
    assert r.scores["mia_zlib"] == pytest.approx(2.0 / 10)  # zlib.compress(b"ab") is 10 bytes
    assert r.scores["mia_mink"] == pytest.approx(3.0)  # floor(0.4 * 2) = 0 -> the single lowest
    assert r.scores["mia_minkpp"] == pytest.approx(1.0)  # z = (0, -1)
    assert r.extra["token_logps"] == [-1.0, -3.0]  # kept so anyone can recompute


def test_membership_lower_means_known():
    task = get_task("membership")
    assert set(task.lower_means_known) == set(task.metrics)


def test_truth_ratio_per_question_inside_the_answer_frame():
    options = {"A": "doctor", "B": "painter", "C": "teacher", "D": "pilot"}
    q = question("classification", "image_text", text="What is the job of this person?", answer="B", options=options)
    vlm = TokenVLM(
        default="This person works as a painter.",
        option_means={"doctor": -3.0, "painter": -1.0, "teacher": -2.0, "pilot": -4.0},
    )
    (r,) = get_task("truth_ratio").evaluate(vlm, [q], TaskContext())
    # bare question, no options listed, scored after the model's own frame
    (reqs, _, _) = vlm.generated[0]
    assert reqs[0].text == "What is the job of this person?" and reqs[0].images
    assert vlm.option_prefixes == [["This person works as a"]]
    # distractors' mean log-probs -3, -2, -4 (mean -3); correct -1: R = e^-2
    assert r.extra["ratio"] == pytest.approx(math.exp(-2))
    assert r.scores["truth_ratio_min"] == pytest.approx(math.exp(-2))
    assert r.scores["truth_ratio_keep"] == pytest.approx(1 - math.exp(-2))
    agg = get_task("truth_ratio").aggregate([r])
    assert agg["truth_ratio_min"] == pytest.approx(math.exp(-2)) and agg["n"] == 1


def test_truth_ratio_when_a_distractor_wins():
    q = question("classification", "text_only", answer="A")
    vlm = TokenVLM(option_means={"doctor": -2.0, "painter": -1.0, "teacher": -1.0, "pilot": -1.0})
    (r,) = get_task("truth_ratio").evaluate(vlm, [q], TaskContext())
    assert vlm.option_prefixes == [[""]]  # no frame in an empty answer: scored straight after the prompt
    assert r.extra["ratio"] == pytest.approx(math.e)
    assert r.scores["truth_ratio_min"] == pytest.approx(1 / math.e)
    assert r.scores["truth_ratio_keep"] == 0.0
