"""Load an MLLMU-Bench-layout benchmark (local folder or hub id) into typed records.

Both sources end up as one pyarrow table per config and go through the same validation, so
the embedded mini-bench and the real benchmark are read by the very same code. Malformed data
is refused with a BenchmarkError naming config, row and field: a silently skipped question
would change every reported number without anyone noticing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from mmunlearn.harness.core.errors import BenchmarkError, ConfigError
from mmunlearn.harness.core.records import LETTERS, MODES, SETS, TASKS, FactPair, Profile, Question

FORGET_SPLITS = (5, 10, 15)
HOLDOUT_CONFIG = "Holdout_Set"  # our extension: profiles never trained on (membership non-members)
HOLDOUT_SET = "holdout"  # the set name its questions carry (qid "holdout/<id>/...")
# Which transformed image a test-set question is asked with: "random" = one per profile and
# task drawn with the seed (the official default, there unseeded), "first" = the first one,
# "all" = every transformed image (image_text questions repeat once per image, qid "...@k").
TEST_IMAGE_CHOICES = ("random", "first", "all")
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


@dataclass
class Benchmark:
    """The four evaluation sets of one forget split, as Profile records holding their questions."""

    source: str
    forget: int
    fingerprint: str  # sha256 over the parquet bytes used (local) or the hub dataset fingerprints
    profiles: dict[str, tuple[Profile, ...]]  # keys: SETS
    full_set: dict[str, Profile] | None = None  # Full_Set by ID: where in-context examples come from
    test_images: str = "random"

    def questions(
        self, sets: Iterable[str] = SETS, tasks: Iterable[str] = TASKS, modes: Iterable[str] = MODES
    ) -> list[Question]:
        """Questions of the given sets/tasks/modes, in set, profile, then benchmark order."""
        sets, tasks, modes = (
            _names(v, allowed, what)
            for v, allowed, what in ((sets, SETS, "set"), (tasks, TASKS, "task"), (modes, MODES, "mode"))
        )
        return [q for s in sets for p in self.profiles[s] for q in p.questions if q.task in tasks and q.mode in modes]

    def fact_pairs(self, set: str, mode: str) -> list[FactPair]:
        """Training/statistics samples about the profiles of one set in one mode.

        image_text: the profile's ft_Data pairs with its image (fallback: its VQA pair plus
        its Image_Textual generation questions). text_only: the profile's Pure_Text
        generation questions plus its Pure_Text multiple-choice questions turned into
        (question, correct option) pairs, so that every attribute the benchmark asks about in
        text form has a text-form fact (generation questions alone cover only some of them).
        """
        _names(set, SETS, "set")
        _names(mode, MODES, "mode")
        pairs = []
        for p in self.profiles[set]:
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

    def counts(self) -> dict:
        """{"profiles": {set: n}, "questions": {set: {task: {mode: n}}}}."""
        questions = {s: {t: {m: 0 for m in MODES} for t in TASKS} for s in SETS}
        for s in SETS:
            for p in self.profiles[s]:
                for q in p.questions:
                    questions[s][q.task][q.mode] += 1
        return {"profiles": {s: len(self.profiles[s]) for s in SETS}, "questions": questions}


def _names(value, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    values = (value,) if isinstance(value, str) else tuple(value)
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ConfigError(f"unknown {what} {unknown[0]!r}; choose from {', '.join(allowed)}")
    return values


# ----------------------------------------------------------------------------- reading


def parquet_table(data: bytes) -> pa.Table:
    """Decode one parquet file's bytes from memory that Arrow owns.

    Why not `pq.read_table(io.BytesIO(data))`: Arrow's I/O threads then hold the chunks they read
    as Python objects, and the last reference to one can drop on an Arrow thread after the table is
    returned. If that happens while the interpreter is finalizing, the thread's attempt to take the
    GIL ends it with pthread_exit inside a noexcept C++ destructor: std::terminate, "terminate called
    without an active exception", exit 134 after a command had finished (seen under CPU load in
    about 1 of 5 runs of a bare read-and-exit script; backtrace: ~PyBuffer <- ReadRangeCache <-
    the scanner's generator state, on an Arrow thread). Copied into an Arrow buffer, nothing an
    Arrow thread releases is a Python object. tests/test_clean_exit.py checks both."""
    buffer = pa.allocate_buffer(len(data))
    writer = pa.FixedSizeBufferWriter(buffer)
    writer.write(data)
    writer.close()
    return pq.read_table(pa.BufferReader(buffer))


class _Reader:
    """Reads one config as a pyarrow table and contributes to the fingerprint."""

    def __init__(self, source: str | os.PathLike):
        self.hash = hashlib.sha256()
        text = os.fspath(source)
        self.local = Path(text).expanduser()
        self.is_local = self.local.exists() or text.startswith((".", "/", "~")) or os.path.isabs(text)
        self.source = str(self.local.resolve()) if self.is_local else text
        if self.is_local and not self.local.is_dir():
            raise BenchmarkError("(root)", None, None, f"benchmark folder {self.source} does not exist")

    def table(self, config: str) -> pa.Table:
        return self._local(config) if self.is_local else self._hub(config)

    def _local(self, config: str) -> pa.Table:
        folder = self.local / config
        if not folder.is_dir():
            raise BenchmarkError(config, None, None, f"missing config folder {folder}")
        files = sorted(folder.rglob("*.parquet"))
        if not files:
            raise BenchmarkError(config, None, None, f"no parquet files in {folder}")
        tables = []
        for f in files:
            data = f.read_bytes()
            self.hash.update(f"{config}/{f.relative_to(folder)}\0".encode())
            self.hash.update(data)
            try:
                tables.append(parquet_table(data))
            except (pa.ArrowException, OSError) as exc:
                raise BenchmarkError(config, None, None, f"unreadable parquet file {f}: {exc}") from exc
        try:
            return pa.concat_tables(tables, promote_options="default")
        except pa.ArrowException as exc:
            raise BenchmarkError(config, None, None, f"parquet files disagree on schema: {exc}") from exc

    def _hub(self, config: str) -> pa.Table:
        import datasets

        try:
            ds = datasets.load_dataset(self.source, config, split="train")
        except Exception as exc:  # the hub raises many types; all mean "cannot read this config"
            raise BenchmarkError(config, None, None, f"cannot load {self.source!r} from the hub: {exc}") from exc
        self.hash.update(f"{config}\0{ds._fingerprint}\0".encode())
        # Arrow format returns the stored columns: images stay {bytes, path} structs, undecoded.
        return ds.with_format("arrow")[:]


# ----------------------------------------------------------------------------- validation


def _show(value, limit: int = 80) -> str:
    """repr of a bad value, cut short: an error stays one readable line even for a 1 MB field."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _rows(table: pa.Table, config: str, required: tuple[str, ...]) -> list[dict]:
    missing = [f for f in required if f not in table.column_names]
    if missing:
        raise BenchmarkError(
            config, None, missing[0], f"missing field (columns present: {', '.join(table.column_names)})"
        )
    columns = {}
    for name in required:  # column by column, so a value Python cannot hold is named
        column = table.column(name)
        try:
            columns[name] = column.to_pylist()
        except (pa.ArrowException, ValueError, OverflowError) as exc:  # e.g. invalid UTF-8 in a string column
            row = next((i for i in range(len(column)) if not _convertible(column[i])), None)
            problem = "text is not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else "unreadable value"
            raise BenchmarkError(config, row, name, f"{problem}: {exc}") from exc
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def _convertible(scalar) -> bool:
    try:
        scalar.as_py()
        return True
    except (pa.ArrowException, ValueError, OverflowError):
        return False


