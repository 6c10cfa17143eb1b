"""Benchmarks as plugins: the contract a benchmark file fulfils, its registry, and the shared
reading and validation every benchmark's loader uses.

A benchmark plugin (one file under `benchmarks/`, or in any installed package, registered under
the `mmunlearn.benchmarks` entry point with `@register_benchmark`) maps its own layout onto the
harness's records: questions that know their set, question type, mode and person, fact pairs
for the methods, and where it has them in-context examples and never-seen (holdout) people. It
declares its sets, which question types each set has in which mode, its forget splits and its
protocols (which tasks and stages score it by default). Everything above this module (runner,
leaderboard, check) reads those declarations and never names a benchmark.

Both sources of a benchmark (a local folder of `<config>/*.parquet`, a hub id) end up as one
pyarrow table per config and go through the same validation, so an embedded stand-in and the
real data are read by the very same code. Malformed data is refused with a BenchmarkError
naming config, row and field: a silently skipped question would change every reported number.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from mmunlearn.harness.core.errors import BenchmarkError, ConfigError
from mmunlearn.harness.core.plugins import load_plugins
from mmunlearn.harness.core.records import MODES, FactPair, Profile, Question

# Which transformed image a test-set question is asked with: "random" = one per profile and
# task drawn with the seed (MLLMU-Bench's official default, there unseeded), "first" = the first
# one, "all" = every transformed image (image_text questions repeat once per image, qid "...@k").
TEST_IMAGE_CHOICES = ("random", "first", "all")
BENCHMARK_REGISTRY: dict[str, type["BenchmarkPlugin"]] = {}
DEFAULT_BENCHMARK = "mllmu-bench"  # what a folder or hub id in no recognised layout is read as


@dataclass(frozen=True)
class Protocol:
    """A named way to score a benchmark (`--protocol`): its tasks and stages by default.

    tasks: None = every registered task that reads one of the benchmark's question types.
    max_new_tokens: the greedy decoding length of the published evaluation.
    seed_draws: what the loader draws with the run's seed under this protocol ("" when nothing),
    so `run --seeds` knows another seed is another evaluation."""

    name: str
    description: str
    tasks: tuple[str, ...] | None = None
    stages: tuple[str, ...] = ()
    max_new_tokens: int = 50
    seed_draws: str = ""


@dataclass
class BenchOptions:
    """Base of a benchmark's `--bench-option KEY=VALUE` dataclass (none by default)."""


class BenchmarkPlugin:
    """One benchmark layout. Subclasses set the class attributes and implement `load`.

    layout: set -> question type -> the modes it has (a cell outside it is not scored; a cell
        inside it without questions is malformed data). The sets' order is the reporting order.
    forget_splits / default_forget: the values `--forget` accepts (the benchmark's own names).
    hub_ids: hub datasets read with this plugin; `detect` recognises a local folder's layout.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    hub_ids: ClassVar[tuple[str, ...]] = ()
    forget_splits: ClassVar[tuple[int, ...]] = ()
    default_forget: ClassVar[int] = 0
    layout: ClassVar[dict[str, dict[str, tuple[str, ...]]]] = {}
    protocols: ClassVar[tuple[Protocol, ...]] = ()
    Options: ClassVar[type] = BenchOptions
    # A general-ability suite (`run --utility NAME`): scored after the method beside the main
    # benchmark, once per model; its sets are knowledge to keep.
    utility: ClassVar[bool] = False
    # Its stand-in under the embedded assets (the tiny model's own data): a benchmark read from it
    # gets the embedded reference model and the utility suites' stand-ins by default.
    embedded: ClassVar[str] = ""
    titles: ClassVar[dict[str, str]] = {}  # set -> leaderboard section title

    @classmethod
    def sets(cls) -> tuple[str, ...]:
        return tuple(cls.layout)

    @classmethod
    def question_types(cls) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for types in cls.layout.values() for t in types))

    @classmethod
    def protocol(cls, name: str | None) -> Protocol:
        """The protocol `name` (None: the first, the default)."""
        if name is None:
            return cls.protocols[0]
        for p in cls.protocols:
            if p.name == name:
                return p
        raise ConfigError(
            f"benchmark {cls.name!r} has no protocol {name!r}; choose from {', '.join(p.name for p in cls.protocols)}"
        )

    @classmethod
    def check_forget(cls, forget: int | None) -> int:
        if forget is None:
            return cls.default_forget
        if forget not in cls.forget_splits:
            raise ConfigError(
                f"{cls.name}: --forget must be one of {', '.join(map(str, cls.forget_splits))}, got {forget!r}"
            )
        return forget

    @classmethod
    def detect(cls, folder: Path) -> bool:
        """True when a local folder is in this benchmark's layout."""
        return False

    def load(self, source: "BenchSource", forget: int, protocol: Protocol, seed: int, **options) -> "Benchmark":
        raise NotImplementedError

    def fact_pairs(self, bench: "Benchmark", set_name: str, mode: str) -> list[FactPair]:
        """What a method trains on or collects statistics from about one set's people in one mode."""
        raise NotImplementedError

    def holdout(self, source: str | os.PathLike, bench: "Benchmark | None") -> "Holdout":
        raise ConfigError(f"benchmark {self.name!r} has no holdout (never-seen) profiles")

    def has_holdout(self, folder: Path) -> bool:
        return False


