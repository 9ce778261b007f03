"""MVTec AD (Bergmann et al., CVPR 2019): 15 categories, ``good`` normal folder, ``_mask`` masks.

Not redistributed (CC BY-NC-SA 4.0): place the extracted ``mvtec_anomaly_detection.tar.xz`` under
the root by hand or build with ``download=True`` (checksummed, see :mod:`adbench.datasets.download`).
Grayscale categories (grid, screw, zipper) become RGB in :func:`adbench.data.load_image`.
"""

from __future__ import annotations

from adbench.datasets.download import MVTEC_AD
from adbench.datasets.folder import FolderDataset

from adbench.registry import register_dataset

MVTEC_CATEGORIES = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)


@register_dataset("mvtec")
class MVTecAD(FolderDataset):
    """MVTec AD at ``<root>/<category>/{train,test,ground_truth}`` (default ``$ADBENCH_DATA/mvtec``)."""

    default_root = "mvtec"
    known_categories = MVTEC_CATEGORIES
    masks_required = True
    resource = MVTEC_AD
