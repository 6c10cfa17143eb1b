"""mmunlearn.harness.core.examples: in-context examples drawn as the official eval.py draws them, but seeded."""

from __future__ import annotations

import pytest
from PIL import Image

from mmunlearn.harness.core.bench import Benchmark, load_benchmark
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.examples import ExamplePlan, parse_shots, plan_examples, profile_count
from mmunlearn.harness.core.records import ImageDecoder, SETS
from mmunlearn.harness.core.contracts import TaskContext, get_task
from tests.test_tasks import FakeVLM


@pytest.fixture(scope="module")
def bench(small_bench):
    return load_benchmark(small_bench, forget=15)  # 3 forget profiles: enough for two cloze examples


# ----------------------------------------------------------------------------- counts and parsing


@pytest.mark.parametrize(
    "value,parsed", [("official", "official"), (" Official ", "official"), (0, 0), ("0", 0), ("2", 2), (3, 3)]
)
def test_parse_shots(value, parsed):
    assert parse_shots(value) == parsed


@pytest.mark.parametrize("value", [-1, "-1", "foo", "1.5", None, ""])
def test_parse_shots_refuses_anything_else(value):
    with pytest.raises(ConfigError, match="shots"):
        parse_shots(value)


def test_official_profile_counts_follow_eval_py():
    assert profile_count("official", "classification", "llava") == 1
    assert profile_count("official", "classification", "idefics2") == 1
    assert profile_count("official", "cloze", "llava") == 2
    assert profile_count("official", "cloze", "llava_next") == 2
    assert profile_count("official", "cloze", "idefics2") == 1
    assert profile_count("official", "generation", "llava") == 0
    assert [profile_count(0, t, "llava") for t in ("classification", "cloze", "generation")] == [0, 0, 0]
    assert [profile_count(3, t, "idefics2") for t in ("classification", "cloze", "generation")] == [3, 3, 0]


# ----------------------------------------------------------------------------- drawing


def test_draws_are_seeded_from_the_sets_own_ids(bench):
    for set_name in ("forget", "retain"):
        ids = {p.id for p in bench.profiles[set_name]}
        for task, k in (("classification", 1), ("cloze", 2)):
            a = plan_examples(bench, set_name, task, "official", seed=5, arch="llava")
            assert a == plan_examples(bench, set_name, task, "official", seed=5, arch="llava")
            assert len(a.drawn) == k == len(set(a.drawn)) and set(a.drawn) <= ids
            assert sorted(p.id for p in a.profiles) == sorted(a.drawn)  # fictitious IDs are all in Full_Set
            assert all(p is bench.full_set[p.id] for p in a.profiles)
    draws = {plan_examples(bench, "retain", "classification", "official", seed=s).drawn for s in range(10)}
    assert len(draws) > 1  # the seed matters


def test_examples_come_in_full_set_row_order_as_eval_py_reads_them(bench):
    """eval.py draws with random.sample, then reads few_shot_df[few_shot_df['ID'].isin(ids)]: the
    examples follow the Full_Set rows, whatever order the IDs were drawn in."""
    row_order = list(bench.full_set)
    reordered = 0
    for seed in range(10):
        plan = plan_examples(bench, "retain", "cloze", "official", seed=seed, arch="llava")
        used = [p.id for p in plan.profiles]
        assert used == sorted(plan.drawn, key=row_order.index) and plan.record()["used"] == used
        reordered += used != list(plan.drawn)
        texts = [e.text for e in plan.examples("text_only", ImageDecoder())]
        want = [q.text for p in plan.profiles for q in p.questions if q.task == "cloze" and q.mode == "text_only"]
        assert [t.split("\n")[0] for t in texts] == [w.replace("__", "[Blank]") for w in want]
    assert reordered  # some draws came out of row order (so the test can tell the two apart)


def test_test_set_draws_from_forget_ids_and_skips_those_profiles(bench):
    forget_ids = {p.id for p in bench.profiles["forget"]}
    for seed in range(6):
        plan = plan_examples(bench, "test", "classification", "official", seed, "llava")
        assert set(plan.drawn) <= forget_ids
        qs = bench.questions(sets="test", tasks="classification")
        skipped = {q.profile_id for q in qs if plan.skips(q)}
        assert skipped == set(plan.drawn)
        assert all(not plan.skips(q) for q in qs if q.profile_id not in plan.drawn)


def test_test_set_examples_are_read_from_full_set_with_the_original_image(bench):
    plan = plan_examples(bench, "test", "cloze", "official", seed=0, arch="llava")
    assert plan.prompted
    decoder = ImageDecoder()
    examples = plan.examples("image_text", decoder)
    pids = list(plan.drawn)
    full_qs = [q for pid in pids for q in bench.full_set[pid].questions if q.task == "cloze" and q.mode == "image_text"]
    assert len(examples) == len(full_qs) > 0
    test_images = {q.image for q in bench.questions(sets="test", modes="image_text")}
    for e, q in zip(examples, full_qs):
        assert e.source == bench.full_set[q.profile_id].image and e.source not in test_images
        assert isinstance(e.image, Image.Image)
        assert e.text == (
            f"{q.text.replace('__', '[Blank]')}\n"
            f"Please **ONLY** provide the correct answer that should replace the [Blank].\n"
            f"Correct Answer: {q.answer}"
        )
    text = plan.examples("text_only", decoder)
    assert text and all(e.image is None and e.source is None for e in text)


