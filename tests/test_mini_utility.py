"""The mini utility suites: shape pictures in the MMMU, LLaVA-Bench, MME and POPE hub layouts
(paths, columns, types), balanced answers tied to the pixels, rebuilt byte-identically."""

from __future__ import annotations

import ast
import io
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmunlearn.harness.app.cli import main
from mmunlearn.harness.app.defaults import ASSETS, DEFAULT_BENCH
from mmunlearn.harness.embedded import minibench
from mmunlearn.harness.embedded.mini_utility import (
    CELLS,
    COLOURS,
    KINDS,
    MINI_UTILITY,
    NEW_WORDS,
    POPE_THEMES,
    build_mini_utility,
    pope_plan,
    training_items,
    vocabulary,
    words,
)

COMMITTED = ASSETS / "mini-utility"
SUBJECTS = ("Shapes", "Colors", "Counting")
MMMU = {s: f"mmmu/{s}/validation-00000-of-00001.parquet" for s in SUBJECTS}
LLAVA = "llava-bench/data/train-00000-of-00001.parquet"
MME = "mme/data/test-00000-of-00001.parquet"
POPE = "pope/data/test-00000-of-00001.parquet"
ROWS = {"mmmu/Shapes": 20, "mmmu/Colors": 20, "mmmu/Counting": 20, "llava-bench": 24, "mme": 40, "pope": 240}
FILES = {*MMMU.values(), LLAVA, MME, POPE, "README.md"} | {
    f"{s}/README.md" for s in ("mmmu", "llava-bench", "mme", "pope")
}

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
S = pa.string()
# The real hub layouts (research/utility.md sections 1-3; the hubs' dataset_info).
SCHEMAS = {
    "mmmu": [("id", S), ("question", S), ("options", S), ("explanation", S)]
    + [(f"image_{i}", IMAGE) for i in range(1, 8)]
    + [("img_type", S), ("answer", S), ("topic_difficulty", S), ("question_type", S), ("subfield", S)],
    "llava-bench": [
        ("question_id", pa.int8()),
        ("question", S),
        ("image", IMAGE),
        ("caption", S),
        ("gpt_answer", S),
        ("category", S),
        ("image_id", S),
    ],
    "mme": [("question_id", S), ("image", IMAGE), ("question", S), ("answer", S), ("category", S)],
    "pope": [
        ("id", S),
        ("question_id", S),
        ("question", S),
        ("answer", S),
        ("image_source", S),
        ("image", IMAGE),
        ("category", S),
    ],
}


def rows(root: Path, rel: str) -> list[dict]:
    return pq.read_table(root / rel).to_pylist()


