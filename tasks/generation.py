"""Open generation: one-sentence answers scored by ROUGE, BLEU and an LLM factuality judge.

The answer is the response up to any `ASSISTANT:` the model generated itself, stripped
(mmunlearn.harness.core.prompts.extract_answer, as the official eval.py reads it). ROUGE-1/2/L are F-measures
from `rouge_score` (stemmer on) and BLEU is nltk's `sentence_bleu` over whitespace tokens with
smoothing method 1, both against the ground truth, as the official evaluation computes them.
Factuality is the judge's raw 1-10 score, the papers' scale: samples keep it
(`scores["factuality"]`) and the aggregate is its mean over the samples the judge scored, plus
`factuality_scored` and `factuality_failed` counts, so a judge outage can never pass for a low
(or high) score. Without an available judge factuality is None (not scored) and both counts
are 0. Generation has no in-context examples in the official protocol.
"""

from __future__ import annotations

import warnings
from typing import Sequence

from mmunlearn.harness.core.prompts import extract_answer
from mmunlearn.harness.core.records import ImageDecoder, Question
from mmunlearn.harness.core.contracts import SampleResult, Task, TaskContext, register_task

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def bleu(ground_truth: str, answer: str) -> float:
    """eval.py's compute_bleu: sentence BLEU of whitespace tokens, SmoothingFunction().method1."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    with warnings.catch_warnings():  # nltk warns when a short answer has no n-gram overlap
        warnings.simplefilter("ignore")
        return float(
            sentence_bleu([ground_truth.split()], answer.split(), smoothing_function=SmoothingFunction().method1)
        )


@register_task
class GenerationTask(Task):
    name = "generation"
    needs_judge = True  # factuality
    metrics = ROUGE_TYPES + ("bleu", "factuality")
    headline = ("rougeL", "factuality")

    def __init__(self):
        from rouge_score import rouge_scorer

        self._rouge = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)

    def rouge(self, ground_truth: str, response: str) -> dict[str, float]:
        scores = self._rouge.score(ground_truth, response)
        return {t: scores[t].fmeasure for t in ROUGE_TYPES}

    def evaluate(self, vlm, questions: Sequence[Question], ctx: TaskContext) -> list[SampleResult]:
        self._check(questions)
        if not questions:
            return []
        prep = self.requests(vlm, questions, ctx, ImageDecoder(), self.metrics)
        responses = (
            vlm.generate(prep.requests, max_new_tokens=ctx.max_new_tokens, batch_size=ctx.batch_size, desc="generation")
            if prep.kept
            else []
        )
        answers = [extract_answer(r) for r in responses]
        judge = ctx.judge if ctx.judge is not None and ctx.judge.available else None
        verdicts = (
            judge.score_many([(q.text, a, q.answer, q.profile_id) for q, a in zip(prep.kept, answers)], desc="judge")
            if judge
            else [None] * len(prep.kept)
        )
        results = {}
        for q, h, r, a, v in zip(prep.kept, prep.hashes, responses, answers, verdicts):
            scores: dict[str, float | None] = {**self.rouge(q.answer, a), "bleu": bleu(q.answer, a), "factuality": None}
            extra: dict[str, str | None]
            if v is None:
                extra = {"judge": "skipped"}
            elif v.score is None:
                extra = {"judge": "failed", "judge_error": v.error}
            else:
                assert judge is not None  # verdicts come from the judge when there is one
                scores["factuality"] = v.score
                extra = {"judge": "scored", "judge_model": judge.model, "justification": v.justification}
            if a != r:
                extra["answer"] = a
            results[q.qid] = self._result(q, h, r, scores, extra)
        return [results.get(q.qid) or prep.excluded[q.qid] for q in questions]

    def aggregate(self, samples: Sequence[SampleResult]) -> dict[str, float | int | None]:
        out = super().aggregate(samples)  # factuality: the mean raw 1-10 score
        samples = [s for s in samples if not s.extra.get("excluded")]
        scored = [s.scores["factuality"] for s in samples if s.scores.get("factuality") is not None]
        out["factuality_scored"] = len(scored)
        out["factuality_failed"] = sum(1 for s in samples if s.extra.get("judge") == "failed")
        return out
