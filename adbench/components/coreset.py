"""PatchCore's approximate greedy coreset subsampling: the same selections, much faster.

This reproduces ``ApproximateGreedyCoresetSampler`` of amazon-science/patchcore-inspection:

1. features [N, D] are reduced to [N, 128] by a random bias-free ``nn.Linear`` (skipped if D == 128);
2. ``n_starts`` random start points are drawn; the initial anchor of every point is its *mean*
   Euclidean distance to them (the starts themselves are not part of the coreset);
3. ``int(N * percentage)`` times: select the point with the largest anchor, then set every anchor to
   ``min(anchor, distance to the selected point)``.

The naive loop makes one memory-bound pass over all N points per selection. Here, anchors are kept
squared (min and argmax are unchanged) and two exact accelerations are stacked; neither changes
which point is selected at any step, up to floating-point ties:

* **Exact lookahead.** Let P be the M points with the largest anchors and ``tau`` the largest anchor
  outside P. Anchors only shrink, so while the greedy rule run on P alone (with P's [M, M] distance
  matrix) finds a maximum ``> tau``, that point is also the global argmax. So the next K selections
  cost no pass over N; then all anchors are lowered against the K new centres by matrix products.
* **Triangle-inequality pruning.** The points are stored as the equal-sized leaves (blocks, centre
  g) of a balanced PCA tree. A centre c can lower the anchor A of a point x only if
  ``||c - g|| < ||x - g|| + sqrt(A)``; (block, centre) pairs where a lower bound of ``||c - g||``
  reaches the block's maximum of the right-hand side are skipped. Worst-case float32 rounding
  margins are added to both sides, so a pair is skipped only if no float32 evaluation of any of its
  distances could lower an anchor. The remaining pairs are covered by tree nodes (contiguous rows x
  the union of their blocks' centres), picked by a small dynamic program that trades wasted
  distances against the number of matrix products.

Everything runs on the device of the input (CPU or CUDA) in float32, on CPU with one torch thread
(see ``_single_cpu_thread``). Memory is O(N * 128): no [N, N] or [N, n] matrix is formed;
temporary distance tiles hold at most ``_TILE_ELEMS`` values and the pool matrix M * M.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

# Size M of the lookahead candidate pool (points with the largest anchors).
_N_CANDIDATES = 1024
# Target number of points per pruning block (the leaves of a balanced tree).
_BLOCK_SIZE = 64
# Power iterations per split of the balanced PCA tree, and rows per node used to estimate the direction.
_POWER_ITERS = 4
_SPLIT_SAMPLE = 64
# The tree is built on this many leading principal components of the points.
_SKETCH = 32
# Fixed cost of one tile product, in (point, centre) distance computations; trades waste for calls.
_CALL_COST = 16384
# Largest number of elements of a temporary [rows, centres] distance tile.
_TILE_ELEMS = 1 << 22


@dataclass
class CoresetStats:
    """Work counters of one :func:`greedy_coreset_with_stats` run.

    rounds: batched anchor updates (one per lookahead round but the last); blocks: pruning blocks;
    pairs / pairs_needed: (block, new centre) pairs tested / not skipped by the triangle inequality;
    distances / distances_naive: point-centre distances computed in the updates / by the naive loop.
    """

    rounds: int = 0
    blocks: int = 0
    pairs: int = 0
    pairs_needed: int = 0
    distances: int = 0
    distances_naive: int = 0

    @property
    def skipped_fraction(self) -> float:
        """Fraction of (block, centre) pairs skipped by pruning (0 when there was no update)."""
        return 1.0 - self.pairs_needed / self.pairs if self.pairs else 0.0

    @property
    def work_fraction(self) -> float:
        """Distances computed in the updates relative to the naive loop (1 when there was no update)."""
        return self.distances / self.distances_naive if self.distances_naive else 1.0


def project(features: torch.Tensor, seed: int = 0, dim: int = 128) -> torch.Tensor:
    """Random linear reduction [N, D] -> [N, dim] used for selection only.

    A bias-free ``torch.nn.Linear(D, dim)`` with PyTorch's default init, created on the CPU right
    after ``torch.manual_seed(seed)`` (inside ``torch.random.fork_rng``, so the caller's RNG state is
    untouched) and moved to the features' device. Returns float32 features unchanged (no copy) when
    D == dim.
    """
    features = features.detach().float()
    if features.shape[1] == dim:
        return features
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mapper = torch.nn.Linear(features.shape[1], dim, bias=False)
    with torch.no_grad():
        return mapper.to(features.device)(features)


def greedy_coreset(
    features: torch.Tensor,
    percentage: float,
    seed: int = 0,
    projection_dim: int = 128,
    n_starts: int = 10,
    progress: bool = False,
) -> torch.Tensor:
    """Indices of PatchCore's approximate greedy (k-center) coreset of ``features``.

    features: float [N, D] on CPU or CUDA. Returns int64 [int(N * percentage)] on the features'
    device, in selection order; ``percentage == 1`` returns ``arange(N)``. Raises ValueError if
    percentage is not in (0, 1]. On CPU, everything after the projection runs with
    ``torch.set_num_threads(1)`` (restored on return). See the module docstring for the algorithm.
    """
    return greedy_coreset_with_stats(features, percentage, seed, projection_dim, n_starts, progress)[0]


@torch.no_grad()
def greedy_coreset_with_stats(
    features: torch.Tensor,
    percentage: float,
    seed: int = 0,
    projection_dim: int = 128,
    n_starts: int = 10,
    progress: bool = False,
) -> tuple[torch.Tensor, CoresetStats]:
    """:func:`greedy_coreset` that also returns its :class:`CoresetStats` (for benchmarks)."""
    if not 0.0 < percentage <= 1.0:
        raise ValueError(f"percentage must be in (0, 1], got {percentage}")
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {tuple(features.shape)}")
    if n_starts < 1:
        raise ValueError(f"n_starts must be >= 1, got {n_starts}")
    n_points = features.shape[0]
    stats = CoresetStats()
    if percentage == 1.0:
        return torch.arange(n_points, device=features.device), stats
    n_select = int(n_points * percentage)
    if n_select == 0:
        return torch.empty(0, dtype=torch.long, device=features.device), stats
    x = project(features, seed, projection_dim)
    rng = np.random.default_rng(seed)
    starts = rng.choice(n_points, min(n_starts, n_points), replace=False)
    with _single_cpu_thread(x.device):
        # Distances are translation invariant; centring reduces the expansion's cancellation error.
        x = x - x.mean(0) if x.data_ptr() == features.data_ptr() else x.sub_(x.mean(0))
        anchor = _mean_distance(x, torch.as_tensor(starts, device=x.device)).square_()
        sampler = _BlockedSampler(x, anchor, rng, stats)
        del x, anchor
        with tqdm(total=n_select, desc="Coreset", disable=not progress) as bar:
            picked: list[torch.Tensor] = []
            remaining = n_select
            while remaining:
                chosen = sampler.lookahead(remaining)
                picked.append(chosen)
                remaining -= len(chosen)
                bar.update(len(chosen))
                if remaining:
                    sampler.update(chosen)
    return sampler.index[torch.cat(picked)], stats


@contextmanager
def _single_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run torch's CPU ops on one intra-op thread inside the block (no-op on other devices).

    The selection is thousands of small ops; on shared cores every multi-threaded op waits for a
    descheduled sibling thread, which made it 10x slower with 2 threads than with 1 (100k x 128, 10%).
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _mean_distance(x: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance of every row of x [N, d] to the rows ``starts`` [s] -> [N]."""
    out = torch.empty(x.shape[0], device=x.device)
    rows = max(1, _TILE_ELEMS // (len(starts) * x.shape[1]))
    for lo in range(0, x.shape[0], rows):
        out[lo : lo + rows] = torch.cdist(
            x[lo : lo + rows], x[starts], compute_mode="donot_use_mm_for_euclid_dist"
        ).mean(1)
    return out


def _tree_order(x: torch.Tensor, depth: int, rng: np.random.Generator) -> torch.Tensor:
    """Balanced PCA tree over the rows of x [M, r] (M divisible by 2**depth) -> permutation [M].

    x is used as scratch space. Each of the ``depth`` levels splits every node at the median of its
    rows' projections on the node's approximate principal direction, so the 2**depth leaves (runs of
    M / 2**depth rows of the permutation) are compact, and sibling subtrees are adjacent.
    """
    order = torch.arange(len(x), device=x.device)
    spare = torch.empty_like(x)
    for level in range(depth):
        n_nodes = 2**level
        size = len(x) // n_nodes
        nodes = x.view(n_nodes, size, -1)
        # Strided subsample: rows are sorted along the parent's direction, so it spans the node.
        sample = nodes[:, :: max(1, size // _SPLIT_SAMPLE)]
        sample = sample - sample.mean(1, keepdim=True)
        v = torch.as_tensor(rng.standard_normal((n_nodes, x.shape[1], 1)), dtype=x.dtype, device=x.device)
        for _ in range(_POWER_ITERS):
            v = torch.bmm(sample.transpose(1, 2), torch.bmm(sample, v))
            v = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        # Sorting the uncentred projections gives the same order within every node.
        split = torch.bmm(nodes, v).squeeze(2).argsort(1)
        split += torch.arange(0, len(x), size, device=x.device)[:, None]
        split = split.view(-1)
        order = order[split]
        torch.index_select(x, 0, split, out=spare)
        x, spare = spare, x
    return order


class _BlockedSampler:
    """State of the greedy loop over points stored as equal-sized blocks (leaves of a balanced tree).

    x [B * S, d] (block b is rows b*S .. (b+1)*S), sq [B * S] squared norms, anchor [B * S] squared
    anchors, index [B * S] original row of every slot. N is padded up to B * S with copies of real
    points whose anchor is -inf, so they are never selected and never raise a block's max anchor.
    "Positions" index these [B * S] slots.
    """

    def __init__(self, x: torch.Tensor, anchor: torch.Tensor, rng: np.random.Generator, stats: CoresetStats):
        self.n_points, dim = x.shape
        self.depth = max(0, round(math.log2(self.n_points / _BLOCK_SIZE)))
        n_blocks = 2**self.depth
        self.size = -(-self.n_points // n_blocks)
        source = torch.arange(n_blocks * self.size, device=x.device)
        source[self.n_points :] -= self.n_points  # padding slots copy the first points
        # Splitting on the leading principal components is cheaper and prunes as well as all 128.
        if _SKETCH < dim:
            basis = torch.linalg.eigh((x.T @ x).double()).eigenvectors[:, -_SKETCH:].to(x.dtype)
            sketch = x @ basis
        else:
            sketch = x
        order = _tree_order(sketch.index_select(0, source), self.depth, rng)
        self.index = source[order]
        # [x, 1] rows: one matmul with [-2 c, ||c||^2] rows gives ||c||^2 - 2 x.c without a bias pass.
        self.x_one = torch.ones(len(source), dim + 1, device=x.device)
        self.x = self.x_one[:, :dim]
        self.x[:] = x.index_select(0, self.index)
        self.sq = torch.linalg.vector_norm(self.x, dim=1).square_()
        self.anchor = anchor[self.index].masked_fill_(order >= self.n_points, -float("inf"))
        blocks = self.x.view(n_blocks, self.size, dim)
        self.centres = blocks.mean(1)
        self.sq_centres = torch.linalg.vector_norm(self.centres, dim=1).square_()
        # Worst-case relative rounding of a float32 d-term dot product / squared-distance expansion.
        self.gamma = 4.0 * dim * float(torch.finfo(torch.float32).eps)
        # Upper bound on every point's distance to its block centre [B * S].
        to_centre = torch.cdist(blocks, self.centres[:, None], compute_mode="donot_use_mm_for_euclid_dist")
        self.to_centre = to_centre.view(-1) * (1.0 + self.gamma)
        # Bounds the rounding error of any float32 squared distance between two points.
        self.slack = 2.0 * self.gamma * float(self.sq.max())
        self.tile = torch.empty(_TILE_ELEMS, device=x.device)
        self.pool_dist = torch.empty(min(_N_CANDIDATES, self.n_points) ** 2, device=x.device)
        self.stats = stats
        stats.blocks = n_blocks

    def lookahead(self, limit: int) -> torch.Tensor:
        """The next 1..min(limit, M) greedy selections (positions [K]), found exactly on the top-M pool.

        Anchors are not modified; :meth:`update` must follow before the next call.
        """
        values, pool = torch.topk(self.anchor, min(_N_CANDIDATES + 1, self.n_points))
        if self.n_points > _N_CANDIDATES:
            tau = float(values[_N_CANDIDATES])  # no point outside the pool has a larger anchor
            values, pool = values[:_N_CANDIDATES], pool[:_N_CANDIDATES]
        else:
            tau = -float("inf")
        x_pool, sq_pool = self.x[pool], self.sq[pool]
        dist = self.pool_dist[: len(pool) ** 2].view(len(pool), len(pool))
        torch.addmm(sq_pool, x_pool, x_pool.T, alpha=-2, out=dist).add_(sq_pool[:, None]).clamp_(min=0)
        anchor = values.clone()
        chosen = [0]  # the pool is sorted: its first point is the global argmax
        while len(chosen) < limit:
            torch.minimum(anchor, dist[chosen[-1]], out=anchor)
            best, arg = anchor.max(0)
            if not float(best) > tau:  # the next maximum may lie outside the pool: stop here
                break
            chosen.append(int(arg))
        return pool[torch.tensor(chosen, device=pool.device)]

    def update(self, chosen: torch.Tensor) -> None:
        """anchor = min(anchor, squared distance to the points at positions chosen [K]).

        (block, centre) pairs that fail the triangle-inequality test are skipped. The remaining work
        is covered by tree nodes (contiguous rows, union of their blocks' needed centres), chosen to
        minimise computed distances plus ``_CALL_COST`` per node.
        """
        centres, sq_c = self.x[chosen], self.sq[chosen]
        n_blocks = len(self.centres)
        # The naive float32 loop can lower the anchor A of x only if ||x - c||^2 < A + slack, which by
        # the triangle inequality requires ||c - g|| < ||x - g|| + sqrt(A + slack): a block is skipped
        # for c if a lower bound of ||c - g|| reaches the max of the right-hand side over its points.
        reach = self.anchor.clamp(min=0).add_(self.slack).sqrt_().add_(self.to_centre)
        reach = reach.view(n_blocks, self.size).amax(1)
        # Lower bound on ||c - g|| [B, K]: subtract the worst-case rounding of the expansion.
        lower = torch.addmm(sq_c, self.centres, centres.T, alpha=-2).add_(self.sq_centres[:, None])
        lower.sub_((self.sq_centres[:, None] + sq_c) * self.gamma).clamp_(min=0).sqrt_()
        need = lower < reach[:, None]
        self.stats.rounds += 1
        self.stats.pairs += need.numel()
        self.stats.pairs_needed += int(need.sum())
        self.stats.distances_naive += self.n_points * len(chosen)
        centres_one = torch.cat([centres * -2, sq_c[:, None]], 1)
        for level, node, cols in self._cover(need):
            rows = self.size << level
            self._min_update(node * rows, (node + 1) * rows, centres_one.index_select(0, cols))

    def _cover(self, need: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
        """Cheapest set of tree nodes covering need [B, K] -> (level, node, needed centres [k]).

        A node at ``level`` spans 2**level blocks; its cost is rows * |union of needed centres| plus
        ``_CALL_COST``. Bottom-up dynamic programming picks, per subtree, the node or its children.
        """
        unions = [need.to(torch.float32)]  # 0/1; float reductions are the fastest
        for _ in range(self.depth):
            unions.append(unions[-1].view(-1, 2, need.shape[1]).amax(1))
        counts = [u.sum(1).long() for u in unions]
        own = [torch.where(c > 0, c * (self.size << j) + _CALL_COST, 0) for j, c in enumerate(counts)]
        best, take = own[0], [torch.ones_like(counts[0], dtype=torch.bool)]
        for j in range(1, self.depth + 1):
            children = best.view(-1, 2).sum(1)
            take.append(own[j] <= children)
            best = torch.minimum(own[j], children)
        out: list[tuple[int, int, torch.Tensor]] = []
        covered = torch.zeros(1, dtype=torch.bool, device=need.device)
        for j in range(self.depth, -1, -1):
            if j < self.depth:
                covered = covered.repeat_interleave(2)
            selected = (take[j] & ~covered & (counts[j] > 0)).nonzero().squeeze(1)
            covered |= take[j]
            cols = unions[j][selected].nonzero()[:, 1].split(counts[j][selected].tolist())
            out += zip([j] * len(selected), selected.tolist(), cols)
        return out

    def _min_update(self, lo: int, hi: int, centres_one: torch.Tensor) -> None:
        """Lower the anchors of positions lo..hi by their squared distances to k centres (tiled).

        centres_one: [k, d + 1] rows ``[-2 c, ||c||^2]``.
        """
        k = len(centres_one)
        step = max(1, _TILE_ELEMS // k)
        self.stats.distances += (hi - lo) * k
        for a in range(lo, hi, step):
            b = min(hi, a + step)
            dist = torch.mm(self.x_one[a:b], centres_one.T, out=self.tile[: (b - a) * k].view(b - a, k))
            dist = dist.amin(1).add_(self.sq[a:b]).clamp_(min=0)
            torch.minimum(self.anchor[a:b], dist, out=self.anchor[a:b])
