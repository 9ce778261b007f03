"""MVTec-style folder trees: the one tree reader behind ``folder``, ``mvtec``, ``mpdd``, ``btad`` and ``toy``.

Layout of one category (``normal_dir`` and ``mask_suffix`` are options)::

    <root>/<category>/train/<normal_dir>/*.png            normal training images
    <root>/<category>/test/<normal_dir>/*.png             normal test images
    <root>/<category>/test/<defect>/<stem>.png            anomalous test images, one folder per defect type
    <root>/<category>/ground_truth/<defect>/<stem><mask_suffix>.png   optional 0/255 masks

Any image extension of :data:`adbench.data.IMAGE_EXTENSIONS` is accepted for images and masks.
A category without a ``ground_truth`` folder has anomalous samples with ``mask_path`` None
(image metrics only); with one, every anomalous image needs its mask. Normal samples get the
defect type ``"good"`` whatever their folder is called.

A plain ``folder`` dataset (a user's own tree) is named ``folder-<8 hex digits>`` from its resolved
root and image listing (:meth:`FolderDataset.content_name`), so runs on two trees with the same
category names never share a record; the published datasets keep their names.
"""

from __future__ import annotations

from pathlib import Path

from adbench.datasets.base import DatasetFamily
from adbench.datasets.download import Resource, ensure_dataset

from adbench.data import (
    IMAGE_EXTENSIONS,
    Category,
    DataError,
    Sample,
    file_fingerprint,
    list_images,
    stable_hash,
)
from adbench.registry import register_dataset


def unknown_category(dataset: str, category: str, available: list[str]) -> DataError:
    """The error for a category name the dataset does not have, listing the available ones."""
    return DataError(
        f"{dataset} has no category {category!r}; available categories: {', '.join(available) or 'none'}"
    )


@register_dataset("folder")
class FolderDataset(DatasetFamily):
    """Any MVTec-style tree; categories are the sub-folders of ``root`` that contain ``train/``.

    Options: ``normal_dir`` (default ``"good"``), ``mask_suffix`` (default ``"_mask"``),
    ``verify`` (default False: :meth:`~adbench.data.Category.verify_files` at :meth:`load`;
    the runner verifies every category it runs unless ``data.verify=false``).
    Subclasses for published datasets fix ``known_categories`` (canonical order), set
    ``masks_required`` and a download :class:`~adbench.datasets.download.Resource`.
    """

    default_root: str | None = None
    known_categories: tuple[str, ...] = ()
    normal_dir = "good"
    mask_suffix = "_mask"
    masks_required = False
    resource: Resource | None = None

    def __init__(self, root: str | Path, download: bool = False, **options: object) -> None:
        super().__init__(root, download, **options)
        self.normal_dir = str(options.get("normal_dir", self.normal_dir))
        self.mask_suffix = str(options.get("mask_suffix", self.mask_suffix))
        self.verify = bool(options.get("verify", False))
        if not self.known_categories and self.root.is_dir():
            self.name = self.content_name()

    def content_name(self) -> str:
        """A user's tree is named by its data: ``folder-`` + 8 hex digits of the resolved path, size
        and mtime of every image under its categories (the feature cache's file identity). Two roots,
        or a root whose images were added, removed or changed, are then different datasets: their
        records, run ids and leaderboard rows never replace each other's."""
        images = [p for c in self._category_dirs() for p in c.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
        return f"{self.name}-{stable_hash(sorted(file_fingerprint(p) for p in images), 8)}"

    def _category_dirs(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if (p / "train").is_dir())

    def categories(self) -> list[str]:
        """The canonical categories, or (plain ``folder``) the sub-folders of root with a ``train/``."""
        if self.known_categories:
            return list(self.known_categories)
        layout = f"<category>/train/{self.normal_dir}/ trees"
        if not self.root.is_dir():
            raise DataError(f"{self.name}: root folder {self.root} does not exist; set data.root to a folder "
                            f"holding {layout}")
        found = [p.name for p in self._category_dirs()]
        if not found:
            hint = (f"; {self.root} is itself a category: set data.root={self.root.parent} "
                    f"data.category={self.root.name}" if (self.root / "train").is_dir() else "")
            raise DataError(f"{self.name}: no sub-folder of {self.root} has a train/ folder; data.root must "
                            f"hold {layout}{hint}")
        return found

    def prepare(self, category: str) -> None:
        """Make the category's files available (download or explain); called by :meth:`load`."""
        if self.resource is not None:
            ensure_dataset(self.resource, self.root, self.download, self.root / category)

    def load(self, category: str) -> Category:
        """Walk ``<root>/<category>`` into a validated :class:`Category`."""
        available = self.categories()
        if category not in available and not self.known_categories and (self.root / category).is_dir():
            raise DataError(f"{self.name}: {self.root / category} has no train/ folder; put its normal "
                            f"training images in {self.root / category / 'train' / self.normal_dir}/")
        if category not in available:
            raise unknown_category(self.name, category, available)
        self.prepare(category)
        cat_dir = self.root / category
        train = [
            Sample(str(p), 0, None, "good", category, "train")
            for p in list_images(cat_dir / "train" / self.normal_dir)
        ]
        gt_dir = cat_dir / "ground_truth"
        has_gt = gt_dir.is_dir()
        test_dir = cat_dir / "test"
        test: list[Sample] = []
        folders = sorted(p for p in test_dir.iterdir() if p.is_dir()) if test_dir.is_dir() else []
        for folder in folders:
            images = list_images(folder)
            if folder.name == self.normal_dir:
                test += [Sample(str(p), 0, None, "good", category, "test") for p in images]
                continue
            if images and self.masks_required and not has_gt:
                raise DataError(
                    f"{self.name}/{category}: {gt_dir} is missing; {self.name} has a mask for every "
                    f"anomalous image (ground_truth/<defect>/<stem>{self.mask_suffix}.png)"
                )
            masks = {p.stem: p for p in list_images(gt_dir / folder.name)} if has_gt else {}
            for image in images:
                mask = masks.get(image.stem + self.mask_suffix)
                if has_gt and mask is None:
                    raise DataError(
                        f"{self.name}/{category}: no mask for {image}; expected "
                        f"{gt_dir / folder.name / (image.stem + self.mask_suffix)}.png (or another image "
                        "extension) — add it, or remove the ground_truth folder to use image labels only"
                    )
                test.append(
                    Sample(str(image), 1, None if mask is None else str(mask), folder.name, category, "test")
                )
        result = Category(self.name, category, str(cat_dir), train, test)
        result.validate()
        if self.verify:
            result.verify_files()
        return result
