"""Factuality judge against a scripted OpenAI-compatible server on 127.0.0.1 (no network).

Two protocols: "official" (eval_gpt.py: gpt-4o-mini, its rubric and system message, max_tokens
700, its line-based parsing) and "strict" (JSON-only reply, temperature 0, gpt-4o)."""

from __future__ import annotations

import time

import pytest

from mmunlearn.harness.core.judge import Judge, JudgeResult, official_body, parse_official_reply, parse_reply
from tests.fake_openai_server import FakeOpenAIServer

KEY = "sk-test-DO-NOT-LEAK-0123456789abcdef"
# What gpt-4o-mini typically answers to the official rubric: its example output, filled in.
# Both protocols read it (the official one line by line, the strict one as JSON).
GOOD = '{\n    "Factuality Score": 8,\n    "Justification": "right job"\n}'
ONE_LINE = '{"Factuality Score": 8, "Justification": "right job"}'  # the strict protocol's reply format
ITEM = ("What is her job?", "She is a painter.", "She works as a painter.")


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def make_judge(server, tmp_path, **kw):
    kw = {
        "model": "judge-model",
        "base_url": server.base_url,
        "cache_dir": tmp_path / "cache",
        "max_retries": 3,
        "timeout": 5,
        "backoff_base": 0.001,
        "max_concurrency": 2,
        **kw,
    }
    return Judge(**kw)


@pytest.mark.parametrize(
    "reply,score",
    [
        (GOOD, 8.0),
        ('```json\n{"Factuality Score": 9, "Justification": "ok"}\n```', 9.0),
        ('Here is my verdict: {"Factuality Score": "3", "Justification": "no"} Hope it helps.', 3.0),
        ('{"factuality_score": "10/10", "justification": "exact"}', 10.0),
        ('{"Factuality Score": 1, "Justification": "wrong"}', 1.0),
    ],
)
def test_parse_reply_accepts_fenced_wrapped_and_string_scores(reply, score):
    assert parse_reply(reply)[0] == score


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "The answer is correct, 9/10.",
        '{"Factuality Score": 11}',
        '{"Factuality Score": 0}',
        '{"Factuality Score": "high"}',
        '{"Factuality Score": true}',
        '{"Justification": "no score"}',
        "{'Factuality Score': 8}",
    ],
)
def test_parse_reply_rejects_replies_without_a_valid_score(reply):
    with pytest.raises(ValueError):
        parse_reply(reply)


# eval_gpt.py's prompt, as published (f-string braces doubled there, single here).
OFFICIAL_RUBRIC = """
        You will be provided with two types of questions: generation questions and description questions.
        For each, you will evaluate the **factuality** of the "generated_answer" or "generated_description" 
        against the "ground_truth" or "ground_truth_description" respectively. Your task is to assess how well 
        the generated response aligns with the factual content of the ground truth and assign a **factuality score** 
        from 1 to 10 based on the following criteria:

        1. **Factuality (core importance)**:
        - **10-9:** The generated response is fully factually correct and has the same meaning as the ground truth, even if phrased differently.
        - **8-7:** The response is mostly correct but may be missing minor details or contain slightly less important deviations.
        - **6-5:** The response is partially correct but has a noticeable factual error or significant missing information.
        - **4-3:** The response has major factual errors or lacks crucial elements of the ground truth.
        - **2-1:** The response is nonsensical, completely incorrect, or irrelevant.

        2. **Relevance and Detail**:
        - More detail does not always improve the score; added details should be factually relevant.
        - If the generated response contains excessive or irrelevant details (e.g., adding personal information when only appearance is requested), lower the score accordingly.

        ### Task Type: Generation
        - **Image ID**: 42
        - **Question**: What is her job?
        - **Generated Answer**: She is a painter.
        - **Ground Truth**: She works as a painter.

        Please evaluate the factuality of the generated response based on the rubric above, and return a score (1-10) along with a short justification.
        Example Output:
        {
            "Factuality Score": [Insert score from 1-10],
            "Justification": "[Optional] Provide a brief justification explaining why the factuality score was assigned."
        }
    """  # noqa: W291 - the trailing spaces are part of the published rubric


def test_official_body_is_eval_gpt_py_request():
    body = official_body("gpt-4o-mini", *ITEM, "42")
    assert body == {
        "model": "gpt-4o-mini",
        "max_tokens": 700,
        "messages": [
            {"role": "system", "content": "You are an expert at evaluating the factuality of responses."},
            {"role": "user", "content": OFFICIAL_RUBRIC},
        ],
    }  # no temperature: the API default, as there


