"""Multiple-choice classification, scored as the official MLLMU-Bench evaluation does.

Official parsing (`parse_letter`): text after the first "ASSISTANT:" (else after the first
"Answer:") when present, stripped; its first character, uppercased, is the answer if it is one
of A-D, else the answer is wrong. Consequences users should know (kept for comparability):
"b" and "B. Paris" / "B: ..." / "B)" count as B; "" counts as wrong; "(B)" and "The answer is B"
count as wrong; a response starting with a word such as "Because ..." counts as B.

Second scorer, log-likelihood: the four option letters (scorer "loglik") or the four option
texts (scorer "loglik_text", sum log-prob divided by the text's UTF-8 length, as lm-eval's
acc_norm, so long options are not penalised) are scored as continuations of the same prompt;
the argmax is the answer. Scorer "loglik_answer" asks the bare question (no options listed, same
image) and scores each option text as its answer (length-normalised), lm-eval's "cloze-style"
multiple choice: it measures whether the model knows the fact, independently of whether it can
read an option list (small models often cannot). The model adapter joins each continuation to the prompt the way it
joins training answers (harness.model scores " " + option).

Shots (`ctx.shots` = K > 0): per (set, mode), K example profiles of the same set are drawn with
a seeded RNG from the benchmark; the first question of each (in that mode) is prepended as a
completed exchange (its prompt followed by its answer letter) and every question of those
profiles is excluded from scoring, as the official code excludes its example profile: it still
gets a SampleResult (scores None, extra["excluded"]) so a run knows it was handled, and `n`
does not count it. The
official code draws its example unseeded from the retain profiles for every set; we draw from
the scored set itself, so examples never come from a set the model was asked to forget when
scoring another. Request holds one image, so image_text examples are text only (no example
image).
"""
from __future__ import annotations

import math
import random
from typing import Sequence

from harness.errors import ConfigError
from harness.prompts import classification_prompt
from harness.records import LETTERS, Question
from tasks.base import SampleResult, Task, TaskContext, _ImageCache, make_request, prompt_hash, register_task

SCORERS = {"generate": "accuracy", "loglik": "accuracy_loglik", "loglik_text": "accuracy_loglik_text",
           "loglik_answer": "accuracy_loglik_answer"}


def parse_letter(response: str) -> str | None:
    """Official first-letter parsing; None when the response does not start with A-D."""
    if "ASSISTANT:" in response:
        response = response.split("ASSISTANT:")[1]
    elif "Answer:" in response:
        response = response.split("Answer:")[1]
    response = response.strip()
    letter = response[0].upper() if response else ""
    return letter if letter in LETTERS else None


def shot_block(shots: Sequence[Question]) -> str:
    """Completed example exchanges placed before the question (same wording as the question)."""
    return "".join(f"{classification_prompt(s.text, s.options)}\n{s.answer}\n\n" for s in shots)


def choose_shots(bench, set_name: str, mode: str, k: int, seed: int) -> list[Question]:
    """The first classification question (in `mode`) of k profiles of `set_name`, drawn with
    an RNG seeded by (seed, set, mode) so a rerun or a resumed run picks the same profiles."""
    firsts: dict[str, Question] = {}
    for q in bench.questions(sets=(set_name,), tasks=("classification",), modes=(mode,)):
        firsts.setdefault(q.profile_id, q)
    if len(firsts) <= k:
        raise ConfigError(f"{k} shot(s) need more than {k} profiles with {mode} classification questions "
                          f"in set {set_name!r}; it has {len(firsts)}")
    rng = random.Random(f"shots/{seed}/{set_name}/{mode}")
    return [firsts[pid] for pid in rng.sample(sorted(firsts), k)]


