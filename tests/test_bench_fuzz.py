"""Property-based loader test: a mutated MLLMU-Bench row either loads cleanly or is refused with
the loader's own BenchmarkError naming config, row and field; never another exception.

Each example takes one row of one config of the small mini-bench, mutates one value anywhere in
it (missing, renamed or wrong-typed fields, empty lists, bad option letters, huge strings,
invalid UTF-8 in a string column, truncated or hostile image bytes such as decompression bombs,
hostile ft_Data JSON), writes that config back as parquet and loads the benchmark. Bounded
(`max_examples`) and derandomized, so CI runs the same examples every time in a few seconds.
"""

from __future__ import annotations

import copy
import io
import re
import struct
import zlib
from functools import lru_cache

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st
from PIL import Image

from mmunlearn.harness.core.bench import load_benchmark
from mmunlearn.harness.core.errors import BenchmarkError
from mmunlearn.harness.embedded.minibench import PARQUET_NAME
from mmunlearn.harness.core.records import LETTERS, MODES, SETS, TASKS, decode_image

# The configs load_benchmark(forget=5) reads.
CONFIGS = ("ft_Data", "forget_5", "retain_95", "Test_Set", "Retain_Set", "Full_Set")
FUZZ = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


# ---------------------------------------------------------------- hostile images
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_bomb(width: int, height: int) -> bytes:
    """A PNG whose (valid, checksummed) header declares width x height RGB pixels, with a few
    bytes of image data: what a decompression bomb looks like to Image.open."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")
    )


@lru_cache(maxsize=None)
def real_bomb(width: int = 10_000, height: int = 10_000) -> bytes:
    """A complete, valid 1-bit PNG of width x height (1e8 pixels: above PIL's warning limit, under
    its error limit) that compresses to ~12 KB and decodes to 100 MB (300 MB as RGB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    raw = (b"\0" + b"\0" * ((width + 7) // 8)) * height
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


def image_bytes(original: bytes):
    """Hostile variants of one encoded image."""
    n = len(original)
    return st.one_of(
        st.just(b""),
        st.binary(max_size=48),
        st.integers(0, n - 1).map(lambda k: original[:k]),  # truncated (killed download)
        st.tuples(st.integers(0, n - 1), st.integers(1, 255)).map(
            lambda t: original[: t[0]] + bytes([original[t[0]] ^ t[1]]) + original[t[0] + 1 :]
        ),  # one byte flipped
        st.sampled_from([(50_000, 50_000), (10_000, 10_000), (1, 200_000_000), (0, 0), (2**31 - 1, 1)]).map(
            lambda wh: png_header_bomb(*wh)
        ),
        st.just(b"GIF89a" + b"\xff" * 16),
        st.builds(real_bomb),  # decodes fine, to 1e8 pixels
        st.just(original + b"trailing garbage"),
    )


# ---------------------------------------------------------------- hostile values
HUGE = "x" * (1 << 20)
DEEP_JSON = "[" * 50_000 + "]" * 50_000
DEEP_JSONS = [DEEP_JSON, "[" * 50_000, '[{"Question": ' * 20_000]
SPECIAL_TEXT = [
    "",
    " ",
    "\n\t",
    "E",
    "a",
    "AB",
    " A",
    "A ",
    "Image_Textual ",
    "pure_text",
    "__",
    "\x00",
    HUGE,
    "\u202e\u0301\U0001f600 \u00fcn\u00efc\u00f6d\u00e9",
]
JSON_TEXT = [
    "[]",
    "{}",
    "null",
    "NaN",
    "[1, 2]",
    '{"Question": "q", "Answer": "a"}',
    '[{"Question": "q"}]',
    '[{"Question": "q", "Answer": null}]',
    '[{"Question": "", "Answer": "a"}]',
    '[{"Question": 1, "Answer": 2}]',
    *DEEP_JSONS,
    '[{"Question": "q", "Answer": "a"}',
    "\ufeff[]",
]
KEYS = ["A", "B", "C", "D", "Question", "Options", "Correct_Answer", "Type", "Ground_Truth", "bytes", "path", "x"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.just(b"\xff\xfe\xfd not utf-8"),
)
# Homogeneous lists and flat objects: a parquet column cannot hold [1, "a"].
containers = st.one_of(
    st.just([]),
    st.just([None]),
    st.lists(st.text(max_size=5), max_size=3),
    st.lists(st.integers(0, 9), max_size=3),
    st.lists(st.fixed_dictionaries({"Question": st.text(max_size=5)}), max_size=2),
    st.lists(st.fixed_dictionaries({"bytes": st.binary(max_size=8), "path": st.text(max_size=3)}), max_size=2),
    st.dictionaries(st.sampled_from(KEYS), st.text(max_size=5), min_size=1, max_size=4),
    st.dictionaries(st.sampled_from(KEYS), st.integers(0, 9), min_size=1, max_size=4),
)


def values_for(old):
    """Replacement values: odd text where text was (JSON-hostile text where JSON was), else any type."""
    if isinstance(old, str):
        odd = st.sampled_from(JSON_TEXT if old.startswith("[") else SPECIAL_TEXT)
        return st.one_of(odd, odd, scalars, containers)
    return st.one_of(scalars, containers)


# ---------------------------------------------------------------- rows <-> parquet
def read_config(root, config):
    table = pq.read_table(root / config / PARQUET_NAME)
    return table.to_pylist(), table.schema


def get(obj, path):
    for k in path:
        obj = obj[k]
    return obj


def with_binary_at(typ: pa.DataType, path) -> pa.DataType:
    """typ with the string at `path` (list indices ignored) turned into binary."""
    if not path:
        return pa.binary()
    if pa.types.is_struct(typ):
        return pa.struct(
            [pa.field(f.name, with_binary_at(f.type, path[1:]) if f.name == path[0] else f.type) for f in typ]
        )
    if pa.types.is_list(typ):
        return pa.list_(with_binary_at(typ.value_type, path))
    raise TypeError(typ)


def to_parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def matching_paths(node, path):
    """Every concrete path matching `path` with each list index taken as "every element"."""
    if not path:
        yield ()
        return
    key, rest = path[0], path[1:]
    if isinstance(key, int) and isinstance(node, list):
        for i, child in enumerate(node):
            yield from ((i,) + tail for tail in matching_paths(child, rest))
    elif isinstance(key, str) and isinstance(node, dict) and key in node:
        yield from ((key,) + tail for tail in matching_paths(node[key], rest))


def invalid_utf8_table(rows, schema, path) -> pa.Table:
    """rows (bytes at `path`) as a table whose column keeps its string type: invalid UTF-8 in a
    string column, as a writer that does not validate produces."""
    col = path[0]
    i = schema.get_field_index(col)
    bin_schema = pa.schema([pa.field(f.name, with_binary_at(f.type, path[1:])) if f.name == col else f for f in schema])
    table = pa.Table.from_pylist(rows, schema=bin_schema)
    return table.set_column(i, schema.field(i), table.column(i).chunk(0).view(schema.field(i).type))


class Mutation:
    """One mutation of one value of one row; `data` is the config written back as parquet.
    Its repr (what hypothesis prints for a failure) stays short."""

    def __init__(self, config, row, path, kind, value):
        self.config, self.row, self.path, self.kind, self.value = config, row, path, kind, value
        self.data = b""

    def __repr__(self):
        value = repr(self.value)
        value = value if len(value) <= 120 else f"{value[:100]}... ({len(value)} chars)"
        return f"Mutation({self.config}, row {self.row}, {'.'.join(map(str, self.path))}, {self.kind}: {value})"

    def apply(self, row, every_element=False) -> None:
        paths = list(matching_paths(row, self.path)) if every_element else [self.path]
        for path in sorted(paths, reverse=True):  # deleting list elements from the back
            parent = get(row, path[:-1])
            if self.kind == "delete":
                del parent[path[-1]]
            elif self.kind == "rename":
                parent[self.value] = parent.pop(path[-1])
            else:
                parent[path[-1]] = self.value

    def encode(self, rows: list[dict], schema: pa.Schema) -> bytes:
        """The mutated config as parquet, in the first form arrow can store: the original schema;
        an inferred one (the column's type changed); the mutated row alone; the mutated row with
        every list element changed alike (a parquet list holds one type). reject() if none."""
        if self.kind == "invalid_utf8":
            self.apply(rows[self.row])
            return to_parquet(invalid_utf8_table(rows, schema, tuple(k for k in self.path if isinstance(k, str))))
        if len(self.path) == 1 and self.kind in ("delete", "rename"):  # a missing column is missing in every row
            for r in rows:
                self.apply(r)
            return to_parquet(pa.Table.from_pylist(rows))
        row = copy.deepcopy(rows[self.row])
        self.apply(rows[self.row])
        self.apply(row, every_element=True)
        for make in (
            lambda: pa.Table.from_pylist(rows, schema=schema),
            lambda: pa.Table.from_pylist(rows),
            lambda: pa.Table.from_pylist([rows[self.row]]),
            lambda: pa.Table.from_pylist([row]),
        ):
            try:
                return to_parquet(make())
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                continue
        reject()


@st.composite
def mutations(draw, root):
    config = draw(st.sampled_from(CONFIGS))
    rows, schema = read_config(root, config)
    if config == "Test_Set":  # only the forget profiles' rows are read beyond their ID
        forget_id = pq.read_table(root / "forget_5" / PARQUET_NAME, columns=["ID"]).column("ID")[0].as_py()
        row_index = next(i for i, r in enumerate(rows) if r["ID"] == forget_id)
    else:
        row_index = draw(st.integers(0, len(rows) - 1))
    path, node = (), rows[row_index]  # walk down from the row: every level is as likely to be hit as the leaves
    while True:
        key = draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node))))
        path, node = path + (key,), node[key]
        if not isinstance(node, (dict, list)) or not node or draw(st.booleans()):
            break
    kinds = ["delete", "replace", "replace"]
    if isinstance(path[-1], str):
        kinds.append("rename")
    if isinstance(node, str) and node:
        kinds.append("invalid_utf8")
    if isinstance(node, bytes):
        kinds += ["image"] * 3
    kind = draw(st.sampled_from(kinds))
    value = None
    if kind == "rename":
        value = draw(st.sampled_from([path[-1].lower(), path[-1] + " ", path[-1].replace("_", " "), "x" + path[-1]]))
    elif kind == "replace":
        value = draw(values_for(node))
    elif kind == "image":
        value = draw(image_bytes(node))
    elif kind == "invalid_utf8":  # the text's bytes with an invalid sequence inserted
        cut = draw(st.integers(0, len(node.encode())))
        junk = draw(st.sampled_from([b"\xff", b"\x80", b"\xc3", b"\xed\xa0\x80", b"\xfe\xfe"]))
        value = node.encode()[:cut] + junk + node.encode()[cut:]
    m = Mutation(config, row_index, path, kind, value)
    try:
        m.data = m.encode(rows, schema)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        reject()
    return m


