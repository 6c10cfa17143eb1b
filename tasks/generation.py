"""Open generation: one-sentence answers scored by ROUGE and an LLM factuality judge.

ROUGE-1/2/L are F-measures from `rouge_score` (stemmer on) against the ground truth, as the
official evaluation computes them. Factuality is the judge's 1-10 score: samples keep the raw
score (`scores["factuality"]`); the aggregate reports its mean normalised to [0, 1] as
(s - 1) / 9 over the samples the judge scored, plus `factuality_scored` and `factuality_failed`
counts, so a judge outage can never pass for a low (or high) score. Without an available judge
factuality is None (not scored) and both counts are 0.
"""
from __future__ import annotations

from typing import Sequence

from harness.prompts import generation_prompt
from harness.records import Question
from tasks.base import SampleResult, Task, TaskContext, _ImageCache, make_request, prompt_hash, register_task

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@register_task
class GenerationTask(Task):
    name = "generation"
    metrics = ROUGE_TYPES + ("factuality",)

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
        images = _ImageCache()
        reqs = [make_request(generation_prompt(q.text), images.get(q)) for q in questions]
        hashes = [prompt_hash(vlm, r, q.mode, q.image) for q, r in zip(questions, reqs)]
        responses = [r.strip() for r in vlm.generate(reqs, max_new_tokens=ctx.max_new_tokens,
                                                      batch_size=ctx.batch_size, desc="generation")]
        judge = ctx.judge if ctx.judge is not None and ctx.judge.available else None
        verdicts = (judge.score_many([(q.text, r, q.answer) for q, r in zip(questions, responses)],
                                     desc="judge") if judge else [None] * len(questions))
        results = []
        for q, h, r, v in zip(questions, hashes, responses, verdicts):
            scores: dict[str, float | None] = {**self.rouge(q.answer, r), "factuality": None}
            if v is None:
                extra = {"judge": "skipped"}
            elif v.score is None:
                extra = {"judge": "failed", "judge_error": v.error}
            else:
                scores["factuality"] = v.score
                extra = {"judge": "scored", "judge_model": judge.model, "justification": v.justification}
            results.append(self._result(q, h, r, scores, extra))
        return results

    def aggregate(self, samples: Sequence[SampleResult]) -> dict[str, float | int | None]:
        from harness.judge import normalise

        out = super().aggregate(samples)
        samples = [s for s in samples if not s.extra.get("excluded")]
        scored = [s.scores["factuality"] for s in samples if s.scores.get("factuality") is not None]
        out["factuality"] = sum(normalise(v) for v in scored) / len(scored) if scored else None
        out["factuality_scored"] = len(scored)
        out["factuality_failed"] = sum(1 for s in samples if s.extra.get("judge") == "failed")
        return out
