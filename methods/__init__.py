"""Method plugins. Importing this package imports every module in it, so each method file
registers itself (`@register_method`) and a new method needs no edit outside its own file; then
every method another installed package declares under the `mmunlearn.methods` entry-point group."""
import importlib
import pkgutil

from harness.plugins import load_entry_points

from methods.base import (METHOD_REGISTRY, Method, MethodParams, MethodResult, UnlearnData, get_method,  # noqa: F401
                          parse_params, register_method)

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_info.name}")
load_entry_points("mmunlearn.methods")

__all__ = ["METHOD_REGISTRY", "Method", "MethodParams", "MethodResult", "UnlearnData", "get_method", "parse_params", "register_method"]
