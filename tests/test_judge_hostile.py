"""A hostile judge endpoint: hangs, dropped connections, 429/500, a body trickled byte by byte,
non-JSON bodies, valid JSON with a score outside 1-10, text without a score. Each is retried
(where retrying can help) within a bounded total time per answer, then counted as failed: never
scored, never cached, never fatal to the run. Both judge protocols where parsing matters.

Everything runs against tests/fake_openai_server.py on 127.0.0.1 with sub-second timeouts.
"""

from __future__ import annotations

import time

import pytest

from mmunlearn.harness.core.judge import Judge
from tests.fake_openai_server import FakeOpenAIServer

KEY = "sk-test-hostile-0123456789"
ITEM = ("What is her job?", "She is a painter.", "She works as a painter.")
GOOD = {
    "official": '{\n    "Factuality Score": 8,\n    "Justification": "right job"\n}',
    "strict": '{"Factuality Score": 8, "Justification": "right job"}',
}
PROTOCOLS = ("official", "strict")
SLACK = 2.5  # seconds of scheduling slack on a loaded 2-core machine (unbounded would be 8-30 s)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def make_judge(server, tmp_path, **kw):
    kw = {
        "model": "judge-model",
        "base_url": server.base_url,
        "cache_dir": tmp_path / "cache",
        "max_retries": 2,
        "timeout": 0.4,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "max_concurrency": 2,
        "max_seconds": 3,
        **kw,
    }
    return Judge(**kw)


def timed(fn, *args):
    start = time.monotonic()
    out = fn(*args)
    return out, time.monotonic() - start


def assert_failed(judge, result, error_part):
    assert result.score is None and not result.cached
    assert error_part in result.error, result.error
    assert judge.stats["failures"] >= 1
    assert not list((judge.cache_dir).rglob("*.json"))  # a failure is never cached


# ---------------------------------------------------------------- transport faults: retried, bounded
def test_hanging_endpoint_is_retried_then_failed_within_the_bound(tmp_path):
    with FakeOpenAIServer(default=("hang", 30)) as server:
        judge = make_judge(server, tmp_path)
        result, elapsed = timed(judge.score, *ITEM)
        n = len(server.requests)
    assert_failed(judge, result, "Timeout")
    assert n == 3  # 1 call + 2 retries
    assert elapsed < 3 * 0.4 + SLACK


def test_total_time_per_answer_is_bounded_even_with_many_retries(tmp_path):
    """max_seconds caps one answer's attempts and backoff together: 20 retries of a 0.4 s
    timeout would take 8 s; the answer gives up after 1 s."""
    with FakeOpenAIServer(default=("hang", 30)) as server:
        judge = make_judge(server, tmp_path, max_retries=20, max_seconds=1.0)
        result, elapsed = timed(judge.score, *ITEM)
        n = len(server.requests)
    assert_failed(judge, result, "Timeout")
    assert 2 <= n <= 4 and elapsed < 1.0 + SLACK


def test_trickled_body_cannot_outlast_the_bound(tmp_path):
    """A body sent one byte every 0.1 s never trips the client's 0.4 s read timeout (it is per
    read, not total); the per-answer bound still ends the wait."""
    with FakeOpenAIServer(default=("drip", 0.1, GOOD["official"])) as server:
        judge = make_judge(server, tmp_path, max_seconds=1.5)
        result, elapsed = timed(judge.score, *ITEM)
    assert_failed(judge, result, "Timeout")
    assert elapsed < 1.5 + SLACK


def test_dropped_connections_are_retried_then_failed(tmp_path):
    with FakeOpenAIServer(default=("drop",)) as server:
        judge = make_judge(server, tmp_path)
        result, elapsed = timed(judge.score, *ITEM)
        n = len(server.requests)
    assert_failed(judge, result, "APIConnectionError")
    assert n == 3 and elapsed < SLACK


def test_a_dropped_connection_then_a_reply_is_scored(tmp_path):
    with FakeOpenAIServer([("drop",), ("hang", 30), ("ok", GOOD["official"])]) as server:
        judge = make_judge(server, tmp_path)
        result = judge.score(*ITEM)
    assert result.score == 8.0 and len(server.requests) == 3 and judge.stats["failures"] == 0


@pytest.mark.parametrize(
    "code,error", [(429, "RateLimitError"), (500, "InternalServerError"), (503, "InternalServerError")]
)
def test_rate_limits_and_server_errors_are_retried_then_failed(tmp_path, code, error):
    with FakeOpenAIServer(default=("status", code)) as server:
        judge = make_judge(server, tmp_path)
        result, elapsed = timed(judge.score, *ITEM)
        n = len(server.requests)
    assert_failed(judge, result, error)
    assert n == 3 and elapsed < SLACK


def test_429_and_500_then_a_reply_is_scored(tmp_path):
    with FakeOpenAIServer([("status", 429), ("status", 500), ("ok", GOOD["official"])]) as server:
        judge = make_judge(server, tmp_path)
        assert judge.score(*ITEM).score == 8.0
    assert judge.stats == {"calls": 3, "cache_hits": 0, "failures": 0}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_non_json_body_is_a_failure_not_a_crash(tmp_path, protocol):
    with FakeOpenAIServer(default=("raw", 200, "<html>502 Bad Gateway</html>")) as server:
        judge = make_judge(server, tmp_path, protocol=protocol)
        result = judge.score(*ITEM)
    assert result.score is None and result.error and judge.stats["failures"] == 1


