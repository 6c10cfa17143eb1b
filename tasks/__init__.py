"""Built-in task plugins, one file each. Importing this package (the `mmunlearn.tasks` entry
point `builtin`) imports every module in it, so each task registers itself and a new task needs
no edit outside its own file."""

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_info.name}")
