"""LLaVA-Bench's original judge protocol against a scripted OpenAI-compatible server on 127.0.0.1
(no network): the request, the two parsers, retries of unreadable replies, failures never
averaged in, and the relative score with the original's rounding."""

from __future__ import annotations

import hashlib

import pytest

from mmunlearn.harness.core.llava_bench_judge import (
    ORIGINAL_JUDGE_MODEL,
    RULES,
    LlavaBenchJudge,
    ReviewResult,
    parse_score_lmms,
    parse_score_original,
    relative_scores,
    request_body,
    review_rows,
    summarize,
)
from tests.fake_openai_server import FakeOpenAIServer

KEY = "sk-test-DO-NOT-LEAK-llava-0123456789"
REPLY = "8 6\nAssistant 1 is more detailed; Assistant 2 misses the sign's text."
ROW = ("A red stop sign at a street corner.", "What does the sign say?", "It says STOP.", "A stop sign.", "conv")
# sha256 of the prompt of rule.json's llava_bench_conv / _detail / _complex (the three are equal),
# haotian-liu/LLaVA @ c121f04, computed from the upstream file.
UPSTREAM_RULE_SHA256 = "2ce22b562d6008864970ea863ac8a4d385ea6f2e64ab1313a23f825202a9529d"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def make_judge(server, tmp_path, **kw):
    kw = {
        "base_url": server.base_url,
        "cache_dir": tmp_path / "cache",
        "max_retries": 1,
        "timeout": 5,
        "backoff_base": 0.001,
        "max_concurrency": 1,
        **kw,
    }
    return LlavaBenchJudge(**kw)


def rows(n_per_category=2):
    return [
        (f"caption {c} {i}", f"question {c} {i}", f"reference {c} {i}", f"answer {c} {i}", c)
        for c in ("conv", "detail", "complex")
        for i in range(n_per_category)
    ]


