"""LLaVA-Bench in-the-wild scored by the original judge protocol (harness.core.llava_bench_judge):
the model answers each question with its image (greedy); the judge compares the reference answer
(Assistant 1) with the model's (Assistant 2) under the question category's rule and replies with
two scores. Per question `model_score` and `reference_score` (None when the judge could not
score it: no judge, or a reply it could not read after its retries; such a question is counted
and never averaged in). Per cell `relative_score` = mean(model) / mean(reference) x 100, overall
and per category (`relative_score/conv`, ...), None ("not available") when no reply was scored;
`judge_scored` and `judge_failed` counts.

The judge model is the run's `--judge` model (the original gpt-4-0314 is retired: the model used
is recorded); without one the figures are not available, never a number.
"""

from __future__ import annotations

from typing import Any, Sequence

from mmunlearn.harness.core.contracts import Prepared, SampleResult, Task, TaskContext, plain_requests, register_task
from mmunlearn.harness.core.llava_bench_judge import CATEGORIES, LlavaBenchJudge, relative_scores
from mmunlearn.harness.core.records import ImageDecoder, Question


@register_task
class LlavaBenchTask(Task):
    name = "llava_bench"
    reads = "llava_bench"
    metrics = ("model_score", "reference_score")
    headline = ("model_score",)
    needs_judge = True
    # judge scores (1-10) and the relative score (0-100): no [0, 1] scale for check's tolerance
    raw_scores = ("model_score", "reference_score", "relative_score")

    def requests(self, vlm, questions, ctx, images: ImageDecoder, excluded_scores=()) -> Prepared:
        return plain_requests(vlm, questions, images)

    def evaluate(self, vlm, questions: Sequence[Question], ctx: TaskContext) -> list[SampleResult]:
        self._check(questions)
        if not questions:
            return []
        prep = self.requests(vlm, questions, ctx, ImageDecoder())
        replies = vlm.generate(
            prep.requests, max_new_tokens=ctx.max_new_tokens, batch_size=ctx.batch_size, desc=self.name
        )
        judge = _judge(ctx)
        reviews = (
            judge.review_many(
                [
                    ((q.meta or {}).get("caption", ""), q.text, q.answer, a, (q.meta or {}).get("category"))
                    for q, a in zip(questions, replies)
                ]
            )
            if judge is not None
            else [None] * len(questions)
        )
        results = []
        for q, h, reply, review in zip(questions, prep.hashes, replies, reviews):
            category = (q.meta or {}).get("category")
            scores: dict[str, float | None]
            extra: dict[str, Any]
            if review is None:
                scores, extra = {"model_score": None, "reference_score": None}, {"judge": "skipped"}
            elif review.scores is None:
                scores, extra = (
                    {"model_score": None, "reference_score": None},
                    {"judge": "failed", "judge_error": review.error},
                )
            else:
                reference, model = review.scores
                scores = {"model_score": float(model), "reference_score": float(reference)}
                extra = {"judge": "scored", "judge_model": judge.model if judge else None, "review": review.review}
            extra["category"] = category
            results.append(self._result(q, h, reply, scores, extra))
        return results

    def aggregate(self, samples: Sequence[SampleResult]) -> dict[str, float | int | None]:
        out = super().aggregate(samples)
        kept = [s for s in samples if not s.extra.get("excluded")]
        by_category: dict[str, list] = {c: [] for c in CATEGORIES}
        for s in kept:
            pair = (s.scores.get("reference_score"), s.scores.get("model_score"))
            by_category.setdefault(s.extra.get("category") or "?", []).append(None if None in pair else pair)
        relative = relative_scores({c: v for c, v in by_category.items() if v})
        out["relative_score"] = relative.get("all")
        for c in by_category:
            if by_category[c]:
                out[f"relative_score/{c}"] = relative.get(c)
        out["judge_scored"] = sum(s.extra.get("judge") == "scored" for s in kept)
        out["judge_failed"] = sum(s.extra.get("judge") == "failed" for s in kept)
        return out


_judges: dict[tuple, LlavaBenchJudge] = {}


def _judge(ctx: TaskContext) -> LlavaBenchJudge | None:
    """A LLaVA-Bench judge on the run's judge model and endpoint (None without an available one)."""
    run_judge = ctx.judge
    if run_judge is None or not run_judge.available:
        return None
    key = (run_judge.model, run_judge.base_url, str(run_judge.cache_dir), run_judge.api_key_env)
    if key not in _judges:  # the run judge's model, endpoint, key variable and cache
        _judges[key] = LlavaBenchJudge(
            model=run_judge.model,
            base_url=run_judge.base_url,
            api_key_env=run_judge.api_key_env,
            cache_dir=run_judge.cache_dir,
        )
    return _judges[key]
