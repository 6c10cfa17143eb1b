"""Utility suites (`run --utility`): MMMU, LLaVA-Bench, MME, POPE and CLEAR real_world read from
their real layouts (the embedded stand-ins), scored by their tasks (prompts, parsers, the MMMU
fallback drawn in dataset order, the judge's relative score, MME acc+, POPE F1), and a run that
scores them beside the benchmark, reported and plotted like every other figure."""

from __future__ import annotations

import json
import random

import pytest

from mmunlearn.harness.app.defaults import ASSETS, MINI_CLEAR
from mmunlearn.harness.core.bench import load_benchmark
from mmunlearn.harness.core.contracts import TaskContext, get_task
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.judge import Judge
from mmunlearn.harness.core.mmmu_eval import official_prompt
from tests.fake_openai_server import FakeOpenAIServer

MINI = ASSETS / "mini-utility"


class ReplyVLM:
    """Replies by a function of the request text; records the requests."""

    def __init__(self, reply):
        self.reply, self.requests = reply, []

    def generate(self, reqs, max_new_tokens=50, batch_size=None, desc=None):
        self.requests += list(reqs)
        return [self.reply(r.text) for r in reqs]


@pytest.mark.parametrize(
    "name, source, set_name, n",
    [
        ("mmmu", MINI / "mmmu", "mmmu", 60),
        ("llava_bench", MINI / "llava-bench", "llava_bench", 24),
        ("mme", MINI / "mme", "mme", 40),
        ("pope", MINI / "pope", "pope", 240),
        ("clear_real_world", MINI_CLEAR, "clear_real_world", 120),
    ],
)
def test_each_suite_reads_its_real_layout(name, source, set_name, n):
    bench = load_benchmark(source, benchmark=name)
    assert bench.sets == (set_name,) and len(bench.questions()) == n
    assert all(q.mode == "image_text" and q.image for q in bench.questions())


def test_suites_are_recognised_and_bad_rows_refused(tmp_path):
    assert load_benchmark(MINI / "mmmu").name == "mmmu"
    assert load_benchmark(MINI / "pope").name == "pope" and load_benchmark(MINI / "mme").name == "mme"
    with pytest.raises(ConfigError, match="no protocol 'tofu'"):
        load_benchmark(MINI / "mmmu", protocol="tofu")


def test_mmmu_prompt_and_the_fallback_drawn_in_dataset_order():
    bench = load_benchmark(MINI / "mmmu")
    qs = [q for q in bench.questions() if q.options][:6]
    five = next(q for q in bench.questions() if q.options and len(q.options) == 5)
    task = get_task("mmmu")
    vlm = ReplyVLM(lambda text: "**B**" if "shape" in text else "(B)")
    prep = task.requests(
        vlm, [five], TaskContext(), __import__("mmunlearn.harness.core.records", fromlist=["x"]).ImageDecoder()
    )
    assert prep.requests[0].text == official_prompt(five.text, list(five.options.values()), "multiple-choice")
    assert prep.requests[0].text.endswith(
        "(E) " + five.options["E"] + "\n\nAnswer with the option's letter from the given choices directly."
    )
    results = task.evaluate(vlm, list(reversed(qs)), TaskContext())  # evaluated out of order, in batches
    guessed = sorted((r for r in results if r.extra["guessed"]), key=lambda r: r.extra["index"])
    assert guessed and all(r.scores["accuracy"] is None for r in guessed)
    settled = {s.qid: s for s in task.settle(results)}
    rng = random.Random(42)  # the official eval_utils.py seeds the global random with 42 and draws in order
    for r in guessed:
        letter = rng.choice(r.extra["choices"])
        assert settled[r.qid].extra["parsed"] == letter
        assert settled[r.qid].scores["accuracy"] == float(letter == r.extra["answer"])
    agg = task.aggregate(results)
    assert agg["answers_guessed"] == len(guessed)
    assert agg["accuracy"] == pytest.approx(sum(s.scores["accuracy"] for s in settled.values()) / len(qs))
    assert {k for k in agg if k.startswith("accuracy/")} == {f"accuracy/{q.meta['subject']}" for q in qs}


def test_llava_bench_relative_score_from_a_judge_replying_8_6(tmp_path, monkeypatch):
    bench = load_benchmark(MINI / "llava-bench")
    qs = bench.questions()[:6]
    task = get_task("llava_bench")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAIServer(default=("ok", "8 6\nAssistant 1 is better.")) as server:
        judge = Judge(model="judge-model", base_url=server.base_url, cache_dir=tmp_path / "cache")
        results = task.evaluate(ReplyVLM(lambda t: "three shapes"), qs, TaskContext(judge=judge))
    agg = task.aggregate(results)
    assert agg["relative_score"] == 75.0 and agg["judge_scored"] == 6
    assert server.requests[0][2]["messages"][0]["content"].startswith("You are a helpful and precise assistant")
    none = task.aggregate(task.evaluate(ReplyVLM(lambda t: "x"), qs, TaskContext(judge=None)))
    assert none["relative_score"] is None and none["judge_scored"] == 0  # not available, never 100.0


