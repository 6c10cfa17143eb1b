"""MLLMU-Bench (`MLLMU/MLLMU-Bench`): fictitious profiles and celebrities, each with multiple
choice, generation and cloze questions in image+text and text-only form.

Layout: one folder per config of parquet files. forget_{5,10,15} and retain_{95,90,85} hold the
profiles, Test_Set the forget profiles again with transformed images (the "test" set), Retain_Set
the celebrities, ft_Data the fine-tuning QA pairs, Full_Set every profile (the source of the
official in-context examples). Holdout_Set is an mmunlearn extension (never-seen profiles: the
non-members of membership inference), present in the embedded mini-bench.

One protocol, `mllmu-bench`: the official eval.py's prompts, parsers and in-context examples
(tasks classification, generation, cloze; per-question agreement with eval.py is tested), plus
the privacy stage.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pyarrow as pa

from mmunlearn.harness.core.bench import (
    Benchmark,
    BenchmarkPlugin,
    BenchSource,
    Holdout,
    Protocol,
    image_bytes,
    object_field,
    parquet_table,
    read_rows,
    register_benchmark,
    show,
    text_field,
)
from mmunlearn.harness.core.errors import BenchmarkError
from mmunlearn.harness.core.records import LETTERS, MODES, TASKS, FactPair, Profile, Question

FORGET_SPLITS = (5, 10, 15)
HOLDOUT_CONFIG = "Holdout_Set"  # our extension: profiles never trained on (membership non-members)
HOLDOUT_SET = "holdout"  # the set name its questions carry (qid "holdout/<id>/...")
PROFILE_FIELDS = (
    "image",
    "ID",
    "Directory",
    "biography",
    "question",
    "answer",
    "Classification_Task",
    "Generation_Task",
    "Mask_Task",
)
TEST_FIELDS = PROFILE_FIELDS + ("images",)
FT_FIELDS = ("ID", "metadata")
# Benchmark type name -> harness mode.
TYPE_TO_MODE = {"Image_Textual": "image_text", "Pure_Text": "text_only"}
CLASSIFICATION_LISTS = {"image_text": "Image_Textual_Questions", "text_only": "Pure_Text_Questions"}
LAYOUT_CONFIGS = ("forget_5", "Retain_Set", "Test_Set", "Full_Set", "ft_Data")  # what `detect` looks for


@register_benchmark
class MLLMUBench(BenchmarkPlugin):
    """MLLMU-Bench: forget / test / retain / celebrity sets, three question types in both modes."""

    name = "mllmu-bench"
    description = "MLLMU-Bench (fictitious profiles + celebrities; classification, generation, cloze)"
    hub_ids = ("MLLMU/MLLMU-Bench",)
    embedded = "minibench"
    forget_splits = FORGET_SPLITS
    default_forget = 5
    layout = {s: {t: MODES for t in TASKS} for s in ("forget", "test", "retain", "celebrity")}
    protocols = (
        Protocol(
            "mllmu-bench",
            "the official eval.py: its prompts, parsers and in-context examples; privacy stage",
            tasks=None,
            stages=("privacy",),
        ),
    )

    @classmethod
    def detect(cls, folder: Path) -> bool:
        return all((folder / c).is_dir() for c in LAYOUT_CONFIGS)

    def load(self, source: BenchSource, forget: int, protocol: Protocol, seed: int, **options) -> Benchmark:
        """Read forget_N, retain_{100-N}, the forget IDs' Test_Set rows, Retain_Set, ft_Data and
        Full_Set (the source of in-context examples, as in the official evaluation).
        `test_images` / `seed`: which transformed image each test-set question gets."""
        test_images = options.get("test_images", "random")
        reader = source
        ft = _ft_pairs(reader.table("ft_Data"))
        forget_cfg, retain_cfg = f"forget_{forget}", f"retain_{100 - forget}"
        forget_profiles = _profiles(reader.table(forget_cfg), forget_cfg, "forget", ft)
        retain_profiles = _profiles(reader.table(retain_cfg), retain_cfg, "retain", ft)
        forget_ids = [p.id for p in forget_profiles]
        test_profiles = _profiles(
            reader.table("Test_Set"), "Test_Set", "test", ft, ids=set(forget_ids), test_images=test_images, seed=seed
        )
        found = {p.id for p in test_profiles}
        for row, pid in enumerate(forget_ids):
            if pid not in found:
                raise BenchmarkError(forget_cfg, row, "ID", f"forget profile {show(pid)} has no Test_Set row")
        celebrity = _profiles(reader.table("Retain_Set"), "Retain_Set", "celebrity", ft)
        full = {p.id: p for p in _profiles(reader.table("Full_Set"), "Full_Set", "full", ft)}
        profiles = {
            "forget": tuple(forget_profiles),
            "test": tuple(test_profiles),
            "retain": tuple(retain_profiles),
            "celebrity": tuple(celebrity),
        }
        return Benchmark(
            source=reader.source,
            forget=forget,
            fingerprint=reader.hash.hexdigest(),
            profiles=profiles,
            full_set=full,
            test_images=test_images,
            plugin=self,
        )

    def fact_pairs(self, bench: Benchmark, set_name: str, mode: str) -> list[FactPair]:
        """image_text: the profile's ft_Data pairs with its image (fallback: its VQA pair plus
        its Image_Textual generation questions). text_only: the profile's Pure_Text
        generation questions plus its Pure_Text multiple-choice questions turned into
        (question, correct option) pairs, so that every attribute the benchmark asks about in
        text form has a text-form fact (generation questions alone cover only some of them)."""
        pairs = []
        for p in bench.profiles[set_name]:
            if mode == "image_text":
                qa = list(p.ft_pairs) or [(p.vqa_question, p.vqa_answer)] + [
                    (q.text, q.answer) for q in p.questions if q.task == "generation" and q.mode == mode
                ]
                pairs += [FactPair(p.id, mode, question, answer, p.image) for question, answer in qa]
            else:
                for q in p.questions:
                    if q.mode != mode:
                        continue
                    if q.task == "generation":
                        pairs.append(FactPair(p.id, mode, q.text, q.answer))
                    elif q.task == "classification":
                        assert q.options is not None  # classification questions are read with options A-D
                        pairs.append(FactPair(p.id, mode, q.text, q.options[q.answer]))
        return pairs

    def has_holdout(self, folder: Path) -> bool:
        return (folder / HOLDOUT_CONFIG).is_dir()

    def holdout(self, source: str | os.PathLike, bench: Benchmark | None) -> Holdout:
        return read_holdout(source, bench)


# ----------------------------------------------------------------------------- rows -> records


def _questions(
    r: dict, set_name: str, pid: str, images: dict[str, list[tuple[str, bytes]]], config: str, row: int
) -> list[Question]:
    """All questions of one row; index counts within (task, mode). images[task] lists the
    (qid suffix, image) pairs an image_text question is asked with (one, except test "all")."""
    out = []

    def add(task: str, mode: str, index: int, text: str, answer: str, options=None):
        qid = f"{set_name}/{pid}/{task}/{mode}/{index}"
        if mode == "text_only":
            out.append(Question(qid, set_name, task, mode, pid, text, answer, options, None))
            return
        for suffix, image in images[task]:
            out.append(Question(qid + suffix, set_name, task, mode, pid, text, answer, options, image))

    cls = r["Classification_Task"]
    if not isinstance(cls, dict):
        raise BenchmarkError(config, row, "Classification_Task", f"expected an object, got {show(cls)}")
    for mode, key in CLASSIFICATION_LISTS.items():
        where = f"Classification_Task.{key}"
        if cls.get(key) is None:
            raise BenchmarkError(config, row, where, "missing field")
        if not isinstance(cls[key], list):
            raise BenchmarkError(config, row, where, f"expected a list, got {show(cls[key])}")
        for i, item in enumerate(cls[key]):
            f = f"{where}[{i}]"
            item = object_field(item, ("Question", "Options", "Correct_Answer"), config, row, f)
            options = item["Options"]
            if not isinstance(options, dict) or any(not isinstance(options.get(L), str) for L in LETTERS):
                raise BenchmarkError(
                    config, row, f"{f}.Options", f"options must have text for A, B, C and D, got {show(options)}"
                )
            if item["Correct_Answer"] not in LETTERS:
                raise BenchmarkError(
                    config,
                    row,
                    f"{f}.Correct_Answer",
                    f"bad option letter {show(item['Correct_Answer'])} (expected one of A, B, C, D)",
                )
            add(
                "classification",
                mode,
                i,
                text_field(item["Question"], config, row, f"{f}.Question"),
                item["Correct_Answer"],
                {L: options[L] for L in LETTERS},
            )

    for task, field_name in (("generation", "Generation_Task"), ("cloze", "Mask_Task")):
        items = r[field_name]
        if not isinstance(items, list):
            raise BenchmarkError(config, row, field_name, f"expected a list, got {show(items)}")
        index = {m: 0 for m in MODES}
        for i, item in enumerate(items):
            f = f"{field_name}[{i}]"
            item = object_field(item, ("Type", "Question", "Ground_Truth"), config, row, f)
            item_mode = TYPE_TO_MODE.get(item["Type"]) if isinstance(item["Type"], str) else None
            if item_mode is None:
                raise BenchmarkError(
                    config,
                    row,
                    f"{f}.Type",
                    f"unknown type {show(item['Type'])} (expected Image_Textual or Pure_Text)",
                )
            text = text_field(item["Question"], config, row, f"{f}.Question")
            if task == "cloze" and "__" not in text:
                raise BenchmarkError(config, row, f"{f}.Question", f'cloze question has no "__" blank: {show(text)}')
            add(
                task,
                item_mode,
                index[item_mode],
                text,
                text_field(str(item["Ground_Truth"]), config, row, f"{f}.Ground_Truth"),
            )
            index[item_mode] += 1
    return out


def _test_images(images: list[bytes], pid: str, choice: str, seed: int) -> dict[str, list[tuple[str, bytes]]]:
    """Per task, the transformed image(s) a test-set profile's image_text questions are asked with.

    The official code calls random.choice(row["images"]) per profile and task (unseeded); "random"
    does the same with an RNG seeded by (seed, profile, task)."""
    if choice == "all":
        return {t: [(f"@{k}", im) for k, im in enumerate(images)] for t in TASKS}
    if choice == "first":
        return {t: [("", images[0])] for t in TASKS}
    return {t: [("", random.Random(f"test-image/{seed}/{pid}/{t}").choice(images))] for t in TASKS}


def _profiles(
    table: pa.Table,
    config: str,
    set_name: str,
    ft: dict[str, tuple],
    ids=None,
    test_images: str = "random",
    seed: int = 0,
) -> list[Profile]:
    """Profile records of one config; `ids` keeps only those IDs (Test_Set filtering)."""
    is_test = set_name == "test"
    rows = read_rows(table, config, TEST_FIELDS if is_test else PROFILE_FIELDS)
    profiles, seen = [], set()
    for row, r in enumerate(rows):
        pid = text_field(str(r["ID"]) if r["ID"] is not None else None, config, row, "ID")
        if pid in seen:
            raise BenchmarkError(config, row, "ID", f"duplicate profile ID {show(pid)}")
        seen.add(pid)
        if ids is not None and pid not in ids:
            continue
        if is_test:
            images = r["images"]
            if not isinstance(images, list) or not images:
                raise BenchmarkError(config, row, "images", "expected a non-empty list of images")
            decoded = [image_bytes(im, config, row, f"images[{k}]") for k, im in enumerate(images)]
            image = decoded[0]
            by_task = _test_images(decoded, pid, test_images, seed)
        else:
            image = image_bytes(r["image"], config, row, "image")
            by_task = {t: [("", image)] for t in TASKS}
        profiles.append(
            Profile(
                id=pid,
                set=set_name,
                biography=text_field(r["biography"], config, row, "biography"),
                image=image,
                directory=r["Directory"] or "",
                vqa_question=text_field(r["question"], config, row, "question"),
                vqa_answer=text_field(str(r["answer"]), config, row, "answer"),
                questions=tuple(_questions(r, set_name, pid, by_task, config, row)),
                ft_pairs=ft.get(pid, ()),
            )
        )
    return profiles


def _ft_pairs(table: pa.Table) -> dict[str, tuple[tuple[str, str], ...]]:
    config = "ft_Data"
    out = {}
    for row, r in enumerate(read_rows(table, config, FT_FIELDS)):
        pid = text_field(str(r["ID"]) if r["ID"] is not None else None, config, row, "ID")
        try:
            items = json.loads(r["metadata"])
        except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
            raise BenchmarkError(config, row, "metadata", f"not a JSON list: {exc}") from exc
        if not isinstance(items, list):
            raise BenchmarkError(config, row, "metadata", f"expected a JSON list, got {type(items).__name__}")
        pairs = []
        for i, item in enumerate(items):
            item = object_field(item, ("Question", "Answer"), config, row, f"metadata[{i}]")
            pairs.append(
                (
                    text_field(item["Question"], config, row, f"metadata[{i}].Question"),
                    text_field(str(item["Answer"]), config, row, f"metadata[{i}].Answer"),
                )
            )
        out[pid] = tuple(pairs)
    return out


def read_holdout(source: str | os.PathLike, bench: Benchmark | None = None) -> Holdout:
    """Read holdout profiles from a benchmark folder that has a Holdout_Set config, a config
    folder of parquet files, or one parquet file. With `bench`, a holdout profile whose name is
    a benchmark profile's is refused (it would be a member counted as a non-member)."""
    path = Path(source).expanduser()
    if path.is_file():
        reader, config = BenchSource(path.parent), path.name
        reader.hash.update(f"{config}\0".encode())
        data = path.read_bytes()
        reader.hash.update(data)
        try:
            table = parquet_table(data)
        except (pa.ArrowException, OSError) as exc:
            raise BenchmarkError(config, None, None, f"unreadable parquet file {path}: {exc}") from exc
    elif (path / HOLDOUT_CONFIG).is_dir():
        reader, config = BenchSource(path), HOLDOUT_CONFIG
        table = reader.table(config)
    elif path.is_dir():
        reader, config = BenchSource(path.parent), path.name
        table = reader.table(config)
    else:
        raise BenchmarkError(
            HOLDOUT_CONFIG, None, None, f"holdout {os.fspath(source)!r} is neither a folder nor a parquet file"
        )
    profiles = tuple(_profiles(table, config, HOLDOUT_SET, {}))
    if not profiles:
        raise BenchmarkError(config, None, None, "the holdout set has no profiles")
    if bench is not None:
        known = {p.vqa_answer.strip().lower(): p.id for s in bench.sets for p in bench.profiles[s]}
        for row, p in enumerate(profiles):
            if p.vqa_answer.strip().lower() in known:
                raise BenchmarkError(
                    config,
                    row,
                    "answer",
                    f"holdout profile {show(p.vqa_answer)} is benchmark profile {known[p.vqa_answer.strip().lower()]}"
                    " (a member cannot be a non-member)",
                )
    return Holdout(source=str(path.resolve()), fingerprint=reader.hash.hexdigest(), profiles=profiles)
