"""MME and POPE: yes/no questions about the image (harness.core.yes_no_metrics).

The question with its image in the model's chat frame, greedy, a few tokens (FIUBench: 3 for
MME, 5 for POPE); the reply read as yes/no from its prefix (`mme`, `pope`: FIUBench and MME's
own tool) or only when it is a bare "yes"/"no" (`mme_exact`, `pope_exact`: lmms-eval's POPE).
Per question `accuracy` (the parsed answer is the gold one; an unreadable reply is wrong).
MME per cell: `acc/<category>`, `acc_plus/<category>` (both questions of an image right),
`score/<category>` = (acc + acc+) x 100, and `perception` / `cognition` sums when every official
category of the sum is present (`score_sum`: the sum over the categories present); an image whose
pair `--utility-limit` split is left out of these (`pairs_skipped`). POPE per cell:
`accuracy`, `precision`, `recall`, `f1`, `yes_ratio` overall and per split (`f1/adversarial`, ...).
"""

from __future__ import annotations

from typing import Sequence

from mmunlearn.harness.core.contracts import Prepared, SampleResult, Task, TaskContext, plain_requests, register_task
from mmunlearn.harness.core.records import ImageDecoder, Question
from mmunlearn.harness.core.yes_no_metrics import mme_scores, parse_yes_no, pope_metrics, pope_scores


class YesNoTask(Task):
    metrics = ("accuracy",)
    parse_mode = "prefix"

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
        results = []
        for q, h, reply in zip(questions, prep.hashes, replies):
            parsed = parse_yes_no(reply, self.parse_mode)
            meta = q.meta or {}
            extra = {"parsed": parsed, "group": meta.get("group"), "pair": meta.get("pair"), "answer": q.answer}
            results.append(self._result(q, h, reply, {"accuracy": float(parsed == q.answer.strip().lower())}, extra))
        return results

    def _rows(self, samples: Sequence[SampleResult]) -> list[dict]:
        return [
            {
                "category": s.extra.get("group"),
                "question_id": s.extra.get("pair"),
                "answer": s.extra["answer"],
                "response": s.response,
            }
            for s in samples
            if not s.extra.get("excluded")
        ]


class MMETask(YesNoTask):
    reads = "mme"
    raw_scores = ("score", "score_sum", "perception", "cognition")  # sums of (acc + acc+) x 100

    def aggregate(self, samples: Sequence[SampleResult]) -> dict[str, float | int | None]:
        out = super().aggregate(samples)
        rows = self._rows(samples)
        size: dict = {}
        for r in rows:
            size[r["category"], r["question_id"]] = size.get((r["category"], r["question_id"]), 0) + 1
        # acc+ needs both questions of an image: a pair that --utility-limit split is left out of
        # the category figures (the per-question accuracy still counts it)
        complete = [r for r in rows if size[r["category"], r["question_id"]] == 2]
        out["pairs_skipped"] = sum(1 for n in size.values() if n != 2)
        scores = mme_scores(complete, self.parse_mode)
        for category, c in scores["categories"].items():
            out[f"acc/{category}"], out[f"acc_plus/{category}"], out[f"score/{category}"] = (
                c["acc"],
                c["acc_plus"],
                c["score"],
            )
        out["score_sum"] = sum(c["score"] for c in scores["categories"].values()) if scores["categories"] else None
        out["perception"], out["cognition"] = scores["perception"], scores["cognition"]
        return out


class POPETask(YesNoTask):
    reads = "pope"
    metrics = ("accuracy",)
    headline = ("accuracy",)
    raw_scores = ("yes_ratio",)  # how often the model says yes: a bias, not a quality

    def aggregate(self, samples: Sequence[SampleResult]) -> dict[str, float | int | None]:
        out = super().aggregate(samples)
        rows = self._rows(samples)
        overall = (
            pope_metrics([r["answer"] for r in rows], [r["response"] for r in rows], self.parse_mode) if rows else {}
        )
        for key in ("precision", "recall", "f1", "yes_ratio"):
            out[key] = overall.get(key)
        for split, m in pope_scores(rows, self.parse_mode).items():
            for key in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
                out[f"{key}/{split}"] = m.get(key)
        return out


@register_task
class MME(MMETask):
    name = "mme"


@register_task
class MMEExact(MMETask):
    name = "mme_exact"
    parse_mode = "exact"


@register_task
class POPE(POPETask):
    name = "pope"


@register_task
class POPEExact(POPETask):
    name = "pope_exact"
    parse_mode = "exact"
