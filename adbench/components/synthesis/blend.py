"""Blending a texture into images under a mask, and the opacity draws of GLASS and DRAEM.

Convention of both official codes: β is the weight of the ORIGINAL image inside the mask,

    x⁺ = x · (1 − m) + m · ((1 − β) · texture + β · x).

The weights sum to one, so blending in [0, 1] pixel space and then normalising equals GLASS's
blending of normalised tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def blend(
    images: torch.Tensor, textures: torch.Tensor, masks: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """images, textures: float [N, C, H, W] (same space); masks: [N, H, W] or [N, 1, H, W] in {0, 1}
    (bool or float); beta: float [N], weight of the original image inside the mask.
    Returns float [N, C, H, W]."""
    m = masks.float()
    if m.ndim == 3:
        m = m[:, None]
    b = beta.to(images.device, images.dtype).view(-1, 1, 1, 1)
    return images * (1 - m) + m * ((1 - b) * textures + b * images)


def glass_beta(
    n: int,
    generator: torch.Generator,
    mean: float = 0.5,
    std: float = 0.1,
    low: float = 0.2,
    high: float = 0.8,
) -> torch.Tensor:
    """GLASS's β: N(mean, std²) clipped to [low, high] (``--mean 0.5 --std 0.1``, ``np.clip(β, .2, .8)``).
    Returns float [n]."""
    return (mean + std * torch.randn(n, generator=generator)).clamp(low, high)


def uniform_beta(n: int, generator: torch.Generator, low: float, high: float) -> torch.Tensor:
    """β uniform in [low, high) (DRAEM's code: [0, 0.8)). Returns float [n]."""
    return low + (high - low) * torch.rand(n, generator=generator)


def _channel_view(values: Sequence[float], images: torch.Tensor) -> torch.Tensor:
    """Per-channel ``values`` as [1, C, 1, 1] in the dtype and on the device of ``images``."""
    return torch.tensor(values, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)


def denormalize(
    images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None
) -> torch.Tensor:
    """Undo :class:`~adbench.data.ImageTransform` normalisation: [N, 3, H, W] → [0, 1] pixel space."""
    if mean is None or std is None:
        return images
    return images * _channel_view(std, images) + _channel_view(mean, images)


def normalize(
    images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None
) -> torch.Tensor:
    """Apply :class:`~adbench.data.ImageTransform` normalisation to [N, 3, H, W] images in [0, 1]."""
    if mean is None or std is None:
        return images
    return (images - _channel_view(mean, images)) / _channel_view(std, images)
