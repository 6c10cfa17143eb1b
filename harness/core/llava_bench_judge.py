"""LLaVA-Bench (in-the-wild): the original GPT-4 review protocol, on the harness's judge transport.

The protocol (LLaVA `llava/eval/eval_gpt_review_bench.py` and `summarize_gpt_review.py`):
- one request per question: the system message below, temperature 0.2, `max_tokens` 1024, and a
  user message built from the image's caption(s), the question, the reference (GPT-4) answer as
  "Assistant 1", the evaluated model's answer as "Assistant 2", and the category's rule text from
  `llava/eval/table/rule.json` (`llava_bench_conv` / `_detail` / `_complex`);
- the judge answers a first line holding two scores, "<reference> <model>";
- per category and over all questions, the relative score is mean(model) / mean(reference) x 100,
  each mean rounded to 3 decimals first, the ratio rounded to 1 decimal.

The original judge model is `gpt-4-0314` (the default here, so a run that names no model asks for
the judge of the published numbers). OpenAI has retired that snapshot: pass the judge model you
can use, and report it next to the scores, since relative scores move with the judge.

Where this differs from the original (it changes no score that the original computed correctly):
- A reply the parser cannot read is asked again (`parse_retries` fresh calls, 2 by default, each
  going past the disk cache), then counted as failed. The original recorded [-1, -1] and averaged
  it in: one failure among 60 questions lowers the reference mean and moves the relative score,
  and a run whose every call failed reports 100.0. Here failed questions are never averaged in,
  and a category with no scored question is None (not available).
- Scores outside 1-10 (the rule's scale) or not finite count as unreadable, as in the harness's
  factuality judge; the original would average them in.
- Transport as `judge.Judge`: bounded retries with backoff on 429/5xx/timeouts, a wall-clock bound
  per call, a circuit breaker, replies cached on disk keyed by sha256 of the request body (a rerun
  costs no calls), the API key read from the environment and never written anywhere.

`parse_score_lmms` is lmms-eval's lenient parser (first two numbers of the first line), for users
comparing with lmms-eval's `llava_in_the_wild` numbers; note that lmms-eval 0.7.3 also changes the
request (no system message, temperature 0, judge `gpt-4o-2024-11-20`), so it is not the original
protocol even with the original parser.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from mmunlearn.harness.core.judge import Judge

ORIGINAL_JUDGE_MODEL = "gpt-4-0314"  # retired by OpenAI: pass a model you can use
SYSTEM_PROMPT = "You are a helpful and precise assistant for checking the quality of the answer."
TEMPERATURE = 0.2
MAX_TOKENS = 1024
CATEGORIES = ("conv", "detail", "complex")
MIN_SCORE, MAX_SCORE = 1.0, 10.0

# Data the protocol requires, quoted from haotian-liu/LLaVA `llava/eval/table/rule.json` (@ c121f04):
# the entries "llava_bench_conv", "llava_bench_detail" and "llava_bench_complex" have the same
# role ("Assistant") and the same prompt, this text (the space before the first "\n" is in the file).
_LLAVA_BENCH_PROMPT = (
    "We would like to request your feedback on the performance of two AI assistants in response to the "
    "user question displayed above. The user asks the question on observing an image. For your reference, "
    "the visual content in the image is represented with a few sentences describing the image. \n"
    "Please rate the helpfulness, relevance, accuracy, level of details of their responses. Each assistant "
    "receives an overall score on a scale of 1 to 10, where a higher score indicates better overall "
    "performance.\n"
    "Please first output a single line containing only two values indicating the scores for Assistant 1 "
    "and 2, respectively. The two scores are separated by a space.\n"
    "In the subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any "
    "potential bias and ensuring that the order in which the responses were presented does not affect "
    "your judgment."
)
RULES: dict[str, dict[str, str]] = {
    category: {"role": "Assistant", "prompt": _LLAVA_BENCH_PROMPT} for category in CATEGORIES
}


def _caption_text(caption: str | Sequence[str]) -> str:
    """The original joins a list of captions with newlines and takes a string as it is."""
    return caption if isinstance(caption, str) else "\n".join(caption)


def build_content(caption: str | Sequence[str], question: str, reference: str, answer: str, category: str) -> str:
    """The user message of one review: Assistant 1 is the reference (GPT-4) answer, Assistant 2 the
    evaluated model's answer."""
    try:
        rule = RULES[category]
    except KeyError:
        raise ValueError(f"unknown LLaVA-Bench category {category!r}; known: {', '.join(CATEGORIES)}") from None
    role, prompt = rule["role"], rule["prompt"]
    return "".join(
        [
            f"[Context]\n{_caption_text(caption)}\n\n",
            f"[Question]\n{question}\n\n",
            f"[{role} 1]\n{reference}\n\n[End of {role} 1]\n\n",
            f"[{role} 2]\n{answer}\n\n[End of {role} 2]\n\n",
            f"[System]\n{prompt}\n\n",
        ]
    )