def check_load(root, config, top) -> BenchmarkError | None:
    """Load; the only acceptable failure is a BenchmarkError naming config, row and field (returned)."""
    try:
        bench = load_benchmark(root, forget=5, test_images="all")  # "all": every test image reaches a question
    except BenchmarkError as exc:
        assert exc.config in CONFIGS, exc
        assert str(exc).startswith(f"config {exc.config!r}"), exc
        if exc.row is not None:
            assert isinstance(exc.row, int) and exc.field, exc
            assert f", row {exc.row}, field {exc.field!r}: " in str(exc)
        if exc.config == config and exc.row is not None:
            assert re.split(r"[.\[]", exc.field)[0] == top, (exc, top)
        assert exc.problem.strip() and len(str(exc)) < 1000, exc  # one readable line, even for a 1 MB value
        return exc
    # A clean load gives usable records.
    questions = bench.questions()
    assert questions
    for q in questions:
        assert (q.set, q.task, q.mode) in {(s, t, m) for s in SETS for t in TASKS for m in MODES}
        assert isinstance(q.text, str) and q.text.strip() and isinstance(q.answer, str)
        assert (q.image is not None) == (q.mode == "image_text")
        if q.task == "classification":
            assert q.answer in LETTERS and set(q.options) == set(LETTERS)
    images = {p.image for profiles in bench.profiles.values() for p in profiles} | {q.image for q in questions}
    for data in images - {None}:  # verified by the loader: decodable, and no decompression bomb
        with Image.open(io.BytesIO(data)) as img:
            assert img.width * img.height <= Image.MAX_IMAGE_PIXELS
    decode_image(bench.profiles["forget"][0].image)
    return None


