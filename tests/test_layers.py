"""The layers (docs/architecture.md) hold: a module imports only from its own layer and the
layers below it. Imports are read from the source (also those inside functions), so a lazy
import cannot hide a dependency that points upwards."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CORE = {"records", "errors", "prompts", "examples", "bench", "model", "neurons", "judge", "results", "seeding",
        "progress", "distributed", "defaults", "plugins", "minibench"}
EMBEDDED = {"tiny_model"}  # builds and scores the demo model with the task plugins
APPLICATION = {"runner", "leaderboard", "check", "cli", "commands"}
ORDER = ("core", "plugins", "embedded", "application")


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] in ("tasks", "methods"):
        return "plugins"
    if parts[0] != "harness":
        return None  # a library
    name = parts[1] if len(parts) > 1 else ""
    if name in CORE or name == "":
        return "core"
    if name in EMBEDDED:
        return "embedded"
    if name in APPLICATION:
        return "application"
    raise AssertionError(f"module {module} has no layer: add it to tests/test_layers.py and docs/architecture.md")


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def test_no_module_imports_from_a_higher_layer():
    wrong = []
    for folder in ("harness", "tasks", "methods"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "assets" in path.parts:
                continue
            mine = layer_of(module_name(path))
            for imported in imports(path):
                theirs = layer_of(imported)
                if theirs is not None and ORDER.index(theirs) > ORDER.index(mine):
                    wrong.append(f"{path.relative_to(ROOT)} ({mine}) imports {imported} ({theirs})")
    assert not wrong, "imports pointing to a higher layer:\n" + "\n".join(wrong)


def test_the_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from harness.runner import run_benchmark\n")
    assert "harness.runner" in imports(bad) and layer_of("harness.runner") == "application"