def request_body(
    model: str, caption: str | Sequence[str], question: str, reference: str, answer: str, category: str
) -> dict:
    """The chat-completions request of the original script for one question."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": build_content(caption, question, reference, answer, category)},
        ],
        "temperature": TEMPERATURE,
        "max_tokens": MAX_TOKENS,
    }


def parse_score_original(text: str | None) -> tuple[float, float] | None:
    """(reference score, model score) as `eval_gpt_review_bench.py`'s `parse_score` reads them: the
    first line, commas turned into spaces, split on single spaces; exactly two pieces, each a float.
    None where the original returns its failure value [-1, -1]: "8, 6" (three pieces: "8", "", "6"),
    "8 6 " (a trailing space makes a third, empty piece), "Score: 8/10"."""
    if text is None:
        return None
    pieces = text.split("\n")[0].replace(",", " ").split(" ")
    if len(pieces) != 2:
        return None
    try:
        return float(pieces[0]), float(pieces[1])
    except ValueError:
        return None


_LMMS_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_score_lmms(text: str | None) -> tuple[float, float] | None:
    """lmms-eval's lenient reading (`llava-in-the-wild/utils.py` `_parse_comparative_scores`, 0.7.3):
    the reply stripped, its first line with ',' and ';' turned into spaces, the first two numbers
    found in it. None where lmms-eval returns [-1, -1]. "8, 6" and "8 6 " give (8, 6); "Score: 8/10"
    gives (8, 10), a pair the original rejects."""
    if text is None:
        return None
    line = text.strip().split("\n")[0].replace(",", " ").replace(";", " ")
    numbers = _LMMS_NUMBER.findall(line)
    if len(numbers) < 2:
        return None
    return float(numbers[0]), float(numbers[1])


PARSERS: dict[str, Callable[[str | None], tuple[float, float] | None]] = {
    "original": parse_score_original,
    "lmms": parse_score_lmms,
}


def valid_pair(pair: tuple[float, float] | None) -> bool:
    """Both scores finite and on the rule's 1-10 scale."""
    return pair is not None and all(math.isfinite(s) and MIN_SCORE <= s <= MAX_SCORE for s in pair)


@dataclass(frozen=True)
class ReviewResult:
    """scores: (reference, model) on 1-10, or None when the question could not be scored (then
    `error` says why). `review` is the judge's reply (the last one read, when none could be)."""

    scores: tuple[float, float] | None
    review: str = ""
    error: str | None = None
    cached: bool = False
    calls: int = 0  # replies asked for this question (0 when cached), not counting transport retries


