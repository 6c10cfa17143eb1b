"""Where tasks, methods and stages come from: entry points. This package declares its built-in tasks and
methods under the `mmunlearn.tasks` / `mmunlearn.methods` groups, and any installed package can
declare its own the same way (`[project.entry-points."mmunlearn.methods"]` in its
pyproject.toml, each pointing at a module that registers them). The registries
(harness.core.contracts) import a group on first use, so a user's package adds a method or a
task without touching this repository, and nothing in the harness imports a plugin by name."""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import entry_points

GROUPS = ("mmunlearn.methods", "mmunlearn.tasks", "mmunlearn.stages", "mmunlearn.benchmarks")
BUILTIN_PREFIX = "mmunlearn."  # this package's own plugins: a failure to import them is a bug
_loaded: set[str] = set()


def load_plugins(group: str) -> list[str]:
    """Import every entry point of `group` once per process; returns the names imported by
    this call. A third-party plugin that fails to import is reported as a warning naming it and
    the others still load; a built-in one that fails raises."""
    if group not in GROUPS:
        raise ValueError(f"unknown plugin group {group!r}; known: {', '.join(GROUPS)}")
    if group in _loaded:
        return []
    _loaded.add(group)
    loaded = []
    for ep in entry_points(group=group):
        try:
            importlib.import_module(ep.module)
        except Exception as exc:
            if ep.module.startswith(BUILTIN_PREFIX):
                raise
            warnings.warn(f"plugin {ep.name!r} ({ep.value}) of group {group} failed to import: {exc}")
            continue
        loaded.append(ep.name)
    return loaded
