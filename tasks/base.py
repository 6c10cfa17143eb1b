"""Task plugin contract: a task turns questions into model requests, runs them, scores them.

A new task is one file that defines a `Task` subclass decorated with `@register_task` and is
imported by tasks/__init__.py. Every SampleResult carries the hash of the exact model input, so
the runner can resume and caches can be keyed on what the model actually saw. Prompts come from
harness.prompts (the official strings) and in-context examples from harness.examples (the
official procedure), through `Task.requests`.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, ClassVar, Sequence

from harness.errors import ConfigError
from harness.examples import ExamplePlan, parse_shots, plan_examples, profile_count
from harness.prompts import Request, user_text
from harness.records import MODES, ImageDecoder, Question
from harness.records import TASKS as QUESTION_TYPES

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.bench import Benchmark
    from harness.judge import Judge


@dataclass
class SampleResult:
    """One scored question: enough to recompute any aggregate and to resume a run."""

    qid: str
    set: str
    task: str
    mode: str
    profile_id: str
    prompt_hash: str
    response: str
    scores: dict[str, float | None]
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SampleResult":
        """Inverse of to_dict (samples.jsonl lines read back on resume)."""
        return cls(qid=d["qid"], set=d["set"], task=d["task"], mode=d["mode"], profile_id=d["profile_id"],
                   prompt_hash=d["prompt_hash"], response=d["response"], scores=dict(d["scores"]),
                   extra=dict(d.get("extra") or {}))


@dataclass
class TaskContext:
    """Everything a task needs besides the model and the questions.

    scorers: classification scorers to run; "generate" (official first-letter parsing ->
    `accuracy`), "loglik" (letters as continuations -> `accuracy_loglik`), "loglik_text"
    (option texts as continuations -> `accuracy_loglik_text`). Other tasks ignore it.
    shots: in-context examples, "official" (the published procedure, harness.examples) or a
    number of example profiles; 0 = zero-shot. Anything but 0 needs `bench`; drawn with `seed`.
    The runner passes the run's choice (default "official"); this default is zero-shot.
    """

    seed: int = 0
    shots: int | str = 0
    max_new_tokens: int = 50
    batch_size: int | None = None
    judge: "Judge | None" = None
    bench: "Benchmark | None" = None
    scorers: tuple[str, ...] = ("generate",)

    def __post_init__(self):
        self.shots = parse_shots(self.shots)
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        self.scorers = tuple(self.scorers)


def prompt_hash(vlm, request: Request, mode: str, image_bytes: Sequence[bytes] = ()) -> str:
    """sha256 of the full model input: the adapter's prompt string when it has one (it includes
    the system prompt, the prompt style and the examples), else system + request text; plus mode
    and the encoded bytes of every image (examples' first)."""
    build = getattr(vlm, "prompt", None)
    text = build(request) if callable(build) else f"{request.system or ''}\0{request.text}"
    h = hashlib.sha256()
    h.update(mode.encode())
    h.update(b"\0")
    h.update(text.encode("utf-8"))
    for data in image_bytes:
        h.update(b"\0image\0")
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


@dataclass
class Prepared:
    """The questions of one evaluate() call turned into requests: those to score (with their
    request and prompt hash) and those excluded because they are in-context examples."""

    kept: list[Question]
    requests: list[Request]
    hashes: list[str]
    extras: list[dict]
    excluded: dict[str, "SampleResult"]
    plans: dict[str, ExamplePlan]  # by set


class Task:
    """A task: which benchmark questions it reads, how it scores them, what it reports.

    name: the task's name (CLI `--tasks`, results.json, leaderboard).
    reads: the benchmark question type it scores ("classification", "generation" or "cloze");
        default: its own name. Several tasks may read the same questions.
    metrics: every metric a sample may carry; `aggregate` averages them.
    headline: the metrics the leaderboard shows, the first one ranks (default: the first metric).
    lower_means_known: metrics where a *lower* value means the model knows more (a loss or a
        perplexity); for all others higher means more knowledge. On the forget and test sets less
        knowledge is better, on retain and celebrity more.
    """

    name: ClassVar[str] = ""
    reads: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()
    headline: ClassVar[tuple[str, ...]] = ()
    lower_means_known: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def question_type(cls) -> str:
        return cls.reads or cls.name

    @classmethod
    def headline_metrics(cls) -> tuple[str, ...]:
        return cls.headline or cls.metrics[:1]

    def sample_id(self, q: Question) -> str:
        """Key of this task's result for question q (the qid, suffixed when the task is not the
        question type's own, so two tasks reading the same questions never collide)."""
        return q.qid if self.name == self.question_type() else f"{q.qid}#{self.name}"

    def evaluate(self, vlm, questions: Sequence[Question], ctx: TaskContext) -> list[SampleResult]:
        raise NotImplementedError

    def aggregate(self, samples: Sequence[SampleResult]) -> dict[str, float | int | None]:
        """Mean of every metric over the samples that have a score for it (None: nothing scored);
        n counts the samples not excluded from scoring (extra["excluded"], e.g. shot examples)."""
        samples = [s for s in samples if not s.extra.get("excluded")]
        out: dict[str, float | int | None] = {}
        for m in self.metrics:
            values = [s.scores[m] for s in samples if s.scores.get(m) is not None]
            out[m] = sum(values) / len(values) if values else None
        out["n"] = len(samples)
        return out

    def requests(self, vlm, questions: Sequence[Question], ctx: TaskContext, images: ImageDecoder,
                 excluded_scores: Sequence[str] = ()) -> Prepared:
        """Official requests (harness.prompts) with the official in-context examples
        (harness.examples); questions of an example profile are excluded, scores None."""
        arch = getattr(vlm, "arch", None)
        plans: dict[str, ExamplePlan] = {}
        prepared = Prepared([], [], [], [], {}, plans)
        for q in questions:
            if q.mode == "image_text" and q.image is None:
                raise ValueError(f"question {q.qid} is in image_text mode but has no image")
            if q.set not in plans:  # a task without examples (generation) needs no benchmark
                if profile_count(ctx.shots, self.question_type(), arch) and ctx.bench is None:
                    raise ConfigError(f"{self.name}: in-context examples need the benchmark (TaskContext.bench)")
                plans[q.set] = plan_examples(ctx.bench, q.set, self.question_type(), ctx.shots, ctx.seed, arch)
            plan = plans[q.set]
            examples = plan.examples(q.mode, images)
            req = Request(text=user_text(self.question_type(), q.mode, q.text, q.options), image=images(q.image),
                          task=self.question_type(), examples=examples)
            digest = prompt_hash(vlm, req, q.mode, [e.source for e in examples if e.source] +
                                 ([q.image] if q.image is not None else []))
            extra = {"example_profiles": [p.id for p in plan.profiles]} if examples else {}
            if plan.skips(q):
                prepared.excluded[q.qid] = self._result(q, digest, "", dict.fromkeys(excluded_scores),
                                                        {"excluded": "in-context example profile"})
                continue
            prepared.kept.append(q)
            prepared.requests.append(req)
            prepared.hashes.append(digest)
            prepared.extras.append(extra)
        return prepared

    def _check(self, questions: Sequence[Question]) -> None:
        for q in questions:
            if q.task != self.question_type():
                raise ValueError(f"task {self.name!r} reads {self.question_type()} questions, was given question "
                                 f"{q.qid} of type {q.task!r}")
            if q.mode not in MODES:
                raise ValueError(f"question {q.qid} has unknown mode {q.mode!r}")

    def _result(self, q: Question, hash_: str, response: str, scores: dict, extra: dict | None = None):
        return SampleResult(qid=self.sample_id(q), set=q.set, task=self.name, mode=q.mode, profile_id=q.profile_id,
                            prompt_hash=hash_, response=response, scores=scores, extra=extra or {})


TASK_REGISTRY: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available to get_task / the CLI under `cls.name`."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} must set a class attribute `name`")
    if cls.question_type() not in QUESTION_TYPES:
        raise TypeError(f"task {cls.name!r} reads {cls.question_type()!r}; the benchmark's question types are "
                        f"{', '.join(QUESTION_TYPES)} (set `reads`)")
    unknown = [m for m in (*cls.headline, *cls.lower_means_known) if m not in cls.metrics]
    if unknown:
        raise TypeError(f"task {cls.name!r}: {unknown} are not among its metrics {cls.metrics}")
    known = TASK_REGISTRY.get(cls.name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise TypeError(f"task name {cls.name!r} is already registered by {known.__qualname__}")
    TASK_REGISTRY[cls.name] = cls
    return cls


def knowledge_falls(task: str, metric: str) -> bool:
    """True when a lower value of `metric` of `task` means the model knows *more*
    (Task.lower_means_known); False for unknown tasks (results from elsewhere)."""
    cls = TASK_REGISTRY.get(task)
    return cls is not None and metric in cls.lower_means_known


def registered_tasks() -> tuple[str, ...]:
    """Every registered task: the benchmark's three question types first, then the others by name."""
    builtin = [t for t in QUESTION_TYPES if t in TASK_REGISTRY]
    return tuple(builtin + sorted(set(TASK_REGISTRY) - set(builtin)))


def get_task(name: str) -> Task:
    """A fresh instance of the registered task `name`."""
    try:
        return TASK_REGISTRY[name]()
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASK_REGISTRY))}") from None
