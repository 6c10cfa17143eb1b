"""The plugin contracts: what a task and a method are, and the registries that find them.

A task turns benchmark questions into model requests, runs them and scores them; a method
changes a model (or how it is prompted) and reports what it did. Both are one class in one
file, registered with `@register_task` / `@register_method`; the registries import every
module declared under the `mmunlearn.tasks` / `mmunlearn.methods` entry points (this package's
built-ins and any installed package's, harness.core.plugins) the first time they are asked, so
nothing above this module imports a plugin by name.

Tasks: every SampleResult carries the hash of the exact model input, so the runner can resume
and caches can be keyed on what the model actually saw. Prompts come from harness.core.prompts
(the official strings) and in-context examples from harness.core.examples (the official
procedure), through `Task.requests`.

Methods::

    @register_method
    class MyMethod(Method):
        name = "my_method"

        @dataclass
        class Params(MethodParams):
            lr: float = 1e-5
            def validate(self):
                self.require("lr", self.lr > 0, "a positive float")

        def apply(self, vlm, data, params, seed) -> MethodResult:
            ...
            return MethodResult(vlm, {"changed": ..., "seconds": {...}})

Parameters arrive from the CLI as strings; `parse_params` converts them to the field types of
the method's `Params` dataclass and every bad value becomes a ConfigError that names the
method, the parameter, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import types
import typing
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Sequence

from mmunlearn.harness.core.errors import ConfigError
from mmunlearn.harness.core.examples import ExamplePlan, parse_shots, plan_examples, profile_count
from mmunlearn.harness.core.plugins import load_plugins
from mmunlearn.harness.core.prompts import Request, user_text
from mmunlearn.harness.core.records import MODES, FactPair, ImageDecoder, Question, decode_image
from mmunlearn.harness.core.records import TASKS as QUESTION_TYPES

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mmunlearn.harness.core.bench import Benchmark
    from mmunlearn.harness.core.judge import Judge

TASK_REGISTRY: dict[str, type["Task"]] = {}
METHOD_REGISTRY: dict[str, type["Method"]] = {}


# ============================================================================= tasks


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
        return cls(
            qid=d["qid"],
            set=d["set"],
            task=d["task"],
            mode=d["mode"],
            profile_id=d["profile_id"],
            prompt_hash=d["prompt_hash"],
            response=d["response"],
            scores=dict(d["scores"]),
            extra=dict(d.get("extra") or {}),
        )


@dataclass
class TaskContext:
    """Everything a task needs besides the model and the questions.

    scorers: classification scorers to run; "generate" (official first-letter parsing ->
    `accuracy`), "loglik" (letters as continuations -> `accuracy_loglik`), "loglik_text"
    (option texts as continuations -> `accuracy_loglik_text`). Other tasks ignore it.
    shots: in-context examples, "official" (the published procedure, mmunlearn.harness.core.examples) or a
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


