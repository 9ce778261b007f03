"""VisA (Zou et al., ECCV 2022): 12 objects read from the raw layout through ``split_csv/1cls.csv``.

The CSV has the columns ``object,split,label,image,mask``; ``label`` is ``normal`` or ``anomaly``
and paths are relative to the root. Masks hold defect-class ids (0 = background), so the
categories use ``mask_binarize="nonzero"``. Anomalous samples get the defect type ``"bad"``
(the name of the re-organised MVTec-style layout); normal ones ``"good"``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from adbench.datasets.base import DatasetFamily
from adbench.datasets.download import VISA, ensure_dataset
from adbench.datasets.folder import unknown_category

from adbench.data import Category, DataError, Sample
from adbench.registry import register_dataset

VISA_CATEGORIES = (
    "candle",
    "capsules",
    "cashew",
    "chewinggum",
    "fryum",
    "macaroni1",
    "macaroni2",
    "pcb1",
    "pcb2",
    "pcb3",
    "pcb4",
    "pipe_fryum",
)
SPLIT_CSV = Path("split_csv") / "1cls.csv"
COLUMNS = ("object", "split", "label", "image", "mask")
LABELS = {"normal": 0, "anomaly": 1}


@register_dataset("visa")
class VisADataset(DatasetFamily):
    """VisA at ``<root>`` holding ``split_csv/1cls.csv`` (default root ``$ADBENCH_DATA/visa``).

    Options: ``verify`` (default False: :meth:`~adbench.data.Category.verify_files` at :meth:`load`;
    the runner verifies every category it runs unless ``data.verify=false``).
    """

    default_root = "visa"

    def __init__(self, root: str | Path, download: bool = False, **options: object) -> None:
        super().__init__(root, download, **options)
        self.verify = bool(options.get("verify", False))

    def categories(self) -> list[str]:
        """The 12 VisA objects in the order of the paper."""
        return list(VISA_CATEGORIES)

    def load(self, category: str) -> Category:
        """Read the object's rows of ``1cls.csv``: DataError on bad rows or missing files."""
        if category not in VISA_CATEGORIES:
            raise unknown_category(self.name, category, list(VISA_CATEGORIES))
        csv_path = self.root / SPLIT_CSV
        ensure_dataset(VISA, self.root, self.download, csv_path)
        with open(csv_path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(
                    f"{csv_path} lacks the column(s) {', '.join(missing)}; "
                    f"expected the header {','.join(COLUMNS)}"
                )
            rows = [(line, row) for line, row in enumerate(reader, start=2) if row["object"] == category]
        if not rows:
            raise DataError(f"{csv_path} has no rows for object {category!r}; is the VisA tree complete?")
        splits: dict[str, list[Sample]] = {"train": [], "test": []}
        for line, row in rows:
            where = f"{csv_path} line {line}"
            if row["split"] not in splits:
                raise DataError(f"{where}: split {row['split']!r} is not 'train' or 'test'")
            if row["label"] not in LABELS:
                raise DataError(f"{where}: label {row['label']!r} is not 'normal' or 'anomaly'")
            label = LABELS[row["label"]]
            image = self.root / (row["image"] or "")
            if not image.is_file():
                raise DataError(f"{where}: image {image} does not exist; restore it or remove the row")
            mask = None
            if label == 1:
                if not row["mask"]:
                    raise DataError(f"{where}: anomalous image {image} has an empty 'mask' column")
                mask = self.root / (row["mask"] or "")
                if not mask.is_file():
                    raise DataError(f"{where}: mask {mask} of {image} does not exist; restore it")
            sample = Sample(
                str(image),
                label,
                None if mask is None else str(mask),
                "bad" if label else "good",
                category,
                row["split"],
            )
            splits[row["split"]].append(sample)
        result = Category(
            self.name,
            category,
            str(self.root / category),
            splits["train"],
            splits["test"],
            mask_binarize="nonzero",
        )
        result.validate()
        if self.verify:
            result.verify_files()
        return result
