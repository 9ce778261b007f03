"""BTAD, beanTech Anomaly Detection (Mishra et al., ISIE 2021): products 01, 02, 03.

Normal folder ``ok``, anomalous ``ko``; .bmp and .png are mixed (product 01 images and product 03
masks are .bmp) and read as they are. Masks are ``ground_truth/ko/<image stem>.<ext>`` (no suffix).
The root is the content of ``BTech_Dataset_transformed/`` (the download strips that folder).
"""

from __future__ import annotations

from adbench.datasets.download import BTAD
from adbench.datasets.folder import FolderDataset

from adbench.registry import register_dataset

BTAD_CATEGORIES = ("01", "02", "03")


@register_dataset("btad")
class BTADDataset(FolderDataset):
    """BTAD at ``<root>/<product>/{train/ok,test/ok,test/ko,ground_truth/ko}``.

    Default root ``$ADBENCH_DATA/btad``.
    """

    default_root = "btad"
    known_categories = BTAD_CATEGORIES
    normal_dir = "ok"
    mask_suffix = ""
    masks_required = True
    resource = BTAD
