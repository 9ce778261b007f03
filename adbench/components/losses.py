"""Losses shared by the methods: focal loss on class probabilities or logits, hardest-example selection, SSIM.

:func:`focal_loss` is the ``FocalLoss`` of DRAEM's and GLASS's ``loss.py`` (from Hsuxu's
Loss_ToolBox) with its defaults: it takes class PROBABILITIES (DRAEM: the softmax of the
discriminative network; GLASS: [1 − s, s] of the sigmoid score s), smooths the one-hot target
to [smooth / (C − 1), 1 − smooth], and computes, per element,

    p_t = Σ_c onehot_c · p_c + smooth,    loss = −α_t · (1 − p_t)^γ · log p_t,

averaged over elements (γ = 2, α = 1 for every class, smooth = 1e-5 in both codes). With
``from_logits=True`` (ResAD's flow loss, no smoothing) it takes logits and computes log p_t by
``log_softmax``, exact where the softmax of a large logit gap rounds to 0 or 1.

:func:`hardest_mask` is GLASS's online hard example mining: keep the elements whose error is at
least the ``quantile``-quantile of all errors (``--p 0.5`` keeps the hardest 50 %).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def focal_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: Sequence[float] | None = None,
    smooth: float = 1e-5,
    reduction: str = "mean",
    from_logits: bool = False,
) -> torch.Tensor:
    """Focal loss of class probabilities (or, ``from_logits=True``, logits) against integer class targets.

    probs: float [M, C] or [N, C, *spatial] (probabilities that sum to one over C; logits with
    ``from_logits``, which needs ``smooth=0``); target: integer or bool/float class indices [M],
    [M, 1], [N, *spatial] or [N, 1, *spatial]. alpha: per-class weights (None = 1 for every class,
    as both official codes use; a list is normalised to sum to one, as the original). reduction:
    "mean" → scalar, "none" → [M] (elements in channel-last order).
    """
    if from_logits and smooth:
        raise ValueError("focal_loss(from_logits=True) takes no label smoothing: pass smooth=0")
    n_class = probs.shape[1]
    if probs.ndim > 2:
        probs = probs.reshape(probs.shape[0], n_class, -1).transpose(1, 2).reshape(-1, n_class)
    idx = target.reshape(-1).long()
    if idx.numel() != probs.shape[0]:
        raise ValueError(f"{idx.numel()} targets for {probs.shape[0]} probability rows")
    if from_logits:
        log_p_t = torch.log_softmax(probs, dim=1).gather(1, idx[:, None])[:, 0]
        p_t = log_p_t.exp()
    else:
        one_hot = torch.zeros_like(probs).scatter_(1, idx[:, None], 1.0)
        if smooth:
            one_hot = one_hot.clamp(smooth / (n_class - 1), 1.0 - smooth)
        p_t = (one_hot * probs).sum(dim=1) + smooth
        log_p_t = torch.log(p_t)
    if alpha is None:
        weight = torch.ones_like(p_t)
    else:
        table = torch.as_tensor(alpha, dtype=probs.dtype, device=probs.device)
        weight = (table / table.sum())[idx]
    loss = -weight * (1 - p_t) ** gamma * log_p_t
    if reduction == "mean":
        return loss.mean()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction {reduction!r}; use 'mean' or 'none'")


def hardest_mask(errors: torch.Tensor, quantile: float = 0.5) -> torch.Tensor:
    """Bool mask (shape of ``errors``) of the elements with error ≥ the ``quantile``-quantile of
    all errors (``torch.quantile``, linear interpolation, at most 2^24 elements); 0.5 keeps the
    hardest half."""
    return errors >= torch.quantile(errors.detach().reshape(-1).float(), quantile)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 2-D Gaussian window float64 [size, size] (outer product of the 1-D window centred at
    size // 2)."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(
    img1: torch.Tensor, img2: torch.Tensor, window_size: int = 11, sigma: float = 1.5,
    value_range: float | None = None,
) -> torch.Tensor:
    """Mean SSIM of two image batches [N, C, H, W], as DRAEM's ``loss.py::ssim``.

    Per-channel Gaussian window (``window_size`` × ``window_size``, σ = ``sigma``) with zero
    padding of ``window_size // 2``; C1 = (0.01 L)², C2 =
    (0.03 L)². ``value_range`` L = None infers it from ``img1`` as the official code does: max >
    128 → 255 else 1, minus (−1 if min < −0.5 else 0). Returns a scalar (mean of the SSIM map).
    """
    if value_range is None:
        high = 255.0 if img1.max().item() > 128 else 1.0
        low = -1.0 if img1.min().item() < -0.5 else 0.0
        value_range = high - low
    channels = img1.shape[1]
    window = gaussian_window(window_size, sigma).to(img1.device, img1.dtype)
    window = window.expand(channels, 1, window_size, window_size)
    pad = window_size // 2

    def smooth(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, window, padding=pad, groups=channels)

    mu1, mu2 = smooth(img1), smooth(img2)
    sigma1 = smooth(img1 * img1) - mu1**2
    sigma2 = smooth(img2 * img2) - mu2**2
    sigma12 = smooth(img1 * img2) - mu1 * mu2
    c1, c2 = (0.01 * value_range) ** 2, (0.03 * value_range) ** 2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * sigma12 + c2)) / ((mu1**2 + mu2**2 + c1) * (sigma1 + sigma2 + c2))
    return ssim_map.mean()


def ssim_loss(
    img1: torch.Tensor, img2: torch.Tensor, window_size: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """1 − :func:`ssim` (DRAEM's ``SSIM`` module: window 11, σ 1.5, inferred value range); scalar."""
    return 1.0 - ssim(img1, img2, window_size, sigma)
