"""The multiple-choice log-likelihood scorers on the embedded tiny model: the adapter's scores are
what a hand-written forward pass gives, and the demo's scorer (loglik_frame) agrees with cloze
on vanilla in both modes, where loglik_answer does not in image+text (docs/scorers.md)."""

from __future__ import annotations

import pytest
import torch

from mmunlearn.harness.app.defaults import DEFAULT_BENCH, DEFAULT_MODEL, DEMO_FORGET
from mmunlearn.harness.app.runner import limit_questions
from mmunlearn.harness.core.bench import load_benchmark
from mmunlearn.harness.core.contracts import TaskContext, get_task
from mmunlearn.harness.core.model import load_vlm
from mmunlearn.harness.core.prompts import Request
from mmunlearn.harness.core.records import LETTERS, MODES, ImageDecoder

PER_CELL = 24  # questions per (set, mode): chosen by qid hash, as --limit does


@pytest.fixture(scope="module")
def bench():
    return load_benchmark(DEFAULT_BENCH, DEMO_FORGET)


@pytest.fixture(scope="module")
def vlm():
    return load_vlm(DEFAULT_MODEL)


@torch.no_grad()
def hand_logprob(vlm, question, option: str, prefix: str = "") -> float:
    """sum log p(option tokens | the bare prompt [+ prefix]), one sequence, no padding: the
    processor builds the ids (image tokens expanded), the option's tokens are the last ones."""
    head = "USER: <image>\n" if question.image is not None else "USER: "
    text = f"{head}{question.text}\nASSISTANT:" + (f" {prefix}" if prefix else "") + f" {option}"
    image = ImageDecoder()(question.image)
    enc = vlm.processor(text=[text], images=[image] if image is not None else None, return_tensors="pt")
    n = len(vlm.tokenizer(option, add_special_tokens=False)["input_ids"])
    ids = enc["input_ids"]
    logp = torch.log_softmax(vlm.model(**enc).logits[0, :-1].float(), -1)
    targets = ids[0, 1:]
    return float(logp[-n:].gather(-1, targets[-n:, None]).sum())


@pytest.mark.parametrize("mode", MODES)
def test_option_logprobs_equal_a_hand_written_forward(vlm, bench, mode):
    """No defect in how the image is placed, masked, padded or batched on the loglik path: two
    questions of different lengths in one left-padded batch score what one unpadded pass does,
    with and without an answer prefix."""
    qs = [q for q in bench.questions(sets=["forget"], tasks=["classification"], modes=[mode])][1:3]
    images = ImageDecoder()
    reqs = [Request(q.text, images(q.image)) for q in qs]
    texts = [[q.options[x] for x in LETTERS] for q in qs]
    prefixes = ["this person was born in the year", "maria irwin studied"]
    batched = vlm.option_logprobs(reqs, texts, batch_size=8)
    framed = vlm.option_logprobs(reqs, texts, batch_size=8, prefixes=prefixes)
    for q, opts, got, got_framed, pre in zip(qs, texts, batched, framed, prefixes):
        assert got == pytest.approx([hand_logprob(vlm, q, o) for o in opts], abs=1e-4)
        assert got_framed == pytest.approx([hand_logprob(vlm, q, o, pre) for o in opts], abs=1e-4)
    assert framed != batched  # the prefix is part of the input


def _accuracy(vlm, bench, set_name, task, mode, metric, scorers=("generate",)):
    qtype = "classification" if task == "classification" else task
    qs = limit_questions(bench.questions(sets=[set_name], tasks=[qtype], modes=[mode]), PER_CELL)
    ctx = TaskContext(scorers=scorers, max_new_tokens=16, batch_size=16)
    samples = get_task(task).evaluate(vlm, qs, ctx)
    return get_task(task).aggregate(samples)[metric]


@pytest.mark.parametrize("set_name", ["forget", "retain"])
def test_loglik_frame_agrees_with_cloze_on_vanilla_in_both_modes(vlm, bench, set_name):
    frame, answer, cloze = {}, {}, {}
    for mode in MODES:
        scores = ("loglik_frame", "loglik_answer")
        frame[mode] = _accuracy(vlm, bench, set_name, "classification", mode, "accuracy_loglik_frame", scores)
        answer[mode] = _accuracy(vlm, bench, set_name, "classification", mode, "accuracy_loglik_answer", scores)
        cloze[mode] = _accuracy(vlm, bench, set_name, "cloze", mode, "accuracy")
        assert abs(frame[mode] - cloze[mode]) <= 0.1, (mode, frame, cloze)
    assert abs(frame["image_text"] - frame["text_only"]) <= 0.1
    # The cause it fixes: bare values straight after ASSISTANT: are the text-only facts' training
    # format, while image questions were learned with full-sentence answers.
    assert answer["text_only"] - answer["image_text"] >= 0.3, answer


@pytest.mark.parametrize("mode", MODES)
@torch.no_grad()
def test_answer_token_stats_equal_a_hand_written_forward(vlm, bench, mode):
    """The membership scores' inputs: per answer token, log p and the mean / standard deviation of
    log p under the whole next-token distribution, batched with left padding, equal one unpadded
    pass computed here with torch.distributions."""
    qs = bench.questions(sets=["forget"], tasks=["generation"], modes=[mode])[:2]
    images = ImageDecoder()
    reqs = [Request(q.text, images(q.image)) for q in qs]
    stats = vlm.answer_logprobs(reqs, [q.answer for q in qs], batch_size=8, distribution=True)
    for q, st in zip(qs, stats):
        head = "USER: <image>\n" if q.image is not None else "USER: "
        enc = vlm.processor(
            text=[f"{head}{q.text}\nASSISTANT: {q.answer}"],
            images=[images(q.image)] if q.image is not None else None,
            return_tensors="pt",
        )
        n = len(vlm.tokenizer(q.answer, add_special_tokens=False)["input_ids"])
        dist = torch.distributions.Categorical(logits=vlm.model(**enc).logits[0, :-1].float()[-n:])
        logp = dist.logits  # normalised log-probs
        targets = enc["input_ids"][0, 1:][-n:]
        mean = (dist.probs * logp).sum(-1)
        std = ((dist.probs * (logp - mean[:, None]) ** 2).sum(-1)).sqrt()
        assert st.logps == pytest.approx(logp.gather(-1, targets[:, None]).squeeze(-1).tolist(), abs=1e-4)
        assert st.means == pytest.approx(mean.tolist(), abs=1e-4)
        assert st.stds == pytest.approx(std.tolist(), abs=1e-3)
