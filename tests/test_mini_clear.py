"""The mini-CLEAR: the mini-bench's people in the CLEAR hub layout (configs, columns, types,
nesting, +tofu rows, perturbed lists), rebuilt byte-identically from the committed mini-bench."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmunlearn.harness.app.cli import main
from mmunlearn.harness.app.defaults import ASSETS, DEFAULT_BENCH
from mmunlearn.harness.core.errors import BenchmarkError, ConfigError
from mmunlearn.harness.embedded.mini_clear import (
    CONFIG_COLUMNS,
    CONFIGS,
    N_PERTURBED,
    N_RETAIN_PERTURBED,
    build_mini_clear,
)
from mmunlearn.harness.embedded.minibench import PARQUET_NAME

from .conftest import SMALL

COMMITTED = ASSETS / "mini-clear"
HUB_CONFIGS = {
    "full",
    "forget01",
    "forget05",
    "forget10",
    "forget01+tofu",
    "forget05+tofu",
    "forget10+tofu",
    "forget01_perturbed",
    "forget05_perturbed",
    "forget10_perturbed",
    "retain90",
    "retain95",
    "retain99",
    "retain90+tofu",
    "retain95+tofu",
    "retain99+tofu",
    "retain_perturbed",
    "real_faces",
    "real_world",
}
PLAIN = ["image", "caption", "name"]
TOFU = ["image", "caption", "question", "answer"]
PERTURBED = PLAIN + ["paraphrased_caption", "perturbed_captions", "perturbed_names"]
# The committed build: 60 people (forget_5/10 = 3/6), 20 celebrities, 6 text QA per person.
ROWS = {
    "full": 60,
    "forget01": 1,
    "forget05": 3,
    "forget10": 6,
    "forget01+tofu": 7,
    "forget05+tofu": 21,
    "forget10+tofu": 42,
    "forget01_perturbed": 1,
    "forget05_perturbed": 3,
    "forget10_perturbed": 6,
    "retain99": 59,
    "retain95": 57,
    "retain90": 54,
    "retain99+tofu": 413,
    "retain95+tofu": 399,
    "retain90+tofu": 378,
    "retain_perturbed": 10,
    "real_faces": 20,
    "real_world": 120,
}
TEXT_QA_PER_PERSON = 6
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
STRINGS = pa.list_(pa.string())


def rows(root: Path, config: str) -> list[dict]:
    return pq.read_table(root / config / PARQUET_NAME).to_pylist()


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def names(root: Path, config: str) -> set[str]:
    return {r["name"] for r in rows(root, config)}


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mini-clear") / "clear"
    assert build_mini_clear(out) == ROWS
    return out


@pytest.fixture(scope="module")
def small_clear(small_bench, tmp_path_factory) -> Path:
    """From the 20-profile test bench: forget_5/10 = 1/2 people, 4 celebrities."""
    out = tmp_path_factory.mktemp("small-clear") / "clear"
    build_mini_clear(out, small_bench, n_retain_perturbed=5)
    return out


def test_committed_asset_is_the_rebuild_byte_for_byte(rebuilt):
    committed, fresh = tree_bytes(COMMITTED), tree_bytes(rebuilt)
    assert committed.keys() == fresh.keys() == {"README.md"} | {f"{c}/{PARQUET_NAME}" for c in HUB_CONFIGS}
    same_writer = pq.read_metadata(COMMITTED / "full" / PARQUET_NAME).created_by == (
        pq.read_metadata(rebuilt / "full" / PARQUET_NAME).created_by
    )
    for name in committed:
        if same_writer or not name.endswith(".parquet"):
            assert committed[name] == fresh[name], name
        else:  # another pyarrow writes its own version string: compare content and schema
            assert pq.read_table(COMMITTED / name).equals(pq.read_table(rebuilt / name), check_metadata=True), name
    assert sum(len(b) for b in committed.values()) < 1024 * 1024


def test_rebuild_is_deterministic_and_the_seed_matters(small_bench, small_clear, tmp_path):
    again = tmp_path / "again"
    build_mini_clear(again, small_bench, n_retain_perturbed=5)
    assert tree_bytes(again) == tree_bytes(small_clear)
    other = tmp_path / "other"
    build_mini_clear(other, small_bench, seed=1, n_retain_perturbed=5)
    assert rows(other, "full") == rows(small_clear, "full")  # captions come from the facts only
    assert rows(other, "forget10_perturbed") != rows(small_clear, "forget10_perturbed")


def test_row_counts_column_names_and_types(rebuilt):
    assert set(CONFIGS) == HUB_CONFIGS
    for config in CONFIGS:
        schema = pq.read_schema(rebuilt / config / PARQUET_NAME)
        expected = (
            TOFU
            if config.endswith("+tofu")
            else PERTURBED
            if config.endswith("perturbed")
            else ["image", "answer", "options"]
            if config == "real_faces"
            else ["image", "question", "answer", "options"]
            if config == "real_world"
            else PLAIN
        )
        assert schema.names == expected == list(CONFIG_COLUMNS[config]), config
        assert schema.field("image").type == IMAGE
        for column in ("perturbed_captions", "perturbed_names", "options"):
            if column in expected:
                assert schema.field(column).type == STRINGS
        for column in set(expected) - {"image", "perturbed_captions", "perturbed_names", "options"}:
            assert schema.field(column).type == pa.string()
        assert b"huggingface" in schema.metadata  # `datasets` decodes `image` as an Image feature
        assert pq.read_metadata(rebuilt / config / PARQUET_NAME).num_rows == ROWS[config], config


def test_forget_sets_nest_and_partition_the_people_with_retain(rebuilt):
    people = names(rebuilt, "full")
    assert len(people) == 60
    assert names(rebuilt, "forget01") < names(rebuilt, "forget05") < names(rebuilt, "forget10")
    for r in (1, 5, 10):
        forget, retain = names(rebuilt, f"forget{r:02d}"), names(rebuilt, f"retain{100 - r}")
        assert forget | retain == people and not forget & retain
        assert names(rebuilt, f"forget{r:02d}_perturbed") == forget
        assert rows(rebuilt, f"forget{r:02d}_perturbed") == [
            row for row in rows(rebuilt, "forget10_perturbed") if row["name"] in forget
        ]  # a person's row is the same in every config
    assert names(rebuilt, "retain_perturbed") <= people - names(rebuilt, "forget10")
    assert len(names(rebuilt, "retain_perturbed")) == N_RETAIN_PERTURBED


def test_forget_people_come_from_the_minibench_splits(rebuilt):
    forget_5 = [r["answer"] for r in rows(DEFAULT_BENCH, "forget_5")]
    forget_10 = [r["answer"] for r in rows(DEFAULT_BENCH, "forget_10")]
    assert [r["name"] for r in rows(rebuilt, "forget01")] == forget_5[:1]
    assert [r["name"] for r in rows(rebuilt, "forget05")] == forget_5
    assert [r["name"] for r in rows(rebuilt, "forget10")] == forget_10
    portraits = {r["answer"]: r["image"] for r in rows(DEFAULT_BENCH, "Full_Set")}
    assert [r["image"] for r in rows(rebuilt, "full")] == [portraits[r["name"]] for r in rows(rebuilt, "full")]


def test_tofu_configs_are_the_image_rows_then_text_rows(rebuilt):
    for config in CONFIGS:
        if not config.endswith("+tofu"):
            continue
        base = rows(rebuilt, config.removesuffix("+tofu"))
        mixed = rows(rebuilt, config)
        assert len(mixed) == len(base) * (1 + TEXT_QA_PER_PERSON)
        images, texts = mixed[: len(base)], mixed[len(base) :]
        assert [(r["image"], r["caption"]) for r in images] == [(r["image"], r["caption"]) for r in base]
        assert all(r["question"] is None and r["answer"] is None for r in images)
        assert all(r["image"] is None and r["caption"] is None and r["question"] and r["answer"] for r in texts)
        # Each text QA is about one of the config's people, by name (the TOFU role).
        people = {r["name"] for r in base}
        for r in texts:
            (who,) = [n for n in people if n in r["question"]]
            assert r["answer"].startswith(who)


def test_perturbed_columns(rebuilt):
    people = names(rebuilt, "full")
    for config in ("forget01_perturbed", "forget05_perturbed", "forget10_perturbed", "retain_perturbed"):
        for r in rows(rebuilt, config):
            assert len(r["perturbed_captions"]) == len(r["perturbed_names"]) == N_PERTURBED
            assert r["paraphrased_caption"] != r["caption"] and r["name"] in r["paraphrased_caption"]
            assert r["caption"] not in r["perturbed_captions"]
            assert all(c.startswith(r["name"] + ",") for c in r["perturbed_captions"])
            assert len(set(r["perturbed_names"])) == N_PERTURBED
            assert r["name"] not in r["perturbed_names"] and set(r["perturbed_names"]) <= people


def test_real_faces_and_real_world_options_exclude_the_answer(rebuilt):
    celebrities = {r["answer"]: r for r in rows(DEFAULT_BENCH, "Retain_Set")}
    faces = rows(rebuilt, "real_faces")
    assert [r["answer"] for r in faces] == list(celebrities)
    for r in faces:
        assert r["image"] == celebrities[r["answer"]]["image"]
        assert len(r["options"]) == len(set(r["options"])) == N_PERTURBED
        assert r["answer"] not in r["options"] and set(r["options"]) <= celebrities.keys()
    for r in rows(rebuilt, "real_world"):
        assert "this person" in r["question"] and r["image"] is not None
        assert len(r["options"]) == 3 and r["answer"] not in r["options"]


def test_small_bench_builds_with_the_same_layout(small_clear, small_bench):
    assert {p.name for p in small_clear.iterdir()} == HUB_CONFIGS | {"README.md"}
    assert len(rows(small_clear, "full")) == SMALL["n_profiles"]
    assert len(rows(small_clear, "forget01")) == 1
    assert len(rows(small_clear, "real_faces")) == SMALL["n_celebrities"]


def test_bad_inputs_are_refused(small_bench, tmp_path):
    with pytest.raises(BenchmarkError, match="Full_Set"):
        build_mini_clear(tmp_path / "out", tmp_path / "nothing-here")
    with pytest.raises(ConfigError, match="retain_perturbed"):
        build_mini_clear(tmp_path / "out", small_bench, n_retain_perturbed=SMALL["n_profiles"])


def test_cli_builds_the_mini_clear_from_a_minibench_folder(small_bench, small_clear, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["build-minibench", "--out", str(out), "--clear", str(small_bench), "--seed", "0"]) == 0
    assert str(out) in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == HUB_CONFIGS | {"README.md"}
    # The CLI uses the default 10 retain_perturbed people; every other config matches.
    for config in HUB_CONFIGS - {"retain_perturbed"}:
        assert (out / config / PARQUET_NAME).read_bytes() == (small_clear / config / PARQUET_NAME).read_bytes()


def test_readme_describes_the_layout(rebuilt):
    text = (COMMITTED / "README.md").read_text()
    assert text.startswith("---\nconfigs:\n")
    assert "fictitious" in text and "therem/CLEAR" in text
    for config in CONFIGS:
        assert f"- config_name: {config}\n" in text and f"| `{config}` | {ROWS[config]} |" in text
