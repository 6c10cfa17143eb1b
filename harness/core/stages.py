"""The stage contract: a measurement that needs more than one (set, task, mode) cell at a time.

A task scores questions one by one; a stage runs after the run's tasks and reads across them:
membership inference compares the forget set against holdout profiles, forget quality compares
two models. The runner knows stages only through this contract (`run_stages`), as it knows
tasks and methods through theirs; built-in stages live in the top-level `stages/` package and
register under the `mmunlearn.stages` entry point, so a user's package can add its own.

A stage returns metrics in the run's own layout, metrics[set][key][mode] = {metric: value}, so
results.json, the modality gap, `check` and the leaderboard read them as they read a task's.
A figure a stage cannot compute is None with a `note` saying why, never a number.

A stage's figures are not plain means of task samples, so each stage says how they vary with the
profiles sampled: `Stage.intervals` returns results.json "intervals" in the same layout
(harness.core.uncertainty), from what its `run` kept in `StageOutput.evidence`; the default is none.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.plugins import load_plugins

if TYPE_CHECKING:
    from mmunlearn.harness.core.checkpoints import Watcher
    from mmunlearn.harness.core.uncertainty import Bootstrap

STAGE_REGISTRY: dict[str, type["Stage"]] = {}


@dataclass(frozen=True)
class Column:
    """One leaderboard column of a stage: metrics[set][key][mode][metric], its ideal value (the
    closest is best; None: no ideal, not marked) and how to read it. `empty` is the cell's text
    when the figure is None without a "not available" note (a first collapse step that never came)."""

    set: str
    key: str
    metric: str
    ideal: float | None
    reads: str
    empty: str = "–"


@dataclass
class StageContext:
    """What a stage may use: the run's configuration, its (unlearned) model, benchmark and task
    settings, its sample store (for per-question records and resume), its folder and metrics."""

    cfg: Any  # the runner's RunConfig
    vlm: Callable[[], Any]  # the unlearned model (the method is applied on first call if it was not)
    bench: Any
    task_ctx: Any  # TaskContext
    store: Any  # SampleStore
    out: Path
    metrics: dict
    select: Callable[[list], list] = list  # the run's --limit applied to a question list
    subset: Callable[[list, int], list] = lambda qs, n: list(qs)[:n]  # at most n, as --limit picks them
    display: Callable[[str], str] = str  # how a model source is recorded (embedded assets by name)
    say: Callable[[str], None] = print  # progress messages
    bar: Callable[[int, str], Any] | None = None  # (total, desc) -> a tqdm-like bar
    bootstrap: "Bootstrap | None" = None  # how intervals are drawn; None: the run writes none
    intervals: dict = field(default_factory=dict)  # the run's intervals, filled as metrics are


@dataclass
class StageOutput:
    metrics: dict = field(default_factory=dict)  # {set: {key: {mode: {metric: value}}}}
    record: dict = field(default_factory=dict)  # what the manifest keeps (sources, fingerprints)
    # What `Stage.intervals` needs (per-question results): kept in memory only, never written.
    evidence: Any = field(default=None, repr=False, compare=False)


class Stage:
    """name: CLI `--stages`, manifest. keys: the metrics[set] keys it writes. lower_means_known:
    metrics where lower means the model knows more (for `check`). columns: leaderboard columns;
    table_per_key: one leaderboard table per key (a grid per task) instead of one wide table."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()
    lower_means_known: ClassVar[tuple[str, ...]] = ()
    columns: ClassVar[tuple[Column, ...]] = ()
    reads: ClassVar[tuple[str, ...]] = ()  # the benchmark question types it scores (checked before a run)
    legend: ClassVar[str] = ""
    table_per_key: ClassVar[bool] = False

    def run(self, ctx: StageContext) -> StageOutput:
        raise NotImplementedError

    def fingerprint(self, cfg, display: Callable[[str], str]) -> dict:
        """The run settings this stage's figures depend on (they join the run's configuration
        hash, so changing one is a different run). `display` records a model source."""
        return {}

    def plot(self, runs: list, plt) -> Any:
        """The stage's own leaderboard figure (runs: objects with .label, .metrics, .manifest), or
        None for the default: per column, each method at (text-only, image+text)."""
        return None

    def watch(self, ctx: StageContext) -> "Watcher | None":
        """A harness.core.checkpoints.Watcher of the method's training, or None: a stage that
        measures during training (the checkpoint sweep) returns one."""
        return None

    def intervals(self, ctx: StageContext, output: StageOutput, boot: "Bootstrap") -> dict:
        """Intervals of this stage's figures, {set: {key: {mode: {metric: Interval.to_dict()}}}}
        (harness.core.uncertainty), from `output.evidence` as this instance's `run` left it; called
        right after `run` when the run writes intervals. A figure may be left out (no interval) or
        given `uncertainty.no_interval(value, why)`; the runner keeps only entries whose value
        equals the figure in `output.metrics`. Default: none."""
        return {}


