"""Conditional normalising flows shared by CFlow and ResAD (FrEIA ``AllInOneBlock`` stacks).

Follows the official CFLOW-AD code (gudovskiy/cflow-ad, ``custom_models/utils.py``:
``positionalencoding2d``; ``model.py``: ``subnet_fc`` / ``cflow_head``; ``train.py``: ``get_logp``).
"""

from __future__ import annotations

import math

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import numpy as np
import torch
from torch import nn

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def positional_encoding_2d(channels: int, height: int, width: int) -> torch.Tensor:
    """CFlow's 2-D sin/cos positional encoding, float32 [channels, height, width].

    The first ``channels/2`` channels encode the column (x) position, the last half the row (y);
    within each half, even channels are sin and odd ones cos of position · exp(−2i·ln(10⁴)/(channels/2)).
    ``channels`` must be divisible by 4.
    """
    if channels % 4 != 0:
        raise ValueError(f"positional encoding needs channels divisible by 4, got {channels}")
    half = channels // 2
    frequencies = torch.exp(torch.arange(0.0, half, 2) * -(math.log(1e4) / half))  # [half/2]
    cols = torch.arange(0.0, width).unsqueeze(1) * frequencies  # [W, half/2]
    rows = torch.arange(0.0, height).unsqueeze(1) * frequencies  # [H, half/2]
    encoding = torch.zeros(channels, height, width)
    encoding[0:half:2] = torch.sin(cols).T.unsqueeze(1).expand(-1, height, -1)
    encoding[1:half:2] = torch.cos(cols).T.unsqueeze(1).expand(-1, height, -1)
    encoding[half::2] = torch.sin(rows).T.unsqueeze(2).expand(-1, -1, width)
    encoding[half + 1 :: 2] = torch.cos(rows).T.unsqueeze(2).expand(-1, -1, width)
    return encoding


def _subnet(dims_in: int, dims_out: int) -> nn.Module:
    """The coupling subnet of CFlow: Linear(in → 2·in) → ReLU → Linear(2·in → out)."""
    return nn.Sequential(nn.Linear(dims_in, 2 * dims_in), nn.ReLU(), nn.Linear(2 * dims_in, dims_out))


def conditional_flow(
    channels: int,
    cond_channels: int = 128,
    n_blocks: int = 8,
    clamp: float = 1.9,
    permute_soft: bool = False,
) -> nn.Module:
    """A FrEIA ``SequenceINN`` of ``n_blocks`` conditional ``AllInOneBlock`` couplings.

    Input x [N, channels], condition [N, cond_channels]; ``flow(x, c=[cond])`` → (z [N, channels],
    log|det J| [N]). ``clamp`` bounds the log-scale (α·tanh); the global affine uses softplus as in
    the official code. ``permute_soft=True`` is the official random-rotation permutation; the
    default is a hard channel permutation (as anomalib). Randomness comes from numpy's global RNG,
    as in FrEIA.
    """
    flow = Ff.SequenceINN(channels)
    for _ in range(n_blocks):
        flow.append(
            Fm.AllInOneBlock, cond=0, cond_shape=(cond_channels,), subnet_constructor=_subnet,
            affine_clamping=clamp, global_affine_type="SOFTPLUS", permute_soft=False,
        )
        if permute_soft:
            _set_rotation(flow.module_list[-1], random_rotation(channels))
    return flow


def random_rotation(dim: int) -> np.ndarray:
    """A Haar-distributed random rotation in SO(dim), float64 [dim, dim], from numpy's global RNG.

    Same distribution as ``scipy.stats.special_ortho_group.rvs(dim)`` (what FrEIA's
    ``permute_soft=True`` draws) but one QR decomposition instead of ``dim`` of them, so it stays
    fast for the 2048 channels of WRN-50's layer4.
    """
    q, r = np.linalg.qr(np.random.standard_normal((dim, dim)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _set_rotation(block: nn.Module, rotation: np.ndarray) -> None:
    """Replace an ``AllInOneBlock``'s fixed permutation matrix (and its inverse) by ``rotation``."""
    weight = torch.from_numpy(rotation).float()
    block.w_perm.data = weight.view_as(block.w_perm).contiguous()
    block.w_perm_inv.data = weight.T.contiguous().view_as(block.w_perm_inv)


def flow_log_prob(flow: nn.Module, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Per-dimension log-likelihood of x [N, C] given cond [N, P] under a standard-normal base, [N] (nats).

    log p(x) / C = (C·(−½ log 2π) − ½‖z‖² + log|det J|) / C, with (z, log|det J|) = flow(x, c=[cond]).
    """
    channels = x.shape[1]
    z, log_det = flow(x, c=[cond])
    log_p = -channels * HALF_LOG_2PI - 0.5 * z.pow(2).sum(dim=1) + log_det
    return log_p / channels
