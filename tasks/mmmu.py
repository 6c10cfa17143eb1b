"""MMMU scored as the official code scores it (`mmmu`), or as lmms-eval 0.7.3 does
(`mmmu_lmms_eval`): harness.core.mmmu_eval has the prompts and parsers.

The question with `<image N>` kept in the text, the first image only, greedy decoding (the
official LLaVA runner samples with 5 beams at temperature 1: not reproduced, so a rerun gives the
same answers); the multiple-choice letter or the open answer parsed from the reply. A reply the
multiple-choice parser cannot read gets the official random fallback: a draw from one generator
seeded 42 (lmms-eval: 0), taken in dataset order over the cell's guessed questions, which is why
the draw happens in `settle` (once the whole cell is answered) and not per batch. Each sample
keeps the raw reply, the parsed answer and whether it was guessed; `accuracy` per question and
per cell, `accuracy/<subject>` per subject, `answers_guessed` and `answers_guessed/<subject>` counts.
"""

from __future__ import annotations

import random
from typing import Any, Sequence, cast

from mmunlearn.harness.core.contracts import Prepared, SampleResult, Task, TaskContext, plain_requests, register_task
from mmunlearn.harness.core.mmmu_eval import (
    LMMS_EVAL,
    OFFICIAL,
    choice_info,
    eval_multi_choice,
    lmms_eval_rng,
    official_rng,
    prompt_for,
    score_response,
)
from mmunlearn.harness.core.records import ImageDecoder, Question


class _NoDraw:
    """A generator that refuses to draw: the parser's fallback is deferred to `settle`."""

    class Guess(Exception):
        pass

    def choice(self, seq):
        raise self.Guess


class MMMUTask(Task):
    reads = "mmmu"
    metrics = ("accuracy",)
    protocol = OFFICIAL

    def requests(self, vlm, questions, ctx, images: ImageDecoder, excluded_scores=()) -> Prepared:
        return plain_requests(
            vlm, questions, images, lambda q: prompt_for(self.protocol, q.text, _options(q), _qtype(q))
        )

    def evaluate(self, vlm, questions: Sequence[Question], ctx: TaskContext) -> list[SampleResult]:
        self._check(questions)
        if not questions:
            return []
        prep = self.requests(vlm, questions, ctx, ImageDecoder())
        replies = vlm.generate(
            prep.requests, max_new_tokens=ctx.max_new_tokens, batch_size=ctx.batch_size, desc=self.name
        )
        results = []
        for q, h, reply in zip(questions, prep.hashes, replies):
            meta = q.meta or {}
            extra: dict[str, Any] = {
                "subject": meta.get("subject"),
                "index": int(meta.get("index", 0)),
                "answer": q.answer,
            }
            try:
                scored = score_response(
                    self.protocol,
                    question_type=_qtype(q),
                    response=reply,
                    answer=q.answer,
                    options=_options(q),
                    rng=cast(random.Random, _NoDraw()),
                )
                accuracy: float | None = float(scored.correct)
                extra.update(parsed=scored.prediction, guessed=False)
            except _NoDraw.Guess:
                accuracy = None  # settled in dataset order (`settle`)
                extra.update(parsed=None, guessed=True, choices=list(choice_info(_options(q))[1]))
            results.append(self._result(q, h, reply, {"accuracy": accuracy}, extra))
        return results

    def settle(self, samples: Sequence[SampleResult]) -> list[SampleResult]:
        """The guessed questions' letters, drawn from the protocol's seeded generator in dataset order."""
        rng = lmms_eval_rng() if self.protocol == LMMS_EVAL else official_rng()
        out = [SampleResult.from_dict(s.to_dict()) for s in samples]
        for s in sorted(out, key=lambda s: s.extra.get("index", 0)):
            if s.extra.get("guessed") and not s.extra.get("excluded"):
                letter = rng.choice(s.extra["choices"])
                s.extra["parsed"] = letter
                s.scores["accuracy"] = float(eval_multi_choice(s.extra["answer"], letter))
        return out

    def aggregate(self, samples: Sequence[SampleResult]) -> dict[str, float | int | None]:
        settled = self.settle(samples)
        out = super().aggregate(settled)
        by_subject: dict[str, list[SampleResult]] = {}
        for s in settled:
            by_subject.setdefault(s.extra.get("subject") or "?", []).append(s)
        out["answers_guessed"] = sum(bool(s.extra.get("guessed")) for s in settled)
        for subject, group in by_subject.items():
            values = [v for s in group if (v := s.scores.get("accuracy")) is not None]
            out[f"accuracy/{subject}"] = sum(values) / len(values) if values else None
            out[f"answers_guessed/{subject}"] = sum(bool(s.extra.get("guessed")) for s in group)
        return out


def _options(q: Question) -> list[str]:
    return list((q.options or {}).values())


def _qtype(q: Question) -> str:
    return (q.meta or {}).get("question_type") or ("multiple-choice" if q.options else "open")


@register_task
class MMMUOfficial(MMMUTask):
    name = "mmmu"


@register_task
class MMMULmmsEval(MMMUTask):
    name = "mmmu_lmms_eval"
    protocol = LMMS_EVAL
