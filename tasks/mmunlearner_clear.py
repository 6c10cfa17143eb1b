"""MMUnlearner's scoring of CLEAR (Z1zs/MMUnlearner CLEAR_eval.py), for the `clear-mmunlearner`
protocol: identity and real-world multiple choice, and ROUGE / BLEU generation.

- `mmunlearner_face` / `mmunlearner_vqa`: the question, then one "A. option" line per option
  (built at load time with upstream's seed-42 order, benchmarks/clear.py), no instruction line;
  greedy decoding; the answer is the first alphanumeric character of the reply, upper-cased
  (harness.core.mmunlearner_choice); `accuracy` = it is the gold letter.
- `mmunlearner_generation`: a caption question with the image (image+text) or TOFU's question
  (text-only), greedy; ROUGE-1/2/L F-measure (stemmer on) and NLTK sentence BLEU with method1
  smoothing, the same scorers as MLLMU-Bench's generation task. Each reply is scored against its
  own reference (upstream's QA loop scored the last image reply instead: not reproduced).
"""

from __future__ import annotations

from typing import Sequence

from mmunlearn.harness.core.contracts import Prepared, SampleResult, Task, TaskContext, plain_requests, register_task
from mmunlearn.harness.core.mmunlearner_choice import format_prompt, parse_choice
from mmunlearn.harness.core.records import ImageDecoder, Question
from mmunlearn.tasks.generation import ROUGE_TYPES, bleu


class _Scored(Task):
    def user_text(self, q: Question) -> str:
        return q.text

    def requests(self, vlm, questions, ctx, images: ImageDecoder, excluded_scores=()) -> Prepared:
        """The user text with the question's image in the model's generic chat frame (no examples)."""
        return plain_requests(vlm, questions, images, self.user_text)


class MMUnlearnerChoiceTask(_Scored):
    """Multiple choice as CLEAR_eval.py's eval_classification(_real) asks and parses it."""

    metrics = ("accuracy",)

    def user_text(self, q: Question) -> str:
        return format_prompt(q.text, list((q.options or {}).values()))

    def evaluate(self, vlm, questions: Sequence[Question], ctx: TaskContext) -> list[SampleResult]:
        self._check(questions)
        for q in questions:
            if not q.options or q.answer not in q.options:
                raise ValueError(f"question {q.qid} needs lettered options and a correct letter")
        if not questions:
            return []
        prep = self.requests(vlm, questions, ctx, ImageDecoder())
        reqs, hashes = prep.requests, prep.hashes
        replies = vlm.generate(reqs, max_new_tokens=ctx.max_new_tokens, batch_size=ctx.batch_size, desc=self.name)
        results = []
        for q, h, reply in zip(questions, hashes, replies):
            letter = parse_choice(reply)
            results.append(self._result(q, h, reply, {"accuracy": float(letter == q.answer)}, {"letter": letter}))
        return results


@register_task
class MMUnlearnerFaceTask(MMUnlearnerChoiceTask):
    name = "mmunlearner_face"
    reads = "face"


@register_task
class MMUnlearnerVqaTask(MMUnlearnerChoiceTask):
    name = "mmunlearner_vqa"
    reads = "vqa"


@register_task
class MMUnlearnerGenerationTask(_Scored):
    name = "mmunlearner_generation"
    reads = "caption"
    metrics = ROUGE_TYPES + ("bleu",)
    headline = ("rougeL", "bleu")

    def __init__(self):
        from rouge_score import rouge_scorer

        self._rouge = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)

    def evaluate(self, vlm, questions: Sequence[Question], ctx: TaskContext) -> list[SampleResult]:
        self._check(questions)
        if not questions:
            return []
        prep = self.requests(vlm, questions, ctx, ImageDecoder())
        reqs, hashes = prep.requests, prep.hashes
        replies = vlm.generate(reqs, max_new_tokens=ctx.max_new_tokens, batch_size=ctx.batch_size, desc=self.name)
        results = []
        for q, h, reply in zip(questions, hashes, replies):
            rouge = self._rouge.score(q.answer, reply)
            scores = {**{t: rouge[t].fmeasure for t in ROUGE_TYPES}, "bleu": bleu(q.answer, reply)}
            results.append(self._result(q, h, reply, scores))
        return results


@register_task
class ClearRealWorldTask(MMUnlearnerChoiceTask):
    """CLEAR real_world as a utility suite (benchmarks/clear_real_world.py): the same multiple
    choice as `mmunlearner_vqa`, on the suite's own question type."""

    name = "clear_real_world"
    reads = "real_world_choice"
