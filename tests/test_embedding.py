"""PatchCore's aggregation against a literal transcription of the official pipeline."""

import torch
import torch.nn.functional as F

from adbench.components.embedding import patch_embedding


def official_literal(features, patch_size=3, pretrain_dim=1024, target_dim=1024):
    """Unfold every layer, bilinearly resize the *unfolded* deeper layers to the first grid,
    flatten each C·p² vector, adaptive-pool to pretrain_dim, stack, pool to target_dim."""
    ref_h, ref_w = features[0].shape[-2:]
    per_layer = []
    for feature in features:
        b, c, h, w = feature.shape
        unfolded = F.unfold(feature, patch_size, padding=1).reshape(b, c, patch_size, patch_size, h, w)
        if (h, w) != (ref_h, ref_w):
            x = unfolded.permute(0, 1, 2, 3, 4, 5).reshape(-1, h, w).unsqueeze(1)
            x = F.interpolate(x, size=(ref_h, ref_w), mode="bilinear", align_corners=False)
            unfolded = x.reshape(b, c, patch_size, patch_size, ref_h, ref_w)
        vectors = unfolded.permute(0, 4, 5, 1, 2, 3).reshape(-1, c * patch_size * patch_size)
        per_layer.append(F.adaptive_avg_pool1d(vectors.unsqueeze(1), pretrain_dim).squeeze(1))
    stacked = torch.stack(per_layer, dim=1).reshape(len(per_layer[0]), 1, -1)
    out = F.adaptive_avg_pool1d(stacked, target_dim).squeeze(1)
    b = features[0].shape[0]
    return out.reshape(b, ref_h, ref_w, target_dim).permute(0, 3, 1, 2)


def test_matches_official_pipeline():
    torch.manual_seed(0)
    feats = [torch.randn(2, 24, 8, 8), torch.randn(2, 40, 4, 4)]
    for dims in [(64, 64), (128, 96), (1024, 1024)]:
        got = patch_embedding(feats, 3, *dims)
        want = official_literal(feats, 3, *dims)
        assert got.shape == (2, dims[1], 8, 8)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_wrn_layer3_is_plain_3x3_mean():
    """With C·9 = 9·1024 → 1024 each layer-3 output is a zero-padded 3×3 mean of one channel."""
    torch.manual_seed(1)
    layer3 = torch.randn(1, 1024, 5, 5)
    pooled = patch_embedding([layer3], 3, 1024, 1024)
    expected = F.avg_pool2d(layer3, 3, stride=1, padding=1, count_include_pad=True)
    torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=1e-6)
