"""Dataset families (installed as ``adbench.datasets``) and :func:`build`.

Importing this package imports every module in it, and each family registers itself with
``@register_dataset`` (as methods do): ``folder`` (any MVTec-style tree), ``mvtec``, ``mpdd``,
``btad``, ``visa`` and ``toy`` (generated from scikit-image's bundled pictures). Adding a family
takes one file here and one YAML in ``conf/data/``.
A family without an explicit root uses ``$ADBENCH_DATA/<default_root>`` or, when the variable
is unset, ``~/.cache/adbench/data/<default_root>``.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path

if __name__ != "adbench.datasets":  # the repository root on sys.path makes this folder `datasets`
    raise ImportError(f"{Path(__file__).parent} is adbench.datasets, not Hugging Face `datasets`: import "
                      "adbench.datasets, or run outside the adbench checkout to import Hugging Face datasets")

from adbench.datasets.base import DatasetFamily

from adbench.data import DataError
from adbench.registry import get_dataset

__all__ = ["DatasetFamily", "build", "data_home"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


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