@register_task
class ClassificationTask(Task):
    name = "classification"
    metrics = tuple(SCORERS.values())

    def evaluate(self, vlm, questions: Sequence[Question], ctx: TaskContext) -> list[SampleResult]:
        self._check(questions)
        unknown = [s for s in ctx.scorers if s not in SCORERS]
        if unknown or not ctx.scorers:
            raise ConfigError(f"unknown classification scorer(s) {unknown or '(none given)'}; "
                              f"known: {', '.join(SCORERS)}")
        for q in questions:
            if not q.options or set(q.options) != set(LETTERS) or q.answer not in LETTERS:
                raise ValueError(f"question {q.qid} needs options A-D and a correct letter")
        shots = self._plan_shots(questions, ctx)
        kept, reqs, hashes, extras, excluded = [], [], [], [], {}
        images = _ImageCache()
        for q in questions:
            examples = shots.get((q.set, q.mode), [])
            req = make_request(shot_block(examples) + classification_prompt(q.text, q.options), images.get(q))
            extra = {"shot_profiles": [s.profile_id for s in examples]} if examples else {}
            if q.profile_id in extra.get("shot_profiles", ()):  # an example profile is never scored
                excluded[q.qid] = self._result(q, prompt_hash(vlm, req, q.mode, q.image), "",
                                               dict.fromkeys(SCORERS[s] for s in ctx.scorers),
                                               {**extra, "excluded": "shot example profile"})
                continue
            kept.append(q)
            reqs.append(req)
            hashes.append(prompt_hash(vlm, req, q.mode, q.image))
            extras.append(extra)

        scores = [dict.fromkeys(SCORERS[s] for s in ctx.scorers) for _ in kept]
        responses = [""] * len(kept)
        if kept and "generate" in ctx.scorers:
            responses = vlm.generate(reqs, max_new_tokens=ctx.max_new_tokens, batch_size=ctx.batch_size,
                                     desc="classification")
            for q, r, sc, ex in zip(kept, responses, scores, extras):
                ex["letter"] = parse_letter(r)
                sc["accuracy"] = float(ex["letter"] == q.answer)
        if kept and "loglik" in ctx.scorers:
            lps = vlm.option_logprobs(reqs, [list(LETTERS) for _ in kept], batch_size=ctx.batch_size)
            for q, lp, sc, ex in zip(kept, lps, scores, extras):
                ex["letter_loglik"] = LETTERS[_argmax(lp)]
                sc["accuracy_loglik"] = float(ex["letter_loglik"] == q.answer)
        text_scorers = {"loglik_text": reqs,  # option texts after the same prompt
                        "loglik_answer": [make_request(q.text, req.image) for q, req in zip(kept, reqs)]}
        for scorer, scorer_reqs in text_scorers.items():
            if not (kept and scorer in ctx.scorers):
                continue
            texts = [[q.options[x] for x in LETTERS] for q in kept]
            lps = vlm.option_logprobs(scorer_reqs, texts, batch_size=ctx.batch_size)
            for q, lp, opts, sc, ex in zip(kept, lps, texts, scores, extras):
                per_byte = [v / max(1, len(o.encode("utf-8"))) for v, o in zip(lp, opts)]
                ex[f"letter_{scorer}"] = LETTERS[_argmax(per_byte)]
                sc[SCORERS[scorer]] = float(ex[f"letter_{scorer}"] == q.answer)
        scored = {q.qid: self._result(q, h, r, sc, ex) for q, h, r, sc, ex in
                  zip(kept, hashes, responses, scores, extras)}
        return [scored.get(q.qid) or excluded[q.qid] for q in questions]

    def _plan_shots(self, questions: Sequence[Question], ctx: TaskContext) -> dict[tuple[str, str], list[Question]]:
        if ctx.shots == 0:
            return {}
        if ctx.bench is None:
            raise ConfigError("classification shots need the benchmark (TaskContext.bench)")
        return {(s, m): choose_shots(ctx.bench, s, m, ctx.shots, ctx.seed)
                for s, m in sorted({(q.set, q.mode) for q in questions})}


def _argmax(values: Sequence[float]) -> int:
    """Index of the largest value; NaN never wins, ties go to the earliest option."""
    best, best_v = 0, -math.inf
    for i, v in enumerate(values):
        if v > best_v:
            best, best_v = i, v
    return best