# ---------------------------------------------------------------- properties
@FUZZ
@given(data=st.data())
def test_mutated_rows_load_cleanly_or_raise_a_benchmark_error(bench_copy, data):
    originals = {c: (bench_copy / c / PARQUET_NAME).read_bytes() for c in CONFIGS}
    m = data.draw(mutations(bench_copy))
    target = bench_copy / m.config / PARQUET_NAME
    try:
        target.write_bytes(m.data)
        error = check_load(bench_copy, m.config, m.path[0])
        event(f"{m.kind} -> {'refused' if error else 'loaded'}")
    finally:
        target.write_bytes(originals[m.config])


@settings(FUZZ, max_examples=80)
@given(data=st.data())
def test_hostile_image_bytes_are_refused_with_the_field_named(bench_copy, data):
    """Every image field (profile image, each Test_Set transformed image) gets hostile bytes."""
    config = data.draw(st.sampled_from(("forget_5", "retain_95", "Test_Set", "Full_Set", "Retain_Set")))
    target = bench_copy / config / PARQUET_NAME
    original = target.read_bytes()
    rows, schema = read_config(bench_copy, config)
    if config == "Test_Set":
        forget_id = pq.read_table(bench_copy / "forget_5" / PARQUET_NAME, columns=["ID"]).column("ID")[0].as_py()
        i = next(k for k, r in enumerate(rows) if r["ID"] == forget_id)
        k = data.draw(st.integers(0, len(rows[i]["images"]) - 1))
        field, holder = f"images[{k}]", rows[i]["images"][k]
    else:
        i = data.draw(st.integers(0, len(rows) - 1))
        field, holder = "image", rows[i]["image"]
    holder["bytes"] = data.draw(image_bytes(holder["bytes"]))
    try:
        target.write_bytes(to_parquet(pa.Table.from_pylist(rows, schema=schema)))
        error = check_load(bench_copy, config, field.split("[")[0])
        if error is not None:
            assert (error.config, error.row, error.field) == (config, i, field), error
        event("refused" if error else "loaded")
    finally:
        target.write_bytes(original)