def register_benchmark(cls: type[BenchmarkPlugin]) -> type[BenchmarkPlugin]:
    """Class decorator: make a benchmark available to `--benchmark` / `load_benchmark`."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} must set a class attribute `name`")
    if not cls.protocols or not cls.layout:
        raise TypeError(f"benchmark {cls.name!r} must declare its layout and at least one protocol")
    if cls.default_forget not in cls.forget_splits:
        raise TypeError(f"benchmark {cls.name!r}: default_forget {cls.default_forget} is not among its forget_splits")
    bad = [m for types in cls.layout.values() for modes in types.values() for m in modes if m not in MODES]
    if bad:
        raise TypeError(f"benchmark {cls.name!r}: unknown mode {bad[0]!r} (modes: {', '.join(MODES)})")
    known = BENCHMARK_REGISTRY.get(cls.name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise TypeError(f"benchmark name {cls.name!r} is already registered by {known.__qualname__}")
    BENCHMARK_REGISTRY[cls.name] = cls
    return cls


def registered_benchmarks() -> tuple[str, ...]:
    load_plugins("mmunlearn.benchmarks")
    return tuple(sorted(BENCHMARK_REGISTRY))


def get_benchmark(name: str) -> type[BenchmarkPlugin]:
    load_plugins("mmunlearn.benchmarks")
    try:
        return BENCHMARK_REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARK_REGISTRY))}") from None


def benchmark_of(source: str | os.PathLike, name: str | None = None) -> type[BenchmarkPlugin]:
    """The plugin that reads `source`: `name` when given, else the one whose hub ids list it or
    whose `detect` recognises the local folder's layout."""
    if name is not None:
        return get_benchmark(name)
    load_plugins("mmunlearn.benchmarks")
    text = os.fspath(source)
    folder = Path(text).expanduser()
    if folder.is_dir():
        found = [cls for cls in BENCHMARK_REGISTRY.values() if cls.detect(folder)]
        if len(found) > 1:
            raise ConfigError(
                f"{text} is in several layouts ({', '.join(c.name for c in found)}); name one with --benchmark"
            )
        if found:
            return found[0]
    else:  # a utility suite is always named (--utility), so a hub id means a benchmark
        for cls in BENCHMARK_REGISTRY.values():
            if text in cls.hub_ids and not cls.utility:
                return cls
    # Nothing recognised it: read it as the default benchmark, whose loader names what is missing.
    return get_benchmark(DEFAULT_BENCHMARK)


def parse_bench_options(cls: type[BenchmarkPlugin], raw: dict[str, Any] | None) -> dict[str, Any]:
    """`--bench-option KEY=VALUE` strings -> typed values of the plugin's Options dataclass."""
    from mmunlearn.harness.core.contracts import convert_value

    fields = {f.name: f for f in dataclasses.fields(cls.Options)}
    out = {}
    for key, value in (raw or {}).items():
        if key not in fields:
            known = ", ".join(fields) or "(it takes none)"
            raise ConfigError(f"benchmark {cls.name!r}: unknown option {key!r}; known: {known}")
        out[key] = convert_value(cls.Options, key, value, f"benchmark {cls.name!r}: option")
    return dataclasses.asdict(cls.Options(**out))


