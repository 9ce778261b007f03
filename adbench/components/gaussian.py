"""Gaussian density estimation of embeddings: mean, Ledoit-Wolf shrunk covariance, Mahalanobis distance.

Used by CutPaste's Gaussian density estimator (GDE; Rippel et al. / Li et al., spec
draem-cutpaste-datasets.md §2.4). Everything is batched over leading dimensions, so one call fits
one Gaussian per position of a feature map.
"""

from __future__ import annotations

import torch


def ledoit_wolf(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ledoit-Wolf shrunk covariance, as ``sklearn.covariance.LedoitWolf().fit(x)`` computes it.

    x: float [..., N, D] (N samples of D features per leading index). Returns the covariance
    [..., D, D] = (1 − δ)·S + δ·μ·I with S the biased empirical covariance, μ = trace(S) / D and δ
    the Ledoit-Wolf shrinkage in [0, 1] (returned as [...]). Computed in float64.
    """
    x = x.double()
    n, d = x.shape[-2:]
    centred = x - x.mean(dim=-2, keepdim=True)
    emp_cov = centred.transpose(-1, -2) @ centred / n
    squared = centred**2
    trace_per_feature = squared.sum(dim=-2) / n  # [..., D]
    mu = trace_per_feature.sum(dim=-1) / d
    beta_sum = (squared.transpose(-1, -2) @ squared).sum(dim=(-1, -2))
    delta_sum = (emp_cov**2).sum(dim=(-1, -2))  # = Σ (XᵀX)² / n²
    beta = (beta_sum / n - delta_sum) / (d * n)
    delta = (delta_sum - 2 * mu * trace_per_feature.sum(dim=-1) + d * mu**2) / d
    beta = torch.minimum(beta, delta)
    shrinkage = torch.where(beta == 0, torch.zeros_like(beta), beta / torch.where(delta == 0, 1.0, delta))
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    shrunk = (1 - shrinkage)[..., None, None] * emp_cov + (shrinkage * mu)[..., None, None] * eye
    return shrunk, shrinkage


def fit_gaussian(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [..., D] and precision (inverse Ledoit-Wolf covariance, by Cholesky) [..., D, D] of x
    [..., N, D], float32."""
    cov, _ = ledoit_wolf(x)
    factor, info = torch.linalg.cholesky_ex(cov)
    singular = info != 0  # no shrinkage and fewer samples than features: pseudo-inverse, as sklearn's pinvh
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    precision = torch.cholesky_inverse(torch.where(singular[..., None, None], eye, factor))
    if singular.any():
        precision[singular] = torch.linalg.pinv(cov[singular], hermitian=True)
    return x.double().mean(dim=-2).float(), precision.float()


def mahalanobis(x: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """sqrt((x − μ)ᵀ P (x − μ)) for x [..., M, D], mean [..., D], precision [..., D, D] → [..., M]."""
    diff = x - mean.unsqueeze(-2)
    squared = ((diff @ precision) * diff).sum(dim=-1)
    return squared.clamp(min=0).sqrt()
