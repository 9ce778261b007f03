"""CutPaste and CutPaste-Scar augmentations (Li et al., CVPR 2021), vectorised over a batch.

Conventions follow the reimplementation the spec reads (Runinho/pytorch-cutpaste ``cutpaste.py``;
spec draem-cutpaste-datasets.md §2.1):

* **CutPaste**: a rectangle of area fraction U[0.02, 0.15] of the image and aspect ratio
  log-uniform in [0.3, 1/0.3] (w = round(sqrt(area·ar)), h = round(sqrt(area/ar))) is cut at a
  random place of the same image, colour-jittered (brightness = contrast = saturation = hue = 0.1)
  and pasted at another random place (it may overlap its source).
* **Scar**: a thin rectangle, width U[2, 16] and height U[10, 25] pixels at 256² (scaled with the
  image side), colour-jittered, rotated by U[−45°, 45°] (nearest neighbour, expanded bounding box)
  and pasted so that its bounding box lies inside the image.

Everything operates on float images in [0, 1] of shape [B, 3, H, W] with one random draw per
image from a ``torch.Generator``, so a fixed seed gives the same augmentations. Pasting is one
gather over a per-pixel source index: O(B·H·W), no Python loop over images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale


@dataclass
class PasteParams:
    """Geometry of one paste per image; every field is a tensor [B].

    ``width``/``height``: integer size (pixels) of the cut rectangle; ``src_x``/``src_y``: its
    top-left corner in the source; ``dst_x``/``dst_y``: top-left corner of the (rotated, expanded)
    bounding box at the destination; ``box_w``/``box_h``: that bounding box's size; ``angle``:
    rotation in degrees (0 for CutPaste).
    """

    width: torch.Tensor
    height: torch.Tensor
    src_x: torch.Tensor
    src_y: torch.Tensor
    dst_x: torch.Tensor
    dst_y: torch.Tensor
    box_w: torch.Tensor
    box_h: torch.Tensor
    angle: torch.Tensor


@dataclass
class PasteResult:
    """Augmented images float [B, 3, H, W] in [0, 1], the pasted pixels bool [B, H, W], the geometry."""

    images: torch.Tensor
    masks: torch.Tensor
    params: PasteParams


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _place(n: int, free: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Integer offsets uniform in [0, free) (``int(random.uniform(0, free))``), 0 where free ≤ 0."""
    return (torch.rand(n, generator=generator, dtype=torch.float64) * free.clamp(min=0)).long()


def sample_cutpaste_params(
    n: int,
    height: int,
    width: int,
    area_ratio: tuple[float, float] = (0.02, 0.15),
    aspect_ratio: float = 0.3,
    generator: torch.Generator | None = None,
) -> PasteParams:
    """Draw ``n`` CutPaste rectangles for H × W images (area fraction and log-uniform aspect ratio)."""
    area = _uniform(n, area_ratio[0], area_ratio[1], generator) * width * height
    log_low, log_high = math.log(aspect_ratio), math.log(1.0 / aspect_ratio)
    aspect = torch.exp(_uniform(n, log_low, log_high, generator))
    cut_w = torch.round(torch.sqrt(area * aspect)).long().clamp(1, width)
    cut_h = torch.round(torch.sqrt(area / aspect)).long().clamp(1, height)
    src_y, src_x = _place(n, height - cut_h, generator), _place(n, width - cut_w, generator)
    dst_y, dst_x = _place(n, height - cut_h, generator), _place(n, width - cut_w, generator)
    no_rotation = torch.zeros(n, dtype=torch.float64)
    return PasteParams(cut_w, cut_h, src_x, src_y, dst_x, dst_y, cut_w, cut_h, no_rotation)