def plain_requests(vlm, questions: Sequence[Question], images: ImageDecoder, text=lambda q: q.text) -> "Prepared":
    """Each question as the user turn (`text(q)`) with its image, in the model's generic chat frame,
    without in-context examples: the requests of a benchmark with no official frame of its own
    (CLEAR, the utility suites)."""
    reqs = [Request(text(q), images(q.image)) for q in questions]
    hashes = [prompt_hash(vlm, r, q.mode, [q.image] if q.image is not None else []) for q, r in zip(questions, reqs)]
    return Prepared(list(questions), reqs, hashes, [{} for _ in questions], {}, {})


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
    raw_scores: metrics on no fixed scale (mean membership scores, in nats or z-units): reported,
        but `check` gates them only when asked, since no tolerance fits their scale (the AUCs
        computed from them are gated).
    """

    name: ClassVar[str] = ""
    reads: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()
    headline: ClassVar[tuple[str, ...]] = ()
    lower_means_known: ClassVar[tuple[str, ...]] = ()
    raw_scores: ClassVar[tuple[str, ...]] = ()
    needs_judge: ClassVar[bool] = False  # some metric is scored by the LLM judge (the run warns without one)

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

    def settle(self, samples: Sequence[SampleResult]) -> list[SampleResult]:
        """The cell's samples (in benchmark order) with every score final: a score that depends on
        the whole cell (MMMU's seeded fallback, drawn in dataset order over the guessed answers) is
        filled here, for the aggregate and the intervals alike. Default: as evaluated."""
        return list(samples)

    def aggregate(self, samples: Sequence[SampleResult]) -> dict[str, float | int | None]:
        """Mean of every metric over the samples that have a score for it (None: nothing scored);
        n counts the samples not excluded from scoring (extra["excluded"], e.g. shot examples)."""
        samples = [s for s in samples if not s.extra.get("excluded")]
        out: dict[str, float | int | None] = {}
        for m in self.metrics:
            values = [v for s in samples if (v := s.scores.get(m)) is not None]
            out[m] = sum(values) / len(values) if values else None
        out["n"] = len(samples)
        return out

    def requests(
        self,
        vlm,
        questions: Sequence[Question],
        ctx: TaskContext,
        images: ImageDecoder,
        excluded_scores: Sequence[str] = (),
    ) -> Prepared:
        """Official requests (mmunlearn.harness.core.prompts) with the official in-context examples
        (mmunlearn.harness.core.examples); questions of an example profile are excluded, scores None."""
        arch = getattr(vlm, "arch", None)
        plans: dict[str, ExamplePlan] = {}
        examples_of: dict[tuple[str, str], tuple] = {}  # (set, mode) -> the examples every question shares
        prepared = Prepared([], [], [], [], {}, plans)
        for q in questions:
            if q.mode == "image_text" and q.image is None:
                raise ValueError(f"question {q.qid} is in image_text mode but has no image")
            if q.set not in plans:  # a task without examples (generation) needs no benchmark
                if profile_count(ctx.shots, self.question_type(), arch) and ctx.bench is None:
                    raise ConfigError(f"{self.name}: in-context examples need the benchmark (TaskContext.bench)")
                plans[q.set] = plan_examples(ctx.bench, q.set, self.question_type(), ctx.shots, ctx.seed, arch)
            plan = plans[q.set]
            if (q.set, q.mode) not in examples_of:
                examples_of[q.set, q.mode] = plan.examples(q.mode, images)
            examples = examples_of[q.set, q.mode]
            req = Request(
                text=user_text(self.question_type(), q.mode, q.text, q.options),
                image=images(q.image),
                task=self.question_type(),
                examples=examples,
            )
            digest = prompt_hash(
                vlm, req, q.mode, [e.source for e in examples if e.source] + ([q.image] if q.image is not None else [])
            )
            extra = {"example_profiles": [p.id for p in plan.profiles]} if examples else {}
            if plan.skips(q):
                prepared.excluded[q.qid] = self._result(
                    q, digest, "", dict.fromkeys(excluded_scores), {"excluded": "in-context example profile"}
                )
                continue
            prepared.kept.append(q)
            prepared.requests.append(req)
            prepared.hashes.append(digest)
            prepared.extras.append(extra)
        return prepared

    def _check(self, questions: Sequence[Question]) -> None:
        for q in questions:
            if q.task != self.question_type():
                raise ValueError(
                    f"task {self.name!r} reads {self.question_type()} questions, was given question "
                    f"{q.qid} of type {q.task!r}"
                )
            if q.mode not in MODES:
                raise ValueError(f"question {q.qid} has unknown mode {q.mode!r}")

    def _result(self, q: Question, hash_: str, response: str, scores: dict, extra: dict | None = None):
        return SampleResult(
            qid=self.sample_id(q),
            set=q.set,
            task=self.name,
            mode=q.mode,
            profile_id=q.profile_id,
            prompt_hash=hash_,
            response=response,
            scores=scores,
            extra=extra or {},
        )


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available to get_task / the CLI under `cls.name`."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} must set a class attribute `name`")
    if not isinstance(cls.question_type(), str) or not cls.question_type():
        raise TypeError(f"task {cls.name!r} must read a question type (set `reads`)")
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
    (Task.lower_means_known, or Stage.lower_means_known for a stage's key); False for unknown
    tasks (results from elsewhere)."""
    from mmunlearn.harness.core.stages import stage_of_key

    load_plugins("mmunlearn.tasks")
    cls = TASK_REGISTRY.get(task)
    if cls is None:  # a stage's figure (metrics[set][key]) reads by its stage's directions
        stage = stage_of_key(task)
        return stage is not None and metric in stage.lower_means_known
    return metric in cls.lower_means_known


def is_raw_score(task: str, metric: str) -> bool:
    """True for a task's raw score means (Task.raw_scores), which `check` does not gate by default."""
    load_plugins("mmunlearn.tasks")
    cls = TASK_REGISTRY.get(task)
    return cls is not None and metric.split("/", 1)[0] in cls.raw_scores  # "score/color": by its base name


def registered_tasks() -> tuple[str, ...]:
    """Every registered task: the benchmark's three question types first, then the others by name."""
    load_plugins("mmunlearn.tasks")
    builtin = [t for t in QUESTION_TYPES if t in TASK_REGISTRY]
    return tuple(builtin + sorted(set(TASK_REGISTRY) - set(builtin)))


def get_task(name: str) -> Task:
    """A fresh instance of the registered task `name`."""
    load_plugins("mmunlearn.tasks")
    try:
        return TASK_REGISTRY[name]()
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASK_REGISTRY))}") from None