# ---------------------------------------------------------------- what the fuzzer (or writing it) found, pinned
def _set(root, config, edit, schema=None):
    """Rewrite one config with edit(rows); schema None = inferred (wrong types allowed)."""
    path = root / config / PARQUET_NAME
    rows = edit(pq.read_table(path).to_pylist())
    table = pa.Table.from_pylist(rows, schema=schema) if schema is not None else pa.Table.from_pylist(rows)
    path.write_bytes(to_parquet(table))


def test_decompression_bomb_header_is_a_benchmark_error(bench_copy, rewrite_config):
    def edit(rows):
        rows[0]["image"]["bytes"] = png_header_bomb(50_000, 50_000)
        return rows

    rewrite_config(bench_copy, "forget_5", edit)
    with pytest.raises(BenchmarkError) as exc:
        load_benchmark(bench_copy, forget=5)
    assert (exc.value.config, exc.value.row, exc.value.field) == ("forget_5", 0, "image")
    assert "decompression bomb" in str(exc.value)


def test_decodable_decompression_bomb_is_refused_before_decoding(bench_copy, rewrite_config):
    """1e8 pixels: PIL only warns (DecompressionBombWarning) and would decode 100 MB from 12 KB."""
    forget_id = pq.read_table(bench_copy / "forget_5" / PARQUET_NAME, columns=["ID"]).column("ID")[0].as_py()

    def put_in_forget_row(rows):
        i = next(k for k, r in enumerate(rows) if r["ID"] == forget_id)
        rows[i]["images"][1] = {"bytes": real_bomb(), "path": "bomb.png"}
        return rows

    rewrite_config(bench_copy, "Test_Set", put_in_forget_row)
    with pytest.raises(BenchmarkError) as exc:
        load_benchmark(bench_copy, forget=5)
    assert exc.value.config == "Test_Set" and exc.value.field == "images[1]"
    assert "decompression bomb" in str(exc.value)