def test_official_protocol_is_the_default_and_sends_eval_gpt_py_request(tmp_path):
    with FakeOpenAIServer([("ok", GOOD)]) as server:
        judge = make_judge(server, tmp_path, model=None)
        assert (judge.model, judge.protocol.name) == ("gpt-4o-mini", "official")
        result = judge.score(*ITEM, image_id="42")
    assert result == JudgeResult(8.0, '"right job"')  # eval_gpt.py keeps the justification's quotes
    [(path, headers, body)] = server.requests
    assert path == "/v1/chat/completions" and headers["authorization"] == f"Bearer {KEY}"
    assert body == official_body("gpt-4o-mini", *ITEM, "42") and "temperature" not in body
    assert body["messages"][1]["content"] == OFFICIAL_RUBRIC


def test_strict_protocol_sends_question_answer_truth_rubric_and_key(tmp_path):
    with FakeOpenAIServer([("ok", ONE_LINE)]) as server:
        result = make_judge(server, tmp_path, protocol="strict").score(*ITEM)
    assert result == JudgeResult(8.0, "right job")
    [(path, headers, body)] = server.requests
    assert path == "/v1/chat/completions" and body["model"] == "judge-model" and body["temperature"] == 0
    assert headers["authorization"] == f"Bearer {KEY}" and "max_tokens" not in body
    prompt = body["messages"][-1]["content"]
    for text in ITEM + ("10-9", "2-1", '"Factuality Score"', '"Justification"'):
        assert text in prompt
    assert Judge(protocol="strict", cache_dir=tmp_path).model == "gpt-4o"  # its default model


def test_unknown_protocol_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown judge protocol 'loose'; known: official, strict"):
        Judge(protocol="loose", cache_dir=tmp_path)


@pytest.mark.parametrize(
    "reply,score,justification",
    [
        (GOOD, 8.0, '"right job"'),
        ('{\n"Factuality Score": 10,\n"Justification": "Same meaning."\n}', 10.0, '"Same meaning."'),
        ("Factuality Score: 3\nJustification: wrong city", 3.0, "wrong city"),
        ('```json\n{\n  "Factuality Score": 1,\n  "Justification": "no: not at all"\n}\n```', 1.0, '"no: not at all"'),
        ('"Factuality Score": 7,\n"Factuality Score": 2,\n"Justification": x', 7.0, "x"),  # the first line counts
    ],
)
def test_parse_official_reply_reads_the_score_line_as_eval_gpt_py(reply, score, justification):
    assert parse_official_reply(reply) == (score, justification)


@pytest.mark.parametrize(
    "reply",
    [
        "",
        None,
        ONE_LINE,  # one line: its text after the last ':' is ' "right job"}', not an integer (as in eval_gpt.py)
        '{\n"Factuality Score": 8\n}',  # no Justification line: eval_gpt.py fails on it too
        '"Factuality Score": 8.5,\n"Justification": x',  # not an integer
        '"Factuality Score": "8",\n"Justification": x',
        '"Factuality Score": eight,\n"Justification": x',
        '"Factuality Score": [Insert score from 1-10],\n"Justification": x',
        "The answer is right.\nJustification: 9/10",
        '"Factuality Score": 11,\n"Justification": x',  # out of 1-10: a failure here (eval_gpt.py averaged it)
        '"Factuality Score": 0,\n"Justification": x',
    ],
)
def test_parse_official_reply_failures(reply):
    with pytest.raises(ValueError):
        parse_official_reply(reply)


@pytest.mark.parametrize(
    "reply,error",
    [
        (ONE_LINE, "not an integer"),
        ("I think it is right. Score: 8", "no 'Factuality Score' line"),
        ('"Factuality Score": 12,\n"Justification": too high', "outside 1-10"),
    ],
)
def test_malformed_official_reply_is_a_counted_failure_and_not_cached(tmp_path, reply, error):
    with FakeOpenAIServer([("ok", reply)] * 2) as server:
        judge = make_judge(server, tmp_path)
        result = judge.score(*ITEM)
        assert result.score is None and error in result.error
        assert judge.stats["failures"] == 1 and len(server.requests) == 1  # a reply is not retried
        judge.score(*ITEM)
        assert len(server.requests) == 2  # failures are asked again on a rerun
        assert judge.stats["failures"] == 2


