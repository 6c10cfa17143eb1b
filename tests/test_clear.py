"""The CLEAR benchmark plugin: loader counts per split and protocol, refusals of malformed data
(config, row, field), the seed-42 option order of clear-mmunlearner, the seeded caption
questions of clear, the official per-question and per-cell figures on hand values, and a run of
both protocols end to end on the mini-CLEAR."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmunlearn.harness.app.defaults import MINI_CLEAR
from mmunlearn.harness.core.bench import load_benchmark
from mmunlearn.harness.core.contracts import SampleResult, TaskContext, get_task
from mmunlearn.harness.core.errors import BenchmarkError, ConfigError
from mmunlearn.harness.core.mmunlearner_choice import CAPTION_QUESTIONS, IDENTITY_QUESTION
from mmunlearn.harness.core.model import TokenStats
from mmunlearn.harness.core.records import Question

PARQUET = "train-00000-of-00001.parquet"
ROOT_CLEAR = Path(__file__).resolve().parent.parent / "results" / "clear"


def table(config: str) -> pa.Table:
    return pq.read_table(MINI_CLEAR / config / PARQUET)


@pytest.fixture
def clear_copy(tmp_path):
    root = tmp_path / "clear"
    shutil.copytree(MINI_CLEAR, root)
    return root


def rewrite(root, config: str, column: str, row: int, value) -> None:
    t = pq.read_table(root / config / PARQUET)
    values = t.column(column).to_pylist()
    values[row] = value
    t = t.set_column(t.schema.get_field_index(column), column, pa.array(values, type=t.schema.field(column).type))
    pq.write_table(t, root / config / PARQUET)


# ----------------------------------------------------------------------------- loader


@pytest.mark.parametrize("forget, persons", [(1, 1), (5, 3), (10, 6)])
def test_counts_of_each_split_under_the_official_protocol(forget, persons):
    bench = load_benchmark(MINI_CLEAR, forget=forget)
    assert (bench.name, bench.protocol, bench.sets) == ("clear", "clear", ("forget", "retain", "real"))
    counts = bench.counts()
    perturbed = table(f"forget{forget:02d}_perturbed").num_rows
    tofu = table(f"forget{forget:02d}+tofu")
    text_rows = sum(v is None for v in tofu.column("image").to_pylist())
    assert counts["profiles"]["forget"] == persons
    assert counts["questions"]["forget"]["caption"] == {"image_text": perturbed, "text_only": text_rows}
    assert counts["questions"]["forget"]["face"] == {"image_text": perturbed, "text_only": 0}
    assert counts["questions"]["retain"]["face"]["image_text"] == table("retain_perturbed").num_rows
    retain_text = sum(v is None for v in table(f"retain{100 - forget}+tofu").column("image").to_pylist())
    assert counts["questions"]["retain"]["caption"]["text_only"] == min(300, retain_text)  # the official cap
    assert counts["questions"]["real"]["face"]["image_text"] == table("real_faces").num_rows
    assert counts["questions"]["real"]["vqa"]["image_text"] == table("real_world").num_rows
    # every forget question is about a forget person: the text rows are matched by the name they contain
    names = {n.replace(" ", "_") for n in table(f"forget{forget:02d}").column("name").to_pylist()}
    assert {q.profile_id for q in bench.questions(sets=["forget"])} == names


def test_mmunlearner_protocol_reads_the_tofu_configs_without_a_cap():
    bench = load_benchmark(MINI_CLEAR, forget=10, protocol="clear-mmunlearner")
    tofu = table("retain90+tofu")
    images = tofu.column("image").to_pylist()
    counts = bench.counts()["questions"]["retain"]["caption"]
    assert counts == {"image_text": sum(v is not None for v in images), "text_only": sum(v is None for v in images)}
    face = bench.questions(sets=["forget"], tasks=["face"])
    assert all(q.text == IDENTITY_QUESTION and q.answer in q.options for q in face)


def test_bad_choices_are_refused_with_what_is_allowed():
    with pytest.raises(ConfigError, match="--forget must be one of 1, 5, 10"):
        load_benchmark(MINI_CLEAR, forget=15)
    with pytest.raises(ConfigError, match="no protocol 'tofu'.*clear, clear-mmunlearner"):
        load_benchmark(MINI_CLEAR, protocol="tofu")
    with pytest.raises(ConfigError, match="unknown option 'rowz'"):
        load_benchmark(MINI_CLEAR, options={"rowz": "3"})
    with pytest.raises(
        ConfigError, match="truth_ratio_averaging='mean' is invalid; allowed: one of pooled, per-sample"
    ):
        load_benchmark(MINI_CLEAR, options={"truth_ratio_averaging": "mean"})


def test_malformed_data_is_refused_naming_config_row_and_field(clear_copy):
    rewrite(clear_copy, "forget05_perturbed", "perturbed_names", 1, ["A", "B"])
    with pytest.raises(BenchmarkError, match=r"forget05_perturbed.*row 1.*perturbed_names.*has 2 entries"):
        load_benchmark(clear_copy, forget=5)


def test_an_empty_caption_and_a_missing_config_are_refused(clear_copy):
    rewrite(clear_copy, "forget05_perturbed", "caption", 2, "  ")
    with pytest.raises(BenchmarkError, match=r"forget05_perturbed.*row 2.*caption.*non-empty text"):
        load_benchmark(clear_copy, forget=5)
    rewrite(clear_copy, "forget05_perturbed", "caption", 2, "A caption again.")
    shutil.rmtree(clear_copy / "retain95+tofu")
    with pytest.raises(BenchmarkError, match="missing config folder"):
        load_benchmark(clear_copy, forget=5, benchmark="clear")


def test_a_folder_is_recognised_by_its_layout(clear_copy, small_bench):
    assert load_benchmark(clear_copy, forget=1).name == "clear"
    assert load_benchmark(small_bench, forget=5).name == "mllmu-bench"
    with pytest.raises(BenchmarkError, match="missing config folder"):  # named explicitly: read as CLEAR
        load_benchmark(small_bench, benchmark="clear")


# ----------------------------------------------------------------------------- drawn with seeds


def test_option_order_is_upstreams_seed_42_stream_per_set():
    """CLEAR_eval.py: random.seed(42) at import (one process per set), then per row
    options.insert(random.randint(0, len(options)), answer), then the +tofu image rows' caption
    questions by random.choice: replayed here on the global `random`, as upstream does it."""
    bench = load_benchmark(MINI_CLEAR, forget=10, protocol="clear-mmunlearner", seed=7)  # the run seed plays no part
    rows = table("forget10_perturbed").to_pylist()
    random.seed(42)
    expected = []
    for r in rows:
        options = list(r["perturbed_names"])
        options.insert(random.randint(0, len(options)), r["name"])
        expected.append(options)
    captions = [random.choice(CAPTION_QUESTIONS) for r in table("forget10+tofu").to_pylist() if r["image"] is not None]
    face = bench.questions(sets=["forget"], tasks=["face"])
    assert [list(q.options.values()) for q in face] == expected
    assert [q.options[q.answer] for q in face] == [r["name"] for r in rows]
    assert [q.text for q in bench.questions(sets=["forget"], tasks=["caption"], modes=["image_text"])] == captions
    real = bench.questions(sets=["real"], tasks=["face"])
    random.seed(42)  # real faces: a process of its own
    first = list(table("real_faces").to_pylist()[0]["options"])
    first.insert(random.randint(0, len(first)), table("real_faces").to_pylist()[0]["answer"])
    assert list(real[0].options.values()) == first


def test_official_caption_question_is_drawn_with_the_seed_and_recorded():
    a, b, c = (load_benchmark(MINI_CLEAR, forget=10, seed=s) for s in (0, 0, 1))
    drawn = lambda bench: [q.text for q in bench.questions(sets=["retain"], tasks=["caption"], modes=["image_text"])]  # noqa: E731
    assert drawn(a) == drawn(b) and drawn(a) != drawn(c)
    assert set(drawn(a)) <= set(CAPTION_QUESTIONS)
    assert a.notes["caption_questions"] == {q.qid: q.text for q in a.questions(tasks=["caption"], modes=["image_text"])}


# ----------------------------------------------------------------------------- official figures


class LossVLM:
    """Answers with fixed mean NLLs per answer text (one token each) and a fixed generation."""

    def __init__(self, nll: dict[str, float], reply: str):
        self.nll, self.reply, self.generated = nll, reply, []

    def option_token_logprobs(self, reqs, options, batch_size=None, prefixes=None):
        return [[TokenStats([-self.nll[o]]) for o in opts] for opts in options]

    def generate(self, reqs, max_new_tokens=50, batch_size=None, desc=None):
        self.generated.append(list(reqs))
        return [self.reply for _ in reqs]


IMAGE = table("real_faces").column("image").to_pylist()[0]["bytes"]


def question(set_name="forget", qtype="caption", k=0, paraphrase="para", perturbed=("bad1", "bad2")):
    return Question(
        f"{set_name}/p{k}/{qtype}/image_text/0",
        set_name,
        qtype,
        "image_text",
        f"p{k}",
        "q?",
        "the gold answer",
        None,
        IMAGE,
        paraphrase,
        tuple(perturbed),
    )


def test_per_question_probability_truth_ratio_and_rouge_recall_on_hand_values():
    vlm = LossVLM({"the gold answer": 0.5, "para": 1.0, "bad1": 2.0, "bad2": 3.0}, "the gold answer and more words")
    ctx = TaskContext()
    (cap,) = get_task("clear_caption").evaluate(vlm, [question()], ctx)
    (face,) = get_task("clear_face").evaluate(vlm, [question(qtype="face")], ctx)
    assert cap.scores["prob"] == pytest.approx(math.exp(-0.5))  # captions: plain probability
    # face recognition: normalised, e^-0.5 / (e^-0.5 + e^-2 + e^-3)
    assert face.scores["prob"] == pytest.approx(0.60653 / (0.60653 + 0.13534 + 0.04979), abs=1e-4)
    # TR = exp(mean perturbed NLL - paraphrase NLL) = exp(2.5 - 1.0) = 4.4817
    assert cap.scores["truth_ratio_min"] == pytest.approx(1 / 4.4817, abs=1e-4)
    assert cap.scores["truth_ratio_keep"] == pytest.approx(1 - 1 / 4.4817, abs=1e-4)
    assert cap.scores["rougeL_recall"] == pytest.approx(1.0)  # every reference word is in the reply
    assert cap.extra["perturbed_losses"] == [2.0, 3.0]


def test_the_cell_pools_the_perturbed_loss_as_the_official_code_does():
    """Two questions: paraphrase NLLs 1 and 2, perturbed NLLs (1, 1) and (4, 4). Per sample:
    TR = e^0 = 1 and e^2; pooled (one mean perturbed NLL 2.5): e^1.5 and e^0.5. A forget cell
    reports min(TR, 1/TR), any other cell max(0, 1 - 1/TR), as the official files do."""
    losses = [{"para": 1.0, "bad1": 1.0, "bad2": 1.0}, {"para": 2.0, "bad1": 4.0, "bad2": 4.0}]
    task = get_task("clear_caption")

    def cell(set_name):
        samples = []
        for k, nll in enumerate(losses):
            vlm = LossVLM({"the gold answer": 0.1, **nll}, "x")
            samples += task.evaluate(vlm, [question(set_name, k=k)], TaskContext())
        return samples

    retain, forget = cell("retain"), cell("forget")
    assert task.aggregate(retain)["truth_ratio_keep"] == pytest.approx(
        ((1 - math.exp(-1.5)) + (1 - math.exp(-0.5))) / 2
    )
    assert task.aggregate(retain)["truth_ratio_min"] is None
    assert task.aggregate(forget)["truth_ratio_min"] == pytest.approx((math.exp(-1.5) + math.exp(-0.5)) / 2)
    assert task.aggregate(forget)["truth_ratio_keep"] is None
    per_sample = [
        SampleResult.from_dict({**s.to_dict(), "extra": {**s.extra, "averaging": "per-sample"}}) for s in retain
    ]
    assert task.aggregate(per_sample)["truth_ratio_keep"] == pytest.approx((0 + (1 - math.exp(-2))) / 2)


def test_text_only_rows_have_probability_and_rouge_but_no_truth_ratio():
    q = Question("forget/p0/caption/text_only/0", "forget", "caption", "text_only", "p0", "q?", "gold", None, None)
    (r,) = get_task("clear_caption").evaluate(LossVLM({"gold": 1.0}, "gold"), [q], TaskContext())
    assert r.scores["prob"] == pytest.approx(math.exp(-1.0))
    assert r.scores["truth_ratio_min"] is None and r.scores["truth_ratio_keep"] is None


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_both_protocols_run_end_to_end_and_record_themselves(tmp_path):
    from mmunlearn.harness.app.runner import RunConfig, run_benchmark

    official = run_benchmark(
        RunConfig(bench=str(MINI_CLEAR), limit=2, bootstrap=0), tmp_path / "official", progress=False
    )
    man = official["manifest"]
    assert (man["benchmark"]["name"], man["benchmark"]["protocol"], man["objective"]) == (
        "clear",
        "clear",
        "forget-both",
    )
    assert man["max_new_tokens"] == 300 and man["stages"]["clear_forget_quality"]["reference_model"] is not None
    assert set(official["metrics"]) == {"forget", "retain", "real"}
    assert set(official["metrics"]["forget"]["clear_caption"]) == {"image_text", "text_only"}
    assert set(official["metrics"]["real"]) == {"clear_face", "clear_vqa", "clear_aggregate"}
    # The gold model is a finished run of the same model: its truth ratios are these, quality is perfect.
    same = run_benchmark(
        RunConfig(bench=str(MINI_CLEAR), limit=2, bootstrap=0, reference_model=str(tmp_path / "official")),
        tmp_path / "self",
        progress=False,
    )
    quality = same["metrics"]["forget"]["clear_aggregate"]["image_text"]
    assert quality["forget_quality_js"] == pytest.approx(1.0) and quality["forget_quality_ks"] == pytest.approx(1.0)
    mmu = run_benchmark(
        RunConfig(bench=str(MINI_CLEAR), protocol="clear-mmunlearner", limit=2, bootstrap=0),
        tmp_path / "mmu",
        progress=False,
    )
    assert mmu["manifest"]["config"]["protocol"] == "clear-mmunlearner"
    assert set(mmu["metrics"]["forget"]) == {"mmunlearner_face", "mmunlearner_generation"}
    lines = [json.loads(x) for x in (tmp_path / "mmu" / "samples.jsonl").read_text().splitlines()]
    assert {x["task"] for x in lines} == {"mmunlearner_face", "mmunlearner_vqa", "mmunlearner_generation"}


@pytest.mark.slow
def test_vanilla_on_the_mini_clear_reproduces_the_committed_figures(tmp_path):
    """Golden values: the official protocol's vanilla run of `make clear`, recomputed."""
    from mmunlearn.harness.app.runner import RunConfig, run_benchmark
    from mmunlearn.harness.core.results import load_results

    committed = load_results(ROOT_CLEAR / "official" / "runs" / "vanilla")
    cfg = committed["manifest"]["config"]
    fresh = run_benchmark(
        RunConfig(
            bench=str(MINI_CLEAR),
            forget=cfg["forget"],
            protocol="clear",
            limit=cfg["limit"],
            shots=cfg["shots"],
            scorers=tuple(cfg["scorers"]),
            batch_size=committed["manifest"]["batch_size"],
            judge=None,
        ),
        tmp_path / "vanilla",
        progress=False,
    )
    assert fresh["manifest"]["config_hash"] == committed["manifest"]["config_hash"]
    # equal to float noise: another CPU's kernels round log-probabilities differently (1e-6 seen)
    flat = lambda m: {
        (s, k, mo, x): v for s, ks in m.items() for k, ms in ks.items() for mo, xs in ms.items() for x, v in xs.items()
    }  # noqa: E731
    got, want = flat(fresh["metrics"]), flat(committed["metrics"])
    assert got.keys() == want.keys()
    for key, v in want.items():
        assert got[key] == (pytest.approx(v, rel=1e-5, abs=1e-6) if isinstance(v, float) else v), key


