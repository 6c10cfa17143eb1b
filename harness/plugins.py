"""Plugins from other installed packages: a package declares its methods or tasks as entry points
(`[project.entry-points."mmunlearn.methods"]` / `"mmunlearn.tasks"` in its pyproject.toml, each
pointing at the module that registers them), and the registries import them on first use, so
a user's own package adds a method or a task without touching this repository."""
from __future__ import annotations

import importlib
import warnings
from importlib.metadata import entry_points

GROUPS = ("mmunlearn.methods", "mmunlearn.tasks")


def load_entry_points(group: str) -> list[str]:
    """Import every entry point of `group`; returns their names. A plugin that fails to import
    is reported as a warning naming it, and the others still load."""
    loaded = []
    for ep in entry_points(group=group):
        if ep.module.split(".")[0] in ("methods", "tasks"):  # this package's own (already imported)
            continue
        try:
            importlib.import_module(ep.module)
            loaded.append(ep.name)
        except Exception as exc:  # a broken third-party plugin must not break the harness
            warnings.warn(f"plugin {ep.name!r} ({ep.value}) of group {group} failed to import: {exc}")
    return loaded