def _image_bytes(value, config: str, row: int, field: str) -> bytes:
    """Encoded image bytes from a {bytes, path} struct (or raw bytes), verified by decoding."""
    from PIL import Image

    data = value.get("bytes") if isinstance(value, dict) else value
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise BenchmarkError(config, row, field, "no image bytes")
    try:
        with warnings.catch_warnings():
            # Above MAX_IMAGE_PIXELS PIL only warns, then decodes: a few KB can expand to GBs.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BenchmarkError(config, row, field, f"image refused as a possible decompression bomb: {exc}") from exc
    except Exception as exc:  # PIL raises several types for bad data
        raise BenchmarkError(config, row, field, f"undecodable image bytes: {exc}") from exc
    return bytes(data)


def _text(value, config: str, row: int, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkError(config, row, field, f"expected non-empty text, got {_show(value)}")
    return value


def _item(item, keys: tuple[str, ...], config: str, row: int, field: str) -> dict:
    if not isinstance(item, dict):
        raise BenchmarkError(config, row, field, f"expected an object with {', '.join(keys)}, got {_show(item)}")
    for key in keys:
        if key not in item or item[key] is None:
            raise BenchmarkError(config, row, f"{field}.{key}", "missing field")
    return item


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
        raise BenchmarkError(config, row, "Classification_Task", f"expected an object, got {_show(cls)}")
    for mode, key in CLASSIFICATION_LISTS.items():
        where = f"Classification_Task.{key}"
        if cls.get(key) is None:
            raise BenchmarkError(config, row, where, "missing field")
        if not isinstance(cls[key], list):
            raise BenchmarkError(config, row, where, f"expected a list, got {_show(cls[key])}")
        for i, item in enumerate(cls[key]):
            f = f"{where}[{i}]"
            item = _item(item, ("Question", "Options", "Correct_Answer"), config, row, f)
            options = item["Options"]
            if not isinstance(options, dict) or any(not isinstance(options.get(L), str) for L in LETTERS):
                raise BenchmarkError(
                    config, row, f"{f}.Options", f"options must have text for A, B, C and D, got {_show(options)}"
                )
            if item["Correct_Answer"] not in LETTERS:
                raise BenchmarkError(
                    config,
                    row,
                    f"{f}.Correct_Answer",
                    f"bad option letter {_show(item['Correct_Answer'])} (expected one of A, B, C, D)",
                )
            add(
                "classification",
                mode,
                i,
                _text(item["Question"], config, row, f"{f}.Question"),
                item["Correct_Answer"],
                {L: options[L] for L in LETTERS},
            )

    for task, field_name in (("generation", "Generation_Task"), ("cloze", "Mask_Task")):
        items = r[field_name]
        if not isinstance(items, list):
            raise BenchmarkError(config, row, field_name, f"expected a list, got {_show(items)}")
        index = {m: 0 for m in MODES}
        for i, item in enumerate(items):
            f = f"{field_name}[{i}]"
            item = _item(item, ("Type", "Question", "Ground_Truth"), config, row, f)
            item_mode = TYPE_TO_MODE.get(item["Type"]) if isinstance(item["Type"], str) else None
            if item_mode is None:
                raise BenchmarkError(
                    config,
                    row,
                    f"{f}.Type",
                    f"unknown type {_show(item['Type'])} (expected Image_Textual or Pure_Text)",
                )
            text = _text(item["Question"], config, row, f"{f}.Question")
            if task == "cloze" and "__" not in text:
                raise BenchmarkError(config, row, f"{f}.Question", f'cloze question has no "__" blank: {_show(text)}')
            add(
                task,
                item_mode,
                index[item_mode],
                text,
                _text(str(item["Ground_Truth"]), config, row, f"{f}.Ground_Truth"),
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
    rows = _rows(table, config, TEST_FIELDS if is_test else PROFILE_FIELDS)
    profiles, seen = [], set()
    for row, r in enumerate(rows):
        pid = _text(str(r["ID"]) if r["ID"] is not None else None, config, row, "ID")
        if pid in seen:
            raise BenchmarkError(config, row, "ID", f"duplicate profile ID {_show(pid)}")
        seen.add(pid)
        if ids is not None and pid not in ids:
            continue
        if is_test:
            images = r["images"]
            if not isinstance(images, list) or not images:
                raise BenchmarkError(config, row, "images", "expected a non-empty list of images")
            decoded = [_image_bytes(im, config, row, f"images[{k}]") for k, im in enumerate(images)]
            image = decoded[0]
            by_task = _test_images(decoded, pid, test_images, seed)
        else:
            image = _image_bytes(r["image"], config, row, "image")
            by_task = {t: [("", image)] for t in TASKS}
        profiles.append(
            Profile(
                id=pid,
                set=set_name,
                biography=_text(r["biography"], config, row, "biography"),
                image=image,
                directory=r["Directory"] or "",
                vqa_question=_text(r["question"], config, row, "question"),
                vqa_answer=_text(str(r["answer"]), config, row, "answer"),
                questions=tuple(_questions(r, set_name, pid, by_task, config, row)),
                ft_pairs=ft.get(pid, ()),
            )
        )
    return profiles


def _ft_pairs(table: pa.Table) -> dict[str, tuple[tuple[str, str], ...]]:
    config = "ft_Data"
    out = {}
    for row, r in enumerate(_rows(table, config, FT_FIELDS)):
        pid = _text(str(r["ID"]) if r["ID"] is not None else None, config, row, "ID")
        try:
            items = json.loads(r["metadata"])
        except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
            raise BenchmarkError(config, row, "metadata", f"not a JSON list: {exc}") from exc
        if not isinstance(items, list):
            raise BenchmarkError(config, row, "metadata", f"expected a JSON list, got {type(items).__name__}")
        pairs = []
        for i, item in enumerate(items):
            item = _item(item, ("Question", "Answer"), config, row, f"metadata[{i}]")
            pairs.append(
                (
                    _text(item["Question"], config, row, f"metadata[{i}].Question"),
                    _text(str(item["Answer"]), config, row, f"metadata[{i}].Answer"),
                )
            )
        out[pid] = tuple(pairs)
    return out


def load_benchmark(source: str | os.PathLike, forget: int = 5, test_images: str = "random", seed: int = 0) -> Benchmark:
    """Read forget_N, retain_{100-N}, the forget IDs' Test_Set rows, Retain_Set, ft_Data and
    Full_Set (the source of in-context examples, as in the official evaluation).

    `source` is a folder in MLLMU-Bench layout (<root>/<config>/*.parquet) or a hub id.
    `test_images` / `seed`: which transformed image each test-set question gets (TEST_IMAGE_CHOICES).
    """
    if forget not in FORGET_SPLITS:
        raise ConfigError(f"forget split must be one of {', '.join(map(str, FORGET_SPLITS))}, got {forget!r}")
    if test_images not in TEST_IMAGE_CHOICES:
        raise ConfigError(f"test images must be one of {', '.join(TEST_IMAGE_CHOICES)}, got {test_images!r}")
    reader = _Reader(source)
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
            raise BenchmarkError(forget_cfg, row, "ID", f"forget profile {_show(pid)} has no Test_Set row")
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
    )


@dataclass
class Holdout:
    """Profiles no model trained on this benchmark has seen, in the benchmark's row schema: the
    non-members of membership inference (MLLMU-Bench has none; the mini-bench's Holdout_Set)."""

    source: str
    fingerprint: str
    profiles: tuple[Profile, ...]

    def questions(self, tasks: Iterable[str] = TASKS, modes: Iterable[str] = MODES) -> list[Question]:
        tasks, modes = _names(tasks, TASKS, "task"), _names(modes, MODES, "mode")
        return [q for p in self.profiles for q in p.questions if q.task in tasks and q.mode in modes]


def load_holdout(source: str | os.PathLike, bench: Benchmark | None = None) -> Holdout:
    """Read holdout profiles from a benchmark folder that has a Holdout_Set config, a config
    folder of parquet files, or one parquet file. With `bench`, a holdout profile whose name is
    a benchmark profile's is refused (it would be a member counted as a non-member)."""
    path = Path(source).expanduser()
    if path.is_file():
        reader, config = _Reader(path.parent), path.name
        reader.hash.update(f"{config}\0".encode())
        data = path.read_bytes()
        reader.hash.update(data)
        try:
            table = parquet_table(data)
        except (pa.ArrowException, OSError) as exc:
            raise BenchmarkError(config, None, None, f"unreadable parquet file {path}: {exc}") from exc
    elif (path / HOLDOUT_CONFIG).is_dir():
        reader, config = _Reader(path), HOLDOUT_CONFIG
        table = reader.table(config)
    elif path.is_dir():
        reader, config = _Reader(path.parent), path.name
        table = reader.table(config)
    else:
        raise BenchmarkError(
            HOLDOUT_CONFIG, None, None, f"holdout {os.fspath(source)!r} is neither a folder nor a parquet file"
        )
    profiles = tuple(_profiles(table, config, HOLDOUT_SET, {}))
    if not profiles:
        raise BenchmarkError(config, None, None, "the holdout set has no profiles")
    if bench is not None:
        known = {p.vqa_answer.strip().lower(): p.id for s in SETS for p in bench.profiles[s]}
        for row, p in enumerate(profiles):
            if p.vqa_answer.strip().lower() in known:
                raise BenchmarkError(
                    config,
                    row,
                    "answer",
                    f"holdout profile {_show(p.vqa_answer)} is benchmark profile {known[p.vqa_answer.strip().lower()]}"
                    " (a member cannot be a non-member)",
                )
    return Holdout(source=str(path.resolve()), fingerprint=reader.hash.hexdigest(), profiles=profiles)
