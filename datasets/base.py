"""The interface every dataset family implements."""

from __future__ import annotations

from pathlib import Path

from adbench.data import Category


class DatasetFamily:
    """A dataset family (MVTec AD, VisA, ...) rooted at one folder.

    Subclasses set ``name`` (through ``@register_dataset``) and implement :meth:`categories`
    and :meth:`load`. ``options`` are the remaining keys of the ``data`` config group.
    """

    name: str = ""
    default_root: str | None = None

    @classmethod
    def default_location(cls, **options: object) -> str | None:
        """Folder name under the data home used when no root is given (None: a root is required)."""
        return cls.default_root

    def __init__(self, root: str | Path, download: bool = False, **options: object) -> None:
        self.root = Path(root).expanduser()
        self.download = download
        self.options = options

    def categories(self) -> list[str]:
        """All category names of this dataset, in canonical order."""
        raise NotImplementedError

    def load(self, category: str) -> Category:
        """The validated sample table of one category (DataError on bad input)."""
        raise NotImplementedError