# ---------------------------------------------------------------- replies without a valid score: not retried
OUT_OF_RANGE = {
    "official": [
        '{\n    "Factuality Score": 42,\n    "Justification": "x"\n}',
        '{\n    "Factuality Score": 0,\n    "Justification": "x"\n}',
        '{\n    "Factuality Score": -3,\n    "Justification": "x"\n}',
        '{\n    "Factuality Score": 10.5,\n    "Justification": "x"\n}',
    ],
    "strict": [
        '{"Factuality Score": 42, "Justification": "x"}',
        '{"Factuality Score": 0, "Justification": "x"}',
        '{"Factuality Score": -3}',
        '{"Factuality Score": 10.5}',
        '{"Factuality Score": 1e308}',
        '{"Factuality Score": NaN}',
    ],
}
NO_SCORE = [
    "I cannot grade this answer.",
    "",
    "Score: 8/10",
    '{"Justification": "fine"}',
    "{" * 5000,
    "Factuality Score\n",
    "\x00\xff" * 10,
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_score_outside_1_to_10_is_counted_failed_never_scored(tmp_path, protocol):
    replies = OUT_OF_RANGE[protocol]
    with FakeOpenAIServer([("ok", r) for r in replies]) as server:
        judge = make_judge(server, tmp_path, protocol=protocol, max_concurrency=1)
        results = judge.score_many([(f"q{i}", "a", "t") for i in range(len(replies))], desc=None)
        n = len(server.requests)
    assert [r.score for r in results] == [None] * len(replies)
    assert n == len(replies)  # a reply is not retried: asking again costs money for the same answer
    assert judge.stats["failures"] == len(replies)
    assert not list((tmp_path / "cache").rglob("*.json"))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reply_without_a_score_is_counted_failed_never_scored(tmp_path, protocol):
    with FakeOpenAIServer([("ok", r) for r in NO_SCORE]) as server:
        judge = make_judge(server, tmp_path, protocol=protocol, max_concurrency=1, give_up_after=100)
        results = judge.score_many([(f"q{i}", "a", "t") for i in range(len(NO_SCORE))], desc=None)
    assert [r.score for r in results] == [None] * len(NO_SCORE)
    assert all(r.error for r in results) and judge.stats["failures"] == len(NO_SCORE)


# ---------------------------------------------------------------- whole runs: bounded, never fatal
def test_dead_endpoint_costs_a_bounded_number_of_calls_and_time(tmp_path):
    """Every answer hangs: the circuit breaker stops calling after `give_up_after` answers in a
    row failed, so 40 answers cost 3 answers' worth of time, and all 40 are counted as failed."""
    with FakeOpenAIServer(default=("hang", 30), max_requests=50) as server:
        judge = make_judge(server, tmp_path, max_retries=1, max_concurrency=1, give_up_after=3, max_seconds=1)
        results, elapsed = timed(judge.score_many, [(f"q{i}", "a", "t") for i in range(40)], None)
        n, over = len(server.requests), server.over_budget
    assert all(r.score is None for r in results) and judge.stats["failures"] == 40
    assert n == 3 * 2 and over == 0
    assert elapsed < 3 * 1 + SLACK


def test_mixed_hostile_endpoint_through_the_generation_task(tmp_path):
    """The generation task scores what the judge scored, counts the rest as failed, and finishes."""
    from mmunlearn.harness.core.contracts import TaskContext, get_task
    from tests.test_tasks import FakeVLM, question

    pids = [f"p{i}" for i in range(7)]
    qs = [question("generation", pid=p, answer="She works as a painter.") for p in pids]
    vlm = FakeVLM({p: f"answer {p}" for p in pids})
    script = [
        ("ok", GOOD["official"]),  # p0: scored 8
        ("hang", 30),
        ("hang", 30),
        ("hang", 30),  # p1: timeouts, retries spent
        ("drop",),
        ("ok", GOOD["official"].replace("8", "3")),  # p2: dropped, then scored 3
        ("status", 429),
        ("status", 500),
        ("status", 500),  # p3: errors, retries spent
        ("ok", '{\n    "Factuality Score": 11,\n    "Justification": "x"\n}'),  # p4: out of range
        ("ok", "no score here"),  # p5: unparsable
        ("drip", 0.1, GOOD["official"]),
    ]  # p6: trickled past the bound
    with FakeOpenAIServer(script, default=("status", 400)) as server:
        judge = make_judge(server, tmp_path, max_concurrency=1, max_seconds=1.2, give_up_after=100)
        samples, elapsed = timed(get_task("generation").evaluate, vlm, qs, TaskContext(judge=judge))
    assert [s.scores["factuality"] for s in samples] == [8.0, None, 3.0, None, None, None, None]
    assert [s.extra["judge"] for s in samples] == ["scored", "failed", "scored", "failed", "failed", "failed", "failed"]
    agg = get_task("generation").aggregate(samples)
    assert agg["factuality"] == pytest.approx(5.5)
    assert (agg["factuality_scored"], agg["factuality_failed"]) == (2, 5)
    assert elapsed < 2 * 1.2 + 1 + 2 * SLACK


def test_unwritable_cache_does_not_lose_the_score(tmp_path):
    """A full disk or an unwritable cache folder costs the cache entry, not the paid-for score."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with FakeOpenAIServer(default=("ok", GOOD["official"])) as server:
        judge = make_judge(server, tmp_path, cache_dir=blocker / "cache")
        assert judge.score(*ITEM).score == 8.0
        assert judge.score(*ITEM).score == 8.0  # not cached: asked again
        assert len(server.requests) == 2 and judge.stats["failures"] == 0