def test_malformed_strict_reply_is_a_counted_failure_and_not_cached(tmp_path):
    with FakeOpenAIServer([("ok", "I think it is right. Score: 8")] * 2) as server:
        judge = make_judge(server, tmp_path, protocol="strict")
        result = judge.score(*ITEM)
        assert result.score is None and "no JSON object" in result.error
        assert judge.stats["failures"] == 1 and len(server.requests) == 1  # a reply is not retried
        judge.score(*ITEM)
        assert len(server.requests) == 2  # failures are asked again on a rerun


def test_image_id_reaches_the_official_rubric_and_the_cache_key(tmp_path):
    with FakeOpenAIServer(default=("ok", GOOD)) as server:
        judge = make_judge(server, tmp_path)
        judge.score_many([ITEM + ("7",), ITEM + ("9",), ITEM], desc=None)
        prompts = [body["messages"][1]["content"] for _p, _h, body in server.requests]
        assert sorted(p.split("- **Image ID**: ")[1].split("\n")[0] for p in prompts) == ["", "7", "9"]
        judge.score_many([ITEM + ("7",)], desc=None)
        assert len(server.requests) == 3  # cached
        make_judge(server, tmp_path, protocol="strict").score(*ITEM)
        assert len(server.requests) == 4  # another protocol is another request


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
    with FakeOpenAIServer(default=("ok", GOOD)) as server:
        first = make_judge(server, tmp_path).score_many([ITEM, ITEM[:2] + ("other truth",)])
        assert len(server.requests) == 2
        again = make_judge(server, tmp_path)
        assert again.score_many([ITEM, ITEM[:2] + ("other truth",)]) == [
            JudgeResult(r.score, r.justification, cached=True) for r in first
        ]
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
    assert (judge.model, judge.max_retries, judge.protocol.name) == ("gpt-4o-mini", 1, "official")
    judge = Judge.from_args(" gpt-4o ", protocol="strict")
    assert (judge.model, judge.protocol.name) == ("gpt-4o", "strict")


def test_generation_task_with_the_official_judge_end_to_end(tmp_path):
    """The judge gets the extracted answer and the profile ID as the rubric's Image ID; the
    aggregate is the raw 1-10 mean over the answers it scored, failures counted apart."""
    from mmunlearn.harness.core.contracts import TaskContext, get_task
    from tests.test_tasks import FakeVLM, question

    qs = [question("generation", pid=p, answer="She works as a painter.") for p in ("p1", "p2", "p3")]
    vlm = FakeVLM({"p1": "She is a painter.\nASSISTANT: no", "p2": "A doctor.", "p3": "?"})
    replies = {"She is a painter.": GOOD, "A doctor.": GOOD.replace("8", "3"), "?": ONE_LINE}
    with FakeOpenAIServer() as server:
        server.script.extend(("ok", replies[a]) for a in ("She is a painter.", "A doctor.", "?"))
        judge = make_judge(server, tmp_path, model=None, max_concurrency=1)
        samples = get_task("generation").evaluate(vlm, qs, TaskContext(judge=judge))
    sent = [body["messages"][1]["content"] for _p, _h, body in server.requests]
    assert [p.split("- **Generated Answer**: ")[1].split("\n")[0] for p in sent] == [
        "She is a painter.",
        "A doctor.",
        "?",
    ]
    assert [p.split("- **Image ID**: ")[1].split("\n")[0] for p in sent] == ["p1", "p2", "p3"]
    assert all(body["model"] == "gpt-4o-mini" for _p, _h, body in server.requests)
    assert [s.scores["factuality"] for s in samples] == [8.0, 3.0, None]
    assert [s.extra["judge"] for s in samples] == ["scored", "scored", "failed"]
    agg = get_task("generation").aggregate(samples)
    assert agg["factuality"] == pytest.approx(5.5)
    assert (agg["factuality_scored"], agg["factuality_failed"]) == (2, 1)


def test_auto_judge_is_the_protocols_own_model():
    assert Judge.from_args("auto").model == "gpt-4o-mini"  # eval_gpt.py's judge
    assert Judge.from_args("auto", protocol="strict").model == "gpt-4o"
    assert Judge.from_args("gpt-4.1", protocol="strict").model == "gpt-4.1"
