"""Map post-processing shared by the methods: upsampling and Gaussian smoothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian: radius ``int(truncate * sigma + 0.5)``, normalised to sum 1."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _reflect_index(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices of scipy's 'reflect' padding (d c b a | a b c d | d c b a) for length ``n``."""
    idx = torch.arange(-radius, n + radius, device=device)
    period = 2 * n
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - 1 - idx, idx)


def gaussian_blur(maps: torch.Tensor, sigma: float = 4.0, truncate: float = 4.0) -> torch.Tensor:
    """Gaussian-filter each map as ``scipy.ndimage.gaussian_filter(m, sigma)`` does (reflect borders).

    maps: float [B, H, W] → float [B, H, W], same dtype and device. ``sigma`` in pixels; 0 → copy.
    """
    if sigma <= 0:
        return maps.clone()
    kernel = gaussian_kernel1d(sigma, truncate).to(maps.device, torch.float32)
    radius = (kernel.numel() - 1) // 2
    b, h, w = maps.shape
    x = maps.float()
    x = x[:, :, _reflect_index(w, radius, maps.device)]
    x = F.conv1d(x.reshape(b * h, 1, -1), kernel.view(1, 1, -1)).reshape(b, h, w)
    x = x.transpose(1, 2)[:, :, _reflect_index(h, radius, maps.device)]
    x = F.conv1d(x.reshape(b * w, 1, -1), kernel.view(1, 1, -1)).reshape(b, w, h).transpose(1, 2)
    return x.to(maps.dtype).contiguous()


def upsample(maps: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear",
             align_corners: bool | None = False) -> torch.Tensor:
    """Resize maps [B, h, w] to [B, *size] (bilinear, align_corners=False unless told), in float32,
    or in float64 for float64 maps (CFlow's)."""
    if isinstance(size, int):
        size = (size, size)
    kwargs = {"align_corners": align_corners} if mode in ("bilinear", "bicubic") else {}
    maps = maps.unsqueeze(1)
    maps = maps if maps.dtype == torch.float64 else maps.float()
    return F.interpolate(maps, size=size, mode=mode, **kwargs).squeeze(1)
