"""Exact nearest-neighbour search: faiss ``IndexFlatL2``, on a GPU without faiss-gpu torch, and on
the CPU a certified two-stage search (:class:`TwoStageL2Index`) that does less exact work.

faiss' L2 metric returns *squared* Euclidean distances, as the official PatchCore scores use.
One ``StandardGpuResources`` is shared per process (official PatchCore creates one per index,
which exhausts GPU memory across classes: patchcore-inspection issue #57).
"""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import numpy as np
import torch

_GPU_RESOURCES: dict[int, object] = {}
BACKENDS = ("faiss-gpu", "faiss-cpu", "torch", "two-stage")
SEARCH_BLOCK_BYTES = 256 * 2**20


def faiss_has_gpu() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _gpu_resources(device: int) -> object:
    if device not in _GPU_RESOURCES:
        _GPU_RESOURCES[device] = faiss.StandardGpuResources()
    return _GPU_RESOURCES[device]


def query_blocks(queries: torch.Tensor, bank_rows: int, block_bytes: int) -> Iterator[torch.Tensor]:
    """Consecutive row blocks of ``queries`` [Q, D], sized so one float32 [rows, bank_rows] block of
    scores stays under ``block_bytes`` (at least one row)."""
    rows = max(1, block_bytes // (4 * max(bank_rows, 1)))
    for start in range(0, len(queries), rows):
        yield queries[start : start + rows]


def nearest_index(queries: torch.Tensor, bank: torch.Tensor, metric: str = "l2",
                  block_bytes: int = 2**26) -> torch.Tensor:
    """Index [Q] (int64) of the bank row [N, D] nearest to every query row [Q, D], in the dtype and on
    the device of the inputs: ``"l2"`` the smallest ‖b‖² − 2 q·b (‖q‖² is constant per query),
    ``"dot"`` the largest q·b (cosine similarity for L2-normalised rows)."""
    if metric not in ("l2", "dot"):
        raise ValueError(f"metric must be 'l2' or 'dot', got {metric!r}")
    bank_sq = bank.pow(2).sum(dim=1)
    found = []
    for block in query_blocks(queries, len(bank), block_bytes):
        if metric == "dot":
            found.append((block @ bank.T).argmax(dim=1))
        else:
            found.append((bank_sq[None] - 2 * block @ bank.T).argmin(dim=1))
    return torch.cat(found)


def torch_search(
    bank: torch.Tensor, queries: torch.Tensor, k: int, block_bytes: int = SEARCH_BLOCK_BYTES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k-NN of queries [Q, D] in bank [N, D] on the bank's device, by ‖q‖² − 2 q·b + ‖b‖²
    (the formula faiss' flat index uses for batches), in float32. Queries are taken in blocks so one
    [rows, N] distance block stays under ``block_bytes``. Returns (squared distances [Q, k] ≥ 0,
    ascending; indices [Q, k] int64) on the bank's device."""
    bank = bank.float()
    bank_sq = bank.square().sum(dim=1)
    dists, indices = [], []
    for block in query_blocks(queries, len(bank), block_bytes):
        block = block.to(bank.device).float()
        sq = block.square().sum(dim=1, keepdim=True) - 2 * block @ bank.T + bank_sq
        values, index = torch.topk(sq.clamp_min_(0), k, dim=1, largest=False, sorted=True)
        dists.append(values)
        indices.append(index)
    return torch.cat(dists), torch.cat(indices)


class FlatL2Index:
    """Exact L2 index over a memory bank [N, D] (float32).

    ``search(queries [Q, D], k)`` → (squared distances [Q, k], indices [Q, k]) as torch tensors
    on the device of ``queries``. ``backend`` (None = choose): ``faiss-gpu`` when ``device`` is CUDA
    and faiss was built with GPU support; ``torch`` (:func:`torch_search` on the GPU) when ``device``
    is CUDA and faiss is the CPU build (a CPU search there is many times the backbone pass:
    docs/performance.md); else ``faiss-cpu``.
    ``two-stage`` (:class:`TwoStageL2Index`, CPU, opt-in) is exact too and does less exact work where
    the bank's spectrum is concentrated.
    """

    def __init__(
        self, bank: torch.Tensor, device: torch.device | None = None, backend: str | None = None
    ) -> None:
        cuda = device is not None and device.type == "cuda"
        if backend is None:
            backend = ("faiss-gpu" if faiss_has_gpu() else "torch") if cuda else "faiss-cpu"
        if backend not in BACKENDS:
            raise ValueError(f"kNN backend {backend!r}; choose one of {list(BACKENDS)}")
        self.backend, self.dim, self.size = backend, bank.shape[1], bank.shape[0]
        if backend == "two-stage":
            self.two_stage = TwoStageL2Index(bank)
            return
        if backend == "torch":
            self.bank = bank.detach().to(device if cuda else bank.device).float().contiguous()
            return
        bank_np = np.ascontiguousarray(bank.detach().float().cpu().numpy())
        index = faiss.IndexFlatL2(self.dim)
        if backend == "faiss-gpu":
            gpu_id = (device.index or 0) if device is not None else 0
            torch.cuda.empty_cache()
            index = faiss.index_cpu_to_gpu(_gpu_resources(gpu_id), gpu_id, index)
        index.add(bank_np)
        self.index = index

    def search(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        if self.backend == "two-stage":
            return self.two_stage.search(queries, k)
        if self.backend == "torch":
            dist, idx = torch_search(self.bank, queries, k)
            return dist.to(queries.device), idx.to(queries.device)
        q = np.ascontiguousarray(queries.detach().float().cpu().numpy())
        dist, idx = self.index.search(q, k)
        return (
            torch.from_numpy(dist).to(queries.device),
            torch.from_numpy(idx).to(queries.device),
        )


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().float().cpu().numpy())


class TwoStageL2Index:
    """Exact L2 k-NN over a bank [N, D] on the CPU, with a cheap first pass and a certificate.

    Every vector x maps to x̃ = [Pᵀ(x − μ), ‖x⊥‖] ∈ R^(rank+1), with μ the bank mean, P [D, rank]
    the bank's top principal directions (orthonormal) and x⊥ = (I − PPᵀ)(x − μ). Then
    ‖x̃ − ỹ‖² = ‖Pᵀ(x − y)‖² + (‖x⊥‖ − ‖y⊥‖)² ≤ ‖x − y‖² (reverse triangle inequality on the
    residual): a lower bound, found for the whole bank by a faiss search in rank+1 dimensions. The
    ``candidates`` entries of smallest bound get exact float32 distances (direct differences,
    faiss ``fvec_L2sqr_by_idx``). The answer is certified when the next-smallest bound is at least the
    k-th exact distance (less a round-off margin): no other entry can be closer. Uncertified queries
    repeat with ``wide`` candidates, and those still uncertified take the exhaustive search, so every
    answer is the exact k-NN (up to exact ties). ``stats`` counts the queries settled at each stage.

    Cost per query: N·(rank+1) for the bounds plus candidates·D, against N·D exhaustively.
    """

    backend = "two-stage"

    def __init__(self, bank: torch.Tensor, rank: int = 128, candidates: int = 16, wide: int = 128) -> None:
        bank = bank.detach().float().cpu()
        self.size, self.dim = bank.shape
        self.rank = min(rank, self.dim - 1, max(self.size - 1, 1))
        self.candidates, self.wide = candidates, wide
        self.bank = _as_numpy(bank)
        self.mean = bank.mean(dim=0)
        centred = bank - self.mean
        _, vectors = torch.linalg.eigh((centred.T @ centred).double())  # ascending eigenvalues
        self.projection = vectors[:, -self.rank :].float().contiguous()  # [D, rank]
        reduced = self._reduce(bank)
        self.bound_index = faiss.IndexFlatL2(self.rank + 1)
        self.bound_index.add(_as_numpy(reduced))
        self.max_reduced_sq = float(reduced.square().sum(dim=1).max())
        self.stats = {"queries": 0, "first": 0, "wide": 0, "exhaustive": 0}

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        """[M, D] → [M, rank + 1]: the projection on P and the norm of the residual."""
        centred = x - self.mean
        projected = centred @ self.projection
        residual = (centred.square().sum(dim=1) - projected.square().sum(dim=1)).clamp_min(0).sqrt()
        return torch.cat([projected, residual[:, None]], dim=1)

    def _exact(self, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Exact squared distances [M, C] of queries [M, D] to the bank rows ``ids`` [M, C]."""
        out = np.empty(ids.shape, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        faiss.fvec_L2sqr_by_idx(faiss.swig_ptr(out), faiss.swig_ptr(queries), faiss.swig_ptr(self.bank),
                                faiss.swig_ptr(ids), self.dim, len(queries), ids.shape[1])
        return out

    def _settle(self, queries: np.ndarray, reduced: np.ndarray, margin: np.ndarray, k: int, count: int,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The best k of ``count`` candidates per query: (distances [M, k], ids [M, k], certified [M])."""
        count = min(count, self.size)
        bounds, ids = self.bound_index.search(reduced, min(count + 1, self.size))
        exact = self._exact(queries, ids[:, :count])
        order = np.argsort(exact, axis=1, kind="stable")[:, :k]
        dists, ids = np.take_along_axis(exact, order, 1), np.take_along_axis(ids[:, :count], order, 1)
        if count == self.size:
            return dists, ids, np.ones(len(queries), dtype=bool)
        return dists, ids, bounds[:, count] - margin >= dists[:, -1]

    def search(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(squared distances [Q, k] ascending, indices [Q, k] int64) on the device of ``queries`` [Q, D]."""
        q = _as_numpy(queries)
        reduced_t = self._reduce(torch.from_numpy(q))
        reduced = _as_numpy(reduced_t)
        # float32 round-off of the bound (sums over rank+1 terms of size up to the norms): a slack
        margin = 1e-4 * (reduced_t.square().sum(dim=1).numpy() + self.max_reduced_sq)
        dists, ids, done = self._settle(q, reduced, margin, k, max(self.candidates, k))
        self.stats["queries"] += len(q)
        self.stats["first"] += int(done.sum())
        for stage, count in (("wide", max(self.wide, k)), ("exhaustive", None)):
            todo = np.flatnonzero(~done)
            if todo.size == 0:
                break
            if count is None:
                _, ids[todo] = faiss.knn(q[todo], self.bank, k)  # brute force, no second copy of the bank
                dists[todo] = self._exact(q[todo], ids[todo])
                order = np.argsort(dists[todo], axis=1, kind="stable")
                dists[todo] = np.take_along_axis(dists[todo], order, 1)
                ids[todo] = np.take_along_axis(ids[todo], order, 1)
                settled = np.ones(todo.size, dtype=bool)
            else:
                dists[todo], ids[todo], settled = self._settle(q[todo], reduced[todo], margin[todo], k, count)
            done[todo[settled]] = True
            self.stats[stage] += int(settled.sum())
        return torch.from_numpy(dists).to(queries.device), torch.from_numpy(ids).to(queries.device)
