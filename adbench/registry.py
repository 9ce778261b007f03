"""Registries of methods and dataset families.

A method registers itself with a decorator, as in timm::

    @register_method("patchcore")
    class PatchCore(Method): ...

The runner builds one with :func:`build_method`. Importing :mod:`adbench.methods` and
:mod:`adbench.datasets` fills the registries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

METHODS: dict[str, type] = {}
DATASETS: dict[str, type] = {}


def _register(table: dict[str, type], kind: str, name: str) -> Callable[[T], T]:
    def wrap(obj: T) -> T:
        if name in table and table[name] is not obj:
            raise ValueError(f"{kind} {name!r} is registered twice ({table[name]} and {obj})")
        table[name] = obj  # type: ignore[assignment]
        obj.name = name  # type: ignore[attr-defined]
        return obj

    return wrap


def register_method(name: str) -> Callable[[T], T]:
    """Class decorator: make a :class:`adbench.method.Method` available as ``method=<name>``."""
    return _register(METHODS, "method", name)


def register_dataset(name: str) -> Callable[[T], T]:
    """Class decorator: make a dataset family available as ``data=<name>``."""
    return _register(DATASETS, "dataset", name)


def _lookup(table: dict[str, type], kind: str, name: str) -> type:
    if kind == "method":
        import adbench.methods
    else:
        import adbench.datasets  # noqa: F401  (fills DATASETS)
    if name not in table:
        known = ", ".join(sorted(table)) or "none"
        raise KeyError(f"unknown {kind} {name!r}; registered {kind}s: {known}")
    return table[name]


def get_method(name: str) -> type:
    """The registered method class called ``name``; KeyError listing the known ones otherwise."""
    return _lookup(METHODS, "method", name)


def get_dataset(name: str) -> type:
    """The registered dataset family called ``name``; KeyError listing the known ones otherwise."""
    return _lookup(DATASETS, "dataset", name)


def list_methods() -> list[str]:
    """Names of every registered method, sorted."""
    import adbench.methods  # noqa: F401  (fills METHODS)

    return sorted(METHODS)
