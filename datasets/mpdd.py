"""MPDD, Metal Parts Defect Detection (Jezek et al., ICUMT 2021): 6 categories, MVTec layout.

Manual download only (SharePoint folder, no checksum published): a missing category raises
DataError with the link even when ``download=True``.
"""

from __future__ import annotations

from adbench.datasets.download import MPDD
from adbench.datasets.folder import FolderDataset

from adbench.registry import register_dataset

MPDD_CATEGORIES = ("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes")


@register_dataset("mpdd")
class MPDDDataset(FolderDataset):
    """MPDD at ``<root>/<category>/{train,test,ground_truth}`` (default root ``$ADBENCH_DATA/mpdd``)."""

    default_root = "mpdd"
    known_categories = MPDD_CATEGORIES
    masks_required = True
    resource = MPDD
