"""LLM factuality judge (any OpenAI-compatible endpoint) for the generation task.

Why it is built this way:
- Failed calls are counted, never scored: a call that still fails after its retries (or whose
  reply carries no valid score) gets score None, and callers report how many failed.
- Retries are ours (the client's own are disabled so every attempt is counted): exponential
  backoff on 429, 408/409, 5xx, timeouts and connection errors; other errors fail at once, and an
  authentication/permission error stops all further calls (every answer would fail the same way).
  One answer never takes longer than `max_seconds` of wall time, attempts and backoff included,
  even against a server that hangs or trickles its reply (the client's timeout is per read).
- Replies are cached on disk, keyed by sha256 of (judge model, request body), one JSON file per
  request, written atomically: a rerun costs no calls. Failures are not cached, so a rerun retries
  them. The API key is read from the environment, is not part of the key or of any file, and is
  scrubbed from every error message.
- Scores are the judge's raw 1-10, and so are aggregates (the papers' scale).
- Two protocols (`JUDGE_PROTOCOLS`): "official" is the benchmark's `eval_gpt.py` (gpt-4o-mini,
  its rubric text word for word, its system message, `max_tokens` 700, its line-based parsing
  of the "Factuality Score" line); "strict" is ours (JSON-only reply, temperature 0, tolerant
  JSON parsing). Both count a reply without a valid 1-10 score as failed; the official script
  silently dropped it (and would have averaged an out-of-range score).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

SCORE_KEY = "Factuality Score"
MIN_SCORE, MAX_SCORE = 1, 10

SYSTEM_PROMPT = "You are a careful, strict grader of the factual accuracy of answers."
USER_TEMPLATE = """Rate how factually correct the generated answer is, compared with the ground truth answer to the question.

Question: {question}
Generated answer: {answer}
Ground truth: {ground_truth}

Rubric for the Factuality Score (an integer from 1 to 10):
10-9: fully correct; states the key facts of the ground truth with no error.
8-7: mostly correct; small omissions or minor inaccuracies.
6-5: partially correct; some key facts right, others missing or wrong.
4-3: mostly incorrect; only loosely related to the ground truth.
2-1: wrong, irrelevant, a refusal, or no answer.

