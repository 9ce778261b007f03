"""Random augmentation of anomaly-source textures: GLASS's 3 of 9 and DRAEM's 3 of 10.

Each op maps a uint8 RGB tensor [3, H, W] to a uint8 tensor of the same shape and draws its
parameters from a ``torch.Generator`` (so a fixed seed gives fixed textures). Ops work on uint8
like the PIL (GLASS, torchvision transforms) and imgaug (DRAEM) originals.

:data:`GLASS_AUGMENTATIONS` (GLASS ``datasets/mvtec.py::rand_augmenter``, torchvision): contrast
0.8–1.2; brightness 0.8–1.2; saturation 0.8–1.2 + hue ±0.2 (in random order, as ColorJitter);
hflip; vflip; grayscale; autocontrast; equalize; rotation ±45° (RandomAffine: nearest, zero fill).

:data:`DRAEM_AUGMENTATIONS` (DRAEM ``data_loader.py``, imgaug): GammaContrast 0.5–2.0 per channel;
MultiplyAndAddToBrightness ×0.8–1.2, ±30 on the luma (applied as the same change to R, G, B,
which is what a YCrCb round trip does before clipping); PIL sharpness factor 0–2; hue and
saturation ±50 (hue in 1/255 turns, saturation added on a 0–255 scale, independent values);
Solarize p = 0.5 with threshold 32–128; Posterize to 1–8 bits; Invert; PIL autocontrast with a
0–20 % cutoff; PIL equalize; rotation ±45° (bilinear, zero fill).

:func:`random_augment` applies ``k`` distinct ops drawn without replacement, in the drawn order
(``np.random.choice(n, 3, replace=False)`` in both codes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

AugmentOp = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator))


def _randint(generator: torch.Generator, low: int, high_inclusive: int) -> int:
    return int(torch.randint(low, high_inclusive + 1, (1,), generator=generator))


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """float RGB [3, H, W] in [0, 1] → HSV [3, H, W], hue in turns [0, 1)."""
    r, g, b = rgb
    maxc, _ = rgb.max(dim=0)
    minc, _ = rgb.min(dim=0)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(
        maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue))
    sat = torch.where(
        maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc)
    )
    return torch.stack([hue, sat, maxc])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV [3, H, W] (hue in turns) → float RGB [3, H, W] in [0, 1]."""
    hue, sat, val = hsv
    k = (torch.tensor([5.0, 3.0, 1.0], device=hsv.device)[:, None, None] + hue * 6) % 6
    return val - val * sat * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def autocontrast_cutoff(image: torch.Tensor, cutoff_percent: float) -> torch.Tensor:
    """PIL ``ImageOps.autocontrast(img, cutoff)`` per channel: drop ``cutoff_percent`` % of the
    pixels at each end of the histogram, then stretch the remaining range linearly to 0–255."""
    flat = image.reshape(3, -1).float()
    n = flat.shape[1]
    cut = int(n * cutoff_percent / 100)
    ordered = flat.sort(dim=1).values
    lo = ordered[:, min(cut, n - 1)]
    hi = ordered[:, max(n - 1 - cut, 0)]
    scale = 255.0 / torch.clamp(hi - lo, min=1.0)
    out = torch.floor((flat - lo[:, None]) * scale[:, None])
    out = torch.where((hi > lo)[:, None], out, flat)
    return out.clamp(0, 255).to(torch.uint8).reshape(image.shape)


# --- GLASS: torchvision transforms on PIL images ---------------------------------------------


