"""Perlin-noise anomaly masks with the conventions of DRAEM's and GLASS's official code.

Official rule (DRAEM ``data_loader.py`` / ``perlin.py``, copied by GLASS ``perlin.py``): 2-D
gradient noise on a lattice of 2^a × 2^b cells, a and b drawn independently and uniformly from
{min_exp, …, max_exp − 1} (default {0, …, 5}, i.e. 1 to 32 cells per axis), rotated by a uniform
angle in [−90°, 90°] about the image centre (imgaug ``Affine``: bilinear, zero fill), binarised
with noise > 0.5.

Everything here is vectorised in torch over a batch (each sample has its own lattice, gradients
and angle) and draws its randomness from a ``torch.Generator``, so a fixed seed gives fixed
masks. :func:`perlin_noise` reproduces ``rand_perlin_2d_np`` exactly when the lattice divides
the image size and generalises it otherwise (lattice coordinate of pixel k = k · res / size).

Measured rate (2,000 draws each at 64, 128 and 288 px; checked in tests/test_synthesis.py): 5–6 %
of single masks are empty (coarse lattices whose rotated noise never exceeds 0.5) and a mask
covers about 4–5 % of the image on average. DRAEM labels empty samples normal; GLASS redraws
them (:func:`glass_las_masks`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)


def _fade(t: torch.Tensor) -> torch.Tensor:
    """Perlin's quintic fade 6t⁵ − 15t⁴ + 10t³."""
    return ((6 * t - 15) * t + 10) * t * t * t


def perlin_noise(
    res_y: torch.Tensor, res_x: torch.Tensor, size: tuple[int, int], angles: torch.Tensor
) -> torch.Tensor:
    """2-D Perlin noise for a batch, as DRAEM's ``rand_perlin_2d_np``.

    res_y, res_x: int [N], lattice cells along rows / columns (≤ angles.shape[1] − 1 and
    angles.shape[2] − 1). size: (H, W) in pixels. angles: float [N, Ry + 1, Rx + 1], the random
    gradient directions (radians) at the lattice points; only the first res + 1 rows/columns of
    each sample are used. Returns float32 [N, H, W], values in about [−1, 1].
    """
    n = res_y.shape[0]
    height, width = size
    device = angles.device
    u_y = torch.arange(height, device=device, dtype=torch.float64)[None] * res_y.to(device)[:, None] / height
    u_x = torch.arange(width, device=device, dtype=torch.float64)[None] * res_x.to(device)[:, None] / width
    iy, ix = u_y.floor().long(), u_x.floor().long()  # [N, H], [N, W]
    fy, fx = (u_y - iy).float(), (u_x - ix).float()
    grads = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1).float()  # [N, Ry+1, Rx+1, 2]
    b = torch.arange(n, device=device)[:, None, None]

    def corner(dy: int, dx: int) -> torch.Tensor:
        g = grads[b, (iy + dy)[:, :, None], (ix + dx)[:, None, :]]  # [N, H, W, 2]
        return g[..., 0] * (fy - dy)[:, :, None] + g[..., 1] * (fx - dx)[:, None, :]

    ty, tx = _fade(fy)[:, :, None], _fade(fx)[:, None, :]
    n00, n10, n01, n11 = corner(0, 0), corner(1, 0), corner(0, 1), corner(1, 1)
    along_y0 = n00 + ty * (n10 - n00)
    along_y1 = n01 + ty * (n11 - n01)
    return SQRT2 * (along_y0 + tx * (along_y1 - along_y0))