def test_celebrities_get_no_examples_their_ids_are_not_in_full_set(bench):
    celeb_ids = {p.id for p in bench.profiles["celebrity"]}
    assert not celeb_ids & set(bench.full_set)
    for task in ("classification", "cloze"):
        plan = plan_examples(bench, "celebrity", task, "official", seed=0, arch="llava")
        assert set(plan.drawn) <= celeb_ids and plan.profiles == ()
        assert not plan.prompted and plan.examples("image_text", ImageDecoder()) == ()
        assert not any(plan.skips(q) for q in bench.questions(sets="celebrity", tasks=task))
        assert plan.record() == {"drawn": list(plan.drawn), "used": [], "prompted": False}


def test_classification_is_prompted_on_forget_test_retain_and_cloze_everywhere(bench):
    """If a celebrity ID were in Full_Set, classification would still skip its questions but add
    no examples (eval.py prompts classification on forget/test/retain only); cloze would add them."""
    celeb = bench.profiles["celebrity"]
    full = {**bench.full_set, **{p.id: p for p in celeb}}
    fake = Benchmark(bench.source, bench.forget, bench.fingerprint, bench.profiles, full_set=full)
    cls = plan_examples(fake, "celebrity", "classification", 1, seed=0)
    assert cls.profiles and not cls.prompted
    assert cls.examples("text_only", ImageDecoder()) == ()
    assert any(cls.skips(q) for q in bench.questions(sets="celebrity", tasks="classification"))
    cloze = plan_examples(fake, "celebrity", "cloze", 1, seed=0)
    assert cloze.prompted and cloze.examples("text_only", ImageDecoder())
    for s in ("forget", "test", "retain"):
        assert plan_examples(bench, s, "classification", "official", 0).prompted


def test_shots_zero_and_n(bench):
    for task in ("classification", "cloze", "generation"):
        assert plan_examples(bench, "retain", task, 0, seed=0) == ExamplePlan("retain", task, (), ())
    assert len(plan_examples(bench, "retain", "classification", 3, seed=0).drawn) == 3
    assert len(plan_examples(bench, "retain", "cloze", 3, seed=0, arch="idefics2").drawn) == 3
    assert plan_examples(bench, "retain", "generation", 3, seed=0).drawn == ()


def test_too_few_profiles_is_a_config_error(small_bench, bench):
    one = load_benchmark(small_bench, forget=5)  # one forget profile
    with pytest.raises(ConfigError, match=r"2 in-context example profile\(s\) for cloze.*'forget'.*--shots 0"):
        plan_examples(one, "forget", "cloze", "official", seed=0, arch="llava")
    with pytest.raises(ConfigError, match="'test'"):
        plan_examples(one, "test", "cloze", "official", seed=0, arch="llava")
    assert len(plan_examples(one, "forget", "cloze", "official", seed=0, arch="idefics2").drawn) == 1
    with pytest.raises(ConfigError, match="at least 4 profiles"):
        plan_examples(bench, "forget", "classification", 4, seed=0)
    no_full = Benchmark(bench.source, bench.forget, bench.fingerprint, bench.profiles, full_set=None)
    with pytest.raises(ConfigError, match="Full_Set"):
        plan_examples(no_full, "forget", "classification", 1, seed=0)


# ----------------------------------------------------------------------------- through the tasks


@pytest.mark.parametrize("task,k", [("classification", 1), ("cloze", 2)])
def test_tasks_on_the_mini_bench_exclude_exactly_the_example_profiles(bench, task, k):
    ctx = TaskContext(seed=2, shots="official", bench=bench)
    for set_name in SETS:
        qs = bench.questions(sets=set_name, tasks=task)
        vlm = FakeVLM(default="A")
        samples = get_task(task).evaluate(vlm, qs, ctx)
        plan = plan_examples(bench, set_name, task, "official", seed=2, arch=None)
        excluded = {s.qid for s in samples if s.extra.get("excluded")}
        assert excluded == {q.qid for q in qs if q.profile_id in {p.id for p in plan.profiles}}
        asked = [r for reqs, *_ in vlm.generated for r in reqs]
        assert len(asked) == len(qs) - len(excluded)
        prompted = set_name in (("forget", "test", "retain") if task == "classification" else SETS)
        if set_name == "celebrity":
            assert not excluded and all(r.examples == () for r in asked)
        else:
            assert len(plan.profiles) == k and len(excluded) > 0
            assert all(bool(r.examples) == prompted for r in asked)
            per_mode = {
                m: sum(1 for p in plan.profiles for q in p.questions if q.task == task and q.mode == m)
                for m in ("image_text", "text_only")
            }
            assert all(len(r.examples) == per_mode[r.mode] for r in asked)
        assert get_task(task).aggregate(samples)["n"] == len(qs) - len(excluded)
