"""Cloze (fill in the blank), scored as the official evaluation does plus a stricter variant.

`accuracy` (official): correct when the lowercased ground truth occurs anywhere in the lowercased
response, so "He was a doctor in Paris." is correct for "doctor" (and so is "not a doctor").
`exact_match`: correct when response and ground truth are equal after normalisation (lowercase,
punctuation removed, whitespace collapsed). A question with an empty ground truth cannot be
scored (both None) rather than counting as correct everywhere.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Sequence

from harness.prompts import cloze_prompt
from harness.records import Question
from tasks.base import SampleResult, Task, TaskContext, _ImageCache, make_request, prompt_hash, register_task


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

    def evaluate(self, vlm, questions: Sequence[Question], ctx: TaskContext) -> list[SampleResult]:
        self._check(questions)
        if not questions:
            return []
        images = _ImageCache()
        reqs = [make_request(cloze_prompt(q.text), images.get(q)) for q in questions]
        hashes = [prompt_hash(vlm, r, q.mode, q.image) for q, r in zip(questions, reqs)]
        responses = vlm.generate(reqs, max_new_tokens=ctx.max_new_tokens, batch_size=ctx.batch_size, desc="cloze")
        results = []
        for q, h, r in zip(questions, hashes, responses):
            acc, em = contains_answer(r, q.answer), exact_match(r, q.answer)
            scores = {"accuracy": None if acc is None else float(acc), "exact_match": None if em is None else float(em)}
            results.append(self._result(q, h, r, scores))
        return results