def mmmu_rows(root: Path = COMMITTED) -> list[dict]:
    return [r for s in SUBJECTS for r in rows(root, MMMU[s])]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def cell_colours(png: bytes) -> dict[str, set[str]]:
    """The named colours drawn in each 16x16 cell (PIL draws without anti-aliasing)."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    by_rgb = {rgb: name for name, rgb in COLOURS.items()}
    out: dict[str, set[str]] = {c: set() for c in CELLS}
    for y in range(32):
        for x in range(32):
            name = by_rgb.get(img.getpixel((x, y)))
            if name:
                out[CELLS[(y // 16) * 2 + x // 16]].add(name)
    return out


def colours_in(png: bytes) -> set[str]:
    return set().union(*cell_colours(png).values())


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mini-utility") / "utility"
    assert build_mini_utility(out) == ROWS
    return out


def test_committed_asset_is_the_rebuild_byte_for_byte(rebuilt):
    assert MINI_UTILITY == COMMITTED
    committed, fresh = tree_bytes(COMMITTED), tree_bytes(rebuilt)
    assert committed.keys() == fresh.keys() == FILES
    same_writer = pq.read_metadata(COMMITTED / MME).created_by == pq.read_metadata(rebuilt / MME).created_by
    for name in committed:
        if same_writer or not name.endswith(".parquet"):
            assert committed[name] == fresh[name], name
        else:  # another pyarrow writes its own version string: compare content and schema
            assert pq.read_table(COMMITTED / name).equals(pq.read_table(rebuilt / name), check_metadata=True), name
    assert sum(len(b) for b in committed.values()) < 1024 * 1024


def test_rebuild_is_deterministic_and_the_seed_matters(rebuilt, tmp_path):
    build_mini_utility(tmp_path / "again")
    assert tree_bytes(tmp_path / "again") == tree_bytes(rebuilt)
    build_mini_utility(tmp_path / "other", seed=1)
    for rel in (*MMMU.values(), LLAVA, MME, POPE):
        assert rows(tmp_path / "other", rel) != rows(rebuilt, rel), rel


def test_columns_types_and_row_counts_are_the_hub_layouts():
    for suite, rels in (("mmmu", list(MMMU.values())), ("llava-bench", [LLAVA]), ("mme", [MME]), ("pope", [POPE])):
        for rel in rels:
            schema = pq.read_schema(COMMITTED / rel)
            assert [(f.name, f.type) for f in schema] == SCHEMAS[suite], rel
            features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
            for name, t in SCHEMAS[suite]:
                assert features[name] == ({"_type": "Image"} if t == IMAGE else {"dtype": str(t), "_type": "Value"})
    counts = {f"mmmu/{s}": len(rows(COMMITTED, MMMU[s])) for s in SUBJECTS}
    counts |= {"llava-bench": len(rows(COMMITTED, LLAVA)), "mme": len(rows(COMMITTED, MME))}
    assert counts | {"pope": len(rows(COMMITTED, POPE))} == ROWS


def test_datasets_loads_every_suite_as_from_the_hub(tmp_path):
    datasets = pytest.importorskip("datasets")
    cache = str(tmp_path / "cache")
    assert datasets.get_dataset_config_names(str(COMMITTED / "mmmu")) == list(SUBJECTS)
    for subject in SUBJECTS:
        ds = datasets.load_dataset(str(COMMITTED / "mmmu"), subject, split="validation", cache_dir=cache)
        assert ds.num_rows == 20 and ds[0]["id"] == f"validation_{subject}_1"
        assert isinstance(ds[0]["image_1"], Image.Image) and ds[0]["image_2"] is None
    for suite, split in (("llava-bench", "train"), ("mme", "test"), ("pope", "test")):
        ds = datasets.load_dataset(str(COMMITTED / suite), split=split, cache_dir=cache)
        assert ds.num_rows == ROWS[suite]
        img = ds[0]["image"]
        assert isinstance(img, Image.Image) and img.size == (32, 32) and img.mode == "RGB"
    ds = datasets.load_dataset("parquet", data_files=str(COMMITTED / POPE), split="train", cache_dir=cache)
    assert isinstance(ds[0]["image"], Image.Image)


def test_mmmu_rows_follow_mmmu_conventions():
    all_rows = mmmu_rows()
    kinds = Counter()
    for subject in SUBJECTS:
        for n, r in enumerate(rows(COMMITTED, MMMU[subject]), start=1):
            assert r["id"] == f"validation_{subject}_{n}"
            assert r["question"].startswith("<image 1> ")
            assert r["image_1"]["bytes"] and all(r[f"image_{i}"] is None for i in range(2, 8))
            assert ast.literal_eval(r["img_type"]) == ["Geometric Shapes"]
            options = ast.literal_eval(r["options"])
            assert isinstance(options, list) and all(isinstance(o, str) for o in options)
            if r["question_type"] == "multiple-choice":
                assert len(options) in (4, 5) and len(set(options)) == len(options)
                assert r["answer"] in "ABCDE"[: len(options)] and len(r["answer"]) == 1
                kinds[len(options)] += 1
            else:
                assert r["question_type"] == "open" and options == []
                kinds["open"] += 1
            assert r["topic_difficulty"] in ("Easy", "Medium", "Hard") and r["subfield"] and r["explanation"]
    assert kinds == {4: 30, 5: 15, "open": 15}
    list_golds = [ast.literal_eval(r["answer"]) for r in all_rows if r["answer"].startswith("[")]
    assert list_golds and all(isinstance(g, list) and g[0].isdigit() and len(g) == 2 for g in list_golds)


def test_answers_are_balanced():
    for subject in SUBJECTS:
        mc = [r for r in rows(COMMITTED, MMMU[subject]) if r["question_type"] == "multiple-choice"]
        four = Counter(r["answer"] for r in mc if len(ast.literal_eval(r["options"])) == 4)
        five = Counter(r["answer"] for r in mc if len(ast.literal_eval(r["options"])) == 5)
        assert set(four) == set("ABCD") and max(four.values()) - min(four.values()) <= 1, subject
        assert five == Counter("ABCDE"), subject
    mme = rows(COMMITTED, MME)
    assert Counter(r["answer"] for r in mme) == {"Yes": 20, "No": 20}
    assert Counter(r["category"] for r in mme) == {c: 10 for c in ("existence", "count", "position", "color")}
    pope = rows(COMMITTED, POPE)
    for category in ("adversarial", "popular", "random"):
        assert Counter(r["answer"] for r in pope if r["category"] == category) == {"yes": 40, "no": 40}
    # Open counting golds and count questions are not all the same number.
    golds = [r["answer"] for r in rows(COMMITTED, MMMU["Counting"]) if r["question_type"] == "open"]
    assert len({ast.literal_eval(g)[0] if g.startswith("[") else g for g in golds}) >= 3


def test_every_mme_picture_has_one_yes_and_one_no_question():
    pairs = defaultdict(list)
    for r in rows(COMMITTED, MME):
        pairs[r["question_id"]].append(r)
        assert r["question"].endswith("? Please answer yes or no.")
        assert re.fullmatch(rf"{r['category']}/\d{{4}}\.png", r["question_id"])
    assert len(pairs) == 20
    for qid, pair in pairs.items():
        assert sorted(r["answer"] for r in pair) == ["No", "Yes"], qid
        assert pair[0]["image"] == pair[1]["image"] and pair[0]["question"] != pair[1]["question"]
    # Both orders occur (the model cannot learn "the first question is the true one").
    assert {pair[0]["answer"] for pair in pairs.values()} == {"Yes", "No"}


def test_llava_bench_rows():
    rs = rows(COMMITTED, LLAVA)
    assert [r["question_id"] for r in rs] == list(range(24))
    by_image = defaultdict(list)
    for r in rs:
        by_image[r["image_id"]].append(r)
    assert sorted(by_image) == [f"{i:03d}" for i in range(1, 9)]
    for group in by_image.values():
        assert [r["category"] for r in group] == ["conv", "detail", "complex"]
        assert len({r["image"]["bytes"] for r in group}) == 1 and len({r["caption"] for r in group}) == 1
    for r in rs:
        assert r["gpt_answer"].endswith(".") and len(r["gpt_answer"].split()) <= 40


def test_pope_rows_and_negative_sampling():
    rs = rows(COMMITTED, POPE)
    assert [r["id"] for r in rs] == [str(i) for i in range(240)]
    scenes, plan = pope_plan(0)
    frequency = Counter(o for s in scenes for o in s.objects())
    for category in ("adversarial", "popular", "random"):
        part = [r for r in rs if r["category"] == category]
        assert [r["question_id"] for r in part] == [str(i) for i in range(1, 81)]
        assert [r["answer"] for r in part] == ["yes", "no"] * 40
        for i, scene in enumerate(scenes):
            asked = part[4 * i : 4 * i + 4]
            assert {r["image_source"] for r in asked} == {f"SHAPES_val_{i + 1:012d}"}
            objects = [re.fullmatch(r"Is there a (\w+ \w+) in the image\?", r["question"]).group(1) for r in asked]
            yes, no = objects[0::2], objects[1::2]
            assert yes == plan[i]["yes"] and no == plan[i][category]
            assert set(yes) <= scene.objects() and not set(no) & scene.objects()
            if category == "popular":  # no absent object is more frequent than the ones asked
                absent = [o for o in frequency if o not in scene.objects() and o not in no]
                assert min(frequency[o] for o in no) >= max((frequency[o] for o in absent), default=0)
    # The same "yes" rows in every category (as POPE), different "no" objects.
    yes_rows = {
        c: [(r["image_source"], r["question"]) for r in rs if r["category"] == c and r["answer"] == "yes"]
        for c in ("adversarial", "popular", "random")
    }
    assert yes_rows["adversarial"] == yes_rows["popular"] == yes_rows["random"]

    # Adversarial "no" objects are mostly absent members of the picture's own theme; random ones not.
    def theme(obj: str) -> int:
        colour, kind = obj.split()
        return next(i for i, (cs, ks, _) in enumerate(POPE_THEMES) if colour in cs and kind in ks)

    def same_theme(category: str) -> float:
        return sum(theme(o) == theme(p["yes"][0]) for p in plan for o in p[category]) / (2 * len(plan))

    assert same_theme("adversarial") >= 0.7 > 0.3 >= same_theme("random")


def test_answers_match_the_pixels():
    """What the answers say about colours, cells and counts is what the pictures show."""
    for r in mmmu_rows():
        options, cells = ast.literal_eval(r["options"]), cell_colours(r["image_1"]["bytes"])
        answer = options["ABCDE".index(r["answer"])] if options else r["answer"]
        if r["id"].startswith("validation_Colors"):
            assert answer in colours_in(r["image_1"]["bytes"]), r["id"]
            if "shape at the" in r["question"]:
                cell = re.search(r"at the (\w+ \w+) of", r["question"]).group(1)
                assert cells[cell] == {answer}, r["id"]
        if r["id"].startswith("validation_Counting") and (m := re.search(r"many (\w+) shapes", r["question"])):
            assert sum(m.group(1) in c for c in cells.values()) == int(answer), r["id"]
        if r["id"].startswith("validation_Shapes") and "shape at the" in r["question"]:
            cell = re.search(r"at the (\w+ \w+) of", r["question"]).group(1)
            assert cells[cell], r["id"]  # the asked cell is not empty
    for r in rows(COMMITTED, LLAVA):
        cells = cell_colours(r["image"]["bytes"])
        if r["category"] == "detail":  # every shape listed is in its cell, every other cell empty
            listed = dict(
                (cell, colour) for colour, cell in re.findall(r"a (\w+) \w+ at the (\w+ \w+)", r["gpt_answer"])
            )
            assert {c: s for c, s in cells.items() if s} == {c: {colour} for c, colour in listed.items()}
    for r in rows(COMMITTED, POPE):
        colour = r["question"].split()[3]
        if r["answer"] == "yes":
            assert colour in colours_in(r["image"]["bytes"])
    for r in rows(COMMITTED, MME):
        if r["category"] == "color" and r["answer"] == "Yes":
            assert r["question"].split()[-6].rstrip("?") in colours_in(r["image"]["bytes"])


def test_pictures_are_not_portraits():
    portraits = set()
    for config in sorted(p.name for p in DEFAULT_BENCH.iterdir() if p.is_dir()):
        for r in rows(DEFAULT_BENCH, f"{config}/{minibench.PARQUET_NAME}"):
            for img in [r.get("image")] + list(r.get("images") or []):
                if img:
                    portraits.add(Image.open(io.BytesIO(img["bytes"])).convert("RGB").tobytes())
    assert len(portraits) > 100
    pictures = {item["image"] for item in training_items()}
    assert len(pictures) == 60 + 8 + 20 + 20
    for png in pictures:
        img = Image.open(io.BytesIO(png))
        assert img.size == (32, 32) and img.mode == "RGB"
        assert img.tobytes() not in portraits
        assert img.getpixel((0, 0)) not in minibench.BACKGROUNDS  # a light background, no portrait's
        assert 1 <= sum(bool(c) for c in cell_colours(png).values()) <= 4


def test_training_items_cover_every_row():
    items = training_items()
    assert len(items) == sum(ROWS.values())
    assert Counter(i["suite"] for i in items) == {"mmmu": 60, "llava-bench": 24, "mme": 40, "pope": 240}
    for i in items:
        assert i["image"][:8] == b"\x89PNG\r\n\x1a\n" and i["question"] and i["answer"]
        if i["suite"] == "mmmu" and i["options"]:
            assert i["answer"] in "ABCDE" and i["answer_text"] == i["options"]["ABCDE".index(i["answer"])]
        elif i["suite"] == "mmmu":
            assert i["answer"] == i["answer_text"] and not i["answer"].startswith("[")
    llava = {r["question_id"]: r for r in rows(COMMITTED, LLAVA)}
    for i in items:
        if i["suite"] == "llava-bench":
            assert i["answer"] == llava[int(i["id"])]["gpt_answer"]
    assert {i["answer"] for i in items if i["suite"] == "mme"} == {"Yes", "No"}
    assert {i["answer"] for i in items if i["suite"] == "pope"} == {"yes", "no"}


def test_vocabulary_and_the_tiny_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(ASSETS / "tiny-llava" / "tokenizer.json"))
    known = set(tok.get_vocab())
    vocab = vocabulary()
    assert set(vocab) <= known | set(NEW_WORDS)  # no undocumented new word
    assert set(NEW_WORDS) <= set(vocab)  # no stale entry
    for item in training_items():  # `words` splits as the tokenizer does
        for text in (item["question"], item["answer"], *(item["options"] or [])):
            pieces = tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))
            assert [w for w, _ in pieces] == words(text)
    readme = (COMMITTED / "README.md").read_text()
    assert " ".join(vocab) in readme and " ".join(NEW_WORDS) in readme


def test_readmes_describe_the_layouts():
    text = (COMMITTED / "README.md").read_text()
    assert "fictitious" in text and "NOT portraits" in text
    for hub in ("MMMU/MMMU", "lmms-lab/llava-bench-in-the-wild", "lmms-lab/MME", "lmms-lab/POPE"):
        assert f"`{hub}`" in text
    for kind in KINDS:
        assert kind in text
    for suite, rel in ROWS.items():
        assert f"| `{suite}` | {rel} |" in text
    mmmu = (COMMITTED / "mmmu" / "README.md").read_text()
    for subject in SUBJECTS:
        assert (
            f"- config_name: {subject}\n  data_files:\n  - split: validation\n    path: {subject}/validation-*" in mmmu
        )
    for suite, split in (("llava-bench", "train"), ("mme", "test"), ("pope", "test")):
        assert f"  - split: {split}\n    path: data/{split}-*" in (COMMITTED / suite / "README.md").read_text()


def test_cli_writes_the_same_suites(rebuilt, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["build-minibench", "--out", str(out), "--utility"]) == 0
    assert str(out) in capsys.readouterr().out
    assert tree_bytes(out) == tree_bytes(rebuilt)
    assert main(["build-minibench", "--out", str(tmp_path / "x"), "--utility", "--clear"]) != 0
    assert not (tmp_path / "x").exists()