def register_stage(cls: type[Stage]) -> type[Stage]:
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} must set a class attribute `name`")
    known = STAGE_REGISTRY.get(cls.name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise TypeError(f"stage name {cls.name!r} is already registered by {known.__qualname__}")
    STAGE_REGISTRY[cls.name] = cls
    return cls


def registered_stages() -> tuple[str, ...]:
    load_plugins("mmunlearn.stages")
    return tuple(sorted(STAGE_REGISTRY))


def get_stage(name: str) -> Stage:
    load_plugins("mmunlearn.stages")
    try:
        return STAGE_REGISTRY[name]()
    except KeyError:
        raise ConfigError(f"unknown stage {name!r}; known stages: {', '.join(sorted(STAGE_REGISTRY))}") from None


def stage_of_key(key: str) -> type[Stage] | None:
    """The stage that writes metrics[set][key], if any."""
    load_plugins("mmunlearn.stages")
    return next((s for s in STAGE_REGISTRY.values() if key in s.keys), None)


def watching(names, ctx: StageContext):
    """The context in which the run applies its method: every named stage's training watcher
    installed (harness.core.checkpoints), or none."""
    from mmunlearn.harness.core.checkpoints import Watcher, observing

    watchers = [w for name in names if (w := get_stage(name).watch(ctx)) is not None]

    def step(vlm, n: int) -> None:
        for w in watchers:
            w.step(vlm, n)

    def finished(vlm) -> None:
        for w in watchers:
            if w.finished is not None:
                w.finished(vlm)

    return observing(Watcher(step, finished) if watchers else None)


def identity_store(folder: Path, identity: dict, meta_name: str = "identity.json"):
    """The SampleStore of one model's answers in `folder` (a reference, an attacked copy), emptied
    when the model or benchmark it was made with (`identity`, kept in `meta_name`) changed."""
    import json

    from mmunlearn.harness.core.results import SampleStore, atomic_write_json

    meta = folder / meta_name
    if meta.exists() and json.loads(meta.read_text()) != identity:
        for f in folder.glob("samples*.jsonl"):
            f.unlink()  # another model, or another benchmark: its answers do not apply
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(meta, identity)
    return SampleStore(folder)


def score_questions(task_name: str, model: Callable[[], Any], questions, ctx: StageContext, store, desc: str) -> dict:
    """qid -> the stored SampleResult of every question under `task_name`, evaluating (in batches
    of the run's size, appended to `store` as they finish, so a killed stage resumes) only the
    ones not stored yet; `model()` gives the model, asked for only when there is work."""
    from mmunlearn.harness.core.contracts import SampleResult, get_task
    from mmunlearn.harness.core.seeding import chunks

    task = get_task(task_name)
    todo = [q for q in questions if store.missing([task.sample_id(q)])]
    if todo:
        vlm = model()
        bar = ctx.bar(len(todo), desc) if ctx.bar else None
        for batch in chunks(todo, ctx.task_ctx.batch_size or 8):
            store.append(task.evaluate(vlm, batch, ctx.task_ctx))
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
    return {q.qid: SampleResult.from_dict(store.get(task.sample_id(q))) for q in questions}


def run_stages(names, ctx: StageContext, timer) -> dict:
    """Run each named stage; merge its metrics into ctx.metrics and, when ctx.bootstrap is set, its
    intervals into ctx.intervals (timed as "intervals"); returns {name: record}."""
    from mmunlearn.harness.core.uncertainty import merge

    records = {}
    for name in names:
        stage = get_stage(name)
        with timer(f"stage:{name}"):
            result = stage.run(ctx)
        for set_name, keys in result.metrics.items():
            ctx.metrics.setdefault(set_name, {}).update(keys)
        if ctx.bootstrap is not None:
            with timer("intervals"):
                try:
                    merge(ctx.intervals, stage.intervals(ctx, result, ctx.bootstrap))
                except Exception as exc:  # a plugin's intervals must not cost the run its results
                    warnings.warn(f"stage {name!r}: its intervals failed ({exc!r}); its figures have none")
        records[name] = result.record
    return records