def test_invalid_utf8_in_a_string_column_names_row_and_field(bench_copy):
    path = bench_copy / "retain_95" / PARQUET_NAME
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[3]["biography"] = rows[3]["biography"].encode() + b"\xff"
    rows[5]["Mask_Task"][2]["Ground_Truth"] = b"\xc3"
    schema = pa.schema(
        [
            pa.field(
                f.name,
                with_binary_at(f.type, ("Ground_Truth",))
                if f.name == "Mask_Task"
                else pa.binary()
                if f.name == "biography"
                else f.type,
            )
            for f in table.schema
        ]
    )
    bad = pa.Table.from_pylist(rows, schema=schema)
    for name in ("biography", "Mask_Task"):
        i = table.schema.get_field_index(name)
        bad = bad.set_column(i, table.schema.field(i), bad.column(i).chunk(0).view(table.schema.field(i).type))
    path.write_bytes(to_parquet(bad))
    with pytest.raises(BenchmarkError) as exc:
        load_benchmark(bench_copy, forget=5)
    assert (exc.value.config, exc.value.row, exc.value.field) == ("retain_95", 3, "biography")
    assert "UTF-8" in str(exc.value)


def test_deeply_nested_metadata_json_is_a_benchmark_error(bench_copy, rewrite_config):
    def edit(rows):
        rows[2]["metadata"] = DEEP_JSON
        return rows

    rewrite_config(bench_copy, "ft_Data", edit)
    with pytest.raises(BenchmarkError) as exc:
        load_benchmark(bench_copy, forget=5)
    assert (exc.value.config, exc.value.row, exc.value.field) == ("ft_Data", 2, "metadata")


@pytest.mark.parametrize("value", [7, 2.5, True])
def test_question_list_of_the_wrong_type_is_a_benchmark_error(bench_copy, value):
    def edit(rows):
        rows[0]["Classification_Task"]["Pure_Text_Questions"] = value
        return rows

    _set(bench_copy, "forget_5", edit)
    with pytest.raises(BenchmarkError) as exc:
        load_benchmark(bench_copy, forget=5)
    assert (exc.value.config, exc.value.row) == ("forget_5", 0)
    assert exc.value.field == "Classification_Task.Pure_Text_Questions"


@pytest.mark.parametrize("value", [["Pure_Text"], {"x": "Pure_Text"}])
def test_unhashable_question_type_is_a_benchmark_error(bench_copy, value):
    def edit(rows):
        for item in rows[0]["Generation_Task"]:  # a parquet column has one type
            item["Type"] = value
        return rows

    _set(bench_copy, "forget_5", edit)
    with pytest.raises(BenchmarkError) as exc:
        load_benchmark(bench_copy, forget=5)
    assert (exc.value.config, exc.value.row, exc.value.field) == ("forget_5", 0, "Generation_Task[0].Type")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_broken_parquet_file_is_a_benchmark_error(bench_copy, damage):
    path = bench_copy / "Retain_Set" / PARQUET_NAME
    data = path.read_bytes()
    path.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": b"PAR1" + b"\x00" * 64 + b"PAR1", "empty": b""}[damage]
    )
    with pytest.raises(BenchmarkError) as exc:
        load_benchmark(bench_copy, forget=5)
    assert exc.value.config == "Retain_Set" and "unreadable parquet file" in str(exc.value)
