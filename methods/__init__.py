"""Registered methods: every module in this package is imported, and registers itself with
``@register_method``. Adding a method takes one file here and one YAML in ``conf/method/``."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