def test_run_seeds_knows_the_official_caption_question_is_drawn_with_the_seed():
    from mmunlearn.harness.app.runner import RunConfig
    from mmunlearn.harness.app.seeds import seed_dependence

    official = RunConfig(bench=str(MINI_CLEAR), method="manu", forget=10)
    assert seed_dependence(official) == [
        "each image row's caption question is drawn with the seed (clear protocol clear)"
    ]
    assert (
        seed_dependence(RunConfig(bench=str(MINI_CLEAR), method="manu", forget=10, protocol="clear-mmunlearner")) == []
    )


def test_power_counts_the_people_of_each_cell(capsys):
    """A cell may ask about only some of its set's people (CLEAR's real set: 20 faces, 20 VQA pictures)."""
    from mmunlearn.harness.app.cli import main

    assert main(["power", "--bench", str(MINI_CLEAR), "--forget", "10"]) == 0
    rows = {tuple(line.split()[:3]): line.split()[3:5] for line in capsys.readouterr().out.splitlines()[3:]}
    assert rows["real", "vqa", "image_text"] == ["20", "120"] and rows["forget", "caption", "text_only"] == ["6", "36"]


# ----------------------------------------------------------------------------- refusals and defaults before a run


def test_choices_that_cannot_score_are_refused_before_anything_is_loaded():
    from mmunlearn.harness.app.runner import Progress, RunConfig, resolve_plugins

    def resolve(**kw):
        cfg = RunConfig(bench=str(MINI_CLEAR), forget=10, **kw)
        cfg.validate()
        return resolve_plugins(cfg, Progress(False))

    with pytest.raises(ConfigError, match="stage 'privacy' reads generation, classification questions"):
        resolve(stages=("privacy",))
    with pytest.raises(ConfigError, match="task 'clear_face' is not a task of protocol 'clear-mmunlearner'"):
        resolve(protocol="clear-mmunlearner", tasks=("clear_face",))
    # a subset of sets keeps only the protocol's tasks that have questions there
    assert list(resolve(sets=("forget", "retain"))[2]) == ["clear_caption", "clear_face"]
    assert list(resolve(sets=("real",))[2]) == ["clear_face", "clear_vqa"]