@dataclass
class Benchmark:
    """One forget split of a benchmark, read: its sets' profiles holding their questions.

    `plugin` is the benchmark that read it (it knows the layout, the fact pairs, the holdout),
    `protocol` the protocol it was read for (questions can depend on it), `options` the
    plugin's options as given (`--bench-option`)."""

    source: str
    forget: int
    fingerprint: str  # sha256 over the parquet bytes used (local) or the hub dataset fingerprints
    profiles: dict[str, tuple[Profile, ...]]  # by set, in the plugin's set order
    full_set: dict[str, Profile] | None = None  # where in-context examples come from (MLLMU-Bench's Full_Set)
    test_images: str = "random"
    plugin: BenchmarkPlugin | None = None
    protocol: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)  # what the loader drew or chose (recorded in the manifest)
    suites: dict[str, "Benchmark"] = field(default_factory=dict)  # set -> the utility suite it belongs to

    def attach(self, suite: "Benchmark") -> None:
        """Score a utility suite beside this benchmark: its sets join the run's (their cells are
        the suite's); methods never see them (fact pairs come from this benchmark's sets)."""
        for s, people in suite.profiles.items():
            if s in self.profiles:
                raise ConfigError(f"utility suite {suite.name!r}: its set {s!r} is already a set of {self.name}")
            self.profiles[s] = people
            self.suites[s] = suite

    @property
    def name(self) -> str:
        return self.plugin.name if self.plugin is not None else DEFAULT_BENCHMARK

    @property
    def sets(self) -> tuple[str, ...]:
        return tuple(self.profiles)

    @property
    def question_types(self) -> tuple[str, ...]:
        own = (
            self.plugin.question_types()
            if self.plugin is not None
            else tuple(dict.fromkeys(q.task for ps in self.profiles.values() for p in ps for q in p.questions))
        )
        return tuple(dict.fromkeys(own + tuple(t for s in self.suites.values() for t in s.question_types)))

    def cells(self, set_name: str, question_type: str) -> tuple[str, ...]:
        """The modes in which `set_name` has `question_type` questions by the benchmark's layout."""
        if set_name in self.suites:
            return self.suites[set_name].cells(set_name, question_type)
        if self.plugin is not None:
            return self.plugin.layout.get(set_name, {}).get(question_type, ())
        return MODES

    def questions(
        self, sets: Iterable[str] | None = None, tasks: Iterable[str] | None = None, modes: Iterable[str] = MODES
    ) -> list[Question]:
        """Questions of the given sets / question types / modes, in set, profile, then benchmark order."""
        sets = check_names(self.sets if sets is None else sets, self.sets, "set")
        tasks = check_names(self.question_types if tasks is None else tasks, self.question_types, "question type")
        modes = check_names(modes, MODES, "mode")
        return [q for s in sets for p in self.profiles[s] for q in p.questions if q.task in tasks and q.mode in modes]

    def fact_pairs(self, set: str, mode: str) -> list[FactPair]:
        """Training/statistics samples about the people of one set in one mode (the plugin's mapping)."""
        check_names(set, tuple(s for s in self.sets if s not in self.suites), "set")
        check_names(mode, MODES, "mode")
        if self.plugin is None:
            raise ConfigError("this benchmark was built without a plugin: it has no fact pairs")
        return self.plugin.fact_pairs(self, set, mode)

    def counts(self) -> dict:
        """{"profiles": {set: n}, "questions": {set: {question type: {mode: n}}}}."""
        questions = {s: {t: {m: 0 for m in MODES} for t in self.question_types} for s in self.sets}
        for s in self.sets:
            for p in self.profiles[s]:
                for q in p.questions:
                    questions[s].setdefault(q.task, {m: 0 for m in MODES})[q.mode] += 1
        return {"profiles": {s: len(self.profiles[s]) for s in self.sets}, "questions": questions}


def picture_id(image: bytes) -> str:
    """A person-free cluster id for a question: its picture (questions on one picture are
    correlated, so the profile bootstrap resamples them together)."""
    return "image-" + hashlib.sha256(image).hexdigest()[:12]


def profiles_by_picture(set_name: str, questions: Iterable[Question]) -> tuple[Profile, ...]:
    """Questions about no person (a utility suite's) grouped into one profile per picture
    (their `profile_id`, `picture_id`), in first-seen order: the clusters of the bootstrap."""
    grouped: dict[str, list[Question]] = {}
    for q in questions:
        grouped.setdefault(q.profile_id, []).append(q)
    return tuple(Profile(pid, set_name, "", qs[0].image or b"", questions=tuple(qs)) for pid, qs in grouped.items())


