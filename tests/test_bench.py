"""load_benchmark: counts, set selection, question records, fact pairs, and refusal of bad data."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from mmunlearn.harness.core.bench import load_benchmark
from mmunlearn.harness.app.cli import main
from mmunlearn.harness.core.errors import BenchmarkError, ConfigError
from mmunlearn.harness.embedded.minibench import PARQUET_NAME, expected_counts
from mmunlearn.harness.core.records import MODES, SETS, TASKS

from .conftest import SMALL


def ids(root, config):
    return pq.read_table(root / config / PARQUET_NAME, columns=["ID"]).column("ID").to_pylist()


@pytest.mark.parametrize("forget", [5, 10, 15])
def test_counts_match_generator_parameters(small_bench, forget):
    bench = load_benchmark(small_bench, forget=forget)
    assert bench.counts() == expected_counts(**SMALL, forget=forget)
    assert bench.forget == forget


@pytest.mark.parametrize("forget", [5, 10, 15])
def test_forget_split_selects_consistent_sets(small_bench, forget):
    bench = load_benchmark(small_bench, forget=forget)
    forget_ids = {p.id for p in bench.profiles["forget"]}
    retain_ids = {p.id for p in bench.profiles["retain"]}
    assert forget_ids == set(ids(small_bench, f"forget_{forget}"))
    assert not forget_ids & retain_ids
    assert forget_ids | retain_ids == set(ids(small_bench, "Full_Set"))
    assert [p.id for p in bench.profiles["test"]] == [p.id for p in bench.profiles["forget"]]
    assert {p.id for p in bench.profiles["celebrity"]} == set(ids(small_bench, "Retain_Set"))


def test_questions_carry_set_task_mode_and_images_only_in_image_mode(small_bench):
    bench = load_benchmark(small_bench, forget=15)
    questions = bench.questions()
    assert len({q.qid for q in questions}) == len(questions)
    for q in questions:
        s, pid, task, mode, _ = q.qid.split("/")
        assert (s, pid, task, mode) == (q.set, q.profile_id, q.task, q.mode)
        assert (q.image is not None) == (mode == "image_text")
        assert (q.options is not None) == (task == "classification")
        if task == "classification":
            assert q.answer in q.options
        if task == "cloze":
            assert "__" in q.text


def _test_rows(root):
    return {
        r["ID"]: [im["bytes"] for im in r["images"]]
        for r in pq.read_table(root / "Test_Set" / PARQUET_NAME).to_pylist()
    }


def test_test_set_first_uses_the_first_transformed_image(small_bench):
    bench = load_benchmark(small_bench, forget=10, test_images="first")
    rows = _test_rows(small_bench)
    forget_images = {p.id: p.image for p in bench.profiles["forget"]}
    for q in bench.questions(sets="test", modes="image_text"):
        assert q.image == rows[q.profile_id][0]
        assert q.image != forget_images[q.profile_id]


def _test_images(bench):
    """(profile, task) -> the set of images its test image_text questions are asked with."""
    out: dict = {}
    for q in bench.questions(sets="test", modes="image_text"):
        out.setdefault((q.profile_id, q.task), set()).add(q.image)
    return out


def test_test_set_random_draws_one_image_per_profile_and_task_with_the_seed(small_bench):
    """The official code calls random.choice(row["images"]) per profile and task; we seed it."""
    rows = _test_rows(small_bench)
    assert all(len(images) > 1 for images in rows.values())
    default = load_benchmark(small_bench, forget=15)
    assert default.test_images == "random"
    per_seed = {}
    for seed in range(6):
        picked = _test_images(load_benchmark(small_bench, forget=15, test_images="random", seed=seed))
        assert picked == _test_images(load_benchmark(small_bench, forget=15, seed=seed))  # reproducible
        for (pid, _task), images in picked.items():
            assert len(images) == 1 and images <= set(rows[pid])  # one of the row's transformed images
        per_seed[seed] = {k: next(iter(v)) for k, v in picked.items()}
    assert per_seed[0] == {k: next(iter(v)) for k, v in _test_images(default).items()}  # default seed 0
    assert len({tuple(sorted(v.items())) for v in per_seed.values()}) > 1  # the seed matters
    # drawn per (profile, task): not one image for all tasks of every profile in every seed
    assert any(len({img for (pid, _t), img in v.items() if pid == p}) > 1 for v in per_seed.values() for p in rows)
    # text-only test questions and the other sets are untouched
    a, b = load_benchmark(small_bench, forget=15, seed=0), load_benchmark(small_bench, forget=15, seed=1)
    assert a.questions(sets=("forget", "retain", "celebrity")) == b.questions(sets=("forget", "retain", "celebrity"))
    assert a.questions(sets="test", modes="text_only") == b.questions(sets="test", modes="text_only")


def test_test_set_all_repeats_image_questions_once_per_image(small_bench):
    rows = _test_rows(small_bench)
    first = load_benchmark(small_bench, forget=10, test_images="first")
    every = load_benchmark(small_bench, forget=10, test_images="all")
    assert every.questions(sets="test", modes="text_only") == first.questions(sets="test", modes="text_only")
    assert every.questions(sets=("forget", "retain", "celebrity")) == first.questions(
        sets=("forget", "retain", "celebrity")
    )
    base = first.questions(sets="test", modes="image_text")
    expanded = every.questions(sets="test", modes="image_text")
    assert len({q.qid for q in expanded}) == len(expanded) == sum(len(rows[q.profile_id]) for q in base)
    for q in base:
        copies = [x for x in expanded if x.qid.rsplit("@", 1)[0] == q.qid]
        assert [x.qid for x in copies] == [f"{q.qid}@{k}" for k in range(len(rows[q.profile_id]))]
        assert [x.image for x in copies] == rows[q.profile_id]
        assert all((x.text, x.answer, x.options) == (q.text, q.answer, q.options) for x in copies)
    counts, base_counts = every.counts()["questions"]["test"], first.counts()["questions"]["test"]
    for task in TASKS:
        assert counts[task]["text_only"] == base_counts[task]["text_only"]
        assert counts[task]["image_text"] == 2 * base_counts[task]["image_text"]  # the mini-bench has 2 images
    with pytest.raises(ConfigError, match="test images must be one of random, first, all"):
        load_benchmark(small_bench, forget=10, test_images="each")


def test_full_set_is_loaded_for_in_context_examples(small_bench):
    bench = load_benchmark(small_bench, forget=10)
    assert set(bench.full_set) == set(ids(small_bench, "Full_Set"))
    assert not set(bench.full_set) & {p.id for p in bench.profiles["celebrity"]}
    for p in bench.profiles["retain"]:  # Full_Set rows are the same profiles, with the original image
        full = bench.full_set[p.id]
        assert full.image == p.image
        assert [(q.task, q.mode, q.text, q.answer) for q in full.questions] == [
            (q.task, q.mode, q.text, q.answer) for q in p.questions
        ]


def test_questions_filter(small_bench):
    bench = load_benchmark(small_bench, forget=10)
    picked = bench.questions(sets=("retain",), tasks=("cloze",), modes=("text_only",))
    assert {(q.set, q.task, q.mode) for q in picked} == {("retain", "cloze", "text_only")}
    assert len(picked) == bench.counts()["questions"]["retain"]["cloze"]["text_only"]
    with pytest.raises(ConfigError, match="unknown question type 'qa'"):
        bench.questions(tasks=("qa",))


def test_fact_pairs_image_mode_uses_ft_data_with_profile_image(small_bench):
    bench = load_benchmark(small_bench, forget=10)
    pairs = bench.fact_pairs("forget", "image_text")
    for p in bench.profiles["forget"]:
        mine = [f for f in pairs if f.profile_id == p.id]
        assert [(f.question, f.answer) for f in mine] == list(p.ft_pairs)
        assert p.ft_pairs and all(f.image == p.image and f.mode == "image_text" for f in mine)


def test_fact_pairs_text_mode_cover_every_text_question_with_its_answer(small_bench):
    bench = load_benchmark(small_bench, forget=10)
    pairs = bench.fact_pairs("retain", "text_only")
    got = {(f.question, f.answer) for f in pairs}
    for q in bench.questions(sets="retain", tasks="generation", modes="text_only"):
        assert (q.text, q.answer) in got
    mc = bench.questions(sets="retain", tasks="classification", modes="text_only")
    for q in mc:  # multiple-choice questions become (question, correct option text)
        assert (q.text, q.options[q.answer]) in got
    assert len(pairs) == len(mc) + len(bench.questions(sets="retain", tasks="generation", modes="text_only"))
    assert all(f.image is None and f.mode == "text_only" for f in pairs)


def test_fact_pairs_fall_back_without_ft_data(bench_copy, rewrite_config):
    rewrite_config(bench_copy, "ft_Data", lambda rows: [])
    bench = load_benchmark(bench_copy, forget=5)
    p = bench.profiles["forget"][0]
    gen = [(q.text, q.answer) for q in p.questions if q.task == "generation" and q.mode == "image_text"]
    pairs = bench.fact_pairs("forget", "image_text")
    assert [(f.question, f.answer) for f in pairs] == [(p.vqa_question, p.vqa_answer)] + gen


def test_fingerprint_follows_the_data(small_bench, bench_copy, rewrite_config):
    a = load_benchmark(small_bench, forget=5).fingerprint
    assert load_benchmark(bench_copy, forget=5).fingerprint == a
    assert load_benchmark(bench_copy, forget=10).fingerprint != a  # other configs used

    def edit(rows):
        rows[0]["biography"] += " Extra."
        return rows

    rewrite_config(bench_copy, "retain_95", edit)
    assert load_benchmark(bench_copy, forget=5).fingerprint != a


def test_hub_id_goes_through_datasets(small_bench, monkeypatch):
    """A hub id is read with datasets.load_dataset(id, config, split="train"); images stay bytes."""
    import datasets

    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        table = pq.read_table(small_bench / name / PARQUET_NAME)
        ds = datasets.Dataset(table)
        return ds.cast_column("image", datasets.Image()) if "image" in table.column_names else ds

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    hub = load_benchmark("someone/MLLMU-Bench", forget=10)
    local = load_benchmark(small_bench, forget=10)
    assert hub.source == "someone/MLLMU-Bench"
    assert {c[1] for c in calls} == {"forget_10", "retain_90", "Test_Set", "Retain_Set", "ft_Data", "Full_Set"}
    assert all(c[0] == "someone/MLLMU-Bench" and c[2] == "train" for c in calls)
    assert hub.counts() == local.counts()
    assert hub.questions() == local.questions()
    assert hub.full_set == local.full_set


def test_bad_forget_split_and_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match="--forget must be one of 5, 10, 15"):
        load_benchmark(tmp_path, forget=7)
    with pytest.raises(BenchmarkError, match="does not exist"):
        load_benchmark(tmp_path / "nope", forget=5)


# ----------------------------------------------------------------------------- malformed data


def _set(path, value):
    """edit(rows) that sets rows[0][path...] = value."""

    def edit(rows):
        target = rows[0]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return rows

    return edit


MALFORMED = [
    (
        "forget_5",
        _set(("Classification_Task", "Image_Textual_Questions", 1, "Correct_Answer"), "E"),
        "config 'forget_5', row 0, field 'Classification_Task.Image_Textual_Questions[1].Correct_Answer'",
        "bad option letter 'E'",
    ),
    (
        "retain_95",
        _set(("Classification_Task", "Pure_Text_Questions", 0, "Options", "D"), None),
        "config 'retain_95', row 0, field 'Classification_Task.Pure_Text_Questions[0].Options'",
        "A, B, C and D",
    ),
    (
        "forget_5",
        _set(("image", "bytes"), b"not an image"),
        "config 'forget_5', row 0, field 'image'",
        "undecodable image bytes",
    ),
    (
        "Retain_Set",
        _set(("Generation_Task", 2, "Type"), "Video"),
        "config 'Retain_Set', row 0, field 'Generation_Task[2].Type'",
        "unknown type 'Video'",
    ),
    (
        "forget_5",
        _set(("Mask_Task", 4, "Type"), "image"),
        "config 'forget_5', row 0, field 'Mask_Task[4].Type'",
        "unknown type 'image'",
    ),
    (
        "retain_95",
        _set(("Mask_Task", 0, "Question"), "This person was born in the year."),
        "config 'retain_95', row 0, field 'Mask_Task[0].Question'",
        'no "__" blank',
    ),
    ("retain_95", lambda rows: rows + [rows[0]], "config 'retain_95', row ", "duplicate profile ID"),
    ("ft_Data", _set(("metadata",), "{not json"), "config 'ft_Data', row 0, field 'metadata'", "not a JSON list"),
]


@pytest.mark.parametrize("config,edit,where,problem", MALFORMED, ids=[m[2].split("field ")[-1] for m in MALFORMED])
def test_malformed_rows_are_refused_naming_config_row_field(bench_copy, rewrite_config, config, edit, where, problem):
    rewrite_config(bench_copy, config, edit)
    with pytest.raises(BenchmarkError) as info:
        load_benchmark(bench_copy, forget=5)
    assert str(info.value).startswith(where)
    assert problem in str(info.value)
    assert info.value.config == config


def test_undecodable_test_image_is_refused(bench_copy, rewrite_config):
    """Only the forget profiles' Test_Set rows are used, so those are the ones checked."""
    forget_id = ids(bench_copy, "forget_5")[0]
    row = ids(bench_copy, "Test_Set").index(forget_id)

    def edit(rows):
        rows[row]["images"] = [{"bytes": b"\x89PNG broken", "path": "x.png"}]
        return rows

    rewrite_config(bench_copy, "Test_Set", edit)
    with pytest.raises(BenchmarkError, match=rf"^config 'Test_Set', row {row}, field 'images\[0\]': undecodable image"):
        load_benchmark(bench_copy, forget=5)