def rotate(maps: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate maps [N, H, W] by ``degrees`` [N] about the image centre (bilinear, zero fill).

    Works in pixel units, so non-square maps are rotated without shearing. Returns [N, H, W].
    """
    n, height, width = maps.shape
    rad = degrees.to(maps.device, torch.float32) * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    theta = torch.zeros(n, 2, 3, device=maps.device)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * height / width
    theta[:, 1, 0], theta[:, 1, 1] = sin * width / height, cos
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
    out = F.grid_sample(
        maps[:, None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out[:, 0]


def perlin_masks(
    n: int,
    size: int | tuple[int, int],
    generator: torch.Generator,
    min_exp: int = 0,
    max_exp: int = 6,
    max_degrees: float = 90.0,
    threshold: float = 0.5,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draw ``n`` binary Perlin masks with the official conventions.

    Lattice 2^a × 2^b with a, b uniform in {min_exp, …, max_exp − 1}; rotation uniform in
    [−max_degrees, max_degrees]; mask = rotated noise > ``threshold``. ``size`` in pixels
    (int = square). Random numbers come from ``generator`` (a CPU generator). Returns bool
    [n, H, W] on ``device``; a mask may be empty (see the module docstring for the rate).
    """
    height, width = (size, size) if isinstance(size, int) else size
    exp_y = torch.randint(min_exp, max_exp, (n,), generator=generator)
    exp_x = torch.randint(min_exp, max_exp, (n,), generator=generator)
    top = 2 ** (max_exp - 1) + 1
    angles = 2 * math.pi * torch.rand(n, top, top, generator=generator)
    degrees = (2 * torch.rand(n, generator=generator) - 1) * max_degrees
    noise = perlin_noise(2**exp_y, 2**exp_x, (height, width), angles.to(device))
    return rotate(noise, degrees) > threshold


def combine_masks(first: torch.Tensor, second: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """GLASS's rule for two bool masks [N, H, W] and uniform draws u [N]: u > 2/3 → union,
    1/3 < u ≤ 2/3 → intersection, otherwise ``first`` alone. Returns bool [N, H, W]."""
    u = u.view(-1, 1, 1)
    return torch.where(u > 2 / 3, first | second, torch.where(u > 1 / 3, first & second, first))


def glass_las_masks(
    foreground: torch.Tensor,
    feature_size: int | tuple[int, int],
    generator: torch.Generator,
    min_exp: int = 0,
    max_exp: int = 6,
    max_tries: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GLASS's Local Anomaly Synthesis masks (official ``perlin_mask``), one per foreground mask.

    foreground: bool [N, H, W] (pixels where anomalies may appear). Two Perlin masks m1, m2 are
    drawn per sample; with probability 1/3 each the mask is m1 ∪ m2, m1 ∩ m2 or m1 alone (code:
    u > 2/3 → union, u > 1/3 → intersection); it is multiplied by the foreground and max-pooled
    to ``feature_size`` with non-overlapping H/h × W/w blocks. Samples whose pooled mask is
    empty are redrawn (up to ``max_tries`` rounds, then RuntimeError).

    Returns (pixel masks bool [N, H, W], feature masks bool [N, h, w]), both non-empty.
    """
    n, height, width = foreground.shape
    feat_h, feat_w = (feature_size, feature_size) if isinstance(feature_size, int) else feature_size
    kernel = (height // feat_h, width // feat_w)
    pixel = torch.zeros_like(foreground, dtype=torch.bool)
    feature = torch.zeros(n, feat_h, feat_w, dtype=torch.bool, device=foreground.device)
    todo = torch.arange(n)
    for _ in range(max_tries):
        k = len(todo)
        pair = perlin_masks(2 * k, (height, width), generator, min_exp, max_exp, device=foreground.device)
        m1, m2 = pair[:k], pair[k:]
        choice = torch.rand(k, generator=generator).to(foreground.device)
        mask = combine_masks(m1, m2, choice) & foreground[todo.to(foreground.device)].bool()
        pooled = F.max_pool2d(mask[:, None].float(), kernel)[:, 0, :feat_h, :feat_w] > 0
        ok = pooled.flatten(1).any(dim=1).cpu()
        pixel[todo[ok]] = mask[ok.to(mask.device)]
        feature[todo[ok]] = pooled[ok.to(pooled.device)]
        todo = todo[~ok]
        if len(todo) == 0:
            return pixel, feature
    raise RuntimeError(
        f"no non-empty Perlin mask inside the foreground after {max_tries} rounds for {len(todo)} sample(s); "
        "check the foreground masks (all empty?)"
    )