# -- parsers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reply,original,lmms",
    [
        ("8 6", (8.0, 6.0), (8.0, 6.0)),
        ("8 6\nsome explanation, 9 10", (8.0, 6.0), (8.0, 6.0)),
        ("8, 6", None, (8.0, 6.0)),  # "8  6" splits into "8", "", "6": three pieces
        ("8,6", (8.0, 6.0), (8.0, 6.0)),
        ("8 6 ", None, (8.0, 6.0)),  # trailing space: "8", "6", ""
        ("Score: 8/10", None, (8.0, 10.0)),  # "Score:" is no float; lmms-eval takes 8 and 10
        ("7.5 9", (7.5, 9.0), (7.5, 9.0)),
        ("\n8 6", None, (8.0, 6.0)),  # the original's first line is empty; lmms-eval strips first
        ("Assistant 1: 8; Assistant 2: 6", None, (1.0, 8.0)),  # lmms-eval reads the assistants' numbers
        ("eight six", None, None),
        ("8", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_parsers_as_the_original_and_lmms_eval_read_them(reply, original, lmms):
    assert parse_score_original(reply) == original
    assert parse_score_lmms(reply) == lmms


# -- request ------------------------------------------------------------------------------------
EXPECTED_CONTENT_HEAD = (
    "[Context]\nA red stop sign at a street corner.\n\n"
    "[Question]\nWhat does the sign say?\n\n"
    "[Assistant 1]\nIt says STOP.\n\n[End of Assistant 1]\n\n"
    "[Assistant 2]\nA stop sign.\n\n[End of Assistant 2]\n\n"
    "[System]\n"
)


def test_rules_are_upstream_rule_json_text():
    for category in ("conv", "detail", "complex"):
        assert RULES[category]["role"] == "Assistant"
        assert hashlib.sha256(RULES[category]["prompt"].encode()).hexdigest() == UPSTREAM_RULE_SHA256
    assert RULES["conv"]["prompt"].startswith("We would like to request your feedback")
    assert "represented with a few sentences describing the image. \nPlease rate" in RULES["conv"]["prompt"]


def test_request_body_for_one_row(tmp_path):
    with FakeOpenAIServer([("ok", REPLY)]) as server:
        judge = make_judge(server, tmp_path)
        result = judge.review(*ROW)
    assert result.scores == (8.0, 6.0) and result.review == REPLY and result.calls == 1
    [(path, headers, body)] = server.requests
    assert path == "/v1/chat/completions" and headers["authorization"] == f"Bearer {KEY}"
    assert set(body) == {"model", "messages", "temperature", "max_tokens"}
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("gpt-4-0314", 0.2, 1024)
    system, user = body["messages"]
    assert system == {
        "role": "system",
        "content": "You are a helpful and precise assistant for checking the quality of the answer.",
    }
    assert user["role"] == "user"
    assert user["content"] == EXPECTED_CONTENT_HEAD + RULES["conv"]["prompt"] + "\n\n"
    assert body == request_body("gpt-4-0314", *ROW)


def test_caption_list_is_joined_with_newlines_and_model_is_the_users():
    body = request_body("my-judge", ["line one", "line two"], "q", "ref", "ans", "detail")
    assert body["model"] == "my-judge"
    assert body["messages"][1]["content"].startswith("[Context]\nline one\nline two\n\n[Question]\nq\n\n")


def test_default_judge_is_the_original_and_auto_means_it(tmp_path):
    assert LlavaBenchJudge(cache_dir=tmp_path).model == ORIGINAL_JUDGE_MODEL == "gpt-4-0314"
    assert LlavaBenchJudge(model="gpt-4o", cache_dir=tmp_path).model == "gpt-4o"


def test_unknown_category_raises_before_any_call(tmp_path):
    with FakeOpenAIServer() as server:
        with pytest.raises(ValueError, match="unknown LLaVA-Bench category 'chat'"):
            make_judge(server, tmp_path).review_many([ROW[:4] + ("chat",)])
    assert server.requests == []


# -- scoring end to end -------------------------------------------------------------------------
def test_judge_replying_8_6_everywhere_gives_75(tmp_path):
    with FakeOpenAIServer(default=("ok", REPLY)) as server:
        judge = make_judge(server, tmp_path, max_concurrency=2)
        results = judge.review_many(rows(), desc=None)
    by_category = {c: [r for r, row in zip(results, rows()) if row[4] == c] for c in ("conv", "detail", "complex")}
    assert relative_scores(by_category) == {"conv": 75.0, "detail": 75.0, "complex": 75.0, "all": 75.0}
    assert len(server.requests) == 6 and judge.stats["failures"] == 0


def test_all_replies_failing_is_not_available_and_nothing_is_averaged(tmp_path):
    with FakeOpenAIServer(default=("ok", "Both answers are fine.")) as server:
        judge = make_judge(server, tmp_path, parse_retries=2, give_up_after=100)
        results = judge.review_many(rows(1), desc=None)
    assert [r.scores for r in results] == [None] * 3
    assert all("no two scores" in r.error for r in results)
    assert len(server.requests) == 9  # each question: 1 call + 2 fresh calls for its unreadable replies
    assert judge.stats["failures"] == 3 and judge.stats["unreadable_replies"] == 9
    by_category = {r[4]: [res] for r, res in zip(rows(1), results)}
    assert relative_scores(by_category) == {"conv": None, "detail": None, "complex": None, "all": None}
    assert summarize(by_category)["all"] == {
        "relative": None,
        "reference": None,
        "model": None,
        "scored": 0,
        "failed": 3,
    }


def test_server_errors_are_failures_never_scores(tmp_path):
    with FakeOpenAIServer(default=("status", 500)) as server:
        judge = make_judge(server, tmp_path, max_retries=1)
        result = judge.review(*ROW)
    assert result.scores is None and "InternalServerError" in result.error
    assert len(server.requests) == 2  # the transport's 1 call + 1 retry; no parse retry without a reply
    assert relative_scores({"conv": [result]}) == {"conv": None, "all": None}


def test_unreadable_reply_then_valid_reply_is_scored(tmp_path):
    with FakeOpenAIServer([("ok", "8, 6\nclose call"), ("ok", REPLY)]) as server:
        judge = make_judge(server, tmp_path)
        result = judge.review(*ROW)
        assert result == ReviewResult((8.0, 6.0), REPLY, calls=2)
        assert len(server.requests) == 2 and server.requests[0][2] == server.requests[1][2]
        assert judge.stats["unreadable_replies"] == 1 and judge.stats["failures"] == 0
        again = judge.review(*ROW)  # a rerun reads the cache
    assert again == ReviewResult((8.0, 6.0), REPLY, cached=True)
    assert len(server.requests) == 2


def test_out_of_range_scores_are_unreadable(tmp_path):
    with FakeOpenAIServer([("ok", "11 6"), ("ok", "-1 -1")]) as server:
        result = make_judge(server, tmp_path, parse_retries=1).review(*ROW)
    assert result.scores is None and "not both within 1-10" in result.error and len(server.requests) == 2


def test_lmms_parser_accepts_what_the_original_rejects(tmp_path):
    with FakeOpenAIServer(default=("ok", "Score: 8/10\nfine")) as server:
        lenient = make_judge(server, tmp_path, parser="lmms").review(*ROW)
        assert lenient.scores == (8.0, 10.0) and len(server.requests) == 1
        strict = make_judge(server, tmp_path, parse_retries=0).review(*ROW)
    # the cached reply is read again with the original parser: not a score, so a fresh call
    assert strict.scores is None and len(server.requests) == 2


def test_unknown_parser_and_protocol_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown score parser"):
        LlavaBenchJudge(parser="loose", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="one protocol"):
        LlavaBenchJudge(protocol="strict", cache_dir=tmp_path)


def test_without_key_or_base_url_nothing_is_scored(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY")
    judge = LlavaBenchJudge(cache_dir=tmp_path)
    assert not judge.available
    [result] = judge.review_many([ROW])
    assert result.scores is None and "not available" in result.error
    assert relative_scores({"conv": [result]})["all"] is None


def test_key_is_never_written(tmp_path):
    with FakeOpenAIServer(default=("ok", REPLY)) as server:
        judge = make_judge(server, tmp_path)
        judge.review_many(rows(1), desc=None)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and all(KEY.encode() not in p.read_bytes() for p in files)
    assert KEY not in repr(judge)


def test_review_rows_in_the_hub_layout(tmp_path):
    hub_rows = [
        {"question_id": i, "question": f"q{i}", "caption": f"c{i}", "gpt_answer": f"g{i}", "category": cat}
        for i, cat in enumerate(["conv", "detail", "complex", "conv"])
    ]
    answers = {0: "a0", 1: "a1", 2: "a2", 3: "a3"}
    with FakeOpenAIServer([("ok", "8 6"), ("ok", "10 5"), ("ok", "no score"), ("ok", "6 6")]) as server:
        by_category, results = review_rows(make_judge(server, tmp_path, parse_retries=0), hub_rows, answers)
        with pytest.raises(KeyError, match="no model answer"):
            review_rows(make_judge(server, tmp_path), hub_rows, {0: "a0"})
    assert [r.scores for r in results] == [(8.0, 6.0), (10.0, 5.0), None, (6.0, 6.0)]
    # conv: means 7 and 6 -> 85.7; detail: 50.0; complex: its one question failed; all: 8 and 5.667
    assert relative_scores(by_category) == {"conv": 85.7, "detail": 50.0, "complex": None, "all": 70.8}
    sent = [body["messages"][1]["content"] for _p, _h, body in server.requests]
    assert sent[1].startswith("[Context]\nc1\n\n[Question]\nq1\n\n[Assistant 1]\ng1\n\n")
    assert "[Assistant 2]\na1\n\n[End of Assistant 2]" in sent[1]


# -- the relative score ---------------------------------------------------------------------------
def test_relative_score_hand_values_and_failures_left_out():
    scores = relative_scores(
        {
            "conv": [(8, 6), (6, 6), None],  # means 7 and 6: 6 / 7 = 85.71...% -> 85.7
            "detail": [(10, 5)],  # 50.0
            "complex": [None, None],  # nothing scored: not available, not 100.0
        }
    )
    # all: reference (8 + 6 + 10) / 3 = 8, model (6 + 6 + 5) / 3 = 5.667 -> 70.8375 -> 70.8
    assert scores == {"conv": 85.7, "detail": 50.0, "complex": None, "all": 70.8}


def test_relative_score_rounds_the_means_first_as_summarize_gpt_review():
    # reference 7, 7, 8 -> 7.333; model 5, 9, 9 -> 7.667 (3 decimals, as the original);
    # 7.667 / 7.333 = 104.555...% -> 104.6, where 23 / 22 unrounded would give 104.5
    assert relative_scores({"conv": [(7, 5), (7, 9), (8, 9)]})["conv"] == 104.6
    detail = summarize({"conv": [(7, 5), (7, 9), (8, 9), None]})["conv"]
    assert detail == {"relative": 104.6, "reference": 7.333, "model": 7.667, "scored": 3, "failed": 1}


def test_all_is_computed_not_passed():
    with pytest.raises(ValueError, match='"all" is computed here'):
        relative_scores({"all": [(8, 6)]})
