"""PatchCore (Roth et al., CVPR 2022), faithful to amazon-science/patchcore-inspection.

Locally aware patch features of two middle layers (:mod:`adbench.components.embedding`), an approximate
greedy coreset of the training patches (:mod:`adbench.components.coreset`), exact nearest-neighbour search
(faiss ``IndexFlatL2``, squared L2). Patch score = mean squared distance to the k nearest bank
entries; image score = max patch score, taken before upsampling; map = bilinear upsampling to
the input size, then Gaussian σ = 4. The paper's re-weighting (eq. 7), which the official code
does not implement, is available with ``reweight_neighbours`` > 1 (on squared distances, the maps'
unit).
"""

from __future__ import annotations

import time

import torch
from tqdm import tqdm

from adbench.components.coreset import greedy_coreset
from adbench.components.embedding import patch_embedding
from adbench.components.knn import FlatL2Index
from adbench.components.postprocess import gaussian_blur, upsample
from adbench.data import Batch
from adbench.method import Context, Method, Prediction
from adbench.registry import register_method


@register_method("patchcore")
class PatchCore(Method):
    """PatchCore with the official defaults (coreset 10 %, k = 1, 1024 → 1024 dims, 3×3 patches)."""

    uses_backbone = True

    def __init__(
        self,
        patch_size: int = 3,
        pretrain_dim: int = 1024,
        target_dim: int = 1024,
        coreset_percentage: float = 0.1,
        projection_dim: int = 128,
        n_starts: int = 10,
        k: int = 1,
        reweight_neighbours: int = 1,
        blur_sigma: float = 4.0,
        knn_backend: str | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < coreset_percentage <= 1.0:
            raise ValueError(f"method.params.coreset_percentage={coreset_percentage} must lie in (0, 1]")
        self.patch_size = patch_size
        self.pretrain_dim = pretrain_dim
        self.target_dim = target_dim
        self.coreset_percentage = coreset_percentage
        self.projection_dim = projection_dim
        self.n_starts = n_starts
        self.k = k
        self.reweight_neighbours = reweight_neighbours
        self.blur_sigma = blur_sigma
        self.knn_backend = knn_backend  # None = components.knn's choice; "two-stage": certified exact, CPU
        self.register_buffer("memory_bank", torch.empty(0, target_dim))
        self._index: FlatL2Index | None = None

    def embed(self, batch: Batch, ctx: Context) -> torch.Tensor:
        """Batch → patch embeddings [B, h, w, target_dim] on ``ctx.device``."""
        feats = ctx.features(batch)
        emb = patch_embedding(list(feats.values()), self.patch_size, self.pretrain_dim, self.target_dim)
        return emb.permute(0, 2, 3, 1)

    def fit(self, ctx: Context) -> None:
        patches = []
        batches = tqdm(ctx.train_batches(), desc="patchcore: features", disable=not ctx.progress, leave=False)
        for batch in batches:
            patches.append(self.embed(batch, ctx).reshape(-1, self.target_dim))
        bank = torch.cat(patches)
        start = time.perf_counter()
        if self.coreset_percentage < 1.0:
            chosen = greedy_coreset(
                bank, self.coreset_percentage, seed=ctx.seed, projection_dim=self.projection_dim,
                n_starts=self.n_starts, progress=ctx.progress,
            )
            bank = bank[chosen.to(bank.device)]
        self.timings["coreset_s"] = time.perf_counter() - start
        self.memory_bank = bank.contiguous()
        self._index = None

    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._index is None:
            if self.memory_bank.numel() == 0:
                raise RuntimeError("PatchCore.predict called before fit (empty memory bank)")
            self._index = FlatL2Index(self.memory_bank, self.memory_bank.device, self.knn_backend)
            self.info["knn"] = self._index.backend
        return self._index.search(queries, k)

    def _reweighted_scores(self, emb: torch.Tensor, patch_scores: torch.Tensor) -> torch.Tensor:
        """Paper eq. 7 per image [B]: weight w = 1 − exp‖m* − n*‖ / Σ_b exp‖m* − n‖ (Euclidean
        distances, as the paper), times the SQUARED distance ‖m* − n*‖², so the score is in the unit of
        the maps and of the default score (faiss IndexFlatL2's squared L2)."""
        b = emb.shape[0]
        flat_scores = patch_scores.reshape(b, -1)
        worst = flat_scores.argmax(dim=1)
        worst_patch = emb.reshape(b, -1, self.target_dim)[torch.arange(b), worst]  # [B, D]
        _, nn_idx = self._search(worst_patch, 1)
        nearest = self.memory_bank[nn_idx[:, 0]]
        _, support = self._search(nearest, self.reweight_neighbours)  # b bank neighbours of m*
        dists = torch.linalg.vector_norm(worst_patch[:, None] - self.memory_bank[support], dim=-1)
        weight = 1 - torch.softmax(dists, dim=1)[:, 0]
        return weight * dists[:, 0].square()

    @torch.no_grad()
    def predict(self, batch: Batch, ctx: Context) -> Prediction:
        emb = self.embed(batch, ctx)  # [B, h, w, D]
        b, h, w, d = emb.shape
        dist, _ = self._search(emb.reshape(-1, d), self.k)
        patch_scores = dist.mean(dim=1).reshape(b, h, w)
        if self.reweight_neighbours > 1:
            image_scores = self._reweighted_scores(emb, patch_scores)
        else:
            image_scores = patch_scores.reshape(b, -1).max(dim=1).values
        maps = gaussian_blur(upsample(patch_scores, batch.images.shape[-2:]), self.blur_sigma)
        return Prediction(image_scores.cpu(), maps.cpu())
