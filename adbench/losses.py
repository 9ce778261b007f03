"""Losses shared by the synthesis methods: focal loss on class probabilities, hardest-example selection.

:func:`focal_loss` is the ``FocalLoss`` of DRAEM's and GLASS's ``loss.py`` (from Hsuxu's
Loss_ToolBox) with its defaults: it takes class PROBABILITIES (DRAEM: the softmax of the
discriminative network; GLASS: [1 − s, s] of the sigmoid score s), smooths the one-hot target
to [smooth / (C − 1), 1 − smooth], and computes, per element,

    p_t = Σ_c onehot_c · p_c + smooth,    loss = −α_t · (1 − p_t)^γ · log p_t,

averaged over elements (γ = 2, α = 1 for every class, smooth = 1e-5 in both codes).

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
) -> torch.Tensor:
    """Focal loss of class probabilities against integer class targets.

    probs: float [M, C] or [N, C, *spatial] (probabilities that sum to one over C); target:
    integer or bool/float class indices [M], [M, 1], [N, *spatial] or [N, 1, *spatial].
    alpha: per-class weights (None = 1 for every class, as both official codes use; a list is
    normalised to sum to one, as the original). reduction: "mean" → scalar, "none" → [M]
    (elements in channel-last order).
    """
    n_class = probs.shape[1]
    if probs.ndim > 2:
        probs = probs.reshape(probs.shape[0], n_class, -1).transpose(1, 2).reshape(-1, n_class)
    idx = target.reshape(-1).long()
    if idx.numel() != probs.shape[0]:
        raise ValueError(f"{idx.numel()} targets for {probs.shape[0]} probability rows")
    one_hot = torch.zeros_like(probs).scatter_(1, idx[:, None], 1.0)
    if smooth:
        one_hot = one_hot.clamp(smooth / (n_class - 1), 1.0 - smooth)
    p_t = (one_hot * probs).sum(dim=1) + smooth
    if alpha is None:
        weight = torch.ones_like(p_t)
    else:
        table = torch.as_tensor(alpha, dtype=probs.dtype, device=probs.device)
        weight = (table / table.sum())[idx]
    loss = -weight * (1 - p_t) ** gamma * torch.log(p_t)
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