def check_names(value, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    values = (value,) if isinstance(value, str) else tuple(value)
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ConfigError(f"unknown {what} {unknown[0]!r}; choose from {', '.join(allowed)}")
    return values


def load_benchmark(
    source: str | os.PathLike,
    forget: int | None = None,
    test_images: str = "random",
    seed: int = 0,
    benchmark: str | None = None,
    protocol: str | None = None,
    options: dict[str, Any] | None = None,
) -> Benchmark:
    """Read one forget split of a benchmark (local folder or hub id) with its plugin.

    benchmark: the plugin's name (default: recognised from the folder's layout or the hub id);
    forget: one of its forget splits (default its own); protocol: one of its protocols (default
    its first); test_images / seed: which test-set image a question gets (TEST_IMAGE_CHOICES,
    benchmarks with a test set); options: its `--bench-option` values (strings or typed)."""
    if test_images not in TEST_IMAGE_CHOICES:
        raise ConfigError(f"test images must be one of {', '.join(TEST_IMAGE_CHOICES)}, got {test_images!r}")
    cls = benchmark_of(source, benchmark)
    split = cls.check_forget(forget)
    chosen = cls.protocol(protocol)
    parsed = parse_bench_options(cls, options)
    reader = BenchSource(source)
    bench = cls().load(reader, split, chosen, seed, test_images=test_images, **parsed)
    bench.plugin, bench.protocol, bench.options = bench.plugin or cls(), chosen.name, parsed
    return bench


@dataclass
class Holdout:
    """People no model trained on the benchmark has seen, in its row schema: the non-members of
    membership inference."""

    source: str
    fingerprint: str
    profiles: tuple[Profile, ...]

    def questions(self, tasks: Iterable[str] | None = None, modes: Iterable[str] = MODES) -> list[Question]:
        types = tuple(dict.fromkeys(q.task for p in self.profiles for q in p.questions))
        tasks, modes = (
            check_names(types if tasks is None else tasks, types, "question type"),
            check_names(modes, MODES, "mode"),
        )
        return [q for p in self.profiles for q in p.questions if q.task in tasks and q.mode in modes]


def load_holdout(source: str | os.PathLike, bench: Benchmark | None = None) -> Holdout:
    """Never-seen profiles read by the benchmark's plugin (MLLMU-Bench layout without `bench`)."""
    plugin = bench.plugin if bench is not None and bench.plugin is not None else get_benchmark(DEFAULT_BENCHMARK)()
    return plugin.holdout(source, bench)


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


class BenchSource:
    """Reads one config as a pyarrow table and contributes to the fingerprint."""

    def __init__(self, source: str | os.PathLike):
        self.hash = hashlib.sha256()
        text = os.fspath(source)
        self.local = Path(text).expanduser()
        self.is_local = self.local.exists() or text.startswith((".", "/", "~")) or os.path.isabs(text)
        self.source = str(self.local.resolve()) if self.is_local else text
        if self.is_local and not self.local.is_dir():
            raise BenchmarkError("(root)", None, None, f"benchmark folder {self.source} does not exist")

    def table(self, config: str, split: str | None = None, hub_config: Any = "<config>") -> pa.Table:
        """One config's rows: locally `<root>/<config>/**/*.parquet` (with `split`: only the files
        named `<split>-*.parquet`), on the hub `load_dataset(source, hub_config, split=split or
        "train")` (hub_config: the config's name unless given, None for the dataset's default)."""
        if self.is_local:
            return self._local(config, split)
        return self._hub(config, split or "train", config if hub_config == "<config>" else hub_config)

    def _local(self, config: str, split: str | None = None) -> pa.Table:
        folder = self.local / config
        if not folder.is_dir():
            raise BenchmarkError(config, None, None, f"missing config folder {folder}")
        files = sorted(folder.rglob("*.parquet" if split is None else f"{split}-*.parquet"))
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

    def _hub(self, config: str, split: str = "train", hub_config: str | None = None) -> pa.Table:
        import datasets

        try:
            ds = datasets.load_dataset(self.source, hub_config, split=split)
        except Exception as exc:  # the hub raises many types; all mean "cannot read this config"
            raise BenchmarkError(config, None, None, f"cannot load {self.source!r} from the hub: {exc}") from exc
        self.hash.update(f"{config}\0{ds._fingerprint}\0".encode())
        # Arrow format returns the stored columns: images stay {bytes, path} structs, undecoded.
        return ds.with_format("arrow")[:]


# ----------------------------------------------------------------------------- validation


def show(value, limit: int = 80) -> str:
    """repr of a bad value, cut short: an error stays one readable line even for a 1 MB field."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def read_rows(table: pa.Table, config: str, required: tuple[str, ...]) -> list[dict]:
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


def image_bytes(value, config: str, row: int, field: str) -> bytes:
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


def text_field(value, config: str, row: int, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkError(config, row, field, f"expected non-empty text, got {show(value)}")
    return value


def object_field(item, keys: tuple[str, ...], config: str, row: int, field: str) -> dict:
    if not isinstance(item, dict):
        raise BenchmarkError(config, row, field, f"expected an object with {', '.join(keys)}, got {show(item)}")
    for key in keys:
        if key not in item or item[key] is None:
            raise BenchmarkError(config, row, f"{field}.{key}", "missing field")
    return item