# ============================================================================= methods


# ----------------------------------------------------------------------------- data


@dataclass
class UnlearnData:
    """What a method may look at: forget and retain fact pairs, per input mode."""

    forget: dict[str, list[FactPair]] = field(default_factory=dict)  # mode -> pairs
    retain: dict[str, list[FactPair]] = field(default_factory=dict)

    @classmethod
    def from_benchmark(cls, bench) -> "UnlearnData":
        return cls(
            forget={mode: list(bench.fact_pairs("forget", mode)) for mode in MODES},
            retain={mode: list(bench.fact_pairs("retain", mode)) for mode in MODES},
        )

    def pairs(self, dataset: str, modes) -> list[FactPair]:
        """The pairs of `dataset` ("forget"/"retain") in the given modes, in a fixed order."""
        table = {"forget": self.forget, "retain": self.retain}[dataset]
        return [p for mode in modes for p in table.get(mode, [])]

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            "forget": {m: len(self.forget.get(m, [])) for m in MODES},
            "retain": {m: len(self.retain.get(m, [])) for m in MODES},
        }


def pair_request(pair: FactPair):
    """A fact pair as a model request: the question as the user message, the image if any."""
    return Request(text=pair.question, image=decode_image(pair.image) if pair.image is not None else None)


def encode_pairs(vlm, pairs: list[FactPair]) -> dict:
    """A batch of fact pairs encoded for training: question as prompt, answer as labelled target."""
    return vlm.encode([pair_request(p) for p in pairs], [p.answer for p in pairs])


def model_inputs(batch: dict) -> dict:
    """The encoded batch without `labels`, so the model does not compute its own (mean) loss."""
    return {k: v for k, v in batch.items() if k != "labels"}


def answer_nll(logits, labels):
    """Per sample: (sum of answer-token NLL, number of answer tokens). Position t predicts t+1."""
    import torch.nn.functional as F

    target = labels[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), target, ignore_index=-100, reduction="none")
    return nll.sum(-1), (target != -100).sum(-1)


def mean_answer_nll(model, batch):
    """Per-sample mean NLL of the answer tokens under `model` (shape [batch])."""
    total, count = answer_nll(model(**model_inputs(batch)).logits, batch["labels"])
    return total / count.clamp(min=1)


# ----------------------------------------------------------------------------- parameters


@dataclass
class MethodParams:
    """Base of every method's Params dataclass.

    On construction, Literal fields (and tuples of Literals) are checked against their choices
    and `validate()` runs, so a bad value fails before any model is touched, whether it came
    from the CLI or from Python.
    """

    method: ClassVar[str] = "?"  # set by @register_method

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices = _choices(hints[f.name])
            if choices is None:
                continue
            values = value if isinstance(value, tuple) else (value,)
            for v in values:
                if v not in choices:
                    self.fail(f.name, v, "one of " + ", ".join(map(str, choices)))
        self.validate()

    def validate(self) -> None:
        """Override to check value ranges; call self.require(...)."""

    def require(self, key: str, ok: bool, allowed: str) -> None:
        if not ok:
            self.fail(key, getattr(self, key), allowed)

    def fail(self, key: str, value: Any, allowed: str):
        raise ConfigError(f"method {self.method!r}: parameter {key}={value!r} is invalid; allowed: {allowed}")


def _choices(tp) -> tuple | None:
    """Allowed values of a Literal type, of a tuple of Literals, or of `Literal | None`."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return typing.get_args(tp)
    if origin is tuple:
        return _choices(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = _choices(args[0]) if len(args) == 1 else None
        return None if inner is None else inner + (None,)
    return None


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _convert(tp, text: str):
    """CLI string -> value of type `tp`; raises ValueError with what is allowed."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if text.strip().lower() in ("none", "null", ""):
            return None
        return _convert(args[0], text)
    if origin is Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if str(c) == text:
                return c
        raise ValueError("one of " + ", ".join(map(str, choices)))
    if origin is tuple:
        (inner, *_rest) = typing.get_args(tp)
        parts = [p.strip() for p in text.split(",") if p.strip()]
        return tuple(_convert(inner, p) for p in parts)
    if tp is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("true or false")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError("an integer") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError("a number") from None
    if tp is str:
        return text
    raise ValueError(f"a value of type {tp}")


