"""Task plugin contract: a task turns questions into model requests, runs them, scores them.

A new task is one file that defines a `Task` subclass decorated with `@register_task` and is
imported by tasks/__init__.py. Every SampleResult carries the hash of the exact model input, so
the runner can resume and caches can be keyed on what the model actually saw.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from harness.errors import ConfigError
from harness.records import MODES, Question, decode_image

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
    shots: in-context example profiles for classification (needs `bench`), drawn with `seed`.
    """

    seed: int = 0
    shots: int = 0
    max_new_tokens: int = 50
    batch_size: int | None = None
    judge: "Judge | None" = None
    bench: "Benchmark | None" = None
    scorers: tuple[str, ...] = ("generate",)

    def __post_init__(self):
        if self.shots < 0:
            raise ConfigError(f"shots must be >= 0, got {self.shots}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        self.scorers = tuple(self.scorers)


def prompt_hash(vlm, request, mode: str, image_bytes: bytes | None = None) -> str:
    """sha256 of the full model input: the adapter's prompt string when it has one (it includes
    the system prompt and the prompt style), else system + request text; plus mode and image bytes."""
    build = getattr(vlm, "prompt", None)
    text = build(request) if callable(build) else f"{request.system or ''}\0{request.text}"
    h = hashlib.sha256()
    h.update(mode.encode())
    h.update(b"\0")
    h.update(text.encode("utf-8"))
    if image_bytes is not None:
        h.update(b"\0image\0")
        h.update(hashlib.sha256(image_bytes).digest())
    return h.hexdigest()


class _ImageCache:
    """Decode each distinct image once: all questions of a profile share its image, and the
    decoded RGB arrays are far larger than the encoded bytes."""

    def __init__(self):
        self._images: dict[bytes, Any] = {}

    def get(self, q: Question):
        if q.mode != "image_text":
            return None
        if q.image is None:
            raise ValueError(f"question {q.qid} is in image_text mode but has no image")
        key = hashlib.sha256(q.image).digest()
        if key not in self._images:
            self._images[key] = decode_image(q.image)
        return self._images[key]


def make_request(text: str, image=None):
    """harness.model.Request, imported late so task modules load without torch."""
    from harness.model import Request

    return Request(text=text, image=image)


class Task:
    """Base class: subclasses set `name` and `metrics` and implement `evaluate`."""

    name: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()

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

    def _check(self, questions: Sequence[Question]) -> None:
        for q in questions:
            if q.task != self.name:
                raise ValueError(f"task {self.name!r} was given question {q.qid} of task {q.task!r}")
            if q.mode not in MODES:
                raise ValueError(f"question {q.qid} has unknown mode {q.mode!r}")

    def _result(self, q: Question, hash_: str, response: str, scores: dict, extra: dict | None = None):
        return SampleResult(qid=q.qid, set=q.set, task=self.name, mode=q.mode, profile_id=q.profile_id,
                            prompt_hash=hash_, response=response, scores=scores, extra=extra or {})


TASK_REGISTRY: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available to get_task / the CLI under `cls.name`."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} must set a class attribute `name`")
    known = TASK_REGISTRY.get(cls.name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise TypeError(f"task name {cls.name!r} is already registered by {known.__qualname__}")
    TASK_REGISTRY[cls.name] = cls
    return cls


def get_task(name: str) -> Task:
    """A fresh instance of the registered task `name`."""
    try:
        return TASK_REGISTRY[name]()
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASK_REGISTRY))}") from None
