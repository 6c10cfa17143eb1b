"""Multiple-choice classification, scored as the official MLLMU-Bench evaluation does.

Official parsing (`mmunlearn.harness.core.prompts.first_letter`): the answer is the response up to any
`ASSISTANT:` the model generated itself, stripped; its first character, upper-cased, is the
letter if it is A-D, else the answer is wrong. Consequences users should know (kept for
comparability): "b" and "B. Paris" / "B: ..." / "B)" count as B; "" counts as wrong; "(B)",
"The answer is B" and "Answer: B" count as wrong (the last as A); a response starting with a
word such as "Because ..." counts as B.

Prompts and in-context examples are the official ones (Task.requests): one example profile,
all of its questions of the mode as `Question: ... Correct Answer: X` blocks, on the forget,
test and retain sets; its own questions are excluded from scoring (`n` does not count them).

Second scorers, log-likelihood: the four option letters (scorer "loglik") or the four option
texts (scorer "loglik_text", sum log-prob divided by the text's UTF-8 length, as lm-eval's
acc_norm, so long options are not penalised) are scored as continuations of the same prompt;
the argmax is the answer. Scorer "loglik_answer" asks the bare question (no options listed, same
image, no examples) and scores each option text as its answer (length-normalised), lm-eval's
"cloze-style" multiple choice: it measures whether the model knows the fact, independently of
whether it can read an option list. The model adapter joins each continuation to the prompt the
way it joins training answers (mmunlearn.harness.core.model scores " " + option).

Scorer "loglik_frame" scores the same options inside the model's own answer frame: the greedy
answer to the bare question, cut before the first option text it contains ("This person was
born in the city of"), then each option as its continuation. A model that answers bare
questions in full sentences puts little mass on a bare value straight after `ASSISTANT:`, so
"loglik_answer" then ranks options at a position the model never answers from (on the embedded
tiny model: image+text 0.42 against text-only 1.00 on vanilla's forget set, while cloze is 1.00
in both; README, "Scorers"). When the answer contains no option text, there is no frame to cut
and the question is scored as "loglik_answer" scores it; `frame_scored` counts the questions
that had a frame, and each sample records its frame in `extra["frame"]` (None: no frame).
"""

from __future__ import annotations

import re

import math
from typing import Sequence

from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.prompts import Request, extract_answer, first_letter
from mmunlearn.harness.core.records import LETTERS, ImageDecoder, Question
from mmunlearn.harness.core.contracts import SampleResult, Task, TaskContext, register_task

SCORERS = {
    "generate": "accuracy",
    "loglik": "accuracy_loglik",
    "loglik_text": "accuracy_loglik_text",
    "loglik_answer": "accuracy_loglik_answer",
    "loglik_frame": "accuracy_loglik_frame",
}

parse_letter = first_letter  # the official parsing, under the name this task has always exported