def rotated_box(
    width: torch.Tensor, height: torch.Tensor, angle_deg: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer size (w, h) of the bounding box of a w × h rectangle rotated by ``angle_deg``."""
    rad = torch.deg2rad(angle_deg)
    cos, sin = torch.cos(rad).abs(), torch.sin(rad).abs()
    box_w = torch.ceil(width * cos + height * sin - 1e-6).long()
    box_h = torch.ceil(width * sin + height * cos - 1e-6).long()
    return box_w, box_h


def sample_scar_params(
    n: int,
    height: int,
    width: int,
    scar_width: tuple[float, float] = (2.0, 16.0),
    scar_height: tuple[float, float] = (10.0, 25.0),
    rotation: tuple[float, float] = (-45.0, 45.0),
    reference_size: float = 256.0,
    generator: torch.Generator | None = None,
) -> PasteParams:
    """Draw ``n`` scars for H × W images; sizes are pixels at ``reference_size`` and scale with the
    image (spec §2.8: keep scar sizes tied to 256²)."""
    scale = min(height, width) / reference_size
    cut_w = torch.round(_uniform(n, *scar_width, generator) * scale).long().clamp(1, width)
    cut_h = torch.round(_uniform(n, *scar_height, generator) * scale).long().clamp(1, height)
    src_y, src_x = _place(n, height - cut_h, generator), _place(n, width - cut_w, generator)
    angle = _uniform(n, rotation[0], rotation[1], generator)
    box_w, box_h = rotated_box(cut_w.double(), cut_h.double(), angle)
    box_w, box_h = box_w.clamp(max=width), box_h.clamp(max=height)
    dst_y, dst_x = _place(n, height - box_h, generator), _place(n, width - box_w, generator)
    return PasteParams(cut_w, cut_h, src_x, src_y, dst_x, dst_y, box_w, box_h, angle)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """float [B, 3, H, W] RGB in [0, 1] → HSV, all channels in [0, 1] (hue as a fraction of the circle)."""
    r, g, b = rgb.unbind(1)
    maxc, argmax = rgb.max(dim=1)
    delta = maxc - rgb.min(dim=1).values
    safe = torch.where(delta > 0, delta, 1.0)
    sat = delta / torch.where(maxc > 0, maxc, 1.0)
    hue = torch.where(argmax == 1, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)
    hue = torch.where(argmax == 0, (g - b) / safe, hue)
    hue = torch.where(delta > 0, torch.remainder(hue / 6.0, 1.0), 0.0)
    return torch.stack([hue, sat, maxc], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`: float [B, 3, H, W] HSV → RGB."""
    hue, sat, val = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], device=hsv.device, dtype=hsv.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + hue * 6.0, 6.0)
    return val * (1 - sat * torch.clamp(torch.minimum(k, 4 - k), 0, 1))


def color_jitter(
    images: torch.Tensor,
    strength: float,
    generator: torch.Generator | None = None,
    region: torch.Tensor | None = None,
) -> torch.Tensor:
    """torchvision ``ColorJitter(b, c, s, h)`` with b = c = s = h = ``strength``, one draw per image.

    images: float [B, 3, H, W] in [0, 1] → same shape, clamped to [0, 1]. Each image gets its own
    brightness/contrast/saturation factors U[1 − s, 1 + s], hue shift U[−s, s] and a random order
    of the four operations. ``region`` (bool [B, H, W]) restricts the contrast mean to the pixels
    that form the jittered patch (torchvision jitters the cropped patch alone); None = whole image.
    """
    if strength <= 0:
        return images
    n = images.shape[0]
    factors = 1.0 + (2 * torch.rand(n, 3, generator=generator) - 1) * strength
    hue_shift = (2 * torch.rand(n, generator=generator) - 1) * strength
    order = torch.argsort(torch.rand(n, 4, generator=generator), dim=1)
    return jitter_with(images, factors, hue_shift, order, region)


