"""Truth ratio (TOFU) of each multiple-choice question, in the model's own answer frame.

P(option) is the option text's length-normalised probability (exp of its mean token log-prob)
as the answer to the bare question (no options listed, same image, no examples), scored inside
the model's own answer frame exactly as the classification scorer "loglik_frame" does (its
greedy answer cut before the first option; no frame: straight after the prompt). Why the frame:
a model that answers in sentences puts little mass on a bare value after `ASSISTANT:`, and on
the embedded model that halves what image+text log-likelihoods can see (README, "Scorers").

R = geometric mean over the three distractors of P(distractor) / P(correct)
(harness.core.privacy.truth_ratio). Every question is scored (the bare question has no
in-context examples, so none is excluded). Two per-question values, averaged per set:
`truth_ratio_min` = min(R, 1/R), TOFU's forget-set figure (0: the correct option stands out,
1: it does not; lower = the model knows more), and `truth_ratio_keep` = max(0, 1 - R), TOFU's
retain-set figure (higher = knows more). Read the first on forget/test, the second on
retain/celebrity. Each sample keeps R, the frame and the four mean log-probs; forget quality
(a KS test of R against a reference model) is the privacy stage's.
"""

from __future__ import annotations

import math
from typing import Sequence

from mmunlearn.harness.core.privacy import truth_ratio
from mmunlearn.harness.core.prompts import Request
from mmunlearn.harness.core.records import LETTERS, ImageDecoder, Question
from mmunlearn.harness.core.contracts import SampleResult, Task, TaskContext, prompt_hash, register_task
from mmunlearn.tasks.classification import answer_frame


@register_task
class TruthRatioTask(Task):
    name = "truth_ratio"
    reads = "classification"
    metrics = ("truth_ratio_min", "truth_ratio_keep")
    lower_means_known = ("truth_ratio_min",)

    def evaluate(self, vlm, questions: Sequence[Question], ctx: TaskContext) -> list[SampleResult]:
        self._check(questions)
        for q in questions:
            if not q.options or set(q.options) != set(LETTERS) or q.answer not in LETTERS:
                raise ValueError(f"question {q.qid} needs options A-D and a correct letter")
        if not questions:
            return []
        images = ImageDecoder()
        kept = list(questions)  # bare questions carry no in-context examples: none is excluded
        bare = [Request(q.text, images(q.image)) for q in kept]
        hashes = [prompt_hash(vlm, r, q.mode, [q.image] if q.image is not None else []) for q, r in zip(kept, bare)]
        texts = [[q.options[x] for x in LETTERS] for q in kept]  # type: ignore[index]
        answers = vlm.generate(bare, max_new_tokens=ctx.max_new_tokens, batch_size=ctx.batch_size) if kept else []
        frames = [answer_frame(a, opts) for a, opts in zip(answers, texts)]
        stats = (
            vlm.option_token_logprobs(bare, texts, ctx.batch_size, prefixes=[f or "" for f in frames]) if kept else []
        )
        results = []
        for q, h, a, frame, per in zip(kept, hashes, answers, frames, stats):
            means = [sum(s.logps) / max(1, len(s.logps)) for s in per]
            r = truth_ratio(means, LETTERS.index(q.answer))
            scores = {"truth_ratio_min": min(r, 1 / r) if r > 0 else 0.0, "truth_ratio_keep": max(0.0, 1 - r)}
            extra = {"ratio": r if math.isfinite(r) else None, "frame": frame, "option_mean_logps": means}
            results.append(self._result(q, h, a, scores, extra))
        return results
