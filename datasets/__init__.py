"""Dataset families (installed as ``adbench.datasets``) and :func:`build`.

Importing this package registers every family: ``folder`` (any MVTec-style tree), ``mvtec``,
``mpdd``, ``btad``, ``visa`` and ``toy`` (generated from scikit-image's bundled pictures).
A family without an explicit root uses ``$ADBENCH_DATA/<default_root>`` or, when the variable
is unset, ``~/.cache/adbench/data/<default_root>``.
"""

from __future__ import annotations

import os
from pathlib import Path

from adbench.datasets import btad, folder, mpdd, mvtec, toy, visa  # noqa: F401  (fill the registry)
from adbench.datasets.base import DatasetFamily

from adbench.data import DataError
from adbench.registry import get_dataset

__all__ = ["DatasetFamily", "build", "data_home"]


def data_home() -> Path:
    """The folder that holds the datasets by default: ``$ADBENCH_DATA`` or ``~/.cache/adbench/data``."""
    return Path(os.environ.get("ADBENCH_DATA") or "~/.cache/adbench/data").expanduser()


def build(
    name: str, root: str | Path | None = None, download: bool = False, **options: object
) -> DatasetFamily:
    """Build the dataset family registered as ``name``.

    ``root`` None (or empty) means ``data_home() / <family>.default_location(**options)``; ``options`` are the
    family's options (e.g. ``normal_dir`` for ``folder``, ``verify`` for all). DataError for an
    unknown name or a family that needs an explicit root.
    """
    try:
        family = get_dataset(name)
    except KeyError as err:
        raise DataError(err.args[0]) from err
    if not root:
        default = family.default_location(**options)
        if default is None:
            raise DataError(f"dataset {name!r} has no default location; set data.root to its folder")
        root = data_home() / default
    return family(root, download=download, **options)