Reply with JSON only, in this form:
{{"Factuality Score": <integer 1-10>, "Justification": "<one sentence>"}}"""

# The official eval_gpt.py rubric, character for character (a format template: {{ }} are braces).
OFFICIAL_SYSTEM_PROMPT = "You are an expert at evaluating the factuality of responses."
OFFICIAL_RUBRIC = (
    "\n"
    "        You will be provided with two types of questions: generation questions and description questions.\n"
    '        For each, you will evaluate the **factuality** of the "generated_answer" or "generated_description" \n'
    '        against the "ground_truth" or "ground_truth_description" respectively. Your task is to assess how well \n'
    "        the generated response aligns with the factual content of the ground truth and assign a **factuality score** \n"
    "        from 1 to 10 based on the following criteria:\n"
    "\n"
    "        1. **Factuality (core importance)**:\n"
    "        - **10-9:** The generated response is fully factually correct and has the same meaning as the ground truth, even if phrased differently.\n"
    "        - **8-7:** The response is mostly correct but may be missing minor details or contain slightly less important deviations.\n"
    "        - **6-5:** The response is partially correct but has a noticeable factual error or significant missing information.\n"
    "        - **4-3:** The response has major factual errors or lacks crucial elements of the ground truth.\n"
    "        - **2-1:** The response is nonsensical, completely incorrect, or irrelevant.\n"
    "\n"
    "        2. **Relevance and Detail**:\n"
    "        - More detail does not always improve the score; added details should be factually relevant.\n"
    "        - If the generated response contains excessive or irrelevant details (e.g., adding personal information when only appearance is requested), lower the score accordingly.\n"
    "\n"
    "        ### Task Type: {task_type}\n"
    "        - **Image ID**: {image_id}\n"
    "        - **Question**: {question}\n"
    "        - **Generated Answer**: {generated_answer}\n"
    "        - **Ground Truth**: {ground_truth}\n"
    "\n"
    "        Please evaluate the factuality of the generated response based on the rubric above, and return a score (1-10) along with a short justification.\n"
    "        Example Output:\n"
    "        {{\n"
    '            "Factuality Score": [Insert score from 1-10],\n'
    '            "Justification": "[Optional] Provide a brief justification explaining why the factuality score was assigned."\n'
    "        }}\n"
    "    "
)

_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?$")


@dataclass(frozen=True)
class JudgeResult:
    """score: raw 1-10, or None when the call failed (then `error` says why)."""

    score: float | None
    justification: str = ""
    error: str | None = None
    cached: bool = False


def build_messages(question: str, answer: str, ground_truth: str) -> list[dict]:
    user = USER_TEMPLATE.format(question=question, answer=answer, ground_truth=ground_truth)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def official_body(model: str, question: str, answer: str, ground_truth: str, image_id: str) -> dict:
    """The request eval_gpt.py sends for one generation answer (no temperature: the API default)."""
    user = OFFICIAL_RUBRIC.format(
        task_type="Generation", image_id=image_id, question=question, generated_answer=answer, ground_truth=ground_truth
    )
    return {
        "model": model,
        "messages": [{"role": "system", "content": OFFICIAL_SYSTEM_PROMPT}, {"role": "user", "content": user}],
        "max_tokens": 700,
    }


def strict_body(model: str, question: str, answer: str, ground_truth: str, image_id: str) -> dict:
    return {"model": model, "messages": build_messages(question, answer, ground_truth), "temperature": 0}


def parse_official_reply(text: str | None) -> tuple[float, str]:
    """eval_gpt.py's parsing: the first line containing "Factuality Score", its text after the
    last ':' without commas, as an int; the first line containing "Justification", after its
    first ':'. Anything else (no such line, a non-integer) is a failure, as there; a score
    outside 1-10 is a failure here too."""
    lines = (text or "").split("\n")
    score_lines = [line for line in lines if SCORE_KEY in line]
    justification_lines = [line for line in lines if "Justification" in line]
    if not score_lines or not justification_lines:
        raise ValueError(f"judge reply has no {SCORE_KEY!r} line and 'Justification' line")
    raw = score_lines[0].split(":")[-1].strip().replace(",", "")
    try:
        score = int(raw)
    except ValueError:
        raise ValueError(f"judge score {raw!r} is not an integer") from None
    if not MIN_SCORE <= score <= MAX_SCORE:
        raise ValueError(f"judge score {score} is outside {MIN_SCORE}-{MAX_SCORE}")
    return float(score), justification_lines[0].split(":", 1)[-1].strip()


def parse_reply(text: str | None) -> tuple[float, str]:
    """(score, justification) from a judge reply; ValueError when it holds no valid score.

    Accepts the JSON object inside code fences or surrounded by other text, and a score given
    as a number or a string such as "8" or "8/10". A score outside 1-10 is invalid.
    """
    if not text:
        raise ValueError("empty judge reply")
    obj = _first_json_object(text)
    if obj is None:
        raise ValueError("judge reply holds no JSON object")
    fields = {re.sub(r"[^a-z]", "", str(k).lower()): v for k, v in obj.items()}
    if "factualityscore" not in fields:
        raise ValueError(f"judge reply has no {SCORE_KEY!r}")
    raw = fields["factualityscore"]
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ValueError(f"judge score {raw!r} is not a number")
    if isinstance(raw, str):
        m = _NUMBER.match(raw)
        if not m:
            raise ValueError(f"judge score {raw!r} is not a number")
        raw = float(m.group(1))
    score = float(raw)
    if not MIN_SCORE <= score <= MAX_SCORE:
        raise ValueError(f"judge score {score:g} is outside {MIN_SCORE}-{MAX_SCORE}")
    justification = fields.get("justification", "")
    return score, justification if isinstance(justification, str) else json.dumps(justification)


def _first_json_object(text: str) -> dict | None:
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


@dataclass(frozen=True)
class JudgeProtocol:
    """How a judge is asked and how its reply is read."""

    name: str
    default_model: str
    body: Callable[[str, str, str, str, str], dict]  # (model, question, answer, truth, image_id)
    parse: Callable[[str | None], tuple[float, str]]


JUDGE_PROTOCOLS = {
    "official": JudgeProtocol("official", "gpt-4o-mini", official_body, parse_official_reply),
    "strict": JudgeProtocol("strict", "gpt-4o", strict_body, parse_reply),
}
DEFAULT_PROTOCOL = "official"
DEFAULT_MODEL = JUDGE_PROTOCOLS[DEFAULT_PROTOCOL].default_model


def get_protocol(name: str) -> JudgeProtocol:
    try:
        return JUDGE_PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown judge protocol {name!r}; known: {', '.join(JUDGE_PROTOCOLS)}") from None


class Judge:
    """Scores generated answers 1-10 against the ground truth with an LLM.

    `available` is False when there is neither an API key (in the environment variable named by
    `api_key_env`) nor a base URL (argument or OPENAI_BASE_URL): factuality is then not scored
    and everything else still runs.
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        protocol: str = DEFAULT_PROTOCOL,
        api_key_env: str = "OPENAI_API_KEY",
        cache_dir: str | os.PathLike | None = None,
        max_concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 60,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        give_up_after: int = 10,
        max_seconds: float = 300,
    ):
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0 or max_seconds <= 0:
            raise ValueError("judge needs max_concurrency >= 1, max_retries >= 0, timeout > 0 and max_seconds > 0")
        self.protocol = get_protocol(protocol)
        self.model = model or self.protocol.default_model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.api_key_env = api_key_env
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.max_concurrency, self.max_retries, self.timeout = max_concurrency, max_retries, timeout
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        # Wall-clock bound on one answer, every attempt and backoff included: `timeout` bounds each
        # read, not a request, so a server that trickles bytes or hangs between retries is cut here.
        self.max_seconds = max_seconds
        self.stats = {"calls": 0, "cache_hits": 0, "failures": 0}
        self._lock = threading.Lock()
        self._fatal: str | None = None
        # Circuit breaker: after this many answers in a row that failed even with retries (wrong
        # base URL, server down), stop calling, so a large run does not spend minutes per answer.
        self.give_up_after = give_up_after
        self._failed_in_a_row = 0
        self._client = None
        self.available = bool(os.environ.get(api_key_env) or self.base_url)

    def __repr__(self) -> str:  # never shows the key
        return (
            f"Judge(model={self.model!r}, protocol={self.protocol.name!r}, base_url={self.base_url!r}, "
            f"available={self.available})"
        )

    @classmethod
    def from_args(cls, model_or_none: str | None, **kwargs) -> "Judge | None":
        """CLI helper: None, "" or "none"/"off" disables judging; "auto" is the protocol's own judge
        model (gpt-4o-mini for "official"); any other value is the judge model."""
        if model_or_none is None or model_or_none.strip().lower() in ("", "none", "off"):
            return None
        model = model_or_none.strip()
        return cls(model=None if model.lower() == "auto" else model, **kwargs)

    # -- public API -------------------------------------------------------------------------
    def score(self, question: str, answer: str, ground_truth: str, image_id: str = "") -> JudgeResult:
        return self.score_many([(question, answer, ground_truth, image_id)])[0]

    def score_many(self, items: Sequence[tuple[str, ...]], desc: str | None = "judge") -> list[JudgeResult]:
        """Judge (question, answer, ground_truth[, image_id]) items, at most `max_concurrency` at a
        time (the official rubric names the profile's image ID)."""
        if not self.available:
            return [JudgeResult(None, error="judge not available (no API key and no base URL)") for _ in items]
        from mmunlearn.harness.core.progress import progress_bar

        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            futures = [pool.submit(self._score_one, *item) for item in items]
            results = [
                f.result() for f in progress_bar(futures, desc=desc, disable=desc is None or not items, leave=False)
            ]
        return results

    # -- internals --------------------------------------------------------------------------
    def _score_one(self, question: str, answer: str, ground_truth: str, image_id: str = "") -> JudgeResult:
        body = self.protocol.body(self.model, question, answer, ground_truth, image_id)
        key = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
        cached = self._cache_read(key)
        if cached is not None:
            with self._lock:
                self.stats["cache_hits"] += 1
            return cached
        try:
            reply = self._call(body)
            score, justification = self.protocol.parse(reply)
        except Exception as exc:  # every failure is counted, never scored
            error = self._scrub(f"{type(exc).__name__}: {exc}")
            with self._lock:
                self.stats["failures"] += 1
                self._failed_in_a_row += 1
                if self._failed_in_a_row >= self.give_up_after and not self._fatal:
                    self._fatal = f"{self._failed_in_a_row} answers in a row failed; last error: {error}"
            return JudgeResult(None, error=error)
        with self._lock:
            self._failed_in_a_row = 0
        try:
            self._cache_write(
                key, {"model": self.model, "score": score, "justification": justification, "reply": reply}
            )
        except OSError:
            pass  # full disk or unwritable cache: the score stands, a rerun asks again
        return JudgeResult(score, justification)

    def _call(self, body: dict) -> str:
        import openai

        retryable = (
            openai.RateLimitError,
            openai.APITimeoutError,
            openai.APIConnectionError,
            openai.InternalServerError,
            openai.ConflictError,
        )
        fatal = (openai.AuthenticationError, openai.PermissionDeniedError)
        attempt = 0
        deadline = time.monotonic() + self.max_seconds
        while True:
            if self._fatal:
                raise RuntimeError(f"judge disabled after an earlier error: {self._fatal}")
            with self._lock:
                self.stats["calls"] += 1
            error: openai.APIError
            try:
                resp = self._create(body, deadline - time.monotonic())
                return resp.choices[0].message.content or ""
            except fatal as exc:
                self._fatal = self._scrub(f"{type(exc).__name__}: {exc}")
                raise
            except openai.APIStatusError as exc:
                if not (isinstance(exc, retryable) or exc.status_code == 408 or exc.status_code >= 500):
                    raise
                error = exc
            except retryable as exc:
                error = exc
            delay = min(self.backoff_max, self.backoff_base * 2**attempt) * random.uniform(0.75, 1.25)
            if attempt >= self.max_retries or time.monotonic() + delay >= deadline:
                raise error
            time.sleep(delay)
            attempt += 1

    def _create(self, body: dict, seconds: float):
        """One request, given up after `seconds` of wall time (TimeoutError) however the server
        stalls; an abandoned request is left to end in its daemon thread."""
        if seconds <= 0:
            raise TimeoutError(f"no reply within max_seconds={self.max_seconds:g}")
        client, box = self._get_client(), {}

        def request():
            try:
                box["reply"] = client.chat.completions.create(**body, timeout=min(self.timeout, seconds))
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc

        worker = threading.Thread(target=request, name="judge-request", daemon=True)
        worker.start()
        worker.join(seconds)
        if worker.is_alive():
            raise TimeoutError(f"no complete reply within max_seconds={self.max_seconds:g}")
        if "error" in box:
            raise box["error"]
        return box["reply"]

    def _get_client(self):
        with self._lock:
            if self._client is None:
                import openai

                # A local OpenAI-compatible server may need no key; the client insists on one.
                self._client = openai.OpenAI(
                    api_key=os.environ.get(self.api_key_env) or "no-key",
                    base_url=self.base_url,
                    timeout=self.timeout,
                    max_retries=0,
                )
            return self._client

    def _scrub(self, message: str) -> str:
        secret = os.environ.get(self.api_key_env)
        if secret:
            message = message.replace(secret, "***")
        return message[:500]

    def _cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cache_read(self, key: str) -> JudgeResult | None:
        path = self._cache_path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            score = float(data["score"])
            if not MIN_SCORE <= score <= MAX_SCORE:
                raise ValueError(score)
            return JudgeResult(score, data.get("justification", ""), cached=True)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing, unreadable or invalid: call again

    def _cache_write(self, key: str, data: dict) -> None:
        path = self._cache_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def default_cache_dir() -> Path:
    """$MMUNLEARN_CACHE/judge, else $XDG_CACHE_HOME/mmunlearn/judge, else ~/.cache/mmunlearn/judge."""
    if os.environ.get("MMUNLEARN_CACHE"):
        return Path(os.environ["MMUNLEARN_CACHE"]) / "judge"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mmunlearn" / "judge"
