"""PatchCore's locally aware patch embedding, shared by PatchCore and GLASS.

Exact semantics of the official code (patchcore-inspection ``PatchMaker`` + ``Preprocessing`` +
``Aggregator``): every layer is unfolded 3×3 (stride 1, zero padding 1), its C·9 vector
(channel-major, taps contiguous) adaptive-average-pooled to ``pretrain_dim``; deeper layers are
bilinearly resized to the first layer's grid; the per-layer vectors are stacked and pooled once
more to ``target_dim``. Pooling over channels and resizing over space are both linear, so the
resize is applied after the first pooling (fewer channels, same result).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _pool_unfolded(feature: torch.Tensor, patch_size: int, dim: int) -> torch.Tensor:
    """[B, C, h, w] → [B, dim, h, w]: unfold p×p, then adaptive-average-pool C·p² values to ``dim``."""
    b, _, h, w = feature.shape
    unfolded = F.unfold(feature, kernel_size=patch_size, padding=(patch_size - 1) // 2)  # [B, C·p², h·w]
    pooled = F.adaptive_avg_pool1d(unfolded.transpose(1, 2).reshape(b * h * w, 1, -1), dim)
    return pooled.reshape(b, h * w, dim).transpose(1, 2).reshape(b, dim, h, w)


def patch_embedding(
    features: Sequence[torch.Tensor], patch_size: int = 3, pretrain_dim: int = 1024, target_dim: int = 1024
) -> torch.Tensor:
    """Aggregate multi-layer features into one embedding per grid cell of the first layer.

    features: float tensors [B, C_l, h_l, w_l], finest first. Returns float [B, target_dim, h_0, w_0].
    """
    grid = features[0].shape[-2:]
    per_layer = []
    for feature in features:
        pooled = _pool_unfolded(feature.float(), patch_size, pretrain_dim)
        if pooled.shape[-2:] != grid:
            pooled = F.interpolate(pooled, size=grid, mode="bilinear", align_corners=False)
        per_layer.append(pooled)
    stacked = torch.stack(per_layer, dim=2)  # [B, pretrain_dim, L, h, w]
    b, d, n_layers, h, w = stacked.shape
    flat = stacked.permute(0, 3, 4, 2, 1).reshape(b * h * w, 1, n_layers * d)
    out = F.adaptive_avg_pool1d(flat, target_dim)
    return out.reshape(b, h, w, target_dim).permute(0, 3, 1, 2).contiguous()
