"""The layers (docs/architecture.md) hold: a module imports only from its own layer and the
layers below it. Imports are read from the source (also those inside functions), so a lazy
import cannot hide a dependency that points upwards."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ORDER = ("core", "plugins", "embedded", "application")
# Each layer is a folder: harness/core, tasks + methods + stages + benchmarks, harness/embedded, harness/app.
FOLDERS = {"core": "core", "embedded": "embedded", "app": "application"}
PLUGIN_FOLDERS = ("tasks", "methods", "stages", "benchmarks")


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "mmunlearn":
        if parts[0] in ("harness", *PLUGIN_FOLDERS):
            raise AssertionError(f"{module}: import through the namespace, mmunlearn.{module}")
        return None  # a library
    if len(parts) > 1 and parts[1] in PLUGIN_FOLDERS:
        return "plugins"
    if len(parts) > 2 and parts[1] == "harness" and parts[2] in FOLDERS:
        return FOLDERS[parts[2]]
    if parts[1:] == ["harness"]:
        return "core"  # the package's own __init__ (a docstring)
    raise AssertionError(f"module {module} has no layer: put it under harness/core, harness/embedded or harness/app")


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
    return ".".join(("mmunlearn", *parts))


def test_no_module_imports_from_a_higher_layer():
    wrong = []
    for folder in ("harness", *PLUGIN_FOLDERS):
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
    bad.write_text("def f():\n    from mmunlearn.harness.app.runner import run_benchmark\n")
    assert "mmunlearn.harness.app.runner" in imports(bad) and layer_of("mmunlearn.harness.app.runner") == "application"


def test_every_harness_module_sits_in_a_layer_folder():
    loose = [p.name for p in (ROOT / "harness").glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside the layer folders of harness/: {loose}"


def test_the_core_and_the_embedded_demo_never_import_a_plugin():
    """The application and the registries find plugins through entry points only."""
    wrong = []
    for folder in ("harness/core", "harness/embedded", "harness/app"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            wrong += [f"{path.relative_to(ROOT)} imports {m}" for m in imports(path) if layer_of(m) == "plugins"]
    assert not wrong, "\n".join(wrong)
