"""Cloze (fill in the blank), scored as the official evaluation does plus a stricter variant.

Prompts and in-context examples are the official ones (Task.requests): two example profiles
for LLaVA (one for Idefics2), all of their cloze questions of the mode with
`Correct Answer: ...`, on every set (the celebrities get none: their IDs are not in Full_Set).

`accuracy` (official): correct when the lowercased ground truth occurs anywhere in the lowercased
answer (the response up to any `ASSISTANT:` it generated itself, mmunlearn.harness.core.prompts.extract_answer),
so "He was a doctor in Paris." is correct for "doctor" (and so is "not a doctor").
`exact_match`: correct when response and ground truth are equal after normalisation (lowercase,
punctuation removed, whitespace collapsed). A question with an empty ground truth cannot be
scored (both None) rather than counting as correct everywhere.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

from mmunlearn.harness.core.prompts import extract_answer
from mmunlearn.harness.core.records import ImageDecoder, Question
from mmunlearn.harness.core.contracts import SampleResult, Task, TaskContext, register_task


def normalise(text: str) -> str:
    """Lowercase, drop punctuation (any Unicode P* character), collapse whitespace."""
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text.lower())
    return re.sub(r"\s+", " ", text).strip()


def contains_answer(response: str, answer: str) -> bool | None:
    """Official scoring: lowercased ground truth is a substring of the lowercased response."""
    return answer.lower() in response.lower() if answer.strip() else None


def exact_match(response: str, answer: str) -> bool | None:
    return normalise(response) == normalise(answer) if normalise(answer) else None


@register_task
class ClozeTask(Task):
    name = "cloze"
    metrics = ("accuracy", "exact_match")
    headline = ("accuracy",)

    def evaluate(self, vlm, questions: Sequence[Question], ctx: TaskContext) -> list[SampleResult]:
        self._check(questions)
        if not questions:
            return []
        prep = self.requests(vlm, questions, ctx, ImageDecoder(), self.metrics)
        responses = (
            vlm.generate(prep.requests, max_new_tokens=ctx.max_new_tokens, batch_size=ctx.batch_size, desc="cloze")
            if prep.kept
            else []
        )
        scored = {}
        for q, h, r, ex in zip(prep.kept, prep.hashes, responses, prep.extras):
            answer = extract_answer(r)
            acc, em = contains_answer(answer, q.answer), exact_match(answer, q.answer)
            scores = {"accuracy": None if acc is None else float(acc), "exact_match": None if em is None else float(em)}
            scored[q.qid] = self._result(q, h, r, scores, {**ex, **({"answer": answer} if answer != r else {})})
        return [scored.get(q.qid) or prep.excluded[q.qid] for q in questions]
