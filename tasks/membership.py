"""Membership-inference scores: how familiar the model finds each generation question's
ground-truth answer, given the question (and, in image+text mode, the image).

Each question is the generation task's own request (the official generation prompt, no
examples), with its Ground_Truth as the answer: one teacher-forced forward
(VLM.answer_logprobs, the scoring path every log-likelihood figure uses) gives the answer's
token log-probs and, per position, the mean and standard deviation of log p under the model's
next-token distribution. From them come open-unlearning's four scores (harness.core.privacy):
LOSS, ZLib, Min-K% and Min-K%++ (k = 0.4), all "loss-like": lower = more familiar, so lower
means the model knows more. The per-question token numbers are kept in samples.jsonl, so anyone
can recompute every score.

The set means are reported like any task's; what membership inference is *for* (AUC of forget
against holdout profiles, privleak) needs two sets at once and is the privacy stage's
(mmunlearn.stages.privacy).
"""

from __future__ import annotations

from typing import Sequence

from mmunlearn.harness.core.privacy import MIA_SCORES, membership_scores
from mmunlearn.harness.core.records import ImageDecoder, Question
from mmunlearn.harness.core.contracts import SampleResult, Task, TaskContext, register_task


@register_task
class MembershipTask(Task):
    name = "membership"
    reads = "generation"
    metrics = MIA_SCORES
    headline = ("mia_loss",)
    lower_means_known = MIA_SCORES
    raw_scores = MIA_SCORES  # mean scores in nats / z-units: check gates their AUCs (stages/privacy.py)

    def evaluate(self, vlm, questions: Sequence[Question], ctx: TaskContext) -> list[SampleResult]:
        self._check(questions)
        if not questions:
            return []
        prep = self.requests(vlm, questions, ctx, ImageDecoder(), self.metrics)
        stats = (
            vlm.answer_logprobs(
                prep.requests, [q.answer for q in prep.kept], ctx.batch_size, distribution=True, desc="membership"
            )
            if prep.kept
            else []
        )
        results = {}
        for q, h, st in zip(prep.kept, prep.hashes, stats):
            scores = membership_scores(st.logps, st.means, st.stds, q.answer)
            extra = {"token_logps": st.logps, "token_means": st.means, "token_stds": st.stds}
            results[q.qid] = self._result(q, h, "", dict(scores), extra)
        return [results.get(q.qid) or prep.excluded[q.qid] for q in questions]
