"""The method plugin contract: data a method sees, typed parameters, a registry.

A method is one class in one file of this package::

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

`methods/__init__.py` imports every module of the package, so a new method needs no edit
outside its own file. Parameters arrive from the CLI as strings; `parse_params` converts them to
the field types of the method's `Params` dataclass and every bad value becomes a ConfigError that
names the method, the parameter, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import time
import types
import typing
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from harness.errors import ConfigError
from harness.records import MODES, FactPair
from harness.seeding import chunks, seed_everything  # noqa: F401  (re-exported for method files)

METHOD_REGISTRY: dict[str, type["Method"]] = {}


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
    from harness.model import Request
    from harness.records import decode_image

    return Request(text=pair.question, image=decode_image(pair.image) if pair.image is not None else None)


def encode_pairs(vlm, pairs: list[FactPair]) -> dict:
    """A batch of fact pairs encoded for training: question as prompt, answer as labelled target."""
    return vlm.encode([pair_request(p) for p in pairs], [p.answer for p in pairs])


def model_inputs(batch: dict) -> dict:
    """The encoded batch without `labels`, so the model does not compute its own (mean) loss."""
    return {k: v for k, v in batch.items() if k != "labels"}


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
    Params: ClassVar[type] = MethodParams
    description: ClassVar[str] = ""

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
    import methods  # noqa: F401  (registers every method)

    try:
        return METHOD_REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(sorted(METHOD_REGISTRY))}") from None


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