class LlavaBenchJudge:
    """Reviews LLaVA-Bench answers with the original protocol.

    Built on a `judge.Judge` (its transport, cache, circuit breaker and key handling): every keyword
    argument other than `model`, `parser` and `parse_retries` goes to `Judge` (base_url,
    api_key_env, cache_dir, max_concurrency, max_retries, timeout, max_seconds, ...).
    `available` is False without an API key and base URL, as for `Judge`: nothing is called and
    every question is a failure, so every relative score is None.
    """

    def __init__(self, model: str | None = None, parser: str = "original", parse_retries: int = 2, **judge_kwargs):
        if parser not in PARSERS:
            raise ValueError(f"unknown score parser {parser!r}; known: {', '.join(PARSERS)}")
        if parse_retries < 0:
            raise ValueError("parse_retries must be >= 0")
        if "protocol" in judge_kwargs:
            raise ValueError("LlavaBenchJudge has one protocol, the original one: do not pass `protocol`")
        self.transport = Judge(model=model or ORIGINAL_JUDGE_MODEL, **judge_kwargs)
        self.parser_name, self.parse = parser, PARSERS[parser]
        self.parse_retries = parse_retries
        self.unreadable_replies = 0

    @property
    def model(self) -> str:
        return self.transport.model

    @property
    def available(self) -> bool:
        return self.transport.available

    @property
    def stats(self) -> dict[str, int]:
        """calls (HTTP requests, transport retries included), cache_hits, failures (questions not
        scored), unreadable_replies (replies the parser could not read, retried or not)."""
        with self.transport._lock:
            return {**self.transport.stats, "unreadable_replies": self.unreadable_replies}

    def __repr__(self) -> str:  # never shows the key
        t = self.transport
        return (
            f"LlavaBenchJudge(model={t.model!r}, parser={self.parser_name!r}, base_url={t.base_url!r}, "
            f"available={t.available})"
        )

    # -- public API -------------------------------------------------------------------------
    def review(
        self, caption: str | Sequence[str], question: str, reference: str, answer: str, category: str
    ) -> ReviewResult:
        return self.review_many([(caption, question, reference, answer, category)], desc=None)[0]

    def review_many(self, items: Sequence[tuple], desc: str | None = "llava-bench judge") -> list[ReviewResult]:
        """Review (caption, question, reference, answer, category) items, at most the transport's
        `max_concurrency` at a time. A bad category raises before any call."""
        bodies = [request_body(self.model, *item) for item in items]
        if not self.available:
            return [ReviewResult(None, error="judge not available (no API key and no base URL)") for _ in bodies]
        from mmunlearn.harness.core.progress import progress_bar

        with ThreadPoolExecutor(max_workers=self.transport.max_concurrency) as pool:
            futures = [pool.submit(self._review_one, body) for body in bodies]
            return [
                f.result() for f in progress_bar(futures, desc=desc, disable=desc is None or not items, leave=False)
            ]

    # -- internals (the transport's own machinery, as `Judge._score_one` uses it) --------------
    def _review_one(self, body: dict) -> ReviewResult:
        t = self.transport
        key = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
        cached = self._cache_read(key)
        if cached is not None:
            with t._lock:
                t.stats["cache_hits"] += 1
            return cached
        reply, error, calls = "", "", 0
        for _ in range(1 + self.parse_retries):  # each try is a fresh call: failures are never cached
            calls += 1
            try:
                reply = t._call(body)
            except Exception as exc:  # transport failure after its own retries: counted, never scored
                error = t._scrub(f"{type(exc).__name__}: {exc}")
                break
            pair = self.parse(reply)
            if valid_pair(pair):
                assert pair is not None
                return self._scored(key, pair, reply, calls)
            with t._lock:
                self.unreadable_replies += 1
            first_line = t._scrub(reply.split("\n")[0][:80])
            error = (
                f"judge reply has no two scores on its first line ({self.parser_name} parser): {first_line!r}"
                if pair is None
                else f"judge scores {pair[0]:g} {pair[1]:g} are not both within 1-10"
            )
        with t._lock:
            t.stats["failures"] += 1
            t._failed_in_a_row += 1
            if t._failed_in_a_row >= t.give_up_after and not t._fatal:
                t._fatal = f"{t._failed_in_a_row} answers in a row failed; last error: {error}"
        return ReviewResult(None, reply, error=error, calls=calls)

    def _scored(self, key: str, pair: tuple[float, float], reply: str, calls: int) -> ReviewResult:
        t = self.transport
        with t._lock:
            t._failed_in_a_row = 0
        try:
            t._cache_write(
                key, {"model": t.model, "protocol": "llava_bench_original", "scores": list(pair), "reply": reply}
            )
        except OSError:
            pass  # full disk or unwritable cache: the scores stand, a rerun asks again
        return ReviewResult(pair, reply, calls=calls)

    def _cache_read(self, key: str) -> ReviewResult | None:
        """The cached reply, read again with this judge's parser: a reply cached under the lenient
        parser that the original one cannot read is a miss (a fresh call), never a score."""
        try:
            data = json.loads(self.transport._cache_path(key).read_text(encoding="utf-8"))
            reply = data["reply"]
            pair = self.parse(reply) if isinstance(reply, str) else None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return ReviewResult(pair, reply, cached=True) if valid_pair(pair) else None


