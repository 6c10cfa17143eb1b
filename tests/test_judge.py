"""Factuality judge against a scripted OpenAI-compatible server on 127.0.0.1 (no network)."""
from __future__ import annotations

import time

import pytest

from harness.judge import Judge, JudgeResult, normalise, parse_reply
from tests.fake_openai_server import FakeOpenAIServer

KEY = "sk-test-DO-NOT-LEAK-0123456789abcdef"
GOOD = '{"Factuality Score": 8, "Justification": "right job"}'
ITEM = ("What is her job?", "She is a painter.", "She works as a painter.")


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def make_judge(server, tmp_path, **kw):
    kw = {"model": "judge-model", "base_url": server.base_url, "cache_dir": tmp_path / "cache",
          "max_retries": 3, "timeout": 5, "backoff_base": 0.001, "max_concurrency": 2, **kw}
    return Judge(**kw)


@pytest.mark.parametrize("reply,score", [
    (GOOD, 8.0),
    ('```json\n{"Factuality Score": 9, "Justification": "ok"}\n```', 9.0),
    ('Here is my verdict: {"Factuality Score": "3", "Justification": "no"} Hope it helps.', 3.0),
    ('{"factuality_score": "10/10", "justification": "exact"}', 10.0),
    ('{"Factuality Score": 1, "Justification": "wrong"}', 1.0),
])
def test_parse_reply_accepts_fenced_wrapped_and_string_scores(reply, score):
    assert parse_reply(reply)[0] == score


@pytest.mark.parametrize("reply", [
    "", "The answer is correct, 9/10.", '{"Factuality Score": 11}', '{"Factuality Score": 0}',
    '{"Factuality Score": "high"}', '{"Factuality Score": true}', '{"Justification": "no score"}',
    "{'Factuality Score': 8}",
])
def test_parse_reply_rejects_replies_without_a_valid_score(reply):
    with pytest.raises(ValueError):
        parse_reply(reply)


def test_normalise_maps_the_rubric_onto_unit_interval():
    assert (normalise(1), normalise(10), normalise(5.5)) == (0.0, 1.0, 0.5)


def test_success_sends_question_answer_truth_rubric_and_key(tmp_path):
    with FakeOpenAIServer([("ok", GOOD)]) as server:
        result = make_judge(server, tmp_path).score(*ITEM)
    assert result == JudgeResult(8.0, "right job")
    [(path, headers, body)] = server.requests
    assert path == "/v1/chat/completions" and body["model"] == "judge-model" and body["temperature"] == 0
    assert headers["authorization"] == f"Bearer {KEY}"
    prompt = body["messages"][-1]["content"]
    for text in ITEM + ("10-9", "2-1", '"Factuality Score"', '"Justification"'):
        assert text in prompt


def test_malformed_reply_is_a_counted_failure_and_not_cached(tmp_path):
    with FakeOpenAIServer([("ok", "I think it is right. Score: 8")] * 2) as server:
        judge = make_judge(server, tmp_path)
        result = judge.score(*ITEM)
        assert result.score is None and "no JSON object" in result.error
        assert judge.stats["failures"] == 1 and len(server.requests) == 1  # a reply is not retried
        judge.score(*ITEM)
        assert len(server.requests) == 2  # failures are asked again on a rerun


def test_rate_limit_is_retried_with_backoff(tmp_path):
    with FakeOpenAIServer([("status", 429), ("status", 429), ("ok", GOOD)]) as server:
        judge = make_judge(server, tmp_path)
        assert judge.score(*ITEM).score == 8.0
    assert len(server.requests) == 3 and judge.stats == {"calls": 3, "cache_hits": 0, "failures": 0}


def test_server_errors_until_give_up_are_a_counted_failure(tmp_path):
    with FakeOpenAIServer(default=("status", 500)) as server:
        judge = make_judge(server, tmp_path, max_retries=2)
        result = judge.score(*ITEM)
    assert result.score is None and "InternalServerError" in result.error
    assert len(server.requests) == 3  # 1 call + 2 retries, the client's own retries are off
    assert judge.stats["failures"] == 1