def test_mme_acc_plus_and_pope_f1_on_hand_replies():
    mme = load_benchmark(MINI / "mme")
    qs = mme.questions()
    task = get_task("mme")
    # answer "yes" to everything: every Yes question right, every No wrong: acc 0.5, acc+ 0
    agg = task.aggregate(task.evaluate(ReplyVLM(lambda t: "Yes."), qs, TaskContext()))
    cats = {q.meta["group"] for q in qs}
    assert all(agg[f"acc/{c}"] == 0.5 and agg[f"acc_plus/{c}"] == 0.0 and agg[f"score/{c}"] == 50.0 for c in cats)
    assert agg["accuracy"] == 0.5 and agg["perception"] is None  # not every official category is in the stand-in
    pope = load_benchmark(MINI / "pope")
    pq_ = pope.questions()
    gold_yes = sum(q.answer == "yes" for q in pq_)
    ptask = get_task("pope")
    agg = ptask.aggregate(ptask.evaluate(ReplyVLM(lambda t: "yes"), pq_, TaskContext()))
    # all yes: recall 1, precision = share of gold yes, F1 = 2p/(1+p)
    p = gold_yes / len(pq_)
    assert agg["recall"] == 1.0 and agg["precision"] == pytest.approx(p) and agg["f1"] == pytest.approx(2 * p / (1 + p))
    assert agg["yes_ratio"] == 1.0
    exact = get_task("pope_exact")
    assert exact.aggregate(exact.evaluate(ReplyVLM(lambda t: "Yes."), pq_[:4], TaskContext()))["accuracy"] == 0.0


@pytest.mark.slow
def test_a_run_scores_the_suites_beside_the_benchmark(tmp_path):
    from mmunlearn.harness.app.cli import main

    out = tmp_path / "run"
    code = main(
        [
            "run",
            "--sets",
            "forget",
            "--tasks",
            "cloze",
            "--limit",
            "3",
            "--utility",
            "mmmu",
            "mme",
            "pope",
            "llava_bench",
            "clear_real_world",
            "--utility-limit",
            "4",
            "--judge",
            "none",
            "--stages",
            "--bootstrap",
            "50",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["metrics"]) == {"forget", "mmmu", "mme", "pope", "llava_bench", "clear_real_world"}
    assert res["metrics"]["mmmu"]["mmmu"]["image_text"]["n"] == 4
    assert res["metrics"]["llava_bench"]["llava_bench"]["image_text"]["relative_score"] is None  # no judge
    assert set(res["manifest"]["utility"]) == {"mmmu", "mme", "pope", "llava_bench", "clear_real_world"}
    assert res["manifest"]["utility"]["mmmu"]["source"] == "embedded:mini-utility/mmmu"
    assert "accuracy" in res["intervals"]["pope"]["pope"]["image_text"]
    ga = tmp_path / "ga"
    assert main(["run", "--like", str(out), "--method", "ga", "--param", "epochs=1", "--out", str(ga), "--quiet"]) == 0
    assert main(["leaderboard", str(out), str(ga), "--out", str(tmp_path / "board")]) == 0
    board = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "## Utility kept (method / vanilla" in board and "## MMMU (utility) (higher is better)" in board
    assert (tmp_path / "board" / "utility.png").is_file()


def test_utility_arguments_name_a_protocol_and_a_path():
    from mmunlearn.harness.app.commands.run import utility_args

    assert utility_args(["mmmu@mmmu-lmms-eval=/data/mmmu", "mme"]) == (
        {"mmmu": "/data/mmmu", "mme": None},
        {"mmmu": "mmmu-lmms-eval"},
    )
    with pytest.raises(ConfigError, match="expected SUITE"):
        utility_args(["mmmu@=x"])


def test_each_suite_decodes_with_its_own_length_unless_the_run_sets_one():
    from mmunlearn.harness.app.runner import RunConfig, suite_lengths

    bench = load_benchmark(ASSETS / "minibench", forget=5)
    for name, source in (("llava_bench", MINI / "llava-bench"), ("mme", MINI / "mme"), ("mmmu", MINI / "mmmu")):
        bench.attach(load_benchmark(source, benchmark=name))
    assert suite_lengths(RunConfig(), bench) == {"llava_bench": 1024, "mme": 3, "mmmu": 128}
    assert suite_lengths(RunConfig(max_new_tokens=20), bench) == {}
