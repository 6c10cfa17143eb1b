"""`mmunlearn list`: what can be run: methods with their parameters, tasks with metrics, architectures.

Everything is read from the registries and the Params dataclasses themselves, so a new method
file shows up here (with its defaults) without any other edit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing

NAME = "list"
HELP = "list unlearning methods (parameters, types, defaults), tasks (metrics) and supported architectures"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _type_name(tp) -> str:
    text = getattr(tp, "__name__", None) if not typing.get_args(tp) else None
    return text or str(tp).replace("typing.", "")


def catalogue() -> dict:
    """{"methods": [...], "tasks": [...], "benchmarks": [...], "architectures": [...]} from the registries."""
    from mmunlearn.harness.core.bench import get_benchmark, registered_benchmarks
    from mmunlearn.harness.core.model import SUPPORTED_ARCHITECTURES
    from mmunlearn.harness.core.contracts import (
        get_method,
        get_task,
        param_defaults,
        registered_methods,
        registered_tasks,
    )

    methods = []
    for name in registered_methods():
        cls = get_method(name)
        hints = typing.get_type_hints(cls.Params)
        defaults = param_defaults(cls)
        params = [
            {"name": f.name, "type": _type_name(hints.get(f.name, f.type)), "default": defaults.get(f.name)}
            for f in dataclasses.fields(cls.Params)
        ]
        methods.append({"name": name, "description": getattr(cls, "description", "") or "", "params": params})
    tasks = [
        {
            "name": name,
            "metrics": list(get_task(name).metrics),
            "description": ((type(get_task(name)).__doc__ or "").strip().splitlines() or [""])[0],
        }
        for name in sorted(registered_tasks())
    ]
    benchmarks = []
    for name in registered_benchmarks():
        bench = get_benchmark(name)
        benchmarks.append(
            {
                "name": name,
                "description": bench.description,
                "forget_splits": list(bench.forget_splits),
                "sets": list(bench.sets()),
                "question_types": list(bench.question_types()),
                "protocols": [
                    {"name": p.name, "description": p.description, "tasks": None if p.tasks is None else list(p.tasks)}
                    for p in bench.protocols
                ],
                "options": [f.name for f in dataclasses.fields(bench.Options)],
            }
        )
    archs = [
        {"model_type": s.model_type, "family": s.family, "model_class": s.model_class, "prompt_style": s.prompt_style}
        for s in SUPPORTED_ARCHITECTURES.values()
    ]
    return {"methods": methods, "tasks": tasks, "benchmarks": benchmarks, "architectures": archs}


def render(cat: dict) -> str:
    lines = ["Methods (mmunlearn run --method NAME --param KEY=VALUE):"]
    for m in cat["methods"]:
        lines.append(f"  {m['name']}" + (f"  - {m['description']}" if m["description"] else ""))
        for p in m["params"]:
            default = repr(p["default"])
            default = default if len(default) <= 70 else default[:60] + "...'"  # full text: --json
            lines.append(f"      {p['name']}: {p['type']} = {default}")
        if not m["params"]:
            lines.append("      (no parameters)")
    lines += ["", "Tasks (--tasks NAME ...):"]
    for t in cat["tasks"]:
        lines.append(f"  {t['name']}: metrics {', '.join(t['metrics'])}")
    lines += ["", "Benchmarks (--benchmark NAME --protocol P --forget N; recognised from --bench's layout):"]
    for b in cat["benchmarks"]:
        lines.append(f"  {b['name']}  - {b['description']}")
        lines.append(f"      forget {'|'.join(map(str, b['forget_splits']))}; sets {', '.join(b['sets'])}")
        for p in b["protocols"]:
            lines.append(f"      protocol {p['name']}: {p['description']}")
        if b["options"]:
            lines.append(f"      --bench-option {', '.join(b['options'])}")
    lines += ["", "Supported architectures (config.model_type):"]
    for a in cat["architectures"]:
        lines.append(f"  {a['model_type']:<12} {a['family']:<20} {a['model_class']} (prompt style {a['prompt_style']})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    cat = catalogue()
    print(json.dumps(cat, indent=2, default=str) if args.json else render(cat))
    return 0