# -- scores ---------------------------------------------------------------------------------
def _pair(item: Any) -> tuple[float, float] | None:
    """A (reference, model) pair from a pair, None (a failed question) or a ReviewResult."""
    if item is None:
        return None
    if isinstance(item, ReviewResult):
        return item.scores
    reference, model = item
    return float(reference), float(model)


def _relative(pairs: list[tuple[float, float]]) -> tuple[float | None, float | None, float | None]:
    """(relative, reference mean, model mean): the means rounded to 3 decimals, then
    round(model / reference * 100, 1), as `summarize_gpt_review.py` (numpy's mean there, an exactly
    rounded sum here: the same for scores with few decimals). None without scored pairs."""
    if not pairs:
        return None, None, None
    reference = round(math.fsum(p[0] for p in pairs) / len(pairs), 3)
    model = round(math.fsum(p[1] for p in pairs) / len(pairs), 3)
    if reference == 0:
        return None, reference, model
    return round(model / reference * 100, 1), reference, model


def relative_scores(pairs_by_category: Mapping[str, Iterable[Any]]) -> dict[str, float | None]:
    """{category: relative score, "all": relative score} over scored questions only.

    Each item is a (reference, model) pair, a ReviewResult, or None for a failed question; failed
    questions are left out of every mean. A category (or "all") without one scored question is None,
    not available. "all" pools the questions of every category given, as the original does."""
    return {k: v["relative"] for k, v in summarize(pairs_by_category).items()}


def summarize(pairs_by_category: Mapping[str, Iterable[Any]]) -> dict[str, dict[str, Any]]:
    """Per category and "all": relative score, reference and model means (3 decimals), scored and
    failed counts. The original's summary also prints each mean x 10, rounded to 1 decimal."""
    out: dict[str, dict[str, Any]] = {}
    pooled: list[tuple[float, float]] = []
    failed_all = 0
    for category, items in pairs_by_category.items():
        if category == "all":
            raise ValueError('"all" is computed here, over every category: do not pass it')
        pairs = [_pair(item) for item in items]
        scored = [p for p in pairs if p is not None]
        failed = len(pairs) - len(scored)
        pooled.extend(scored)
        failed_all += failed
        out[category] = _summary(scored, failed)
    out["all"] = _summary(pooled, failed_all)
    return out


def _summary(scored: list[tuple[float, float]], failed: int) -> dict[str, Any]:
    relative, reference, model = _relative(scored)
    return {"relative": relative, "reference": reference, "model": model, "scored": len(scored), "failed": failed}


def review_rows(judge: LlavaBenchJudge, rows: Iterable[Mapping[str, Any]], answers: Mapping[Any, str]):
    """Review rows in the layout of `lmms-lab/llava-bench-in-the-wild` (`question_id`, `question`,
    `caption`, `gpt_answer`, `category`) against `answers[question_id]`; returns
    ({category: [ReviewResult, ...]}, [ReviewResult, ...] in row order). A row without an answer
    raises (a missing answer is not a judge failure)."""
    rows = list(rows)
    missing = [row["question_id"] for row in rows if row["question_id"] not in answers]
    if missing:
        raise KeyError(f"no model answer for question_id(s) {missing[:10]}")
    items = [
        (row["caption"], row["question"], row["gpt_answer"], answers[row["question_id"]], row["category"])
        for row in rows
    ]
    results = judge.review_many(items)
    by_category: dict[str, list[ReviewResult]] = {}
    for row, result in zip(rows, results):
        by_category.setdefault(row["category"], []).append(result)
    return by_category, results
