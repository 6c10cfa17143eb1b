"""CLEAR's official scoring (somvy/multimodal_unlearning mm/eval.py, mm/calculate_metrics.py),
one task per question type: `clear_caption` (captions; text-only: TOFU QA), `clear_face` (face
recognition, real faces), `clear_vqa` (real world).

Per question, with the question's image (text-only: none):
- the mean answer-token NLL of the gold answer, of its paraphrase and of every perturbed answer;
- `prob`: exp(-NLL) of the gold answer for captions (the official "eval_log" files), the
  normalised p_gold / (p_gold + sum p_perturbed) for face recognition and VQA;
- `truth_ratio_min` = min(TR, 1/TR) and `truth_ratio_keep` = max(0, 1 - 1/TR) with
  TR = exp(perturbed - paraphrased NLL): the official forget-file and other-file figures (each
  question keeps both; a cell reports the first on the forget set and the second elsewhere, as
  the official files do; lower / higher means known);
- `rougeL_recall` of a greedy generation against the gold answer (rouge_score, stemmer on).

The cell's truth ratios follow `--bench-option truth_ratio_averaging`: "pooled" (default, the
official mm code) takes ONE perturbed NLL, the mean over the cell's questions and perturbations,
so the figure is not a mean of per-question values (its interval is then dropped); "per-sample"
(TOFU's text code) averages each question's own. Text-only TOFU rows have no paraphrase or
perturbed answers in CLEAR: their truth ratio is not available (None).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from mmunlearn.harness.core.contracts import Prepared, SampleResult, Task, TaskContext, plain_requests, register_task
from mmunlearn.harness.core.prompts import Request
from mmunlearn.harness.core.records import ImageDecoder, Question
from mmunlearn.harness.core.tofu_metrics import (
    normalized_probability,
    rouge_l_recall,
    truth_ratio_forget,
    truth_ratio_keep,
    truth_ratios,
)


class ClearTask(Task):
    """One CLEAR question type scored the official way (subclasses set name and reads)."""

    metrics = ("prob", "truth_ratio_min", "truth_ratio_keep", "rougeL_recall")
    headline = ("rougeL_recall", "prob", "truth_ratio_min", "truth_ratio_keep")
    lower_means_known = ("truth_ratio_min",)
    normalized: bool = True  # captions: plain probability (the official "eval_log" files)

    def requests(self, vlm, questions, ctx, images: ImageDecoder, excluded_scores=()) -> Prepared:
        return plain_requests(vlm, questions, images)

    def evaluate(self, vlm, questions: Sequence[Question], ctx: TaskContext) -> list[SampleResult]:
        self._check(questions)
        if not questions:
            return []
        options = ctx.bench.options if ctx.bench is not None else {}
        with_image = options.get("generation_image", True)
        averaging = options.get("truth_ratio_averaging", "pooled")
        prep = self.requests(vlm, questions, ctx, ImageDecoder())
        reqs, hashes = prep.requests, prep.hashes
        answers = [[q.answer] + ([q.paraphrase] if q.paraphrase else []) + list(q.perturbed) for q in questions]
        stats = vlm.option_token_logprobs(reqs, answers, ctx.batch_size)
        gen_reqs = reqs if with_image else [Request(q.text) for q in questions]
        generations = vlm.generate(
            gen_reqs, max_new_tokens=ctx.max_new_tokens, batch_size=ctx.batch_size, desc=self.name
        )
        results = []
        for q, h, per, text in zip(questions, hashes, stats, generations):
            nll = [-sum(s.logps) / max(1, len(s.logps)) for s in per]
            gt, para, pert = nll[0], (nll[1] if q.paraphrase else None), nll[2 if q.paraphrase else 1 :]
            scores: dict[str, float | None] = {
                "prob": float(normalized_probability([gt], [pert])[0]) if self.normalized and pert else math.exp(-gt),
                "truth_ratio_min": None,
                "truth_ratio_keep": None,
                "rougeL_recall": rouge_l_recall(q.answer, text),
            }
            if para is not None and pert:
                tr = truth_ratios([para], [pert], "per-sample")
                scores["truth_ratio_min"], scores["truth_ratio_keep"] = truth_ratio_forget(tr), truth_ratio_keep(tr)
            extra = {"gt_loss": gt, "paraphrased_loss": para, "perturbed_losses": pert, "averaging": averaging}
            if not with_image:
                extra["generated_without_image"] = True
            results.append(self._result(q, h, text, scores, extra))
        return results

    def aggregate(self, samples: Sequence[SampleResult]) -> dict[str, Any]:
        """Means of the per-question figures; the truth ratios pooled as the official code pools
        them unless the run asked for per-sample averaging (each sample records which)."""
        out: dict[str, Any] = dict(super().aggregate(samples))
        scored = [s for s in samples if not s.extra.get("excluded") and s.extra.get("paraphrased_loss") is not None]
        if scored and _averaging(samples) == "pooled":
            width = {len(s.extra["perturbed_losses"]) for s in scored}
            if len(width) == 1:  # the official collator stacks equal-length lists
                tr = truth_ratios(
                    [s.extra["paraphrased_loss"] for s in scored],
                    [s.extra["perturbed_losses"] for s in scored],
                    "pooled",
                )
                out["truth_ratio_min"], out["truth_ratio_keep"] = truth_ratio_forget(tr), truth_ratio_keep(tr)
            else:  # no file-wide scalar over lists of several lengths: say so, keep the per-sample figure
                out["note"] = "perturbed answers of unequal number: truth ratio averaged per sample, not pooled"
        # The official code reports one truth ratio per file: min(TR, 1/TR) on the forget files,
        # max(0, 1 - 1/TR) on the others (each sample keeps both).
        if samples:
            out["truth_ratio_keep" if samples[0].set == "forget" else "truth_ratio_min"] = None
        return out


def _averaging(samples: Sequence[SampleResult]) -> str:
    return next((s.extra["averaging"] for s in samples if "averaging" in s.extra), "pooled")


@register_task
class ClearCaptionTask(ClearTask):
    name = "clear_caption"
    reads = "caption"
    normalized = False


@register_task
class ClearFaceTask(ClearTask):
    name = "clear_face"
    reads = "face"


@register_task
class ClearVqaTask(ClearTask):
    name = "clear_vqa"
    reads = "vqa"
