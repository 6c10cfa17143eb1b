"""Built-in benchmark plugins, one file each. Importing this package (the `mmunlearn.benchmarks`
entry point `builtin`) imports every module in it, so each benchmark registers itself and a new
one needs no edit outside its own file (harness.core.bench has the contract)."""

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_info.name}")
