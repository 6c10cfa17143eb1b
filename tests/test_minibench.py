"""The mini-bench generator: layout, schema, determinism, and the properties the tiny model needs."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmunlearn.harness.app.cli import main
from mmunlearn.harness.app.defaults import DEFAULT_BENCH
from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.embedded.minibench import (
    ATTRIBUTES,
    FORGET_PERCENTS,
    IMAGE_SIZE,
    PARQUET_NAME,
    build_minibench,
    forget_count,
)

from .conftest import SMALL

CONFIGS = (
    {"Full_Set", "Test_Set", "Retain_Set", "ft_Data", "Holdout_Set"}
    | {f"forget_{p}" for p in FORGET_PERCENTS}
    | {f"retain_{100 - p}" for p in FORGET_PERCENTS}
)
PROFILE_COLUMNS = [
    "image",
    "ID",
    "Directory",
    "biography",
    "question",
    "answer",
    "Classification_Task",
    "Generation_Task",
    "Mask_Task",
]
SIMPLE_TEXT = re.compile(r"^[A-Za-z0-9 ?.,_]+$")


def rows(root: Path, config: str) -> list[dict]:
    return pq.read_table(root / config / PARQUET_NAME).to_pylist()


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def all_texts(row: dict):
    """Every question/answer text of a benchmark row."""
    yield row["question"]
    yield row["answer"]
    for items in row["Classification_Task"].values():
        for q in items:
            yield q["Question"]
            yield from q["Options"].values()
    for item in row["Generation_Task"] + row["Mask_Task"]:
        yield item["Question"]
        yield item["Ground_Truth"]


def test_layout_is_one_parquet_file_per_config(small_bench):
    assert {p.name for p in small_bench.iterdir()} == CONFIGS
    for config in CONFIGS:
        assert [p.name for p in (small_bench / config).iterdir()] == [PARQUET_NAME]


def test_schema_matches_mllmu_bench(small_bench):
    for config in CONFIGS - {"Test_Set", "ft_Data"}:
        assert pq.read_schema(small_bench / config / PARQUET_NAME).names == PROFILE_COLUMNS
    assert pq.read_schema(small_bench / "Test_Set" / PARQUET_NAME).names == PROFILE_COLUMNS + ["images"]
    assert pq.read_schema(small_bench / "ft_Data" / PARQUET_NAME).names == ["image", "ID", "metadata"]
    row = rows(small_bench, "Full_Set")[0]
    assert set(row["image"]) == {"bytes", "path"}
    assert set(row["Classification_Task"]) == {"Image_Textual_Questions", "Pure_Text_Questions"}


def test_same_seed_rebuilds_byte_identical_and_other_seed_differs(small_bench, tmp_path):
    again = build_minibench(tmp_path / "again", seed=0, **SMALL)
    other = build_minibench(tmp_path / "other", seed=1, **SMALL)
    assert tree_bytes(again) == tree_bytes(small_bench)
    assert (other / "Full_Set" / PARQUET_NAME).read_bytes() != (small_bench / "Full_Set" / PARQUET_NAME).read_bytes()


def test_committed_minibench_is_the_seed_0_build(tmp_path):
    """The shipped asset must hold what `build-minibench --seed 0` produces (and stay small).

    Compared by content, not bytes: another pyarrow version writes its own version string.
    """
    fresh = build_minibench(tmp_path / "fresh", seed=0)
    committed = tree_bytes(DEFAULT_BENCH)
    assert committed.keys() == tree_bytes(fresh).keys()
    for name in committed:
        assert pq.read_table(DEFAULT_BENCH / name).equals(pq.read_table(fresh / name)), name
    assert sum(len(b) for b in committed.values()) < 5 * 1024 * 1024


def test_splits_partition_full_set_and_are_nested(small_bench):
    full = [r["ID"] for r in rows(small_bench, "Full_Set")]
    assert len(full) == len(set(full)) == SMALL["n_profiles"]
    previous = set()
    for pct in FORGET_PERCENTS:
        forget = {r["ID"] for r in rows(small_bench, f"forget_{pct}")}
        retain = {r["ID"] for r in rows(small_bench, f"retain_{100 - pct}")}
        assert len(forget) == forget_count(SMALL["n_profiles"], pct)
        assert forget | retain == set(full) and not forget & retain
        assert previous <= forget
        previous = forget
    assert [r["ID"] for r in rows(small_bench, "Test_Set")] == full
    celebrities = [r["ID"] for r in rows(small_bench, "Retain_Set")]
    assert len(celebrities) == SMALL["n_celebrities"] and not set(celebrities) & set(full)


def test_names_are_unique_and_text_is_simple(small_bench):
    profile_rows = rows(small_bench, "Full_Set") + rows(small_bench, "Retain_Set")
    names = [r["answer"] for r in profile_rows]
    assert len(set(names)) == len(names)
    for r in profile_rows + rows(small_bench, "Test_Set"):
        for text in all_texts(r):
            assert SIMPLE_TEXT.match(text), text


def test_modes_name_the_person_only_in_text(small_bench):
    for r in rows(small_bench, "Full_Set") + rows(small_bench, "Test_Set"):
        name = r["answer"]
        image_qs = [q["Question"] for q in r["Classification_Task"]["Image_Textual_Questions"]]
        text_qs = [q["Question"] for q in r["Classification_Task"]["Pure_Text_Questions"]]
        image_qs += [q["Question"] for q in r["Generation_Task"] + r["Mask_Task"] if q["Type"] == "Image_Textual"]
        text_qs += [q["Question"] for q in r["Generation_Task"] + r["Mask_Task"] if q["Type"] == "Pure_Text"]
        assert all("this person" in q.lower() and name not in q for q in image_qs)
        assert all(name in q for q in text_qs)


def _templates(row: dict) -> tuple[str, ...]:
    return tuple(
        t.replace(row["answer"], "NAME")
        for t in (
            [q["Question"] for qs in row["Classification_Task"].values() for q in qs]
            + [q["Question"] for q in row["Generation_Task"]]
        )
    )


def test_templates_fixed_across_profiles_and_paraphrased_in_test_set(small_bench):
    base = {_templates(r) for r in rows(small_bench, "Full_Set") + rows(small_bench, "Retain_Set")}
    assert len(base) == 1
    originals = set(next(iter(base)))
    for r in rows(small_bench, "Test_Set"):
        assert not set(_templates(r)) & originals


def test_classification_options_and_letters(small_bench):
    letters = []
    for r in rows(small_bench, "Full_Set"):
        image_qs = r["Classification_Task"]["Image_Textual_Questions"]
        assert len(image_qs) == len(ATTRIBUTES) + 1
        assert len(r["Classification_Task"]["Pure_Text_Questions"]) == len(ATTRIBUTES)
        assert image_qs[0]["Options"][image_qs[0]["Correct_Answer"]] == r["answer"]
        for q in image_qs + r["Classification_Task"]["Pure_Text_Questions"]:
            assert len(set(q["Options"].values())) == 4
            letters.append(q["Correct_Answer"])
    assert set(letters) == {"A", "B", "C", "D"}


def test_ft_data_covers_name_and_every_attribute(small_bench):
    by_id = {r["ID"]: r for r in rows(small_bench, "Full_Set") + rows(small_bench, "Retain_Set")}
    ft = rows(small_bench, "ft_Data")
    assert sorted(r["ID"] for r in ft) == sorted(by_id)
    for r in ft:
        pairs = json.loads(r["metadata"])
        assert len(pairs) == len(ATTRIBUTES) + 1
        answers = " ".join(p["Answer"] for p in pairs)
        profile = by_id[r["ID"]]
        assert profile["answer"] in answers
        for q in profile["Classification_Task"]["Image_Textual_Questions"]:
            assert q["Options"][q["Correct_Answer"]] in answers
        assert r["image"]["bytes"] == profile["image"]["bytes"]


def test_portraits_are_distinct_32px_and_test_images_transformed(small_bench):
    portraits = [r["image"]["bytes"] for r in rows(small_bench, "Full_Set") + rows(small_bench, "Retain_Set")]
    assert len(set(portraits)) == len(portraits)
    for r in rows(small_bench, "Test_Set"):
        assert len(r["images"]) == 2
        for image in [r["image"]] + r["images"]:
            img = Image.open(io.BytesIO(image["bytes"]))
            assert (img.format, img.mode, img.size) == ("PNG", "RGB", (IMAGE_SIZE, IMAGE_SIZE))
        assert len({r["image"]["bytes"], *(i["bytes"] for i in r["images"])}) == 3


def test_build_minibench_command(tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        main(
            [
                "build-minibench",
                "--out",
                str(out),
                "--seed",
                "0",
                "--profiles",
                str(SMALL["n_profiles"]),
                "--celebrities",
                str(SMALL["n_celebrities"]),
            ]
        )
        == 0
    )
    assert str(out) in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == CONFIGS


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="must be positive"):
        build_minibench(tmp_path, n_profiles=0)
    with pytest.raises(ConfigError, match="at most"):
        build_minibench(tmp_path, n_profiles=1000)


def test_holdout_profiles_are_new_people_and_leave_every_other_config_unchanged(small_bench, tmp_path):
    from mmunlearn.benchmarks.mllmu_bench import HOLDOUT_CONFIG
    from mmunlearn.harness.core.bench import load_benchmark, load_holdout

    without = build_minibench(tmp_path / "without", seed=0, n_holdout=0, **SMALL)
    assert not (without / HOLDOUT_CONFIG).exists()
    others = {k: v for k, v in tree_bytes(small_bench).items() if not k.startswith(HOLDOUT_CONFIG)}
    assert others == tree_bytes(without)  # byte-identical: the benchmark fingerprint is unchanged
    bench = load_benchmark(small_bench, forget=15)
    holdout = load_holdout(small_bench, bench)  # refuses a holdout profile that is a benchmark one
    names = {p.vqa_answer for p in holdout.profiles}
    assert len(holdout.profiles) == 15 and len(names) == 15
    images = {p.image for s in bench.profiles.values() for p in s} | {p.image for p in bench.full_set.values()}
    assert not images & {p.image for p in holdout.profiles}  # their own portraits
    # no other config mentions a holdout person: no model trained on this bench has seen them
    for config in others:
        rows = pq.read_table(small_bench / config).to_pylist()
        text = json.dumps([{k: v for k, v in r.items() if k not in ("image", "images")} for r in rows])
        assert not [n for n in names if n in text], config
    assert {q.set for q in holdout.questions()} == {"holdout"}