def test_methods_train_on_the_same_clear_pairs_under_every_seed():
    pairs = [load_benchmark(MINI_CLEAR, forget=10, seed=s).fact_pairs("forget", "image_text") for s in (0, 1)]
    assert [(p.question, p.answer) for p in pairs[0]] == [(p.question, p.answer) for p in pairs[1]]


def test_ragged_perturbed_lists_are_averaged_per_sample_and_say_so():
    task = get_task("clear_face")
    samples = []
    for k, wrong in enumerate((("bad1",), ("bad1", "bad2"))):
        vlm = LossVLM({"the gold answer": 0.1, "para": 1.0, "bad1": 2.0, "bad2": 3.0}, "x")
        samples += task.evaluate(vlm, [question("real", "face", k=k, perturbed=wrong)], TaskContext())
    agg = task.aggregate(samples)
    # per sample: TR = e^(2-1) and e^(2.5-1); keep = mean(1 - 1/TR)
    assert agg["truth_ratio_keep"] == pytest.approx(((1 - math.exp(-1)) + (1 - math.exp(-1.5))) / 2)
    assert "not pooled" in agg["note"]


def test_a_clear_board_states_its_own_sets_directions():
    """The legend of a board on CLEAR names CLEAR's sets (forget falls; retain and real stay), not
    MLLMU-Bench's test and celebrity sets; an MLLMU-Bench board keeps the fixed sentences."""
    from mmunlearn.harness.app.leaderboard import LEGEND, legend, load_runs

    root = Path(__file__).resolve().parents[1] / "results"
    clear = legend(load_runs(sorted((root / "clear" / "official" / "runs").iterdir())))
    assert "lower is better** on forget (knowledge forgotten)" in clear
    assert "higher is better** on retain and real" in clear
    assert "celebrity" not in clear and "forget and test" not in clear
    assert legend(load_runs(sorted((root / "demo" / "runs").iterdir()))) == LEGEND