def test_forget_id_without_test_row_is_refused(bench_copy, rewrite_config):
    missing = ids(bench_copy, "forget_5")[0]
    rewrite_config(bench_copy, "Test_Set", lambda rows: [r for r in rows if r["ID"] != missing])
    with pytest.raises(BenchmarkError) as info:
        load_benchmark(bench_copy, forget=5)
    assert str(info.value) == (f"config 'forget_5', row 0, field 'ID': forget profile '{missing}' has no Test_Set row")


def test_missing_config_folder_is_refused(bench_copy):
    shutil.rmtree(bench_copy / "Retain_Set")
    with pytest.raises(BenchmarkError, match=r"^config 'Retain_Set': missing config folder"):
        load_benchmark(bench_copy, forget=5)


def test_renamed_field_is_refused(bench_copy):
    path = bench_copy / "retain_90" / PARQUET_NAME
    table = pq.read_table(path)
    pq.write_table(table.rename_columns(["bio" if c == "biography" else c for c in table.column_names]), path)
    with pytest.raises(BenchmarkError, match=r"^config 'retain_90', field 'biography': missing field"):
        load_benchmark(bench_copy, forget=10)


# ----------------------------------------------------------------------------- bench-info CLI


def test_bench_info_json(small_bench, capsys):
    assert main(["bench-info", "--bench", str(small_bench), "--forget", "10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == expected_counts(**SMALL, forget=10)


def test_bench_info_table(small_bench, capsys):
    assert main(["bench-info", "--bench", str(small_bench), "--forget", "15"]) == 0
    out = capsys.readouterr().out
    counts = expected_counts(**SMALL, forget=15)
    assert "forget: 15%" in out
    for s in SETS:
        assert f"{s} {counts['profiles'][s]}" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("celebrity"))
    assert line.split()[1:] == ["classification"] + [
        str(counts["questions"]["celebrity"]["classification"][m]) for m in MODES
    ]
    assert all(t in out for t in TASKS)


def test_bench_info_reports_bad_data_without_traceback(bench_copy, capsys):
    shutil.rmtree(bench_copy / "ft_Data")
    assert main(["bench-info", "--bench", str(bench_copy)]) == 2
    assert "config 'ft_Data': missing config folder" in capsys.readouterr().err