@register_task
class ClassificationTask(Task):
    name = "classification"
    metrics = tuple(SCORERS.values())
    # loglik_frame before loglik_answer: the log-likelihood figure that follows the model's own
    # answer format (module docstring). A column shows only where some run has numbers for it.
    headline = ("accuracy", "accuracy_loglik_frame", "accuracy_loglik_answer")

    def aggregate(self, samples: Sequence[SampleResult]) -> dict[str, float | int | None]:
        """The means, plus `frame_scored` (questions scored inside a frame cut from the model's
        own answer) when the loglik_frame scorer ran."""
        out = super().aggregate(samples)
        scored = [s for s in samples if not s.extra.get("excluded") and "frame" in s.extra]
        if scored:
            out["frame_scored"] = sum(s.extra["frame"] is not None for s in scored)
        return out

    def evaluate(self, vlm, questions: Sequence[Question], ctx: TaskContext) -> list[SampleResult]:
        self._check(questions)
        unknown = [s for s in ctx.scorers if s not in SCORERS]
        if unknown or not ctx.scorers:
            raise ConfigError(
                f"unknown classification scorer(s) {unknown or '(none given)'}; known: {', '.join(SCORERS)}"
            )
        for q in questions:
            if not q.options or set(q.options) != set(LETTERS) or q.answer not in LETTERS:
                raise ValueError(f"question {q.qid} needs options A-D and a correct letter")
        images = ImageDecoder()
        prep = self.requests(vlm, questions, ctx, images, [SCORERS[s] for s in ctx.scorers])
        kept, reqs, extras = prep.kept, prep.requests, prep.extras
        scores = [dict.fromkeys(SCORERS[s] for s in ctx.scorers) for _ in kept]
        responses = [""] * len(kept)
        if kept and "generate" in ctx.scorers:
            responses = vlm.generate(
                reqs, max_new_tokens=ctx.max_new_tokens, batch_size=ctx.batch_size, desc="classification"
            )
            for q, r, sc, ex in zip(kept, responses, scores, extras):
                ex["letter"] = first_letter(r)
                sc["accuracy"] = float(ex["letter"] == q.answer)
        if kept and "loglik" in ctx.scorers:
            lps = vlm.option_logprobs(reqs, [list(LETTERS) for _ in kept], batch_size=ctx.batch_size)
            for q, lp, sc, ex in zip(kept, lps, scores, extras):
                ex["letter_loglik"] = LETTERS[_argmax(lp)]
                sc["accuracy_loglik"] = float(ex["letter_loglik"] == q.answer)
        bare = [Request(q.text, images(q.image)) for q in kept]
        texts = [[_options(q)[x] for x in LETTERS] for q in kept]
        text_scorers = {
            "loglik_text": reqs,  # option texts after the same prompt
            "loglik_answer": bare,
            "loglik_frame": bare,
        }
        for scorer, scorer_reqs in text_scorers.items():
            if not (kept and scorer in ctx.scorers):
                continue
            framed = {}  # only loglik_frame passes prefixes (adapters without them serve the rest)
            if scorer == "loglik_frame":
                answers = vlm.generate(bare, max_new_tokens=ctx.max_new_tokens, batch_size=ctx.batch_size)
                cut = [answer_frame(a, opts) for a, opts in zip(answers, texts)]
                for ex, f in zip(extras, cut):
                    ex["frame"] = f
                framed["prefixes"] = [f or "" for f in cut]
            lps = vlm.option_logprobs(scorer_reqs, texts, batch_size=ctx.batch_size, **framed)
            for q, lp, opts, sc, ex in zip(kept, lps, texts, scores, extras):
                per_byte = [v / max(1, len(o.encode("utf-8"))) for v, o in zip(lp, opts)]
                ex[f"letter_{scorer}"] = LETTERS[_argmax(per_byte)]
                sc[SCORERS[scorer]] = float(ex[f"letter_{scorer}"] == q.answer)
        scored = {
            q.qid: self._result(q, h, r, sc, ex)
            for q, h, r, sc, ex in zip(kept, prep.hashes, responses, scores, extras)
        }
        return [scored.get(q.qid) or prep.excluded[q.qid] for q in questions]


def answer_frame(answer: str, options: Sequence[str]) -> str | None:
    """The model's answer up to the first option text it contains (case-insensitive, whole words),
    stripped: the frame an option is scored in. None when it contains no option."""
    text = extract_answer(answer)
    starts = [
        m.start()
        for o in options
        if o.strip() and (m := re.search(r"(?<!\w)" + re.escape(o.strip()) + r"(?!\w)", text, re.IGNORECASE))
    ]
    return text[: min(starts)].strip() if starts else None


def _argmax(values: Sequence[float]) -> int:
    """Index of the largest value; NaN never wins, ties go to the earliest option."""
    best, best_v = 0, -math.inf
    for i, v in enumerate(values):
        if v > best_v:
            best, best_v = i, v
    return best


def _options(q: Question) -> dict[str, str]:
    """The A-D option texts of a classification question."""
    if q.options is None:
        raise ValueError(f"classification question {q.qid} has no options")
    return q.options
