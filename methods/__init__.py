"""Built-in method plugins, one file each. Importing this package (the `mmunlearn.methods` entry
point `builtin`) imports every module in it, so each method registers itself and a new method
needs no edit outside its own file."""

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_info.name}")