def jitter_with(
    images: torch.Tensor,
    factors: torch.Tensor,
    hue_shift: torch.Tensor,
    order: torch.Tensor,
    region: torch.Tensor | None = None,
) -> torch.Tensor:
    """Colour jitter with given draws: ``factors`` [B, 3] (brightness, contrast, saturation),
    ``hue_shift`` [B] (fraction of the hue circle), ``order`` [B, 4] (operation indices 0..3 in
    that order: brightness, contrast, saturation, hue). images: float [B, 3, H, W] in [0, 1]."""
    factors = factors.to(images.device, images.dtype)
    hue_shift = hue_shift.to(images.device, images.dtype)
    weights = torch.tensor(GRAY_WEIGHTS, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    out = images.clone()
    for stage in range(4):
        for op in range(4):
            sel = (order[:, stage] == op).nonzero().flatten().to(images.device)
            if sel.numel() == 0:
                continue
            x = out[sel]
            if op == 0:
                x = (x * factors[sel, 0].view(-1, 1, 1, 1)).clamp(0, 1)
            elif op == 1:
                gray = (x * weights).sum(dim=1)
                if region is None:
                    mean = gray.mean(dim=(1, 2))
                else:
                    area = region[sel].to(x.dtype)
                    mean = (gray * area).sum(dim=(1, 2)) / area.sum(dim=(1, 2)).clamp(min=1)
                c = factors[sel, 1].view(-1, 1, 1, 1)
                x = (c * x + (1 - c) * mean.view(-1, 1, 1, 1)).clamp(0, 1)
            elif op == 2:
                gray = (x * weights).sum(dim=1, keepdim=True)
                s = factors[sel, 2].view(-1, 1, 1, 1)
                x = (s * x + (1 - s) * gray).clamp(0, 1)
            else:
                hsv = rgb_to_hsv(x)
                hsv[:, 0] = torch.remainder(hsv[:, 0] + hue_shift[sel].view(-1, 1, 1), 1.0)
                x = hsv_to_rgb(hsv).clamp(0, 1)
            out[sel] = x
    return out


def cut_patches(images: torch.Tensor, params: PasteParams) -> tuple[torch.Tensor, torch.Tensor]:
    """The source rectangles as a zero-padded stack float [B, 3, h_max, w_max] and its valid pixels
    bool [B, h_max, w_max] (h_max, w_max = the largest rectangle sides of the batch)."""
    b, _, h, w = images.shape
    device = images.device
    h_max, w_max = int(params.height.max()), int(params.width.max())
    py = torch.arange(h_max, device=device).view(1, -1, 1)
    px = torch.arange(w_max, device=device).view(1, 1, -1)
    valid = (py < params.height.to(device).view(-1, 1, 1)) & (px < params.width.to(device).view(-1, 1, 1))
    rows = (params.src_y.to(device).view(-1, 1, 1) + py).clamp(max=h - 1)
    cols = (params.src_x.to(device).view(-1, 1, 1) + px).clamp(max=w - 1)
    index = (rows * w + cols).view(b, 1, -1).expand(-1, 3, -1)
    patches = images.reshape(b, 3, h * w).gather(2, index).view(b, 3, h_max, w_max)
    return patches * valid.unsqueeze(1), valid


def paste(
    images: torch.Tensor, params: PasteParams, jitter: float = 0.1, generator: torch.Generator | None = None
) -> PasteResult:
    """Cut each image's rectangle, colour-jitter it, rotate it and paste it at its destination.

    images: float [B, 3, H, W] in [0, 1]. A destination pixel takes the (nearest) patch pixel
    found by rotating its offset from the destination box centre back by ``angle``; it is pasted
    when that point falls inside the rectangle.
    """
    b, _, h, w = images.shape
    device = images.device
    patches, valid = cut_patches(images, params)
    patches = color_jitter(patches, jitter, generator, region=valid)
    h_max, w_max = patches.shape[-2:]
    geo = {k: v.to(device, torch.float32).view(-1, 1, 1) for k, v in vars(params).items()}
    ys = torch.arange(h, device=device, dtype=torch.float32).view(1, -1, 1) + 0.5
    xs = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, -1) + 0.5
    off_x = xs - (geo["dst_x"] + geo["box_w"] / 2)
    off_y = ys - (geo["dst_y"] + geo["box_h"] / 2)
    rad = torch.deg2rad(geo["angle"])
    cos, sin = torch.cos(rad), torch.sin(rad)
    u = cos * off_x + sin * off_y + geo["width"] / 2  # inverse rotation, in patch coordinates
    v = -sin * off_x + cos * off_y + geo["height"] / 2
    inside = (u >= 0) & (u < geo["width"]) & (v >= 0) & (v < geo["height"])
    col = torch.floor(u).long().clamp(0, w_max - 1)
    row = torch.floor(v).long().clamp(0, h_max - 1)
    index = (row * w_max + col).view(b, 1, h * w).expand(-1, 3, -1)
    moved = patches.reshape(b, 3, h_max * w_max).gather(2, index).view(b, 3, h, w)
    out = torch.where(inside.unsqueeze(1), moved, images)
    return PasteResult(out, inside, params)


def cutpaste(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    area_ratio: tuple[float, float] = (0.02, 0.15),
    aspect_ratio: float = 0.3,
    jitter: float = 0.1,
) -> PasteResult:
    """CutPaste (normal) on every image of [B, 3, H, W] in [0, 1]."""
    b, _, h, w = images.shape
    params = sample_cutpaste_params(b, h, w, area_ratio, aspect_ratio, generator)
    return paste(images, params, jitter, generator)


def scar(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    scar_width: tuple[float, float] = (2.0, 16.0),
    scar_height: tuple[float, float] = (10.0, 25.0),
    rotation: tuple[float, float] = (-45.0, 45.0),
    reference_size: float = 256.0,
    jitter: float = 0.1,
) -> PasteResult:
    """CutPaste-Scar on every image of [B, 3, H, W] in [0, 1]; sizes in pixels at ``reference_size``."""
    b, _, h, w = images.shape
    params = sample_scar_params(b, h, w, scar_width, scar_height, rotation, reference_size, generator)
    return paste(images, params, jitter, generator)