def _glass_contrast(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return TF.adjust_contrast(img, _uniform(gen, 0.8, 1.2))


def _glass_brightness(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return TF.adjust_brightness(img, _uniform(gen, 0.8, 1.2))


def _glass_saturation_hue(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    saturation, hue = _uniform(gen, 0.8, 1.2), _uniform(gen, -0.2, 0.2)
    if float(torch.rand(1, generator=gen)) < 0.5:
        return TF.adjust_hue(TF.adjust_saturation(img, saturation), hue)
    return TF.adjust_saturation(TF.adjust_hue(img, hue), saturation)


def _glass_rotate(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return TF.rotate(img, _uniform(gen, -45.0, 45.0), interpolation=InterpolationMode.NEAREST, fill=[0.0])


GLASS_AUGMENTATIONS: dict[str, AugmentOp] = {
    "contrast": _glass_contrast,
    "brightness": _glass_brightness,
    "saturation_hue": _glass_saturation_hue,
    "hflip": lambda img, gen: TF.hflip(img),
    "vflip": lambda img, gen: TF.vflip(img),
    "grayscale": lambda img, gen: TF.rgb_to_grayscale(img, num_output_channels=3),
    "autocontrast": lambda img, gen: TF.autocontrast(img),
    "equalize": lambda img, gen: TF.equalize(img),
    "rotate": _glass_rotate,
}


# --- DRAEM: imgaug augmenters -----------------------------------------------------------------


def _draem_gamma(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    gamma = torch.tensor([_uniform(gen, 0.5, 2.0) for _ in range(3)])[:, None, None]
    return _to_uint8(255.0 * (img.float() / 255.0) ** gamma)


def _draem_brightness(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mul, add = _uniform(gen, 0.8, 1.2), float(_randint(gen, -30, 30))
    x = img.float()
    luma = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    new = luma * mul + add if float(torch.rand(1, generator=gen)) < 0.5 else (luma + add) * mul
    return _to_uint8(x + (new.clamp(0, 255) - luma))


def _draem_sharpness(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return TF.adjust_sharpness(img, _uniform(gen, 0.0, 2.0))


def _draem_hue_saturation(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    hue_shift, sat_shift = _randint(gen, -50, 50), _randint(gen, -50, 50)
    hsv = rgb_to_hsv(img.float() / 255.0)
    hsv[0] = (hsv[0] + hue_shift / 255.0) % 1.0
    hsv[1] = (hsv[1] + sat_shift / 255.0).clamp(0, 1)
    return _to_uint8(hsv_to_rgb(hsv) * 255.0)


def _draem_solarize(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    threshold = _uniform(gen, 32.0, 128.0)
    if float(torch.rand(1, generator=gen)) < 0.5:
        return torch.where(img.float() >= threshold, 255 - img, img)
    return img


def _draem_posterize(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return TF.posterize(img, _randint(gen, 1, 8))


def _draem_autocontrast(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return autocontrast_cutoff(img, _randint(gen, 0, 20))


def _draem_rotate(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return TF.rotate(img, _uniform(gen, -45.0, 45.0), interpolation=InterpolationMode.BILINEAR, fill=[0.0])


DRAEM_AUGMENTATIONS: dict[str, AugmentOp] = {
    "gamma": _draem_gamma,
    "brightness": _draem_brightness,
    "sharpness": _draem_sharpness,
    "hue_saturation": _draem_hue_saturation,
    "solarize": _draem_solarize,
    "posterize": _draem_posterize,
    "invert": lambda img, gen: TF.invert(img),
    "autocontrast": _draem_autocontrast,
    "equalize": lambda img, gen: TF.equalize(img),
    "rotate": _draem_rotate,
}


def draw_ops(pool: Mapping[str, AugmentOp], k: int, generator: torch.Generator) -> list[str]:
    """``k`` distinct op names of ``pool``, drawn without replacement, in random order."""
    names = list(pool)
    if not 0 <= k <= len(names):
        raise ValueError(f"cannot draw {k} distinct ops from a pool of {len(names)}")
    return [names[i] for i in torch.randperm(len(names), generator=generator)[:k].tolist()]


def apply_ops(
    image: torch.Tensor, names: list[str], pool: Mapping[str, AugmentOp], generator: torch.Generator
) -> torch.Tensor:
    """Apply the named ops of ``pool`` in order to a uint8 image [3, H, W]; returns uint8 [3, H, W]."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(
            f"augmentations take uint8 RGB images [3, H, W], got {image.dtype} {tuple(image.shape)}"
        )
    for name in names:
        image = pool[name](image, generator)
    return image


def random_augment(
    image: torch.Tensor, pool: Mapping[str, AugmentOp], generator: torch.Generator, k: int = 3
) -> torch.Tensor:
    """``k`` distinct random ops of ``pool`` applied in the drawn order (uint8 [3, H, W] in and out)."""
    return apply_ops(image, draw_ops(pool, k, generator), pool, generator)