def test_judge_stops_calling_after_repeated_failures(tmp_path):
    """A dead server costs a bounded number of calls, and the rest are still counted as failed."""
    with FakeOpenAIServer(default=("status", 500)) as server:
        judge = make_judge(server, tmp_path, max_retries=1, max_concurrency=1, give_up_after=2)
        results = judge.score_many([(f"q{i}", "a", "gt") for i in range(6)], desc=None)
    assert all(r.score is None for r in results) and judge.stats["failures"] == 6
    assert len(server.requests) == 4  # two answers x (1 call + 1 retry), then no more calls
    assert "in a row failed" in results[-1].error


def test_client_errors_are_not_retried(tmp_path):
    with FakeOpenAIServer(default=("status", 400)) as server:
        result = make_judge(server, tmp_path).score(*ITEM)
    assert result.score is None and "BadRequestError" in result.error and len(server.requests) == 1


def test_timeouts_are_retried_then_fail(tmp_path):
    with FakeOpenAIServer(default=("sleep", 5, GOOD)) as server:
        judge = make_judge(server, tmp_path, timeout=0.2, max_retries=1)
        start = time.monotonic()
        result = judge.score(*ITEM)
        elapsed = time.monotonic() - start
    assert result.score is None and "Timeout" in result.error
    assert len(server.requests) == 2 and elapsed < 3


def test_cache_makes_a_rerun_free_and_is_keyed_by_judge_model(tmp_path):
    with FakeOpenAIServer() as server:
        first = make_judge(server, tmp_path).score_many([ITEM, ITEM[:2] + ("other truth",)])
        assert len(server.requests) == 2
        again = make_judge(server, tmp_path)
        assert again.score_many([ITEM, ITEM[:2] + ("other truth",)]) == [
            JudgeResult(r.score, r.justification, cached=True) for r in first]
        assert len(server.requests) == 2 and again.stats["cache_hits"] == 2
        make_judge(server, tmp_path, model="another-judge").score(*ITEM)
        assert len(server.requests) == 3
    assert not list((tmp_path / "cache").rglob(".tmp-*"))  # atomic writes leave no temp files


def test_concurrency_is_bounded(tmp_path):
    with FakeOpenAIServer(default=("sleep", 0.15, GOOD)) as server:
        judge = make_judge(server, tmp_path, max_concurrency=2)
        results = judge.score_many([(f"q{i}", "a", "t") for i in range(4)])
    assert [r.score for r in results] == [8.0] * 4
    assert server.max_in_flight == 2  # parallel, but never more than max_concurrency


def test_authentication_error_stops_further_calls_and_the_key_never_leaks(tmp_path):
    with FakeOpenAIServer([("ok", GOOD)], default=("echo_key", 401)) as server:
        judge = make_judge(server, tmp_path, max_concurrency=1)
        results = judge.score_many([(f"q{i}", "a", "t") for i in range(4)])
    assert results[0].score == 8.0
    assert [r.score for r in results[1:]] == [None] * 3
    assert len(server.requests) == 2  # no calls after the key was refused
    assert "Incorrect API key" in results[1].error  # the server's message is kept ...
    for text in [r.error or "" for r in results] + [repr(judge)]:
        assert KEY not in text  # ... with the key scrubbed
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and all(KEY.encode() not in p.read_bytes() for p in files)


def test_without_key_or_base_url_the_judge_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY")
    judge = Judge(cache_dir=tmp_path)
    assert not judge.available
    [result] = judge.score_many([ITEM])
    assert result.score is None and "not available" in result.error
    assert Judge(base_url="http://127.0.0.1:9/v1", cache_dir=tmp_path).available  # local server, no key


def test_from_args():
    assert Judge.from_args(None) is None and Judge.from_args("none") is None
    judge = Judge.from_args("gpt-4o-mini", max_retries=1)
    assert (judge.model, judge.max_retries) == ("gpt-4o-mini", 1)
