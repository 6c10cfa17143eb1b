"""Built-in stage plugins, one file each (the `mmunlearn.stages` entry point `builtin`):
measurements that read across the run's sets and tasks (harness.core.stages)."""

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_info.name}")