def convert_value(params_cls: type, key: str, value: Any, what: str) -> Any:
    """One CLI string -> the type of field `key` of dataclass `params_cls` (other values pass);
    a bad one is a ConfigError "{what} key=value is invalid; allowed: ..."."""
    if not isinstance(value, str):
        return tuple(value) if isinstance(value, list) else value
    try:
        return _convert(typing.get_type_hints(params_cls)[key], value)
    except ValueError as exc:
        raise ConfigError(f"{what} {key}={value!r} is invalid; allowed: {exc}") from None


def parse_params(method_cls: type["Method"], raw: dict[str, Any] | None = None):
    """Build `method_cls.Params` from {"key": "value"} (strings from the CLI, or typed values).

    Tuples are written comma-separated (`functions=abs,var`); `none` means None where allowed.
    """
    raw = dict(raw or {})
    params_cls = method_cls.Params
    hints = typing.get_type_hints(params_cls)
    names = [f.name for f in dataclasses.fields(params_cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            known = ", ".join(names) if names else "(this method takes no parameters)"
            raise ConfigError(f"method {method_cls.name!r}: unknown parameter {key!r}={value!r}; known: {known}")
        if isinstance(value, str):
            try:
                value = _convert(hints[key], value)
            except ValueError as exc:
                raise ConfigError(
                    f"method {method_cls.name!r}: parameter {key}={raw[key]!r} is invalid; allowed: {exc}"
                ) from None
        elif isinstance(value, list):  # JSON / YAML configs give lists for tuple fields
            value = tuple(value)
        kwargs[key] = value
    return params_cls(**kwargs)


def param_defaults(method_cls: type["Method"]) -> dict[str, Any]:
    """The default value of every parameter of `method_cls.Params` that has one."""
    out = {}
    for f in dataclasses.fields(method_cls.Params):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def params_dict(params) -> dict:
    """Parameters as JSON-friendly values (tuples become lists) for reports and manifests."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()}


# ----------------------------------------------------------------------------- methods


@dataclass
class MethodResult:
    """What `Method.apply` returns: the VLM to evaluate (its weights may have been changed in
    place), inference-time settings (a system prompt put before every request), and the report
    (REPORT_KEYS: method, params, seed, changed = what changed, seconds = stage -> s)."""

    vlm: Any
    report: dict
    system_prompt: str | None = None


REPORT_KEYS = ("method", "params", "seed", "changed", "seconds")


class Method:
    """An unlearning method: `apply` returns a MethodResult. Given the same seed, a method must
    produce the same model; the runner evaluates `result.vlm` in eval mode with
    `result.system_prompt` and special-cases no method."""

    name: ClassVar[str]
    Params: ClassVar[type[MethodParams]] = MethodParams
    description: ClassVar[str] = ""
    # Whether another seed can give another model. A method that says False runs once under
    # `run --seeds` (tests/test_method_conformance.py checks the claim for every method).
    seed_dependent: ClassVar[bool] = True

    def apply(self, vlm, data: UnlearnData, params, seed: int) -> MethodResult:
        raise NotImplementedError


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: add a method to METHOD_REGISTRY under `cls.name`."""
    name = getattr(cls, "name", None)
    if not name:
        raise TypeError(f"{cls.__qualname__} needs a `name`")
    if name in METHOD_REGISTRY and METHOD_REGISTRY[name] is not cls:
        raise TypeError(f"method name {name!r} registered twice ({METHOD_REGISTRY[name].__module__}, {cls.__module__})")
    if "Params" not in cls.__dict__:
        # Give every method its own Params class so errors name the right method.
        cls.Params = dataclass(type("Params", (cls.Params,), {"__module__": cls.__module__}))
    cls.Params.method = name
    if not cls.description and cls.__doc__:
        cls.description = cls.__doc__.strip().splitlines()[0]
    METHOD_REGISTRY[name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    """The registered method class `name`."""
    load_plugins("mmunlearn.methods")
    try:
        return METHOD_REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(sorted(METHOD_REGISTRY))}") from None


def registered_methods() -> tuple[str, ...]:
    """Every registered method, by name."""
    load_plugins("mmunlearn.methods")
    return tuple(sorted(METHOD_REGISTRY))


# ----------------------------------------------------------------------------- helpers


@contextmanager
def stage(report: dict, name: str):
    """Time a stage into report["seconds"][name]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        report.setdefault("seconds", {})[name] = round(time.perf_counter() - start, 3)


def new_report(method: type[Method] | Method, params, seed: int) -> dict:
    return {"method": method.name, "params": params_dict(params), "seed": seed, "seconds": {}}
