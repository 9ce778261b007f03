"""Foreground masks that restrict synthesised anomalies to the object.

GLASS reads masks made offline (``<data>/fg_mask/<class>/<image file>``, a separate download
whose generation code is not public). :func:`foreground_from_folder` reads such masks;
:func:`estimate_foreground` computes them from the training images alone when the user has none.

The rule of :func:`estimate_foreground` (per category, training images only):

1. per image, the background colour is the per-channel median of a border band of width
   max(1, S/16) pixels; the distance of every pixel to it (L2 over RGB in [0, 1]) is smoothed
   with a Gaussian of σ = S/64 and split by Otsu's threshold; the foreground is the far side,
   dilated by S/32 pixels (square max filter);
2. the category has a background only if, over its images, the median share of border-band
   pixels marked foreground is below 10 % and the median foreground area lies in [2 %, 90 %]
   (an object on a plain background). Otherwise — textures, objects that fill the frame — every
   mask is the whole image, as GLASS's ``--fg 0``. An image whose mask is empty gets the whole image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from adbench.components.postprocess import gaussian_blur
from adbench.data import IMAGE_EXTENSIONS, DataError, ImageTransform, load_mask

BORDER_FOREGROUND_MAX = 0.10
AREA_RANGE = (0.02, 0.90)


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D float tensor (maximum between-class variance over ``bins`` bins)."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist = torch.histc(values.float(), bins=bins, min=lo, max=hi).double()
    centres = lo + (torch.arange(bins, dtype=torch.float64) + 0.5) * (hi - lo) / bins
    weight0 = hist.cumsum(0)
    weight1 = hist.sum() - weight0
    mean0 = (hist * centres).cumsum(0) / weight0.clamp(min=1e-12)
    mean1 = ((hist * centres).sum() - (hist * centres).cumsum(0)) / weight1.clamp(min=1e-12)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(lo + (int(between.argmax()) + 1) * (hi - lo) / bins)


def _border_band(size: tuple[int, int], width: int) -> torch.Tensor:
    band = torch.ones(size, dtype=torch.bool)
    band[width:-width, width:-width] = False
    return band


def candidate_foreground(images: torch.Tensor) -> torch.Tensor:
    """Step 1 of the rule (module docstring) for a batch: float [N, 3, S, S] in [0, 1] → bool [N, S, S]."""
    _, _, height, width = images.shape
    side = min(height, width)
    band = _border_band((height, width), max(1, side // 16)).to(images.device)
    background = images[:, :, band].median(dim=2).values  # [N, 3]
    distance = torch.linalg.vector_norm(images - background[:, :, None, None], dim=1)
    distance = gaussian_blur(distance, max(side / 64, 0.5))
    masks = torch.stack([d > otsu_threshold(d.flatten()) for d in distance])
    radius = max(1, side // 32)
    return F.max_pool2d(masks[:, None].float(), 2 * radius + 1, stride=1, padding=radius)[:, 0] > 0


def has_background(masks: torch.Tensor) -> bool:
    """Step 2 of the rule: do a category's candidate masks bool [N, S, S] show an object on a plain
    background (median border-band share < 10 %, median area in [2 %, 90 %])?"""
    height, width = masks.shape[-2:]
    band = _border_band((height, width), max(1, min(height, width) // 16)).to(masks.device)
    border_share = masks[:, band].float().mean(dim=1).median()
    area = masks.flatten(1).float().mean(dim=1).median()
    return bool(border_share < BORDER_FOREGROUND_MAX and AREA_RANGE[0] <= area <= AREA_RANGE[1])


def finalize_foreground(masks: torch.Tensor, background: bool) -> torch.Tensor:
    """The category's masks bool [N, S, S]: all True without a background; else empty masks → all True."""
    if not background:
        return torch.ones_like(masks, dtype=torch.bool)
    out = masks.clone()
    out[~masks.flatten(1).any(dim=1)] = True
    return out


def estimate_foreground(images: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Foreground masks of one category's training images by the rule in the module docstring.

    images: float [N, 3, S, S] in [0, 1] (un-normalised). Returns (bool [N, S, S], whether the
    category was judged to have a background; False means every mask is all True). For many
    images, call :func:`candidate_foreground` per batch, then :func:`has_background` and
    :func:`finalize_foreground` on the concatenated masks.
    """
    masks = candidate_foreground(images)
    background = has_background(masks)
    return finalize_foreground(masks, background), background


def _find_mask(folder: Path, image_path: str) -> Path:
    name = Path(image_path).name
    if (folder / name).is_file():
        return folder / name
    stem = Path(image_path).stem
    for candidate in sorted(folder.glob(f"{stem}*")):
        if candidate.suffix.lower() in IMAGE_EXTENSIONS and candidate.stem in (stem, f"{stem}_mask"):
            return candidate
    raise DataError(
        f"no foreground mask for {image_path} in {folder} (expected {folder / name}); "
        "use foreground=auto to compute masks from the training images"
    )


def foreground_from_folder(
    paths: Sequence[str], folder: str | Path, transform: ImageTransform
) -> torch.Tensor:
    """Read one foreground mask per training image from ``folder`` (GLASS layout: the image's file
    name, or ``<stem>_mask``), non-zero = foreground, resized/cropped like the image whatever its own
    size, as GLASS's datasets/mvtec.py l.186-189 does: bilinear ``transforms.Resize`` then
    ``torch.ceil`` (every pixel touched by foreground stays foreground).
    Returns bool [N, S, S] with S = ``transform.crop``."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(
            f"foreground mask folder {folder} does not exist: GLASS's official runs (--fg 1) read "
            "<dataset root>/fg_mask/<category>/ from the GLASS release; place them there (data.root must be "
            "set), or set method.params.foreground=auto (adbench's rule) or none (the whole image)"
        )
    masks = [transform.mask(load_mask(_find_mask(folder, path), None, binarize="nonzero"), dilate=True)
             for path in paths]
    return torch.stack(masks)
